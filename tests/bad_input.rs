//! Bad input, through the real binary: every refusal exits 65, names `<file>:<line>:` and
//! what is wrong, and leaves the stored log byte-for-byte as it was — the valid lines of
//! the file before the bad one included.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_chat-ledger");
const EXIT_BAD_INPUT: i32 = 65;

/// Opens an account, funds it and creates an app: 3 inputs, 7 events, clock at
/// 2025-03-01T09:10:00+08:00 (01:10Z).
const VALID: &str = concat!(
    r#"{"key":"acme-open","at":"2025-03-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}"#,
    "\n",
    r#"{"key":"acme-topup-1","at":"2025-03-01T09:05:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"500.00"}"#,
    "\n",
    r#"{"key":"acme-app-1","at":"2025-03-01T09:10:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"Acme Chat"}"#,
    "\n",
);
const VALID_HEAD_SEQ: u64 = 7;

/// A valid input that is new to the ledger; put before each bad line, it must not be appended.
const GOOD: &str = r#"{"key":"new-topup","at":"2025-03-02T09:00:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"10.00"}"#;

/// A scratch ledger in a temporary folder, driven through the binary.
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

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--data")
            .arg(self.data())
            .args(args)
            .env_remove("CHAT_LEDGER_DATA")
            .env_remove("CHAT_LEDGER_RULEBOOK")
            .current_dir(self.dir.path())
            .output()
            .expect("run chat-ledger")
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "chat-ledger {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write input file");
        path
    }

    fn import(&self, path: &Path) -> Output {
        self.run(&["import", path.to_str().expect("utf-8 path")])
    }

    /// The stored bytes of every event.
    fn export(&self) -> Vec<u8> {
        let out = self.run(&["export"]);
        assert!(
            out.status.success(),
            "export failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `SEQ:HASH` as `verify` prints it.
    fn head(&self) -> String {
        let stdout = self.ok(&["verify"]);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("head "))
            .unwrap_or_else(|| panic!("no head line in verify output:\n{stdout}"));
        line.split_whitespace().next().expect("head label").to_owned()
    }

    /// A ledger holding `VALID`, checked to be exactly that.
    fn with_valid() -> Ledger {
        let ledger = Ledger::new();
        let path = ledger.write("valid.jsonl", VALID);
        let out = ledger.import(&path);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let head = ledger.head();
        assert!(head.starts_with(&format!("{VALID_HEAD_SEQ}:")), "head {head}");
        ledger
    }
}

fn lines(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Imports `text` as `bad.jsonl` into a ledger holding `VALID` and checks the refusal:
/// exit 65, `error: <path>:<line>: ` first, every `reasons` substring in stderr, nothing
/// acknowledged, and the log (export and head) unchanged.
fn assert_refused(text: &str, line: usize, reasons: &[&str]) -> String {
    let ledger = Ledger::with_valid();
    let before = ledger.export();
    let head_before = ledger.head();

    let path = ledger.write("bad.jsonl", text);
    let out = ledger.import(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();

    assert_eq!(
        out.status.code(),
        Some(EXIT_BAD_INPUT),
        "stderr: {stderr}\nstdout: {stdout}"
    );
    let prefix = format!("error: {}:{line}: ", path.display());
    assert!(
        stderr.starts_with(&prefix),
        "stderr should start with {prefix:?}: {stderr:?}"
    );
    assert_eq!(stderr.lines().count(), 1, "one error line: {stderr:?}");
    for reason in reasons {
        assert!(stderr.contains(reason), "stderr should contain {reason:?}: {stderr:?}");
    }
    assert!(
        !stdout.contains("acknowledged"),
        "nothing may be acknowledged: {stdout:?}"
    );

    let after = ledger.export();
    assert!(
        before == after,
        "the log changed:\nbefore:\n{}\nafter:\n{}",
        String::from_utf8_lossy(&before),
        String::from_utf8_lossy(&after)
    );
    assert!(
        !String::from_utf8_lossy(&after).contains("new-topup"),
        "the valid line before the bad one was appended"
    );
    assert_eq!(ledger.head(), head_before);
    stderr
}

/// An add_funds for acme on 2025-03-03 with `fields` replacing the usual body.
fn add_funds(fields: &str) -> String {
    format!(r#"{{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"customer","type":"add_funds",{fields}}}"#)
}

#[test]
fn malformed_json() {
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00",,"actor":"customer"}"#;
    // A valid line after the bad one: the file is complete, so this is not "truncated".
    assert_refused(&lines(&[GOOD, bad, GOOD]), 2, &["not valid JSON"]);
}

#[test]
fn incomplete_json_in_the_middle_is_malformed_not_truncated() {
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","#;
    let stderr = assert_refused(&lines(&[GOOD, bad, GOOD]), 2, &["not valid JSON", "EOF while parsing"]);
    assert!(!stderr.contains("truncated"), "{stderr}");
}

#[test]
fn line_numbers_count_blank_lines() {
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"customer","type":"frobnicate"}"#;
    assert_refused(&lines(&[GOOD, "", "   ", bad]), 4, &["unknown variant `frobnicate`"]);
}

#[test]
fn unknown_input_type() {
    let bad =
        r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"customer","type":"frobnicate","account":"acme"}"#;
    assert_refused(
        &lines(&[GOOD, bad]),
        2,
        &["not a valid input", "unknown variant `frobnicate`", "`add_funds`"],
    );
}

#[test]
fn missing_type() {
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"customer","account":"acme"}"#;
    assert_refused(&lines(&[GOOD, bad]), 2, &["missing field `type`"]);
}

