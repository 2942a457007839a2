//! Every fixture in replay-fixtures/ — found by glob, so a new fixture needs no Rust —
//! is imported, checked against its explicit expected values (`<name>.expect.json`,
//! asserted apart from the snapshot, so a blindly accepted snapshot cannot hide a wrong
//! number), snapshotted (event stream and final projections), and replayed three ways
//! that must agree byte for byte: from position 0, from a projection snapshot taken
//! midway, and in a separate process.

use std::path::Path;
use std::process::Command;

use chat_ledger::describe::{log_line, zone_of};
use chat_ledger::import;
use chat_ledger::ledger::{KeySource, Ledger, SeededKeys};
use chat_ledger::replay;
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::{EventStore, SledStore};
use chat_ledger::verify;
use chat_ledger_events::{decode, EventBody};
use chat_ledger_projections::LedgerView;
use serde_json::{json, Value};

/// Inputs per acknowledged batch in the first import: small, so fixtures cross batch edges.
const CHUNK_SMALL: usize = 2;

/// Vault keys from a fixed seed, so user digests (and so the log's bytes) are the same
/// in every import of a fixture.
fn fixture_keys() -> Box<dyn KeySource> {
    Box::new(SeededKeys("replay-fixtures".to_owned()))
}

/// The projections as JSON, with each app's usage month showing how many users were
/// counted instead of their digests (thousands of 128-bit digests say nothing to a reader).
fn view_json(view: &LedgerView) -> Value {
    let mut json = serde_json::to_value(view).expect("views serialize");
    for (id, app) in &view.apps {
        for (month, usage) in &app.usage {
            json["apps"][id.to_string()]["usage"][month]["users"] = json!(usage.users.len());
        }
    }
    json
}

fn import_text(dir: &Path, name: &str, text: &str, chunk: usize) {
    let store = SledStore::open(dir).expect("open store");
    let mut ledger =
        Ledger::open_with_keys(Box::new(store), Rulebook::intl_2025(), fixture_keys()).expect("open ledger");
    import::import(&mut ledger, name, text, chunk, |_| {}).unwrap_or_else(|e| panic!("{name}: {e}"));
    ledger.save_snapshot().expect("save snapshot");
}

fn export_of(store: &dyn EventStore) -> Vec<u8> {
    let mut out = Vec::new();
    verify::export(store, &mut out).expect("export");
    out
}

/// `expected` must be contained in `actual`: objects key by key (a `null` expects the key
/// absent or null; `{}` expects an empty object), arrays element by element with the same
/// length, scalars equal.
fn assert_subset(expected: &Value, actual: &Value, path: &str) {
    match expected {
        Value::Object(fields) if fields.is_empty() => {
            assert_eq!(
                actual,
                &Value::Object(Default::default()),
                "{path}: expected an empty object"
            );
        }
        Value::Object(fields) => {
            for (key, want) in fields {
                let got = actual.get(key).unwrap_or(&Value::Null);
                if want.is_null() {
                    assert!(got.is_null(), "{path}.{key}: expected absent or null, got {got}");
                } else {
                    assert_subset(want, got, &format!("{path}.{key}"));
                }
            }
        }
        Value::Array(items) => {
            let got = actual
                .as_array()
                .unwrap_or_else(|| panic!("{path}: expected an array, got {actual}"));
            assert_eq!(
                items.len(),
                got.len(),
                "{path}: expected {} item(s), got {actual}",
                items.len()
            );
            for (index, (want, got)) in items.iter().zip(got).enumerate() {
                assert_subset(want, got, &format!("{path}[{index}]"));
            }
        }
        scalar => assert_eq!(scalar, actual, "{path}"),
    }
}

fn check_expectations(name: &str, expect: &Value, view: &LedgerView, store: &dyn EventStore) {
    let view_json = view_json(view);
    if let Some(seq) = expect.get("head_seq") {
        assert_eq!(seq.as_u64(), Some(view.seq), "{name}: head_seq");
    }
    for section in ["apps", "accounts", "bills", "deadlines"] {
        if let Some(want) = expect.get(section) {
            assert_subset(want, &view_json[section], &format!("{name}.{section}"));
        }
    }
    let mut rejections = Vec::new();
    for stored in store.read(1, usize::MAX).expect("read") {
        let event = decode(&stored.bytes).expect("decode");
        if let EventBody::CommandRejected { reason, .. } = &event.event {
            let rule = event.decision.as_ref().map(|d| d.rule.clone()).unwrap_or_default();
            rejections.push((event.key.as_str().to_owned(), rule, reason.clone()));
        }
    }
    let want = expect["rejections"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: expect.json needs \"rejections\""));
    assert_eq!(want.len(), rejections.len(), "{name}: rejections {rejections:?}");
    for (want, (key, rule, reason)) in want.iter().zip(&rejections) {
        assert_eq!(want["key"], json!(key), "{name}: rejection key");
        assert_eq!(want["rule"], json!(rule), "{name}: rejection rule of {key}");
        if let Some(part) = want.get("reason_contains").and_then(Value::as_str) {
            assert!(
                reason.contains(part),
                "{name}: reason of {key} lacks {part:?}: {reason}"
            );
        }
    }
}

