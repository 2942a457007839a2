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

/// A ledger in memory holding fixture `name` (`replay-fixtures/<name>`), imported whole.
fn ledger_with(name: &str) -> Ledger {
    let path = fixtures().into_iter().find(|p| p.ends_with(name)).unwrap();
    let all = lines(&path);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut ledger = ledger_on(Box::new(MemoryStore::new()));
    import_lines(&mut ledger, &path, &all);
    ledger
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .split_inclusive('\n')
        .map(str::to_owned)
        .collect()
}

/// Every app and account of `full`, read alone, is what the full projections hold once
/// made whole; with `from_snapshot` the answer must come from the snapshot's parts
/// (nothing else loaded), which leave out the settled history, and that must read back.
fn assert_parts_agree(
    store: &dyn EventStore,
    full: &LedgerView,
    until: Option<Instant>,
    from_snapshot: bool,
    name: &str,
) {
    let mut working = full.clone();
    working.settle().unwrap();
    let apps = if from_snapshot { &working.apps } else { &full.apps };
    for (id, app) in apps {
        let mut part = replay::load_for_app(store, *id, until).unwrap();
        assert_eq!(part.apps.get(id), Some(app), "{name}: app {id}");
        for (month, usage) in &full.apps[id].usage {
            if !app.usage.contains_key(month) {
                let users = replay::settled_month_users(store, *id, month, part.seq).unwrap();
                assert_eq!(
                    users,
                    Some(usage.users.len() as u64),
                    "{name}: app {id}, {month} counted"
                );
            }
            replay::restore_month(store, &mut part, *id, month).unwrap();
            assert_eq!(
                part.apps[id].usage.get(month),
                Some(usage),
                "{name}: app {id}, {month} restored"
            );
        }
        replay::make_whole(store, &mut part).unwrap();
        assert_eq!(part.apps.get(id), full.apps.get(id), "{name}: app {id} made whole");
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
        let mut part = replay::load_for_account(store, id, until).unwrap();
        for app in &account.apps {
            assert_eq!(part.apps.get(app), apps.get(app), "{name}: app {app} of {id}");
        }
        replay::make_whole(store, &mut part).unwrap();
        assert_eq!(part.accounts.get(id), Some(account), "{name}: account {id}");
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
    use chat_ledger::explain::{explain_app, render};
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
        // `explain` on the parts (apps without their settled history) tells what it tells
        // on the whole view. (A settled month's user count, read from its history part,
        // is told in tests/explain.rs story 5.)
        for id in full.apps.keys() {
            let part = replay::load_for_app(store, *id, None).unwrap();
            let told = |view: &LedgerView| render(&explain_app(store, view, *id, None).unwrap());
            assert_eq!(told(&part), told(&full), "{name}: explain app {id}");
        }
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
    let mut ledger = ledger_with("arrears-and-top-up.jsonl");
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

    // The same for the shared maps and for the part list, read beside the other parts.
    for part in ["shared", "part-list"] {
        ledger.save_snapshot().unwrap();
        let store = ledger.store();
        assert_eq!(replay::snapshot_position(store).unwrap(), Some(full.seq));
        let name = format!("{SNAPSHOT_NAME}/{part}");
        let stored = String::from_utf8(store.get_snapshot(&name).unwrap().expect("stored")).unwrap();
        let stale = stored.replacen(
            &format!(r#"{{"seq":{},"#, full.seq),
            &format!(r#"{{"seq":{},"#, full.seq - 1),
            1,
        );
        assert_ne!(stale, stored, "{part} is stamped with the save's position");
        store.put_snapshot(&name, stale.as_bytes()).unwrap();
        assert_eq!(
            replay::snapshot_position(store).unwrap(),
            None,
            "{part} of another save"
        );
        assert_eq!(replay::load(store, None).unwrap(), full);
        assert_eq!(replay::load_working(store).unwrap(), full, "{part}");
    }
}

/// Instants at which something happened in the log, and the instant just before each;
/// at most about `max` of them, evenly spread.
fn instants_of(store: &dyn EventStore, max: usize) -> Vec<Instant> {
    let mut out = std::collections::BTreeSet::new();
    for stored in store.read(1, usize::MAX).unwrap() {
        let at = chat_ledger_events::decode(&stored.bytes).unwrap().occurred_at;
        out.insert(at);
        out.insert(Instant::from_utc(at.utc() - chrono::Duration::seconds(1)));
    }
    let step = out.len().div_ceil(max).max(1);
    out.into_iter().step_by(step).collect()
}

/// Checkpoints every `every` versions (story segments as in production).
fn spacing(every: u64) -> replay::Spacing {
    replay::Spacing {
        checkpoint_versions: every,
        ..replay::Spacing::DEFAULT
    }
}

fn checkpoints_of(store: &dyn EventStore, app: AppId) -> bool {
    let prefix = format!(
        "{SNAPSHOT_NAME}/checkpoint/v{}/{app}/",
        chat_ledger_projections::PROJECTION_VERSION
    );
    store
        .last_snapshot_in(&prefix, &format!("{prefix}~"))
        .unwrap()
        .is_some()
}

/// `state app --as-of T` from the app's checkpoints and its own events is, for every app
/// and instants all along the log, with checkpoints at every event, every third event or
/// none in reach, what a replay up to T gives: the app, position, hash, clock, rulebook.
#[test]
fn an_app_as_of_any_instant_from_its_checkpoints_is_what_a_replay_gives() {
    let mut apps_with_checkpoints = 0;
    for path in fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let all = lines(&path);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        for every in [1, 3, 1_000_000] {
            let mut ledger = ledger_on(Box::new(MemoryStore::new()));
            let (first, second) = all.split_at(all.len() / 2);
            // Saved midway and at the end: the second save catches up from the first's.
            import_lines(&mut ledger, &path, first);
            ledger.save_snapshot_with(spacing(every)).unwrap();
            import_lines(&mut ledger, &path, second);
            ledger.save_snapshot_with(spacing(every)).unwrap();
            let store = ledger.store();
            let full = replay::load_from_zero(store, None).unwrap();
            // One replay, moved forward instant by instant.
            let mut want = LedgerView::default();
            // The first and the last apps (app-limit has 300 alike).
            let apps: Vec<AppId> = full
                .apps
                .keys()
                .take(6)
                .chain(full.apps.keys().rev().take(6))
                .copied()
                .collect();
            for t in instants_of(store, 40) {
                replay::replay_into(store, &mut want, Some(t)).unwrap();
                for app in &apps {
                    let got = replay::load_app_as_of(store, *app, t).unwrap();
                    let what = format!("{name}, every {every}, app {app} as of {t}");
                    assert_eq!(got.apps.get(app), want.apps.get(app), "{what}");
                    assert_eq!(
                        (got.seq, got.head_hash, got.clock, &got.rulebook, got.currency),
                        (want.seq, want.head_hash, want.clock, &want.rulebook, want.currency),
                        "{what}"
                    );
                    assert_eq!(
                        got.apps.len(),
                        usize::from(want.apps.contains_key(app)),
                        "{what}: the app alone"
                    );
                    // What the CLI calls gives the same app, but for the settled history
                    // (left out when it reads the snapshot at the head), which reads back.
                    let mut cli = replay::load_app(store, *app, Some(t)).unwrap();
                    replay::make_whole(store, &mut cli).unwrap();
                    assert_eq!(cli.apps.get(app), want.apps.get(app), "{what}");
                }
            }
            let with = full.apps.keys().filter(|app| checkpoints_of(store, **app)).count();
            if every == 1_000_000 {
                assert_eq!(with, 0, "{name}: no app reaches a million events");
            }
            apps_with_checkpoints += with;
        }
    }
    assert!(
        apps_with_checkpoints > 10,
        "checkpoints were written ({apps_with_checkpoints})"
    );
}

#[test]
fn a_checkpoint_of_another_log_or_projection_version_is_not_used() {
    let mut ledger = ledger_with("expiry-suspension-reclamation.jsonl");
    ledger.save_snapshot_with(spacing(2)).unwrap();
    let store = ledger.store();
    let full = replay::load_from_zero(store, None).unwrap();
    let (app, view) = full.apps.iter().next().unwrap();
    let version = chat_ledger_projections::PROJECTION_VERSION;
    let prefix = format!("{SNAPSHOT_NAME}/checkpoint/v{version}/{app}/");
    let (name, bytes) = store.last_snapshot_in(&prefix, &format!("{prefix}~")).unwrap().unwrap();
    // The checkpoint claims another event (a log that was replaced): ignored. Edited as
    // text: `json!` refuses the 128-bit user digests.
    let text = String::from_utf8(bytes.clone()).unwrap();
    let claimed = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let forged = text.replace(&claimed, &"00".repeat(32));
    assert_ne!(forged, text);
    store.put_snapshot(&name, forged.as_bytes()).unwrap();
    let clock = full.clock.unwrap();
    assert_eq!(
        replay::load_app_as_of(store, *app, clock).unwrap().apps.get(app),
        Some(view)
    );
    // Another projection version's checkpoints are under another name: never read.
    let other = format!("{SNAPSHOT_NAME}/checkpoint/v{}/{app}/{:020}", version + 1, 1);
    store.put_snapshot(&other, b"not even JSON").unwrap();
    assert_eq!(
        replay::load_app_as_of(store, *app, clock).unwrap().apps.get(app),
        Some(view)
    );
}

/// An app's stream can begin before the app: a login to an unknown app (or a creation over
/// the limit) is refused into it. `--as-of` before, at and after its creation still
/// answers as a replay does (no app, then the app), with checkpoints spanning the refusals.
#[test]
fn an_app_whose_stream_begins_with_refusals_reads_as_of_any_instant() {
    let text = r#"{"key":"open","at":"2025-05-10T09:00:00+08:00","actor":"customer","type":"open_account","account":"globex","creator":{"email":"billing@globex.example","sms":"+1-555-0100"}}
{"key":"early-login","at":"2025-05-10T09:01:00+08:00","actor":"system","type":"login","app":1400000777,"user":"u1"}
{"key":"early-login-2","at":"2025-05-10T09:02:00+08:00","actor":"system","type":"login","app":1400000777,"user":"u2"}
{"key":"create","at":"2025-05-10T09:03:00+08:00","actor":"customer","type":"create_app","account":"globex","app":1400000777,"name":"Late"}
{"key":"login","at":"2025-05-10T09:04:00+08:00","actor":"system","type":"login","app":1400000777,"user":"u3"}
{"key":"login-2","at":"2025-05-10T09:05:00+08:00","actor":"system","type":"login","app":1400000777,"user":"u4"}
"#;
    // Through `submit`: an import file naming an unknown app is refused whole before the
    // rules see it; a caller of the ledger (later, the HTTP service) reaches the rules.
    let mut ledger = ledger_on(Box::new(MemoryStore::new()));
    for line in text.lines() {
        let input: chat_ledger_events::Input = serde_json::from_str(line).unwrap();
        ledger.submit(&[input]).unwrap();
    }
    ledger.save_snapshot_with(spacing(2)).unwrap();
    let store = ledger.store();
    let app = AppId(1_400_000_777);
    let stream = chat_ledger_events::StreamId::app(app);
    let first = store.read_stream(&stream, 1, 1).unwrap();
    let first = chat_ledger_events::decode(&first[0].bytes).unwrap();
    assert_eq!(
        first.event.type_name(),
        "command.rejected",
        "the stream begins with a refusal"
    );
    assert!(
        checkpoints_of(store, app),
        "checkpoints were written across the refusals"
    );
    let mut want = LedgerView::default();
    for t in instants_of(store, 100) {
        replay::replay_into(store, &mut want, Some(t)).unwrap();
        let got = replay::load_app_as_of(store, app, t).unwrap();
        assert_eq!(got.apps.get(&app), want.apps.get(&app), "as of {t}");
        assert_eq!((got.seq, got.clock), (want.seq, want.clock), "as of {t}");
    }
    assert!(want.apps.contains_key(&app), "the app exists in the end");
}

/// Every explanation (of each app and account, at the head and at instants all along the
/// log) reads the same from story segments as from the log alone: segments of 1, 2 or 3
/// events, written midway and at the end; and with a segment gone bad, too.
#[test]
fn explanations_read_from_story_segments_are_those_read_from_the_log() {
    use chat_ledger::explain::{explain_account, explain_app, render};
    use chat_ledger::story::{self, List};
    use chat_ledger_events::StreamId;

    let explain_all = |store: &dyn EventStore, until: Option<Instant>| -> Vec<String> {
        let view = replay::load(store, until).unwrap();
        let apps = view
            .apps
            .keys()
            .take(8)
            .map(|app| render(&explain_app(store, &view, *app, until).unwrap()));
        let accounts = view
            .accounts
            .keys()
            .take(4)
            .map(|account| render(&explain_account(store, &view, account, until).unwrap()));
        apps.chain(accounts).collect()
    };
    let (mut events_from_segments, mut segments_gone_bad) = (0, 0);
    for path in fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let all = lines(&path);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        // From the log alone: no snapshot was ever saved, so no segment exists.
        let mut plain = ledger_on(Box::new(MemoryStore::new()));
        import_lines(&mut plain, &path, &all);
        let instants = instants_of(plain.store(), 6);
        let want: Vec<Vec<String>> = std::iter::once(None)
            .chain(instants.iter().copied().map(Some))
            .map(|t| explain_all(plain.store(), t))
            .collect();
        for every in [1, 2, 3] {
            let spacing = replay::Spacing {
                story_segment_events: every,
                ..replay::Spacing::DEFAULT
            };
            let mut ledger = ledger_on(Box::new(MemoryStore::new()));
            let (first, second) = all.split_at(all.len() / 2);
            import_lines(&mut ledger, &path, first);
            ledger.save_snapshot_with(spacing).unwrap();
            import_lines(&mut ledger, &path, second);
            ledger.save_snapshot_with(spacing).unwrap();
            let store = ledger.store();
            // The segments hold every complete run of `every` entries, as the log has them.
            for app in replay::load(store, None).unwrap().apps.values() {
                let stream = StreamId::app(app.app);
                let held = story::read_segments(store, &stream, List::Story, &app.story).unwrap();
                assert_eq!(held.len(), app.story.len() / every * every, "{name}, app {}", app.app);
                assert_eq!(held, store.read_positions(&app.story[..held.len()]).unwrap(), "{name}");
                events_from_segments += held.len();
            }
            let got: Vec<Vec<String>> = std::iter::once(None)
                .chain(instants.iter().copied().map(Some))
                .map(|t| explain_all(store, t))
                .collect();
            assert_eq!(got, want, "{name}, segments of {every}");
        }
        // A segment that no longer reads, or that names other positions, is not used.
        let mut ledger = ledger_on(Box::new(MemoryStore::new()));
        import_lines(&mut ledger, &path, &all);
        let spacing = replay::Spacing {
            story_segment_events: 1,
            ..replay::Spacing::DEFAULT
        };
        ledger.save_snapshot_with(spacing).unwrap();
        let store = ledger.store();
        let whole = replay::load(store, None).unwrap();
        let Some(app) = whole.apps.values().find(|a| a.story.len() >= 2) else {
            continue;
        };
        let segment = |first: usize| {
            format!(
                "{SNAPSHOT_NAME}/story/v{}/app:{}/story/{first:020}",
                chat_ledger_projections::PROJECTION_VERSION,
                app.app
            )
        };
        let second = store.get_snapshot(&segment(1)).unwrap().expect("segments of one event");
        // Well-formed, but of the next place; then not a segment at all.
        for wrong in [second, b"not a segment".to_vec()] {
            store.put_snapshot(&segment(0), &wrong).unwrap();
            assert_eq!(explain_all(store, None), want[0], "{name}, a segment gone bad");
            segments_gone_bad += 1;
        }
    }
    assert!(segments_gone_bad > 10, "segments were spoiled ({segments_gone_bad})");
    assert!(
        events_from_segments > 100,
        "segments were read ({events_from_segments} events)"
    );
}

/// A segment whose positions are the list's but whose bytes are not the log's (a store
/// whose log was replaced) is not read: the last event taken is compared with the log.
#[test]
fn story_segments_that_disagree_with_the_log_are_not_read() {
    use chat_ledger::story::{self, List};
    use chat_ledger_events::StreamId;

    let ledger = ledger_with("expiry-suspension-reclamation.jsonl");
    let store = ledger.store();
    let app = ledger.state().apps.values().find(|a| a.story.len() >= 2).unwrap();
    let stream = StreamId::app(app.app);
    let log = store.read_positions(&app.story[..2]).unwrap();
    // A segment as src/story.rs stores it: the event count, then per event its position,
    // its length and its bytes, big-endian.
    let segment = |seq: u64, bytes: &[u8]| {
        let mut out = 1u32.to_be_bytes().to_vec();
        out.extend(seq.to_be_bytes());
        out.extend((bytes.len() as u32).to_be_bytes());
        out.extend(bytes);
        out
    };
    let name = format!(
        "{SNAPSHOT_NAME}/story/v{}/app:{}/story/{:020}",
        chat_ledger_projections::PROJECTION_VERSION,
        app.app,
        0
    );
    // The log's own event is read from the segment ...
    store
        .put_snapshot(&name, &segment(app.story[0], &log[0].bytes))
        .unwrap();
    let held = story::read_segments(store, &stream, List::Story, &app.story).unwrap();
    assert_eq!(held, log[..1]);
    // ... another event's bytes at that position are not.
    store
        .put_snapshot(&name, &segment(app.story[0], &log[1].bytes))
        .unwrap();
    let held = story::read_segments(store, &stream, List::Story, &app.story).unwrap();
    assert!(held.is_empty(), "a segment that is not the log's was read: {held:?}");
}

/// Settling takes paid bills, orders of past plans and months billed for all their users
/// out of the ledger's working view at every snapshot save (the CLI saves after every
/// command, in a new process each time). Decisions must not notice: run every fixture
/// saving after every other input and reopening the ledger after each — so later inputs
/// are decided, and logged events folded, on a working view — and the log comes out byte
/// for byte as without saves; the whole view read back is the one replayed from 0, and the
/// working view the one that settling it gives.
#[test]
fn settling_at_every_save_decides_the_same_log() {
    let mut history = [0usize; 4];
    for path in fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let source = path.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut straight = ledger_on(Box::new(MemoryStore::new()));
        import::import(&mut straight, &source, &text, 7, |_| {}).unwrap();
        for parity in [0, 1] {
            let dir = tempfile::tempdir().unwrap();
            let reopen = || ledger_on(Box::new(SledStore::open(dir.path()).unwrap()));
            let mut ledger = reopen();
            let plan = import::check(&source, import::parse(&source, &text).unwrap(), &ledger).unwrap();
            let mut saved_last = false;
            for (index, line) in plan.pending.into_iter().enumerate() {
                match line.entry {
                    import::Entry::Input(input) => {
                        ledger.submit(&[input]).unwrap();
                    }
                    import::Entry::Logins(file) => {
                        ledger
                            .ingest_logins(
                                &file.source,
                                &file.digest,
                                &file.rows,
                                chat_ledger::logins::CHUNK_ROWS_DEFAULT,
                                |_, _| {},
                            )
                            .unwrap();
                    }
                }
                saved_last = index % 2 == parity;
                if saved_last {
                    ledger.save_snapshot().unwrap();
                }
                drop(ledger);
                ledger = reopen();
            }
            assert_eq!(
                ledger.head(),
                straight.head(),
                "{name}, saves at parity {parity}: the same log"
            );
            let store = ledger.store();
            let full = replay::load_from_zero(store, None).unwrap();
            assert_eq!(replay::load(store, None).unwrap(), full, "{name}: whole again");
            assert_parts_agree(store, &full, None, saved_last, &name);
            if saved_last {
                let mut settled = full.clone();
                settled.settle().unwrap();
                assert_eq!(ledger.state(), &settled, "{name}: the working view");
            }
            let prefix = format!(
                "{SNAPSHOT_NAME}/history/v{}/",
                chat_ledger_projections::PROJECTION_VERSION
            );
            for (name, _) in store.snapshots_in(&prefix, &format!("{prefix}~")).unwrap() {
                let kind = ["order/", "bill/", "month/", "list/"]
                    .iter()
                    .position(|k| name[prefix.len()..].starts_with(k))
                    .unwrap();
                history[kind] += 1;
            }
        }
    }
    // Not a vacuous pass: each kind of settled history was written.
    assert!(
        history.iter().all(|n| *n > 0),
        "history parts (orders, bills, months, lists): {history:?}"
    );
}

/// A settled history part that no longer reads is not skipped: the whole view would lack
/// it and the working view would still count its money, so `load` refuses, naming the
/// part, while the working view (which does not read it) still loads.
#[test]
fn a_history_part_that_does_not_read_is_an_error_naming_it() {
    let mut ledger = ledger_with("arrears-and-top-up.jsonl");
    ledger.save_snapshot().unwrap();
    let store = ledger.store();
    let prefix = format!(
        "{SNAPSHOT_NAME}/history/v{}/bill/",
        chat_ledger_projections::PROJECTION_VERSION
    );
    let (name, _) = store
        .snapshots_in(&prefix, &format!("{prefix}~"))
        .unwrap()
        .into_iter()
        .next()
        .expect("a paid bill was settled");
    store.put_snapshot(&name, b"not a part").unwrap();
    let error = replay::load(store, None).unwrap_err().to_string();
    assert!(error.contains(&name), "the error names the part: {error}");
    assert_eq!(replay::load_working(store).unwrap(), *ledger.state());
}
