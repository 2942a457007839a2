//! The stored projection snapshot: sharded so that one app's projection is read alone,
//! used for one app or account only when it is at the log's head, ignored when it is of
//! another format or torn; and `PROJECTION_VERSION` tied to the projections' serialized
//! shape.

use std::path::{Path, PathBuf};

use chat_ledger::import;
use chat_ledger::ledger::{Ledger, SeededKeys};
use chat_ledger::replay::{self, SNAPSHOT_NAME};
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::{EventStore, MemoryStore, SledStore};
use chat_ledger_events::{AccountId, AppId, Instant};
use chat_ledger_projections::LedgerView;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("replay-fixtures");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    out.sort();
    assert!(out.len() >= 5, "the fixtures are there");
    out
}

fn ledger_on(store: Box<dyn EventStore>) -> Ledger {
    Ledger::open_with_keys(
        store,
        Rulebook::intl_2025(),
        Box::new(SeededKeys("snapshot-test".into())),
    )
    .unwrap()
}

fn import_lines(ledger: &mut Ledger, path: &Path, lines: &[&str]) {
    let source = path.to_string_lossy().into_owned();
    import::import(ledger, &source, &lines.concat(), 7, |_| {}).unwrap_or_else(|e| panic!("{source}: {e}"));
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .split_inclusive('\n')
        .map(str::to_owned)
        .collect()
}

/// Every app and account of `full`, read alone, is what the full projections hold; with
/// `from_snapshot` the answer must come from the snapshot's parts (nothing else loaded).
fn assert_parts_agree(
    store: &dyn EventStore,
    full: &LedgerView,
    until: Option<Instant>,
    from_snapshot: bool,
    name: &str,
) {
    for (id, app) in &full.apps {
        let part = replay::load_for_app(store, *id, until).unwrap();
        assert_eq!(part.apps.get(id), Some(app), "{name}: app {id}");
        assert_eq!(
            part.accounts.get(&app.account),
            full.accounts.get(&app.account),
            "{name}: account of {id}"
        );
        assert_eq!(
            (part.seq, part.head_hash, part.clock, &part.rulebook, part.currency),
            (full.seq, full.head_hash, full.clock, &full.rulebook, full.currency),
            "{name}: app {id}"
        );
        assert_eq!(
            part.apps.len() == 1 && part.streams.is_empty(),
            from_snapshot,
            "{name}: app {id} read alone"
        );
    }
    for (id, account) in &full.accounts {
        let part = replay::load_for_account(store, id, until).unwrap();
        assert_eq!(part.accounts.get(id), Some(account), "{name}: account {id}");
        for app in &account.apps {
            assert_eq!(part.apps.get(app), full.apps.get(app), "{name}: app {app} of {id}");
        }
        assert_eq!((part.seq, part.clock), (full.seq, full.clock), "{name}: account {id}");
        assert_eq!(
            part.streams.is_empty(),
            from_snapshot,
            "{name}: account {id} read alone"
        );
    }
    let missing = replay::load_for_app(store, AppId(1), until).unwrap();
    assert!(
        !missing.apps.contains_key(&AppId(1)) && missing.seq == full.seq,
        "{name}: no such app"
    );
    let nobody = AccountId::new("nobody").unwrap();
    let missing = replay::load_for_account(store, &nobody, until).unwrap();
    assert!(
        !missing.accounts.contains_key(&nobody) && missing.seq == full.seq,
        "{name}: no such account"
    );
}

#[test]
fn one_app_or_account_read_from_the_snapshot_at_the_head_is_what_a_full_replay_gives() {
    for path in fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let all = lines(&path);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut ledger = ledger_on(Box::new(MemoryStore::new()));
        import_lines(&mut ledger, &path, &all);
        ledger.save_snapshot().unwrap();
        let store = ledger.store();
        let full = replay::load_from_zero(store, None).unwrap();
        assert_eq!(
            replay::load(store, None).unwrap(),
            full,
            "{name}: the sharded snapshot loads whole"
        );
        assert_parts_agree(store, &full, None, true, &name);
        // `--as-of` at or after the clock is the head: still read alone.
        assert_parts_agree(store, &full, full.clock, true, &name);
        // Before the clock: a replay, as `load` does it.
        if let Some(clock) = full.clock {
            let before = Instant::from_utc(clock.utc() - chrono::Duration::days(3));
            let as_of = replay::load(store, Some(before)).unwrap();
            if as_of.seq > 0 {
                assert_parts_agree(store, &as_of, Some(before), false, &name);
            }
        }
    }
}

#[test]
fn a_snapshot_behind_the_head_is_not_used_for_one_app() {
    for path in fixtures().into_iter().take(6) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let all = lines(&path);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let (first, second) = all.split_at(all.len() / 2);
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = ledger_on(Box::new(SledStore::open(dir.path()).unwrap()));
        import_lines(&mut ledger, &path, first);
        ledger.save_snapshot().unwrap();
        let saved_at = ledger.head().seq;
        import_lines(&mut ledger, &path, second);
        let store = ledger.store();
        assert_eq!(replay::snapshot_position(store).unwrap(), Some(saved_at), "{name}");
        let full = replay::load_from_zero(store, None).unwrap();
        assert_parts_agree(store, &full, None, full.seq == saved_at, &name);
    }
}

#[test]
fn a_snapshot_of_another_format_or_torn_is_ignored() {
    let path = fixtures()
        .into_iter()
        .find(|p| p.ends_with("arrears-and-top-up.jsonl"))
        .unwrap();
    let all = lines(&path);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut ledger = ledger_on(Box::new(MemoryStore::new()));
    import_lines(&mut ledger, &path, &all);
    let store = ledger.store();
    let full = replay::load_from_zero(store, None).unwrap();

    // The format before sharding: one JSON document holding the whole view.
    let old = serde_json::json!({ "projection_version": chat_ledger_projections::PROJECTION_VERSION, "view": {} });
    store.put_snapshot(SNAPSHOT_NAME, old.to_string().as_bytes()).unwrap();
    assert_eq!(replay::snapshot_position(store).unwrap(), None);
    assert_eq!(replay::load(store, None).unwrap(), full);
    assert_parts_agree(store, &full, None, false, "old format");

    // A part left from another save (a torn write): the snapshot as a whole is ignored, and
    // that app is not read alone.
    ledger.save_snapshot().unwrap();
    let store = ledger.store();
    assert_eq!(replay::snapshot_position(store).unwrap(), Some(full.seq));
    let (app, view) = full.apps.iter().next().unwrap();
    // Through text: `json!` refuses the 128-bit user digests.
    let stale = format!(
        r#"{{"seq":{},"view":{}}}"#,
        full.seq - 1,
        serde_json::to_string(view).unwrap()
    );
    store
        .put_snapshot(&format!("{SNAPSHOT_NAME}/app/{app}"), stale.as_bytes())
        .unwrap();
    assert_eq!(replay::snapshot_position(store).unwrap(), None);
    assert_eq!(replay::load(store, None).unwrap(), full);
    let part = replay::load_for_app(store, *app, None).unwrap();
    assert_eq!(part.apps.get(app), Some(view));
    assert!(!part.streams.is_empty(), "not read alone");
}
