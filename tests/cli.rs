//! End to end through the binary: import the expiry → suspension → reclamation fixture,
//! then read it back with `state`, `log`, `verify` and `export`, and let time pass with
//! `advance`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_chat-ledger");
const APP: &str = "1400000001";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("replay-fixtures/expiry-suspension-reclamation.jsonl")
}

/// The fixture up to and including the purchase (bought 2025-03-01T10:00+08:00, one
/// month of standard): no clock tick, so every deadline is still pending.
///
/// Events: 1 rulebook, 2+2+2 for open/top-up/create, 3 for the purchase (input,
/// edition.purchased, account.charged) = 10. Then, as the clock passes them: 7 expiry
/// reminders at 00:00 on Mar 26 … Apr 1 (the expiry day included), plan.expired at
/// Apr 1 10:00, the day-after reminder at 00:00 Apr 2, hold.placed at Apr 2 10:00.
fn fixture_until_purchase() -> String {
    let text = std::fs::read_to_string(fixture()).expect("read fixture");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "the fixture changed; this test expects its five inputs");
    assert!(lines[3].contains(r#""type":"buy_edition""#), "{}", lines[3]);
    assert!(lines[3].contains(r#""at":"2025-03-01T10:00:00+08:00""#), "{}", lines[3]);
    lines[..4].iter().map(|l| format!("{l}\n")).collect()
}

struct Ledger {
    dir: TempDir,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command without `--data` and with no inherited configuration, run in the temp dir.
    fn bare(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("CHAT_LEDGER_DATA")
            .env_remove("CHAT_LEDGER_RULEBOOK")
            .current_dir(self.dir.path());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.bare()
            .arg("--data")
            .arg(self.data())
            .args(args)
            .output()
            .expect("run chat-ledger")
    }

    fn ok(&self, args: &[&str]) -> String {
        succeeded(self.run(args), args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} is not JSON ({e}):\n{stdout}"))
    }

    fn import_text(&self, text: &str) -> String {
        let path = self.dir.path().join("input.jsonl");
        std::fs::write(&path, text).expect("write input");
        self.ok(&["import", path.to_str().expect("utf-8 path")])
    }

    /// A ledger with the whole fixture imported.
    fn with_fixture() -> Ledger {
        let ledger = Ledger::new();
        let stdout = ledger.ok(&["import", fixture().to_str().expect("utf-8 path")]);
        assert!(
            stdout.contains("5 input(s) recorded (0 refused by the rules), 0 already recorded; 23 event(s) appended"),
            "{stdout}"
        );
        ledger
    }

    fn export(&self) -> String {
        self.ok(&["export"])
    }
}

fn succeeded(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "chat-ledger {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// `SEQ:HASH` from `verify` output, checked for shape.
fn head_of(verify_stdout: &str) -> String {
    let label = verify_stdout
        .lines()
        .find_map(|l| l.strip_prefix("head "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no head line:\n{verify_stdout}"));
    let (seq, hash) = label.split_once(':').expect("SEQ:HASH");
    assert!(seq.parse::<u64>().is_ok(), "seq {seq:?}");
    assert_eq!(hash.len(), 64, "hash {hash:?}");
    assert!(
        hash.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{hash}"
    );
    label.to_owned()
}

/// The event type column of the event lines (those starting with a seq) of `log` or `advance`.
fn event_types(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|seq| seq.parse::<u64>().is_ok())
        })
        .map(|l| l.split_whitespace().nth(6).expect("type column").to_owned())
        .collect()
}

#[test]
fn state_app_at_the_end_is_reclaimed() {
    let ledger = Ledger::with_fixture();
    let app = ledger.json(&["state", "app", APP, "--json"]);
    assert_eq!(app["app"], json!(1400000001));
    assert_eq!(app["account"], "acme");
    assert_eq!(app["status"], "reclaimed");
    assert_eq!(app["edition"], "standard");
    assert_eq!(app["reclaimed_at"], "2025-06-30T16:00:00Z");
    assert_eq!(app["reclamation"], Value::Null);
    assert_eq!(app["unusable_since"], "2025-04-02T02:00:00Z");
    assert_eq!(app["plan"]["valid_until"], "2025-04-01T02:00:00Z");
    assert_eq!(app["plan"]["orders"], json!(["1400000001-1"]));
    assert_eq!(app["next_reminder"], Value::Null);
}

#[test]
fn state_app_as_of_a_past_instant_is_suspended() {
    let ledger = Ledger::with_fixture();
    let app = ledger.json(&["state", "app", APP, "--as-of", "2025-04-10T00:00:00+08:00", "--json"]);
    assert_eq!(app["status"], "suspended");
    assert_eq!(app["reclamation"]["at"], "2025-06-30T16:00:00Z");
    assert_eq!(app["reclaimed_at"], Value::Null);
    assert_eq!(app["holds"]["expiry"]["since"], "2025-04-02T02:00:00Z");
    assert_eq!(app["expired"]["grace_ends_at"], "2025-04-02T02:00:00Z");
}

#[test]
fn state_account_shows_the_cash_left() {
    let ledger = Ledger::with_fixture();
    let account = ledger.json(&["state", "account", "acme", "--json"]);
    assert_eq!(account["account"], "acme");
    // 500.00 added, 399.00 charged for one month of standard.
    assert_eq!(account["balances"]["cash"], "101.00 USD");
    assert_eq!(account["balances"]["gift"], "0.00 USD");
    assert_eq!(account["balances"]["income_transfer"], "0.00 USD");
    assert_eq!(account["balances"]["voucher"], "0.00 USD");
    assert_eq!(account["apps"], json!([1400000001]));
}

#[test]
fn state_deadlines_now_and_as_of() {
    let ledger = Ledger::with_fixture();
    assert_eq!(ledger.json(&["state", "deadlines", "--json"]), json!([]));

    // On Mar 15 the first expiry reminder (00:00 Mar 26, the 7th day before expiry
    // counting the expiry day) and the expiry itself are pending, in firing order.
    let pending = ledger.json(&["state", "deadlines", "--as-of", "2025-03-15T00:00:00+08:00", "--json"]);
    let pending = pending.as_array().expect("a list");
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert_eq!(pending[0]["kind"], "reminder");
    assert_eq!(pending[0]["at"], "2025-03-25T16:00:00Z");
    assert_eq!(pending[0]["stream"], "app:1400000001");
    assert_eq!(pending[0]["subject"], json!({ "app": 1400000001 }));
    assert_eq!(pending[1]["kind"], "expiry");
    assert_eq!(pending[1]["at"], "2025-04-01T02:00:00Z");
    assert_eq!(pending[1]["stream"], "app:1400000001");
    assert_eq!(pending[1]["subject"], json!({ "app": 1400000001 }));
}

#[test]
fn log_of_the_app_stream_lists_its_events_in_order() {
    let ledger = Ledger::with_fixture();
    let log = ledger.ok(&["log", "--stream", "app:1400000001"]);
    assert_eq!(
        event_types(&log),
        [
            "app.created",
            "edition.purchased",
            "plan.expired",
            "hold.placed",
            "app.reclaimed"
        ]
    );
    let seqs: Vec<u64> = log
        .lines()
        .map(|l| {
            l.split_whitespace()
                .next()
                .expect("seq")
                .parse()
                .expect("seq is a number")
        })
        .collect();
    // The 8 reminders (11..17, 19) are on the account's stream, not the app's.
    assert_eq!(seqs, [7, 9, 18, 20, 21]);
    let versions: Vec<&str> = log
        .lines()
        .map(|l| l.split_whitespace().nth(5).expect("version"))
        .collect();
    assert_eq!(versions, ["v1", "v2", "v3", "v4", "v5"]);
    assert!(
        log.lines()
            .all(|l| l.split_whitespace().nth(4) == Some("app:1400000001")),
        "{log}"
    );

    // The reminders go to the account's creator: they are told on the account's stream.
    let log = ledger.ok(&["log", "--stream", "account:acme"]);
    let mut expected = vec!["account.opened", "funds.added", "account.charged"];
    expected.extend(["reminder.sent"; 8]);
    assert_eq!(event_types(&log), expected, "{log}");
}

#[test]
fn log_json_equals_export() {
    let ledger = Ledger::with_fixture();
    let log = ledger.ok(&["log", "--json"]);
    let export = ledger.export();
    assert_eq!(log, export);
    let lines: Vec<&str> = export.lines().collect();
    assert_eq!(lines.len(), 23);
    for (i, line) in lines.iter().enumerate() {
        let event: Value = serde_json::from_str(line).expect("each line is JSON");
        assert_eq!(event["seq"], json!(i + 1), "{line}");
    }
}

#[test]
fn verify_prints_the_head_and_checks_an_expected_one() {
    let ledger = Ledger::with_fixture();
    let stdout = ledger.ok(&["verify"]);
    assert!(
        stdout.starts_with(&format!(
            "ok: {}: 23 event(s) in 5 stream(s), 5 input(s)",
            ledger.data().display()
        )),
        "{stdout}"
    );
    let head = head_of(&stdout);
    assert!(head.starts_with("23:"), "{head}");

    ledger.ok(&["verify", "--expect-head", &head]);
    let other = format!("23:{}", "0".repeat(64));
    let out = ledger.run(&["verify", "--expect-head", &other]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    let report = ledger.json(&["verify", "--json"]);
    assert_eq!(report["ok"], true);
    assert_eq!(report["head"], head.as_str());
    assert_eq!(report["events"], 23);
}

#[test]
fn reopened_and_restored_stores_give_identical_state() {
    let ledger = Ledger::with_fixture();
    let queries: [&[&str]; 4] = [
        &["state", "app", APP, "--json"],
        &["state", "account", "acme", "--json"],
        &["state", "deadlines", "--json"],
        &["state", "app", APP, "--as-of", "2025-04-10T00:00:00+08:00", "--json"],
    ];
    let first: Vec<String> = queries.iter().map(|q| ledger.ok(q)).collect();
    // Every run is its own process: the store was closed and is opened again.
    let again: Vec<String> = queries.iter().map(|q| ledger.ok(q)).collect();
    assert_eq!(first, again);

    // A store rebuilt from the export replays to the same state and head.
    let export_path = ledger.dir.path().join("export.jsonl");
    std::fs::write(&export_path, ledger.export()).expect("write export");
    let restored = Ledger::new();
    let stdout = restored.ok(&["import", "--events", export_path.to_str().expect("utf-8 path")]);
    assert!(stdout.starts_with("restored 23 event(s)"), "{stdout}");
    let rebuilt: Vec<String> = queries.iter().map(|q| restored.ok(q)).collect();
    assert_eq!(first, rebuilt);
    assert_eq!(head_of(&restored.ok(&["verify"])), head_of(&ledger.ok(&["verify"])));
    assert_eq!(restored.export(), ledger.export());
}

#[test]
fn data_folder_from_the_environment() {
    let ledger = Ledger::new();
    let data = ledger.data();
    let with_env = |args: &[&str]| {
        let out = ledger
            .bare()
            .env("CHAT_LEDGER_DATA", &data)
            .args(args)
            .output()
            .expect("run chat-ledger");
        succeeded(out, args)
    };
    with_env(&["import", fixture().to_str().expect("utf-8 path")]);
    assert!(data.is_dir(), "the store should be in CHAT_LEDGER_DATA");
    assert!(
        !ledger.dir.path().join("ledger-data").exists(),
        "the default ./ledger-data must not be used"
    );
    assert!(head_of(&with_env(&["verify"])).starts_with("23:"));
    // The same store through --data.
    assert_eq!(ledger.json(&["state", "app", APP, "--json"])["status"], "reclaimed");
}

#[test]
fn advance_fires_deadlines_up_to_and_at_the_instant() {
    let ledger = Ledger::new();
    ledger.import_text(&fixture_until_purchase());
    assert_eq!(ledger.json(&["state", "app", APP, "--json"])["status"], "active");

    // The grace period ends exactly at 2025-04-02T10:00+08:00: that deadline fires too,
    // after the 7 reminders up to the expiry day, the expiry and the day-after reminder.
    let stdout = ledger.ok(&["advance", "--to", "2025-04-02T10:00:00+08:00"]);
    let types = event_types(&stdout);
    let mut expected = vec!["reminder.sent"; 7];
    expected.extend([
        "plan.expired",
        "reminder.sent",
        "hold.placed",
        "input.recorded",
        "clock.advanced",
    ]);
    assert_eq!(types, expected, "{stdout}");
    let hold = stdout
        .lines()
        .find(|l| l.contains("hold.placed"))
        .expect("a hold.placed line");
    assert!(hold.contains("2025-04-02 10:00:00 +08:00"), "{hold}");
    assert!(hold.contains("app 1400000001 suspended"), "{hold}");
    assert!(
        stdout.contains("clock at 2025-04-02 10:00:00 +08:00; head 22:"),
        "{stdout}"
    );

    let app = ledger.json(&["state", "app", APP, "--json"]);
    assert_eq!(app["status"], "suspended");
    assert_eq!(app["holds"]["expiry"]["since"], "2025-04-02T02:00:00Z");
    assert_eq!(app["reclamation"]["at"], "2025-06-30T16:00:00Z");
    let deadlines = ledger.json(&["state", "deadlines", "--json"]);
    assert_eq!(deadlines.as_array().map(Vec::len), Some(1), "{deadlines}");
    assert_eq!(deadlines[0]["kind"], "reclamation");
    assert_eq!(deadlines[0]["at"], "2025-06-30T16:00:00Z");
}

#[test]
fn advance_twice_to_the_same_instant_is_idempotent() {
    let ledger = Ledger::new();
    ledger.import_text(&fixture_until_purchase());
    ledger.ok(&["advance", "--to", "2025-04-02T10:00:00+08:00"]);
    let before = ledger.export();
    let head = head_of(&ledger.ok(&["verify"]));

    let stdout = ledger.ok(&["advance", "--to", "2025-04-02T10:00:00+08:00"]);
    assert!(
        stdout.starts_with("already advanced with this key (events 21..22)"),
        "{stdout}"
    );
    assert!(!stdout.contains("hold.placed"), "{stdout}");
    assert_eq!(ledger.export(), before, "the second advance appended");
    assert_eq!(head_of(&ledger.ok(&["verify"])), head);

    // The same instant written in another offset is the same key.
    ledger.ok(&["advance", "--to", "2025-04-02T02:00:00Z"]);
    assert_eq!(ledger.export(), before);
}

#[test]
fn advance_stops_short_of_a_later_deadline() {
    let ledger = Ledger::new();
    ledger.import_text(&fixture_until_purchase());

    // One second before the grace end: the reminders and the expiry fire, the hold does not yet.
    let stdout = ledger.ok(&["advance", "--to", "2025-04-02T09:59:59+08:00"]);
    let mut expected = vec!["reminder.sent"; 7];
    expected.extend(["plan.expired", "reminder.sent", "input.recorded", "clock.advanced"]);
    assert_eq!(event_types(&stdout), expected, "{stdout}");
    assert_eq!(ledger.json(&["state", "app", APP, "--json"])["status"], "grace");

    let stdout = ledger.ok(&["advance", "--to", "2025-04-02T10:00:00+08:00"]);
    assert_eq!(
        event_types(&stdout),
        ["hold.placed", "input.recorded", "clock.advanced"],
        "{stdout}"
    );
    assert_eq!(ledger.json(&["state", "app", APP, "--json"])["status"], "suspended");
}

/// `chat-ledger state all --json | head -1`: the reader closes the pipe early, and the ledger
/// stops quietly (as `cat` would: SIGPIPE), without a panic message.
#[test]
fn output_into_a_closed_pipe_stops_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    // Three hundred apps: every output below is larger than a pipe's buffer (64 KiB), so
    // the writer is still writing when the reader goes.
    let ledger = Ledger::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("replay-fixtures/app-limit.jsonl");
    ledger.ok(&["import", fixture.to_str().expect("utf-8 path")]);
    for args in [&["state", "all", "--json"][..], &["log"], &["export"]] {
        let whole = ledger.ok(args);
        assert!(whole.len() > 64 << 10, "{args:?}: {} bytes fit a pipe", whole.len());
        let mut child = ledger
            .bare()
            .arg("--data")
            .arg(ledger.data())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run chat-ledger");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut first)
            .expect("read");
        assert!(!first.is_empty(), "{args:?} printed something");
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?}: {stderr}",
            out.status
        );
    }
}