/// The snapshot: the event stream as support reads it, then the final projections.
fn snapshot_text(view: &LedgerView, store: &dyn EventStore) -> String {
    let zone = zone_of(view.rulebook.as_ref().map(|r| r.zone.as_str()));
    let mut out = String::from("# events\n");
    for stored in store.read(1, usize::MAX).expect("read") {
        out.push_str(&log_line(&decode(&stored.bytes).expect("decode"), zone));
        out.push('\n');
    }
    out.push_str(&format!("# head {}:{}\n# projections\n", view.seq, view.head_hash));
    let json = view_json(view);
    let projections = json!({ "apps": json["apps"], "accounts": json["accounts"], "deadlines": json["deadlines"] });
    out.push_str(&serde_json::to_string_pretty(&projections).expect("views serialize"));
    out
}

#[test]
fn replay_fixtures() {
    insta::glob!("../replay-fixtures", "*.jsonl", |path| {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Imported under its full path: `ingest_logins` files are found next to the fixture.
        let source = path.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        let expect_path = path.with_extension("expect.json");
        let expect: Value = serde_json::from_str(&std::fs::read_to_string(&expect_path).unwrap_or_else(|_| {
            panic!(
                "{name}: every fixture needs explicit values in {}",
                expect_path.display()
            )
        }))
        .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));

        // Import in two halves, storing a projection snapshot after the first.
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let (first, second) = lines.split_at(lines.len() / 2);
        import_text(dir.path(), &source, &first.concat(), CHUNK_SMALL);
        let snapshot_seq = {
            let store = SledStore::open(dir.path()).unwrap();
            replay::snapshot_position(&store)
                .unwrap()
                .expect("a snapshot after the first half")
        };
        let store = SledStore::open(dir.path()).unwrap();
        let mut ledger = Ledger::open_with_keys(Box::new(store), Rulebook::intl_2025(), fixture_keys()).unwrap();
        import::import(&mut ledger, &source, &second.concat(), CHUNK_SMALL, |_| {}).unwrap();
        drop(ledger);

        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            replay::snapshot_position(&store).unwrap(),
            Some(snapshot_seq),
            "{name}: the midway snapshot is in use"
        );
        let from_zero = replay::load_from_zero(&store, None).unwrap();
        assert!(
            snapshot_seq < from_zero.seq || second.is_empty(),
            "{name}: the snapshot is midway"
        );
        let from_zero_json = serde_json::to_string_pretty(&from_zero).unwrap();
        let from_snapshot_json = serde_json::to_string_pretty(&replay::load(&store, None).unwrap()).unwrap();
        assert_eq!(
            from_zero_json, from_snapshot_json,
            "{name}: replay from snapshot differs from replay from 0"
        );

        check_expectations(&name, &expect, &from_zero, &store);
        let report = verify::verify_store(&store, None)
            .unwrap()
            .unwrap_or_else(|f| panic!("{name}: verify: {f}"));
        assert_eq!(report.head.seq, from_zero.seq);
        insta::assert_snapshot!(snapshot_text(&from_zero, &store));
        let export = export_of(&store);
        drop(store);

        // A separate process replays to the same bytes.
        let output = Command::new(env!("CARGO_BIN_EXE_chat-ledger"))
            .args(["--data", dir.path().to_str().unwrap(), "state", "all", "--json"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            from_zero_json + "\n",
            "{name}: separate process"
        );

        // Batch boundaries change nothing: one big batch gives the same bytes.
        let whole = tempfile::tempdir().unwrap();
        import_text(whole.path(), &source, &text, import::CHUNK_INPUTS_DEFAULT);
        let store = SledStore::open(whole.path()).unwrap();
        assert!(export_of(&store) == export, "{name}: export depends on batch size");
    });
}