#[test]
fn missing_field() {
    let bad = add_funds(r#""account":"acme","kind":"cash""#);
    assert_refused(
        &lines(&[GOOD, &bad]),
        2,
        &["not a valid input", "missing field `amount`"],
    );
}

#[test]
fn missing_key() {
    let bad = r#"{"at":"2025-03-03T09:00:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"5.00"}"#;
    assert_refused(&lines(&[GOOD, bad]), 2, &["missing field `key`"]);
}

#[test]
fn timestamp_with_month_13() {
    let bad = r#"{"key":"bad-1","at":"2025-13-01T00:00:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"5.00"}"#;
    assert_refused(
        &lines(&[GOOD, bad]),
        2,
        &[r#"at: timestamp "2025-13-01T00:00:00+08:00" is not RFC 3339 with an offset"#],
    );
}

#[test]
fn timestamp_without_offset() {
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"5.00"}"#;
    assert_refused(
        &lines(&[GOOD, bad]),
        2,
        &[r#"at: timestamp "2025-03-03T09:00:00" is not RFC 3339 with an offset"#],
    );
}

#[test]
fn timestamp_with_fractions_of_a_second() {
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00.5+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"5.00"}"#;
    assert_refused(&lines(&[GOOD, bad]), 2, &["has fractions of a second"]);
}

#[test]
fn negative_amount() {
    let bad = add_funds(r#""account":"acme","kind":"cash","amount":"-5.00""#);
    assert_refused(&lines(&[GOOD, &bad]), 2, &[r#"amount "-5.00" is negative"#]);
}

#[test]
fn non_decimal_amount() {
    let bad = add_funds(r#""account":"acme","kind":"cash","amount":"abc""#);
    assert_refused(&lines(&[GOOD, &bad]), 2, &[r#"amount "abc" is not a decimal number"#]);
}

#[test]
fn amount_with_fractions_of_a_cent() {
    let bad = add_funds(r#""account":"acme","kind":"cash","amount":"5.001""#);
    assert_refused(&lines(&[GOOD, &bad]), 2, &[r#"amount "5.001" has fractions of a cent"#]);
}

#[test]
fn amount_as_json_float_is_refused() {
    let bad = add_funds(r#""account":"acme","kind":"cash","amount":5.5"#);
    assert_refused(
        &lines(&[GOOD, &bad]),
        2,
        &["amount 5.5 is a JSON number", "write it as a string"],
    );
}

#[test]
fn amount_as_json_integer_is_refused() {
    let bad = add_funds(r#""account":"acme","kind":"cash","amount":5"#);
    assert_refused(&lines(&[GOOD, &bad]), 2, &["amount 5 is a JSON number"]);
}

#[test]
fn unknown_app() {
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"customer","type":"buy_edition","app":1499999999,"edition":"standard","months":1}"#;
    assert_refused(
        &lines(&[GOOD, bad]),
        2,
        &["unknown app 1499999999", "no create_app for this SDKAppID"],
    );
}

#[test]
fn unknown_account() {
    let bad = add_funds(r#""account":"globex","kind":"cash","amount":"5.00""#);
    assert_refused(&lines(&[GOOD, &bad]), 2, &[r#"unknown account "globex""#]);
}

#[test]
fn new_input_types_naming_an_unknown_app_or_account() {
    for bad in [
        r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"system","type":"login","app":1499999999,"user":"u1"}"#,
        r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"customer","type":"refund_edition","app":1499999999}"#,
        r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"support:kim","type":"flag_violation","app":1499999999,"reason":"spam"}"#,
    ] {
        assert_refused(&lines(&[GOOD, bad]), 2, &["unknown app 1499999999"]);
    }
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"support:kim","type":"adjust_balance","account":"globex","kind":"cash","direction":"credit","amount":"5.00","reason":"goodwill"}"#;
    assert_refused(&lines(&[GOOD, bad]), 2, &[r#"unknown account "globex""#]);
}

#[test]
fn a_login_batch_line_is_written_by_the_ledger_only() {
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"system","type":"login_batch","source":"x.csv","first_line":2,"last_line":3,"rows":2,"sha256":"00"}"#;
    assert_refused(&lines(&[GOOD, bad]), 2, &["login_batch is written by"]);
}

#[test]
fn unknown_money_kind_or_adjustment_direction() {
    let bad = add_funds(r#""account":"acme","kind":"coupon","amount":"5.00""#);
    assert_refused(&lines(&[GOOD, &bad]), 2, &["unknown variant `coupon`", "`voucher`"]);
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"support:kim","type":"adjust_balance","account":"acme","kind":"cash","direction":"refund","amount":"5.00","reason":"goodwill"}"#;
    assert_refused(
        &lines(&[GOOD, bad]),
        2,
        &["unknown variant `refund`", "`credit`", "`debit`"],
    );
}

#[test]
fn account_opened_twice() {
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"a@b.example","sms":"+1"}}"#;
    assert_refused(
        &lines(&[GOOD, bad]),
        2,
        &[r#"account "acme" is already open (already in the ledger)"#],
    );
}

#[test]
fn app_created_twice() {
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"Again"}"#;
    assert_refused(
        &lines(&[GOOD, bad]),
        2,
        &["SDKAppID 1400000001 already exists (already in the ledger)"],
    );
}

#[test]
fn input_dated_before_an_earlier_line() {
    // GOOD moved the file's clock to 2025-03-02; this goes back before the ledger's clock too.
    let bad = add_funds(r#""account":"acme","kind":"cash","amount":"5.00""#)
        .replace("2025-03-03T09:00:00+08:00", "2025-02-03T09:00:00+08:00");
    assert_refused(
        &lines(&[GOOD, &bad]),
        2,
        &[
            "dated 2025-02-03T01:00:00Z, before line 1 (2025-03-02T01:00:00Z)",
            "time never goes back",
        ],
    );
}

#[test]
fn input_dated_before_the_ledgers_clock() {
    // Line 1 is already recorded (skipped, it does not move the clock); line 2 is new
    // and goes back before the last input in the ledger (2025-03-01T09:10+08:00).
    let recorded = VALID.lines().nth(1).expect("second valid line");
    let bad = add_funds(r#""account":"acme","kind":"cash","amount":"5.00""#)
        .replace("2025-03-03T09:00:00+08:00", "2025-03-01T09:09:59+08:00");
    assert_refused(
        &lines(&[recorded, &bad]),
        2,
        &["dated 2025-03-01T01:09:59Z, before the ledger's clock (2025-03-01T01:10:00Z)"],
    );
}

#[test]
fn truncated_last_line() {
    let cut = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"cus"#;
    let text = format!("{GOOD}\n{cut}");
    assert_refused(&text, 2, &["the last line is truncated", "without a newline"]);
}

#[test]
fn unknown_field_typo() {
    let bad = add_funds(r#""account":"acme","kind":"cash","amout":"5.00""#);
    assert_refused(&lines(&[GOOD, &bad]), 2, &["unknown field `amout`", "`amount`"]);
}

#[test]
fn unknown_envelope_level_field() {
    let bad = add_funds(r#""account":"acme","kind":"cash","amount":"5.00","note":"hi""#);
    assert_refused(&lines(&[GOOD, &bad]), 2, &["unknown field `note`"]);
}

#[test]
fn key_reused_with_a_different_payload_than_recorded() {
    // acme-topup-1 was recorded with 500.00 (event 4).
    let bad = r#"{"key":"acme-topup-1","at":"2025-03-03T09:00:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"7.00"}"#;
    assert_refused(
        &lines(&[GOOD, bad]),
        2,
        &[r#"key "acme-topup-1" was already recorded (event 4) with a different payload"#],
    );
}

#[test]
fn key_reused_within_the_file_with_a_different_payload() {
    let bad = GOOD.replace(r#""10.00""#, r#""11.00""#);
    assert_refused(
        &lines(&[GOOD, &bad]),
        2,
        &[r#"key "new-topup" is used by line 1 for another input"#],
    );
}

#[test]
fn unknown_edition() {
    let bad = r#"{"key":"bad-1","at":"2025-03-03T09:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000001,"edition":"platinum","months":1}"#;
    assert_refused(
        &lines(&[GOOD, bad]),
        2,
        &[r#"unknown edition "platinum""#, "sells standard"],
    );
}

#[test]
fn bad_line_after_many_good_lines_names_the_right_line() {
    let mut file: Vec<String> = (0..30)
        .map(|i| GOOD.replace("new-topup", &format!("new-topup-{i}")))
        .collect();
    file.push(add_funds(r#""account":"acme","kind":"cash","amount":"-1""#));
    let refs: Vec<&str> = file.iter().map(String::as_str).collect();
    assert_refused(&lines(&refs), 31, &[r#"amount "-1" is negative"#]);
}

#[test]
fn reimporting_the_same_file_appends_nothing() {
    let ledger = Ledger::with_valid();
    let before = ledger.export();
    let head = ledger.head();

    let path = ledger.write("again.jsonl", VALID);
    let out = ledger.import(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("0 input(s) recorded (0 refused by the rules), 3 already recorded; 0 event(s) appended"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("head {head}")), "{stdout}");
    assert!(!stdout.contains("acknowledged"), "{stdout}");
    assert!(ledger.export() == before, "re-import changed the log");
    assert_eq!(ledger.head(), head);
}

#[test]
fn reimporting_with_a_new_line_appends_only_the_new_line() {
    let ledger = Ledger::with_valid();
    let before = String::from_utf8(ledger.export()).expect("utf-8");

    let path = ledger.write("more.jsonl", &format!("{VALID}{GOOD}\n"));
    let stdout = ledger.ok(&["import", path.to_str().expect("utf-8 path")]);
    assert!(
        stdout.contains("1 input(s) recorded (0 refused by the rules), 3 already recorded; 2 event(s) appended"),
        "{stdout}"
    );
    let after = String::from_utf8(ledger.export()).expect("utf-8");
    assert!(after.starts_with(&before), "earlier events must be untouched");
    let added: Vec<&str> = after[before.len()..].lines().collect();
    assert_eq!(added.len(), 2, "{added:?}");
    assert!(added.iter().all(|l| l.contains(r#""key":"new-topup""#)), "{added:?}");
}

#[test]
fn advance_to_before_the_clock_is_refused_and_changes_nothing() {
    let ledger = Ledger::with_valid();
    let before = ledger.export();
    let head = ledger.head();

    let out = ledger.run(&["advance", "--to", "2025-03-01T09:00:00+08:00"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{stderr}");
    assert!(
        stderr.contains("is dated 2025-03-01T01:00:00Z, before the ledger's clock (2025-03-01T01:10:00Z)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(ledger.export() == before, "advance changed the log");
    assert_eq!(ledger.head(), head);
}

#[test]
fn advance_with_an_unparseable_time_is_refused() {
    let ledger = Ledger::with_valid();
    let before = ledger.export();
    let out = ledger.run(&["advance", "--to", "2025-04-02T10:00:00"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{stderr}");
    assert!(
        stderr.contains(r#"--to: timestamp "2025-04-02T10:00:00" is not RFC 3339 with an offset"#),
        "{stderr}"
    );
    assert!(ledger.export() == before, "advance changed the log");
}
