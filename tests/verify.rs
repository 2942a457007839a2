//! Tamper detection: `verify` must name the FIRST bad position of a damaged log, both for
//! an exported file (`verify --file`, [`verify_export`]) and for the store itself
//! (`verify`, [`verify_store`]), and `export` → `import --events` must round-trip the log
//! byte for byte.
//!
//! Every test builds its own log by importing the replay fixture (23 events) into a
//! tempdir with the real binary, exports it, and damages a copy. The positions asserted
//! below are those of that fixture's events:
//!
//! | seq | event |
//! |---|---|
//! | 1 | rulebook.adopted |
//! | 4 | input.recorded (add_funds 500.00) |
//! | 5 | funds.added `"amount":"500.00 USD"` |
//! | 7 | app.created |
//! | 8 | input.recorded (buy_edition) |
//! | 9 | edition.purchased |
//! | 10 | account.charged |
//! | 11 | reminder.sent (the first of 7, stream `account:acme` at version 4) |
//! | 18 | plan.expired |
//! | 19 | reminder.sent (the day after expiry) |
//! | 20 | hold.placed |
//! | 21 | app.reclaimed |
//! | 22 | input.recorded (advance_clock) |
//! | 23 | clock.advanced (the head) |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chat_ledger::store::{block_events, block_of_events, open_raw_sled, SledStore};
use chat_ledger::verify::{verify_export, verify_store, ExpectedHead};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_chat-ledger");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/replay-fixtures/expiry-suspension-reclamation.jsonl"
);
const EVENTS: u64 = 23;

// ---------------------------------------------------------------------------------------
// Running the binary

fn cli(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("CHAT_LEDGER_DATA")
        .env_remove("CHAT_LEDGER_RULEBOOK")
        .output()
        .expect("the chat-ledger binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8 stderr")
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

/// The `SEQ:HASH` of the `head …` line `verify` prints on success.
fn printed_head(out: &Output) -> String {
    let text = stdout(out);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("head "))
        .unwrap_or_else(|| panic!("no head line in verify's output:\n{text}"));
    line.split_whitespace().next().expect("a head label").to_owned()
}

// ---------------------------------------------------------------------------------------
// The log under test

struct Log {
    /// Holds `data` and the scratch files.
    dir: TempDir,
    data: PathBuf,
    /// `SEQ:HASH` as `verify` printed it.
    head: String,
    /// The export, one event per element, without newlines.
    lines: Vec<String>,
}

impl Log {
    fn export(&self) -> String {
        join(&self.lines)
    }

    /// A file in the scratch dir holding `text`.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a scratch file");
        path
    }

    /// The bare hash of the head, without its position.
    fn head_hash(&self) -> &str {
        self.head.split_once(':').expect("SEQ:HASH").1
    }
}

/// Imports the fixture into a fresh store, checks that it verifies, and exports it.
fn build_log() -> Log {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    assert_ok(&cli(&data, &["import", FIXTURE]), "import of the fixture");
    let verified = cli(&data, &["verify"]);
    assert_ok(&verified, "verify of the fresh store");
    let head = printed_head(&verified);
    let exported = cli(&data, &["export"]);
    assert_ok(&exported, "export");
    let text = stdout(&exported);
    assert!(text.ends_with('\n'), "an export ends with a newline");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len() as u64, EVENTS, "the fixture makes {EVENTS} events");
    assert!(head.starts_with(&format!("{EVENTS}:")), "head {head}");
    Log { dir, data, head, lines }
}

fn join(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// `line` with the single occurrence of `from` replaced by `to`.
fn replace_once(line: &str, from: &str, to: &str) -> String {
    assert_eq!(line.matches(from).count(), 1, "{from:?} occurs once in {line}");
    line.replacen(from, to, 1)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Re-links the chain from line index `from` on: each line's `"prev":"<64 hex>"` is set
/// to the SHA-256 of the (possibly rewritten) previous line's bytes. Textual on purpose:
/// the stored bytes are serde_json's compact output in the envelope's field order, which
/// a `serde_json::Value` round trip (no `preserve_order`) would not reproduce.
fn rechain(lines: &mut [String], from: usize) {
    const PREV: &str = "\"prev\":\"";
    for i in from.max(1)..lines.len() {
        let prev = sha256_hex(lines[i - 1].as_bytes());
        let line = &mut lines[i];
        let start = line.find(PREV).expect("every event has a prev") + PREV.len();
        assert!(
            line[start..start + 64].bytes().all(|b| b.is_ascii_hexdigit()),
            "64 hex digits follow \"prev\" in {line}"
        );
        line.replace_range(start..start + 64, &prev);
    }
}

// ---------------------------------------------------------------------------------------
// Verifying both ways

fn expected(head: Option<&str>) -> Option<ExpectedHead> {
    head.map(|h| h.parse().expect("a well-formed expected head"))
}

/// Verifies `text` as an export with the binary and with [`verify_export`]: both must fail
/// at `position` (the binary with exit code 1) with `reason` in the message.
fn assert_export_fails(log: &Log, text: &str, expect_head: Option<&str>, position: u64, reason: &str) {
    let file = log.file("tampered.jsonl", text);
    let mut args = vec!["verify", "--file", file.to_str().expect("utf-8 path")];
    if let Some(head) = expect_head {
        args.extend(["--expect-head", head]);
    }
    let out = cli(&log.data, &args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "verify --file exits 1\nstderr:\n{err}");
    assert!(
        err.contains(&format!(": position {position}: ")),
        "the binary names position {position}:\n{err}"
    );
    assert!(err.contains(reason), "the binary says {reason:?}:\n{err}");

    let failure = verify_export(text, expected(expect_head)).expect_err("verify_export refuses the file");
    assert_eq!(failure.position, position, "verify_export: {failure}");
    assert!(
        failure.reason.contains(reason),
        "verify_export says {reason:?}: {failure}"
    );
}

/// Verifies `text` as an export both ways; both must pass, and agree on the head.
fn assert_export_ok(log: &Log, text: &str, expect_head: Option<&str>) -> String {
    let file = log.file("checked.jsonl", text);
    let mut args = vec!["verify", "--file", file.to_str().expect("utf-8 path")];
    if let Some(head) = expect_head {
        args.extend(["--expect-head", head]);
    }
    let out = cli(&log.data, &args);
    assert_ok(&out, "verify --file");
    let head = printed_head(&out);
    let report = verify_export(text, expected(expect_head)).expect("verify_export passes");
    assert_eq!(format!("{}:{}", report.head.seq, report.head.hash), head);
    head
}

/// Verifies the store both ways (binary first, then [`verify_store`] in this process):
/// both must fail at `position` with `reason` in the message.
fn assert_store_fails(data: &Path, expect_head: Option<&str>, position: u64, reason: &str) {
    let mut args = vec!["verify"];
    if let Some(head) = expect_head {
        args.extend(["--expect-head", head]);
    }
    let out = cli(data, &args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "verify exits 1\nstderr:\n{err}");
    assert!(
        err.contains(&format!(": position {position}: ")),
        "the binary names position {position}:\n{err}"
    );
    assert!(err.contains(reason), "the binary says {reason:?}:\n{err}");

    let store = SledStore::open(data).expect("open the store");
    let failure = verify_store(&store, expected(expect_head))
        .expect("the store reads")
        .expect_err("verify_store refuses the store");
    assert_eq!(failure.position, position, "verify_store: {failure}");
    assert!(
        failure.reason.contains(reason),
        "verify_store says {reason:?}: {failure}"
    );
}

// ---------------------------------------------------------------------------------------
// Raw sled access (layout: the module doc of src/store/sled_store.rs)

/// Opens the store's sled db directly (after the binary exited; `open_raw_sled` waits for
/// the lock sled releases a moment late), lets `change` edit the `log` tree, and flushes.
fn tamper_store(data: &Path, change: impl FnOnce(&sled::Tree)) {
    let db = open_raw_sled(data).expect("open the sled db");
    let log = db.open_tree("log").expect("the log tree");
    change(&log);
    db.flush().expect("flush the tampering");
}

/// Lets `change` edit the log's events (position → stored bytes), then writes them back in
/// the store's layout: one block per run of consecutive positions.
fn tamper_events(log: &sled::Tree, change: impl FnOnce(&mut BTreeMap<u64, Vec<u8>>)) {
    let mut events = BTreeMap::new();
    for entry in log.scan_prefix(b"e") {
        let (key, block) = entry.expect("read a block");
        let first = u64::from_be_bytes(key[1..].try_into().expect("e + 8 bytes"));
        for (seq, bytes) in (first..).zip(block_events(&block).expect("a block")) {
            events.insert(seq, bytes.to_vec());
        }
        log.remove(key).expect("remove the block");
    }
    change(&mut events);
    let seqs: Vec<u64> = events.keys().copied().collect();
    for run in seqs.chunk_by(|a, b| a + 1 == *b) {
        let mut key = vec![b'e'];
        key.extend_from_slice(&run[0].to_be_bytes());
        log.insert(key, block_of_events(run.iter().map(|seq| events[seq].as_slice())))
            .expect("write a block");
    }
}

fn remove_events(log: &sled::Tree, seqs: &[u64]) {
    tamper_events(log, |events| {
        for seq in seqs {
            events.remove(seq).expect("the event was stored");
        }
    });
}

fn edit_event(log: &sled::Tree, seq: u64, from: &str, to: &str) {
    tamper_events(log, |events| {
        let text = std::str::from_utf8(&events[&seq]).expect("utf-8 event");
        let edited = replace_once(text, from, to);
        events.insert(seq, edited.into_bytes());
    });
}

// ---------------------------------------------------------------------------------------
// The intact log

#[test]
fn an_intact_store_and_its_export_verify_to_the_same_head() {
    let log = build_log();
    assert_eq!(assert_export_ok(&log, &log.export(), None), log.head);
    assert_eq!(assert_export_ok(&log, &log.export(), Some(&log.head)), log.head);
    assert_eq!(assert_export_ok(&log, &log.export(), Some(log.head_hash())), log.head);
    assert_ok(
        &cli(&log.data, &["verify", "--expect-head", &log.head]),
        "verify --expect-head",
    );

    let store = SledStore::open(&log.data).unwrap();
    let report = verify_store(&store, expected(Some(&log.head))).unwrap().unwrap();
    assert_eq!(format!("{}:{}", report.head.seq, report.head.hash), log.head);
    assert_eq!(report.inputs_recorded, 5);
}

// ---------------------------------------------------------------------------------------
// Exported files

#[test]
fn an_altered_amount_in_a_middle_event_names_that_event() {
    let log = build_log();
    let mut lines = log.lines.clone();
    // Still valid JSON and a valid event: only the hash link from event 6 gives it away.
    lines[4] = replace_once(&lines[4], "\"amount\":\"500.00 USD\"", "\"amount\":\"600.00 USD\"");
    assert!(serde_json::from_str::<serde_json::Value>(&lines[4]).is_ok());
    assert_export_fails(&log, &join(&lines), None, 5, "altered");
}

#[test]
fn a_deleted_middle_line_names_its_position() {
    let log = build_log();
    let mut lines = log.lines.clone();
    lines.remove(6); // event 7; line 7 now holds event 8
    assert_export_fails(&log, &join(&lines), None, 7, "holds event 8 instead of event 7");
}

#[test]
fn swapped_adjacent_lines_name_the_first_of_them() {
    let log = build_log();
    let mut lines = log.lines.clone();
    lines.swap(7, 8); // events 8 and 9
    assert_export_fails(&log, &join(&lines), None, 8, "holds event 9 instead of event 8");
}

#[test]
fn a_gap_names_the_missing_position_wherever_it_is() {
    // Nothing renumbered: the line is just gone, at the start or just before the end.
    let log = build_log();
    let mut lines = log.lines.clone();
    lines.remove(0);
    assert_export_fails(&log, &join(&lines), None, 1, "holds event 2 instead of event 1");

    let mut lines = log.lines.clone();
    lines.remove(21); // event 22; the head, event 23, is still there
    assert_export_fails(&log, &join(&lines), None, 22, "holds event 23 instead of event 22");
}

#[test]
fn a_truncated_export_fails_only_against_a_kept_head() {
    let log = build_log();
    let truncated = &log.lines[..log.lines.len() - 3];
    // A clean truncation (whole lines cut from the end) leaves a valid, shorter chain:
    // without a head kept from before, nothing can tell it from a log that simply ended
    // at event 20. Only the kept head catches it.
    let head = assert_export_ok(&log, &join(truncated), None);
    assert!(head.starts_with("20:"), "{head}");

    assert_export_fails(&log, &join(truncated), Some(&log.head), 21, "truncated");
    assert_export_fails(
        &log,
        &join(truncated),
        Some(log.head_hash()),
        21,
        "nowhere in this chain",
    );
}

#[test]
fn a_file_cut_mid_line_is_refused() {
    let log = build_log();
    let text = log.export();
    let cut = &text[..text.len() - 40];
    assert_export_fails(&log, cut, None, EVENTS, "cannot be decoded");
}

#[test]
fn an_altered_last_line_is_caught_only_by_a_kept_head() {
    // No later event links to the last one: a kept head is the only witness.
    let log = build_log();
    let mut lines = log.lines.clone();
    let last = EVENTS as usize - 1;
    lines[last] = replace_once(&lines[last], "\"id\":\"a9200643-", "\"id\":\"b9200643-");
    assert_export_ok(&log, &join(&lines), None);
    assert_export_fails(&log, &join(&lines), Some(&log.head), EVENTS, "rewritten");
}

#[test]
fn rewritten_history_with_a_recomputed_chain_is_caught_only_by_a_kept_head() {
    let log = build_log();
    let mut lines = log.lines.clone();
    lines[4] = replace_once(&lines[4], "\"amount\":\"500.00 USD\"", "\"amount\":\"600.00 USD\"");
    rechain(&mut lines, 5);
    // The helper re-links exactly like the ledger: re-chaining the intact log is a no-op.
    let mut unchanged = log.lines.clone();
    rechain(&mut unchanged, 1);
    assert_eq!(unchanged, log.lines);

    // A consistent forgery: every link holds, every event applies.
    let forged_head = assert_export_ok(&log, &join(&lines), None);
    assert!(forged_head.starts_with(&format!("{EVENTS}:")), "{forged_head}");
    assert_ne!(forged_head, log.head);

    // The kept SEQ:HASH names the position whose hash differs: the kept head's own.
    assert_export_fails(&log, &join(&lines), Some(&log.head), EVENTS, "rewritten");
    // A bare hash has no position to compare at: it is simply nowhere in the chain.
    assert_export_fails(
        &log,
        &join(&lines),
        Some(log.head_hash()),
        EVENTS + 1,
        "nowhere in this chain",
    );
}

// ---------------------------------------------------------------------------------------
// The store itself

#[test]
fn a_store_missing_an_event_key_is_a_gap_at_that_position() {
    let log = build_log();
    tamper_store(&log.data, |tree| {
        remove_events(tree, &[7]);
    });
    assert_store_fails(&log.data, None, 7, "missing");
}

#[test]
fn a_store_event_with_altered_bytes_is_named() {
    let log = build_log();
    tamper_store(&log.data, |tree| {
        edit_event(tree, 5, "\"amount\":\"500.00 USD\"", "\"amount\":\"600.00 USD\"");
    });
    assert_store_fails(&log.data, None, 5, "altered");
}

#[test]
fn a_store_with_an_altered_last_event_is_caught_by_its_head_record() {
    // No later event links to the last one; the head record `h` keeps its hash.
    let log = build_log();
    tamper_store(&log.data, |tree| {
        edit_event(tree, EVENTS, "\"id\":\"a9200643-", "\"id\":\"b9200643-");
    });
    assert_store_fails(&log.data, None, EVENTS, "head record");
}

#[test]
fn a_store_with_a_truncated_tail_is_caught_by_its_head_record() {
    // The last events removed (and nothing else): the chain itself is intact and ends at
    // 21; the head record still says 23, so event 22 is the first one missing (not 21, which is intact).
    let log = build_log();
    tamper_store(&log.data, |tree| {
        remove_events(tree, &[22, 23]);
    });
    assert_store_fails(&log.data, None, 22, "truncated");
}

#[test]
fn a_store_with_its_head_record_deleted_along_with_its_tail_is_caught() {
    let log = build_log();
    tamper_store(&log.data, |tree| {
        remove_events(tree, &[22, 23]);
        tree.remove(b"h").unwrap().expect("the head record was stored");
    });
    assert_store_fails(&log.data, None, 22, "head record is missing");
}

#[test]
fn a_store_fails_against_a_head_it_never_had() {
    let log = build_log();
    let mut lines = log.lines.clone();
    lines[4] = replace_once(&lines[4], "\"amount\":\"500.00 USD\"", "\"amount\":\"600.00 USD\"");
    rechain(&mut lines, 5);
    let forged = verify_export(&join(&lines), None).expect("a consistent forgery");
    let forged_head = format!("{}:{}", forged.head.seq, forged.head.hash);
    assert_store_fails(&log.data, Some(&forged_head), EVENTS, "rewritten");
}

// ---------------------------------------------------------------------------------------
// Export and restore

#[test]
fn export_then_restore_is_byte_identical_and_idempotent() {
    let log = build_log();
    let export = log.file("export.jsonl", &log.export());
    let export = export.to_str().unwrap();
    let restored = log.dir.path().join("restored");

    let first = cli(&restored, &["import", "--events", export]);
    assert_ok(&first, "import --events");
    assert!(
        stdout(&first).starts_with(&format!("restored {EVENTS} event(s) from ")),
        "{}",
        stdout(&first)
    );
    let verified = cli(&restored, &["verify"]);
    assert_ok(&verified, "verify of the restored store");
    assert_eq!(printed_head(&verified), log.head, "the same head");
    let again = cli(&restored, &["export"]);
    assert_ok(&again, "export of the restored store");
    assert_eq!(stdout(&again), log.export(), "byte-identical export");

    let second = cli(&restored, &["import", "--events", export]);
    assert_ok(&second, "second import --events");
    assert!(
        stdout(&second).starts_with("restored 0 event(s) from "),
        "{}",
        stdout(&second)
    );
    assert_eq!(stdout(&cli(&restored, &["export"])), log.export());

    // The idempotency index came back too: the original inputs are all already recorded.
    let inputs = cli(&restored, &["import", FIXTURE]);
    assert_ok(&inputs, "re-import of the inputs into the restored store");
    assert!(
        stdout(&inputs)
            .contains("0 input(s) recorded (0 refused by the rules), 5 already recorded; 0 event(s) appended"),
        "{}",
        stdout(&inputs)
    );
    assert_eq!(stdout(&cli(&restored, &["export"])), log.export());
}

#[test]
fn a_restore_continues_a_store_holding_a_prefix() {
    let log = build_log();
    let prefix = log.file("prefix.jsonl", &join(&log.lines[..10]));
    let whole = log.file("whole.jsonl", &log.export());
    let restored = log.dir.path().join("restored");
    assert_ok(
        &cli(&restored, &["import", "--events", prefix.to_str().unwrap()]),
        "restore of a prefix",
    );
    let rest = cli(&restored, &["import", "--events", whole.to_str().unwrap()]);
    assert_ok(&rest, "restore of the rest");
    assert!(
        stdout(&rest).starts_with("restored 13 event(s) from "),
        "{}",
        stdout(&rest)
    );
    assert_eq!(stdout(&cli(&restored, &["export"])), log.export());
}

#[test]
fn restoring_a_tampered_export_is_refused_and_appends_nothing() {
    let log = build_log();
    let mut lines = log.lines.clone();
    // Event 11, the first reminder, is version 4 of account:acme: claiming 5 skips one.
    lines[10] = replace_once(&lines[10], "\"version\":4", "\"version\":5");
    let tampered = log.file("tampered.jsonl", &join(&lines));
    let tampered = tampered.to_str().unwrap();

    // Into an empty store.
    let restored = log.dir.path().join("restored");
    let out = cli(&restored, &["import", "--events", tampered]);
    assert_eq!(out.status.code(), Some(65), "bad input\nstderr:\n{}", stderr(&out));
    assert!(stderr(&out).contains("nothing was restored"), "{}", stderr(&out));
    assert!(stderr(&out).contains("position 11"), "{}", stderr(&out));
    let export = cli(&restored, &["export"]);
    assert_ok(&export, "export of the refused store");
    assert_eq!(stdout(&export), "", "nothing appended");

    // Into a store holding a valid prefix: the prefix stays as it was.
    let prefix = log.file("prefix.jsonl", &join(&log.lines[..10]));
    assert_ok(
        &cli(&restored, &["import", "--events", prefix.to_str().unwrap()]),
        "restore of a prefix",
    );
    let out = cli(&restored, &["import", "--events", tampered]);
    assert_eq!(out.status.code(), Some(65), "bad input\nstderr:\n{}", stderr(&out));
    assert_eq!(
        stdout(&cli(&restored, &["export"])),
        join(&log.lines[..10]),
        "nothing appended"
    );
    assert_ok(&cli(&restored, &["verify"]), "the prefix still verifies");
}
