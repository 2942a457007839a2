//! One suite, every backend: each case below is a function over `&dyn EventStore`, and
//! `conformance!` turns it into a `#[test]` per backend (`memory::case`, `sled::case`, and
//! `sled_indexing_often::case`: sled writing its index every 3 events).
//! A new backend passes when it is added to the macro and every case is green.

use std::collections::HashMap;

use chat_ledger::store::{
    AppendBatch, Commit, EventStore, Head, KeyRecord, MemoryStore, SledStore, StoreError, StoredEvent,
};
use chat_ledger_events::{
    decode, event_id, seal, Actor, AppId, EventBody, Hash, Instant, Key, NewEvent, SealedEvent, StreamId,
};

// ---------------------------------------------------------------------------------------
// Building batches

fn app(n: u64) -> StreamId {
    StreamId::app(AppId(n))
}

fn clock() -> StreamId {
    StreamId::named(StreamId::CLOCK)
}

fn key(text: &str) -> Key {
    Key::new(text).unwrap()
}

fn digest(n: u8) -> [u8; 32] {
    [n; 32]
}

/// A body that fits the stream: auto-renew switches for app streams, clock ticks otherwise.
fn body_for(stream: &StreamId, n: usize) -> EventBody {
    match stream.as_str().strip_prefix("app:") {
        Some(id) => EventBody::AutoRenewSwitched {
            app: AppId(id.parse().unwrap()),
            on: n % 2 == 0,
        },
        None => EventBody::ClockAdvanced {
            to: Instant::parse(&format!("2025-03-01T10:00:{:02}+08:00", n % 60)).unwrap(),
        },
    }
}

/// Seals commits against a store's current head and stream versions, chaining `seq`,
/// `prev` and versions across the commits of one batch.
struct Builder<'s> {
    store: &'s dyn EventStore,
    start: Head,
    next: Head,
    versions: HashMap<StreamId, u64>,
}

impl<'s> Builder<'s> {
    fn new(store: &'s dyn EventStore) -> Builder<'s> {
        let head = store.head().unwrap();
        Builder {
            store,
            start: head,
            next: head,
            versions: HashMap::new(),
        }
    }

    /// A commit under `key` with one event per stream listed, in order.
    fn commit(&mut self, key_text: &str, digest_byte: u8, streams: &[StreamId]) -> Commit {
        let k = key(key_text);
        let mut events = Vec::new();
        for (index, stream) in streams.iter().enumerate() {
            let version = match self.versions.get(stream) {
                Some(&v) => v + 1,
                None => self.store.stream_version(stream).unwrap() + 1,
            };
            self.versions.insert(stream.clone(), version);
            let sealed = seal(
                self.next.seq + 1,
                self.next.hash,
                NewEvent {
                    id: event_id(&k, index),
                    stream: stream.clone(),
                    version,
                    occurred_at: Instant::parse("2025-03-01T10:00:00+08:00").unwrap(),
                    actor: Actor::System,
                    key: k.clone(),
                    cause: None,
                    decision: None,
                    body: body_for(stream, self.next.seq as usize),
                },
            );
            self.next = Head {
                seq: sealed.envelope.seq,
                hash: sealed.hash,
            };
            events.push(sealed);
        }
        Commit {
            key: k,
            digest: digest(digest_byte),
            events,
        }
    }

    fn batch(&self, commits: Vec<Commit>) -> AppendBatch {
        AppendBatch {
            expected_head: self.start,
            commits,
        }
    }
}

/// Appends one commit per `(key, streams)` in a single batch and returns the sealed events.
fn append(store: &dyn EventStore, commits: &[(&str, &[StreamId])]) -> Vec<SealedEvent> {
    let mut b = Builder::new(store);
    let commits: Vec<Commit> = commits.iter().map(|(k, streams)| b.commit(k, 1, streams)).collect();
    let batch = b.batch(commits);
    store.append(&batch).unwrap();
    batch.commits.into_iter().flat_map(|c| c.events).collect()
}

fn stored(events: &[&SealedEvent]) -> Vec<StoredEvent> {
    events
        .iter()
        .map(|e| StoredEvent {
            seq: e.envelope.seq,
            bytes: e.bytes.clone(),
        })
        .collect()
}

/// Everything a reader can see, to compare before and after a refused append.
#[derive(Debug, PartialEq)]
struct Visible {
    head: Head,
    log: Vec<StoredEvent>,
    streams: Vec<(u64, Vec<StoredEvent>)>,
    keys: Vec<Option<KeyRecord>>,
}

fn visible(store: &dyn EventStore, keys: &[&str]) -> Visible {
    Visible {
        head: store.head().unwrap(),
        log: store.read(0, usize::MAX).unwrap(),
        streams: [app(1), app(2), app(3), clock()]
            .iter()
            .map(|s| {
                (
                    store.stream_version(s).unwrap(),
                    store.read_stream(s, 0, usize::MAX).unwrap(),
                )
            })
            .collect(),
        keys: keys.iter().map(|k| store.key_record(&key(k)).unwrap()).collect(),
    }
}

// ---------------------------------------------------------------------------------------
// The cases

fn an_empty_store_has_the_empty_head_and_nothing_to_read(store: &dyn EventStore) {
    assert_eq!(store.head().unwrap(), Head::EMPTY);
    assert_eq!(Head::EMPTY.hash, Hash::GENESIS);
    assert!(store.read(0, 10).unwrap().is_empty());
    assert!(store.read(1, 10).unwrap().is_empty());
    assert!(store.read_stream(&app(1), 1, 10).unwrap().is_empty());
    assert_eq!(store.stream_version(&app(1)).unwrap(), 0);
    assert_eq!(store.key_record(&key("k1")).unwrap(), None);
    assert_eq!(store.get_snapshot("apps").unwrap(), None);
}

fn one_batch_of_two_commits_over_several_streams_reads_back_by_position_and_by_stream(store: &dyn EventStore) {
    let events = append(store, &[("k1", &[app(1), clock()]), ("k2", &[app(2), app(1)])]);
    let [e1, e2, e3, e4] = [&events[0], &events[1], &events[2], &events[3]];

    // By position: exactly the sealed bytes, in order, from any offset, up to max.
    assert_eq!(store.read(1, 100).unwrap(), stored(&[e1, e2, e3, e4]));
    assert_eq!(
        store.read(0, 100).unwrap(),
        stored(&[e1, e2, e3, e4]),
        "position 0 reads from the start"
    );
    assert_eq!(store.read(2, 2).unwrap(), stored(&[e2, e3]));
    assert_eq!(store.read(4, 100).unwrap(), stored(&[e4]));
    assert_eq!(store.read(5, 100).unwrap(), vec![]);
    assert_eq!(store.read(1, 0).unwrap(), vec![]);
    for event in store.read(1, 100).unwrap() {
        let envelope = decode(&event.bytes).unwrap();
        assert_eq!(envelope.seq, event.seq);
    }

    // By stream: versions gapless per stream, across the commits of the batch.
    assert_eq!(store.stream_version(&app(1)).unwrap(), 2);
    assert_eq!(store.stream_version(&app(2)).unwrap(), 1);
    assert_eq!(store.stream_version(&clock()).unwrap(), 1);
    assert_eq!(store.stream_version(&app(3)).unwrap(), 0);
    assert_eq!(
        [
            e1.envelope.version,
            e2.envelope.version,
            e3.envelope.version,
            e4.envelope.version
        ],
        [1, 1, 1, 2]
    );
    assert_eq!(store.read_stream(&app(1), 1, 100).unwrap(), stored(&[e1, e4]));
    assert_eq!(
        store.read_stream(&app(1), 0, 100).unwrap(),
        stored(&[e1, e4]),
        "version 0 reads from the start"
    );
    assert_eq!(store.read_stream(&app(1), 2, 100).unwrap(), stored(&[e4]));
    assert_eq!(store.read_stream(&app(1), 3, 100).unwrap(), vec![]);
    assert_eq!(store.read_stream(&app(1), 1, 1).unwrap(), stored(&[e1]));
    assert_eq!(store.read_stream(&app(1), 1, 0).unwrap(), vec![]);
    assert_eq!(store.read_stream(&app(2), 1, 100).unwrap(), stored(&[e3]));
    assert_eq!(store.read_stream(&clock(), 1, 100).unwrap(), stored(&[e2]));
    assert_eq!(store.read_stream(&app(3), 1, 100).unwrap(), vec![]);
}

/// Reads and scans from every position, and reads of scattered positions, across appends of every size (one of 40 events:
/// more than a sled block holds), agree with what was appended; a scan stops when asked.
fn reads_and_scans_agree_from_every_position(store: &dyn EventStore) {
    let streams: Vec<StreamId> = (0..40).map(|i| app(1 + i % 3)).collect();
    let mut all = append(store, &[("k1", &streams[..1])]);
    all.extend(append(store, &[("k2", &streams[..]), ("k3", &streams[..5])]));
    all.extend(append(store, &[("k4", &streams[..17])]));
    let all: Vec<&SealedEvent> = all.iter().collect();
    let n = all.len() as u64;
    for from in 1..=n + 1 {
        let rest = &all[(from - 1) as usize..];
        assert_eq!(store.read(from, usize::MAX).unwrap(), stored(rest), "read from {from}");
        assert_eq!(
            store.read(from, 7).unwrap(),
            stored(&rest[..rest.len().min(7)]),
            "7 from {from}"
        );
        let mut scanned = Vec::new();
        let handed = store
            .scan(from, &mut |seq, bytes| {
                scanned.push(StoredEvent {
                    seq,
                    bytes: bytes.to_vec(),
                });
                scanned.len() < 5
            })
            .unwrap();
        assert_eq!(
            scanned,
            stored(&rest[..rest.len().min(5)]),
            "scan from {from}, stopping at 5"
        );
        assert_eq!(handed, scanned.len() as u64);
    }
    let wanted = [n, 3, 0, 17, n + 5, 18, 2, 40, 3];
    let expected: Vec<&SealedEvent> = wanted
        .iter()
        .filter(|&&seq| (1..=n).contains(&seq))
        .map(|&seq| all[(seq - 1) as usize])
        .collect();
    assert_eq!(
        store.read_positions(&wanted).unwrap(),
        stored(&expected),
        "positions in any order, the missing left out"
    );
    for stream in [app(1), app(2), app(3)] {
        let of_stream: Vec<&SealedEvent> = all.iter().copied().filter(|e| e.envelope.stream == stream).collect();
        assert_eq!(store.stream_version(&stream).unwrap(), of_stream.len() as u64);
        for from in 1..=of_stream.len() {
            assert_eq!(
                store.read_stream(&stream, from as u64, 4).unwrap(),
                stored(&of_stream[from - 1..(from + 3).min(of_stream.len())]),
                "{stream} from version {from}"
            );
        }
    }
}

fn stream_ids_that_prefix_one_another_stay_apart(store: &dyn EventStore) {
    let events = append(store, &[("k1", &[app(1), app(10), app(1), app(100)])]);
    assert_eq!(
        store.read_stream(&app(1), 1, 100).unwrap(),
        stored(&[&events[0], &events[2]])
    );
    assert_eq!(store.read_stream(&app(10), 1, 100).unwrap(), stored(&[&events[1]]));
    assert_eq!(store.read_stream(&app(100), 1, 100).unwrap(), stored(&[&events[3]]));
    assert_eq!(store.stream_version(&app(10)).unwrap(), 1);
}

fn the_head_advances_to_the_hash_of_the_last_event(store: &dyn EventStore) {
    let first = append(store, &[("k1", &[app(1)]), ("k2", &[clock(), app(1)])]);
    let last = first.last().unwrap();
    assert_eq!(
        store.head().unwrap(),
        Head {
            seq: 3,
            hash: last.hash
        }
    );
    assert_eq!(last.hash, Hash::of(&last.bytes));

    let second = append(store, &[("k3", &[app(1)])]);
    assert_eq!(second[0].envelope.prev, last.hash, "the next batch chains on the head");
    assert_eq!(
        store.head().unwrap(),
        Head {
            seq: 4,
            hash: second[0].hash
        }
    );
    assert_eq!(store.stream_version(&app(1)).unwrap(), 3);
}

fn a_stale_expected_head_is_refused_and_nothing_is_written(store: &dyn EventStore) {
    let mut stale = Builder::new(store);
    let late = stale.commit("late", 1, &[app(2)]);
    let late = stale.batch(vec![late]);
    append(store, &[("k1", &[app(1)])]);
    let before = visible(store, &["k1", "late"]);

    match store.append(&late) {
        Err(StoreError::HeadMoved { expected, found }) => {
            assert_eq!(expected, Head::EMPTY);
            assert_eq!(found, before.head);
        }
        other => panic!("expected HeadMoved, got {other:?}"),
    }
    assert_eq!(visible(store, &["k1", "late"]), before);
}

fn a_stale_stream_version_is_refused_and_nothing_is_written(store: &dyn EventStore) {
    append(store, &[("k1", &[app(1), app(1)])]);
    let before = visible(store, &["k2"]);

    // Sealed at the right head, but believing app 1 still at version 1.
    let mut b = Builder::new(store);
    b.versions.insert(app(1), 1);
    let commits = vec![b.commit("k2", 1, &[clock(), app(1)])];
    match store.append(&b.batch(commits)) {
        Err(StoreError::StaleStream {
            stream,
            expected,
            found,
        }) => {
            assert_eq!((stream, expected, found), (app(1), 1, 2));
        }
        other => panic!("expected StaleStream, got {other:?}"),
    }
    assert_eq!(visible(store, &["k2"]), before);
}

fn versions_are_tracked_across_the_commits_of_one_batch(store: &dyn EventStore) {
    append(store, &[("k1", &[app(1)])]);
    let before = visible(store, &["k2", "k3"]);

    // The second commit repeats version 2 of app 1, which the first commit already took.
    let mut b = Builder::new(store);
    let first = b.commit("k2", 1, &[app(1)]);
    b.versions.insert(app(1), 1);
    let second = b.commit("k3", 1, &[app(1)]);
    match store.append(&b.batch(vec![first, second])) {
        Err(StoreError::StaleStream {
            stream,
            expected,
            found,
        }) => {
            assert_eq!((stream, expected, found), (app(1), 1, 2));
        }
        other => panic!("expected StaleStream, got {other:?}"),
    }
    assert_eq!(visible(store, &["k2", "k3"]), before);
}

fn a_bad_second_commit_writes_nothing_of_the_first(store: &dyn EventStore) {
    append(store, &[("taken", &[app(3)])]);
    let before = visible(store, &["taken", "fresh"]);

    // Commit 1 is fine and touches two streams; commit 2 reuses a recorded key.
    let mut b = Builder::new(store);
    let fresh = b.commit("fresh", 1, &[app(1), clock()]);
    let reused = b.commit("taken", 2, &[app(2)]);
    match store.append(&b.batch(vec![fresh.clone(), reused])) {
        Err(StoreError::KeyConflict { key: k, first_seq }) => assert_eq!((k, first_seq), (key("taken"), 1)),
        other => panic!("expected KeyConflict, got {other:?}"),
    }
    assert_eq!(visible(store, &["taken", "fresh"]), before);

    // The same, failing on a stream instead: the first commit's streams stay untouched.
    let mut b = Builder::new(store);
    let fresh = b.commit("fresh", 1, &[app(1), clock()]);
    b.versions.insert(app(3), 0);
    let stale = b.commit("other", 1, &[app(3)]);
    assert!(matches!(
        store.append(&b.batch(vec![fresh, stale])),
        Err(StoreError::StaleStream { .. })
    ));
    assert_eq!(visible(store, &["taken", "fresh"]), before);
    assert_eq!(store.key_record(&key("other")).unwrap(), None);

    // And the first commit alone still goes in afterwards.
    let mut b = Builder::new(store);
    let fresh = b.commit("fresh", 1, &[app(1), clock()]);
    store.append(&b.batch(vec![fresh])).unwrap();
    assert_eq!(store.head().unwrap().seq, 3);
}

fn a_repeated_key_with_the_same_digest_answers_the_original_record(store: &dyn EventStore) {
    append(store, &[("k0", &[clock()]), ("k1", &[app(1), app(2)])]);
    let before = visible(store, &["k1"]);

    let mut b = Builder::new(store);
    let again = b.commit("k1", 1, &[app(1)]);
    match store.append(&b.batch(vec![again])) {
        Err(StoreError::KeyRepeated { key: k, record }) => {
            assert_eq!(k, key("k1"));
            assert_eq!(
                record,
                KeyRecord {
                    digest: digest(1),
                    first_seq: 2,
                    last_seq: 3
                }
            );
        }
        other => panic!("expected KeyRepeated, got {other:?}"),
    }
    assert_eq!(visible(store, &["k1"]), before);
}

fn a_repeated_key_with_another_digest_is_a_conflict(store: &dyn EventStore) {
    append(store, &[("k0", &[clock()]), ("k1", &[app(1), app(2)])]);
    let before = visible(store, &["k1"]);

    let mut b = Builder::new(store);
    let other = b.commit("k1", 9, &[app(1)]);
    match store.append(&b.batch(vec![other])) {
        Err(StoreError::KeyConflict { key: k, first_seq }) => assert_eq!((k, first_seq), (key("k1"), 2)),
        other => panic!("expected KeyConflict, got {other:?}"),
    }
    assert_eq!(visible(store, &["k1"]), before);
}

fn key_records_hold_the_digest_and_the_first_and_last_positions(store: &dyn EventStore) {
    let mut b = Builder::new(store);
    let c1 = b.commit("k1", 7, &[app(1)]);
    let c2 = b.commit("k2", 8, &[app(1), clock(), app(2)]);
    store.append(&b.batch(vec![c1, c2])).unwrap();
    assert_eq!(
        store.key_record(&key("k1")).unwrap(),
        Some(KeyRecord {
            digest: digest(7),
            first_seq: 1,
            last_seq: 1
        })
    );
    assert_eq!(
        store.key_record(&key("k2")).unwrap(),
        Some(KeyRecord {
            digest: digest(8),
            first_seq: 2,
            last_seq: 4
        })
    );
    assert_eq!(store.key_record(&key("k3")).unwrap(), None);
    assert_eq!(
        store.key_record(&key("k")).unwrap(),
        None,
        "a key that prefixes another is its own key"
    );
    // Another append (in sled, another window when it writes every few events).
    let mut b = Builder::new(store);
    let c3 = b.commit("k3", 9, &[app(2)]);
    store.append(&b.batch(vec![c3])).unwrap();
    let records = ["k1", "k2", "k3", "k0"].map(|k| store.key_record(&key(k)).unwrap().map(|r| r.last_seq));
    assert_eq!(records, [Some(1), Some(4), Some(5), None]);
}

fn writing_the_waiting_index_leaves_every_read_as_it_was(store: &dyn EventStore) {
    append(store, &[("k1", &[app(1), clock()]), ("k2", &[app(2)])]);
    append(store, &[("k3", &[app(1), app(3)])]);
    let before = visible(store, &["k1", "k2", "k3"]);
    store.write_waiting_index().unwrap();
    assert_eq!(visible(store, &["k1", "k2", "k3"]), before);
    store.write_waiting_index().unwrap();
    let more = append(store, &[("k4", &[app(1)])]);
    assert_eq!((more[0].envelope.seq, more[0].envelope.version), (6, 3));
    assert_eq!(
        store
            .read_stream(&app(1), 1, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![1, 4, 6]
    );
}

fn snapshots_are_put_got_and_replaced(store: &dyn EventStore) {
    assert_eq!(store.get_snapshot("apps").unwrap(), None);
    store.put_snapshot("apps", b"one").unwrap();
    store.put_snapshot("ledger", b"").unwrap();
    assert_eq!(store.get_snapshot("apps").unwrap().as_deref(), Some(&b"one"[..]));
    store.put_snapshot("apps", b"two, longer").unwrap();
    assert_eq!(
        store.get_snapshot("apps").unwrap().as_deref(),
        Some(&b"two, longer"[..])
    );
    assert_eq!(store.get_snapshot("ledger").unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(store.get_snapshot("app").unwrap(), None);
    // Several at once (the sharded projection snapshot), replacing and adding.
    store
        .put_snapshots(&[
            ("apps".to_owned(), b"three".to_vec()),
            ("apps/1".to_owned(), b"part".to_vec()),
            ("ledger".to_owned(), b"header".to_vec()),
        ])
        .unwrap();
    assert_eq!(store.get_snapshot("apps").unwrap().as_deref(), Some(&b"three"[..]));
    assert_eq!(store.get_snapshot("apps/1").unwrap().as_deref(), Some(&b"part"[..]));
    assert_eq!(store.get_snapshot("ledger").unwrap().as_deref(), Some(&b"header"[..]));
    assert_eq!(store.head().unwrap(), Head::EMPTY, "snapshots are not events");
    assert!(store.read(0, 10).unwrap().is_empty());
}

fn the_last_snapshot_in_a_range_is_found_by_name(store: &dyn EventStore) {
    let names = ["cp/7/00000003", "cp/7/00000006", "cp/70/00000001", "cp/8/00000002"];
    store
        .put_snapshots(&names.map(|n| (n.to_owned(), n.as_bytes().to_vec())))
        .unwrap();
    let last = |from: &str, to: &str| store.last_snapshot_in(from, to).unwrap().map(|(name, _)| name);
    assert_eq!(last("cp/7/", "cp/7/00000005").as_deref(), Some("cp/7/00000003"));
    assert_eq!(
        last("cp/7/", "cp/7/00000006").as_deref(),
        Some("cp/7/00000006"),
        "the bound is included"
    );
    assert_eq!(
        last("cp/7/", "cp/7/99999999").as_deref(),
        Some("cp/7/00000006"),
        "not another app's"
    );
    assert_eq!(last("cp/7/", "cp/7/00000002"), None, "nothing at or before");
    assert_eq!(last("cp/9/", "cp/9/99999999"), None);
    assert_eq!(last("cp/8/", "cp/7/"), None, "an empty range");
    let (name, bytes) = store.last_snapshot_in("cp/8/", "cp/8/9").unwrap().unwrap();
    assert_eq!(
        (name.as_str(), bytes.as_slice()),
        ("cp/8/00000002", &b"cp/8/00000002"[..])
    );
}

fn the_snapshots_in_a_range_are_read_in_name_order(store: &dyn EventStore) {
    let names = [
        "st/7/00000002",
        "st/7/00000000",
        "st/70/00000000",
        "st/8/00000000",
        "st/7/00000001",
    ];
    store
        .put_snapshots(&names.map(|n| (n.to_owned(), n.as_bytes().to_vec())))
        .unwrap();
    let names_in = |from: &str, to: &str| -> Vec<String> {
        let found = store.snapshots_in(from, to).unwrap();
        for (name, bytes) in &found {
            assert_eq!(name.as_bytes(), bytes.as_slice(), "each with its own bytes");
        }
        found.into_iter().map(|(name, _)| name).collect()
    };
    assert_eq!(
        names_in("st/7/", "st/7/99999999"),
        ["st/7/00000000", "st/7/00000001", "st/7/00000002"],
        "in name order, not another list's"
    );
    assert_eq!(
        names_in("st/7/00000001", "st/7/00000002"),
        ["st/7/00000001", "st/7/00000002"],
        "both bounds included"
    );
    assert!(names_in("st/9/", "st/9/~").is_empty());
    assert!(names_in("st/8/", "st/7/").is_empty(), "an empty range");
}

fn malformed_batches_are_refused_and_nothing_is_written(store: &dyn EventStore) {
    append(store, &[("k0", &[app(1)])]);
    let before = visible(store, &["k0", "k1", "k2"]);
    let bad = |batch: AppendBatch, what: &str| match store.append(&batch) {
        Err(StoreError::BadBatch(_)) => assert_eq!(visible(store, &["k0", "k1", "k2"]), before, "{what}"),
        other => panic!("{what}: expected BadBatch, got {other:?}"),
    };
    let good = || {
        let mut b = Builder::new(store);
        let c1 = b.commit("k1", 1, &[app(1), clock()]);
        let c2 = b.commit("k2", 1, &[app(2)]);
        b.batch(vec![c1, c2])
    };
    let reseal = |event: &SealedEvent, seq: u64, prev: Hash| {
        let e = &event.envelope;
        seal(
            seq,
            prev,
            NewEvent {
                id: e.id,
                stream: e.stream.clone(),
                version: e.version,
                occurred_at: e.occurred_at,
                actor: e.actor.clone(),
                key: e.key.clone(),
                cause: e.cause,
                decision: e.decision.clone(),
                body: e.event.clone(),
            },
        )
    };

    // A gap: the first event skips a position (and so does the rest of the chain).
    let mut batch = good();
    let mut prev = batch.expected_head.hash;
    let mut seq = batch.expected_head.seq + 1;
    for event in batch.commits.iter_mut().flat_map(|c| c.events.iter_mut()) {
        seq += 1;
        *event = reseal(event, seq, prev);
        prev = event.hash;
    }
    bad(batch, "a gap after the head");

    // A gap inside the batch, between the two commits.
    let mut batch = good();
    let last = batch.commits[1].events[0].clone();
    let before_it = batch.commits[0].events[1].hash;
    batch.commits[1].events[0] = reseal(&last, last.envelope.seq + 1, before_it);
    bad(batch, "a gap between commits");

    // A repeated position.
    let mut batch = good();
    let second = batch.commits[0].events[1].clone();
    let first_hash = batch.commits[0].events[0].hash;
    batch.commits[0].events[1] = reseal(&second, second.envelope.seq - 1, first_hash);
    bad(batch, "a repeated position");

    // A wrong prev: the right position, linked to the genesis instead of event 2.
    let mut batch = good();
    let second = batch.commits[0].events[1].clone();
    batch.commits[0].events[1] = reseal(&second, second.envelope.seq, Hash::GENESIS);
    bad(batch, "a wrong prev");

    // A first event that does not link to the head.
    let mut batch = good();
    let first = batch.commits[0].events[0].clone();
    batch.commits[0].events[0] = reseal(&first, first.envelope.seq, Hash([7; 32]));
    bad(batch, "a first prev that is not the head's hash");

    // Bytes that are not what the hash says.
    let mut batch = good();
    batch.commits[1].events[0].bytes.push(b' ');
    bad(batch, "bytes that do not match the hash");

    // The same key twice in one batch.
    let mut b = Builder::new(store);
    let c1 = b.commit("k1", 1, &[app(1)]);
    let c2 = b.commit("k1", 1, &[app(2)]);
    bad(b.batch(vec![c1, c2]), "a key twice");

    // A commit without events, first or last.
    let mut batch = good();
    batch.commits.push(Commit {
        key: key("k3"),
        digest: digest(1),
        events: vec![],
    });
    bad(batch, "an empty commit at the end");
    let mut batch = good();
    batch.commits.insert(
        0,
        Commit {
            key: key("k3"),
            digest: digest(1),
            events: vec![],
        },
    );
    bad(batch, "an empty commit at the start");

    // No commit at all.
    bad(
        AppendBatch {
            expected_head: before.head,
            commits: vec![],
        },
        "an empty batch",
    );

    // And the good batch still goes in.
    store.append(&good()).unwrap();
    assert_eq!(store.head().unwrap().seq, 4);
}

fn racing_appends_on_one_head_let_exactly_one_in(store: &dyn EventStore) {
    const THREADS: usize = 4;
    for round in 0..20 {
        let batches: Vec<AppendBatch> = (0..THREADS)
            .map(|i| {
                let mut b = Builder::new(store);
                let c = b.commit(&format!("r{round}-t{i}"), 1, &[app(1), clock()]);
                b.batch(vec![c])
            })
            .collect();
        let start = std::sync::Barrier::new(THREADS);
        let results: Vec<Result<(), StoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = batches
                .iter()
                .map(|batch| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        store.append(batch)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(()) | Err(StoreError::HeadMoved { .. }))),
            "{results:?}"
        );
        let rounds = round as u64 + 1;
        assert_eq!(store.head().unwrap().seq, 2 * rounds);
        assert_eq!(store.stream_version(&app(1)).unwrap(), rounds);
        assert_eq!(store.read(0, usize::MAX).unwrap().len() as u64, 2 * rounds);
    }
}

// ---------------------------------------------------------------------------------------
// The vault: apps' user-digest keys, apart from the log

fn vault_key(n: u8) -> [u8; 32] {
    let mut key = [n; 32];
    key[31] = !n;
    key
}

fn a_vault_key_is_put_once_and_put_returns_the_key_in_place(store: &dyn EventStore) {
    let (one, two) = (AppId(1400000001), AppId(1400000002));
    assert_eq!(store.app_key(one).unwrap(), None, "no key before the first put");
    assert_eq!(
        store.put_app_key(one, vault_key(1)).unwrap(),
        vault_key(1),
        "the first put stores its key"
    );
    assert_eq!(store.app_key(one).unwrap(), Some(vault_key(1)));

    // A second put never replaces the key: digests made under it must stay comparable.
    assert_eq!(
        store.put_app_key(one, vault_key(9)).unwrap(),
        vault_key(1),
        "a second put returns the key already there"
    );
    assert_eq!(
        store.app_key(one).unwrap(),
        Some(vault_key(1)),
        "and leaves it in place"
    );

    // Keys are per app.
    assert_eq!(store.app_key(two).unwrap(), None);
    assert_eq!(store.put_app_key(two, vault_key(2)).unwrap(), vault_key(2));
    assert_eq!(store.app_key(one).unwrap(), Some(vault_key(1)));
    assert_eq!(store.app_key(two).unwrap(), Some(vault_key(2)));

    // The vault is not the log.
    assert_eq!(store.head().unwrap(), Head::EMPTY, "vault keys are not events");
    assert!(store.read(0, 10).unwrap().is_empty());
    assert_eq!(store.get_snapshot("apps").unwrap(), None);
}

fn a_destroyed_vault_key_is_gone_and_only_that_one(store: &dyn EventStore) {
    let (one, two) = (AppId(1400000001), AppId(1400000002));
    let events = append(store, &[("k1", &[app(1400000001), clock()])]);
    store.put_app_key(one, vault_key(1)).unwrap();
    store.put_app_key(two, vault_key(2)).unwrap();

    store.destroy_app_key(one).unwrap();
    assert_eq!(
        store.app_key(one).unwrap(),
        None,
        "destroyed: the digests can no longer be tied to users"
    );
    assert_eq!(
        store.app_key(two).unwrap(),
        Some(vault_key(2)),
        "another app's key is untouched"
    );
    // Destroying is idempotent: a crash between a reclamation and its shredding repeats it.
    store.destroy_app_key(one).unwrap();
    assert_eq!(store.app_key(one).unwrap(), None);
    // Destroying a key that never existed is no error either.
    store.destroy_app_key(AppId(1400000003)).unwrap();
    assert_eq!(store.app_key(AppId(1400000003)).unwrap(), None);

    // The log is untouched by the shredding.
    assert_eq!(
        store.head().unwrap(),
        Head {
            seq: 2,
            hash: events[1].hash
        }
    );
    assert_eq!(store.read(1, 10).unwrap(), stored(&events.iter().collect::<Vec<_>>()));

    // The trait stores a key when the app has none, so a put after a destroy stores anew
    // (the ledger never asks: it checks for reclamation first).
    assert_eq!(store.put_app_key(one, vault_key(7)).unwrap(), vault_key(7));
    assert_eq!(store.app_key(one).unwrap(), Some(vault_key(7)));
}

fn racing_vault_puts_agree_on_one_key(store: &dyn EventStore) {
    const THREADS: usize = 4;
    for round in 0..20u8 {
        let app = AppId(1400000100 + u64::from(round));
        let start = std::sync::Barrier::new(THREADS);
        let returned: Vec<[u8; 32]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS as u8)
                .map(|i| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        store.put_app_key(app, vault_key(i + 1)).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let kept = store.app_key(app).unwrap().expect("one of the puts stored its key");
        assert!(
            (1..=THREADS as u8).any(|i| kept == vault_key(i)),
            "round {round}: a key that was put"
        );
        assert!(
            returned.iter().all(|k| *k == kept),
            "round {round}: every put returns the one key kept"
        );
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[test]
                fn $case() {
                    super::$case(&chat_ledger::store::MemoryStore::new());
                }
            )*
        }

        mod sled {
            $(
                #[test]
                fn $case() {
                    let dir = tempfile::TempDir::new().unwrap();
                    let store = chat_ledger::store::SledStore::open(dir.path()).unwrap();
                    super::$case(&store);
                }
            )*
        }

        /// The index (stream runs, key windows) written every few events (the default
        /// waits for 262,144): reads then mix what is in the tree with what waits in memory.
        mod sled_indexing_often {
            $(
                #[test]
                fn $case() {
                    let dir = tempfile::TempDir::new().unwrap();
                    let store = chat_ledger::store::SledStore::open(dir.path()).unwrap().write_index_every(3);
                    super::$case(&store);
                }
            )*
        }
    };
}

conformance!(
    an_empty_store_has_the_empty_head_and_nothing_to_read,
    one_batch_of_two_commits_over_several_streams_reads_back_by_position_and_by_stream,
    reads_and_scans_agree_from_every_position,
    stream_ids_that_prefix_one_another_stay_apart,
    the_head_advances_to_the_hash_of_the_last_event,
    a_stale_expected_head_is_refused_and_nothing_is_written,
    a_stale_stream_version_is_refused_and_nothing_is_written,
    versions_are_tracked_across_the_commits_of_one_batch,
    a_bad_second_commit_writes_nothing_of_the_first,
    a_repeated_key_with_the_same_digest_answers_the_original_record,
    a_repeated_key_with_another_digest_is_a_conflict,
    key_records_hold_the_digest_and_the_first_and_last_positions,
    writing_the_waiting_index_leaves_every_read_as_it_was,
    snapshots_are_put_got_and_replaced,
    the_last_snapshot_in_a_range_is_found_by_name,
    the_snapshots_in_a_range_are_read_in_name_order,
    malformed_batches_are_refused_and_nothing_is_written,
    racing_appends_on_one_head_let_exactly_one_in,
    a_vault_key_is_put_once_and_put_returns_the_key_in_place,
    a_destroyed_vault_key_is_gone_and_only_that_one,
    racing_vault_puts_agree_on_one_key,
);

#[test]
fn memory_store_is_default_constructible() {
    let store = MemoryStore::default();
    an_empty_store_has_the_empty_head_and_nothing_to_read(&store);
}

// ---------------------------------------------------------------------------------------
// sled only: durability and the documented layout

mod sled_only {
    use super::*;

    #[test]
    fn everything_survives_closing_and_reopening() {
        let dir = tempfile::TempDir::new().unwrap();
        let (events, before) = {
            let store = SledStore::open(dir.path()).unwrap();
            let events = append(&store, &[("k1", &[app(1), clock()]), ("k2", &[app(2), app(1)])]);
            store.put_snapshot("apps", b"snap").unwrap();
            (events, visible(&store, &["k1", "k2"]))
        };
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(visible(&store, &["k1", "k2"]), before);
        assert_eq!(
            store.head().unwrap(),
            Head {
                seq: 4,
                hash: events[3].hash
            }
        );
        assert_eq!(
            store.stored_head().unwrap(),
            Some(Head {
                seq: 4,
                hash: events[3].hash
            })
        );
        assert_eq!(store.get_snapshot("apps").unwrap().as_deref(), Some(&b"snap"[..]));
        // And the log goes on from where it was.
        let more = append(&store, &[("k3", &[app(1)])]);
        assert_eq!(more[0].envelope.version, 3);
        assert_eq!(store.head().unwrap().seq, 5);
    }

    #[test]
    fn vault_keys_and_their_destruction_survive_closing_and_reopening() {
        let dir = tempfile::TempDir::new().unwrap();
        let (one, two) = (AppId(1400000001), AppId(1400000002));
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put_app_key(one, vault_key(1)).unwrap();
            store.put_app_key(two, vault_key(2)).unwrap();
            store.destroy_app_key(two).unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.app_key(one).unwrap(),
            Some(vault_key(1)),
            "a stored key is still there"
        );
        assert_eq!(store.app_key(two).unwrap(), None, "a destroyed key stays destroyed");
        assert_eq!(
            store.put_app_key(one, vault_key(9)).unwrap(),
            vault_key(1),
            "after a reopen a put still returns the key in place"
        );
    }

    const CRASH_DIR: &str = "STORE_CONFORMANCE_CRASH_DIR";
    const CRASH_AFTER: &str = "STORE_CONFORMANCE_CRASH_AFTER";

    /// The child half of the test below: one acknowledged write (an append, a snapshot,
    /// a vault key stored or destroyed),
    /// then death without any destructor running (sled flushes on drop, which would hide
    /// a missing flush, and so would a second write's flush).
    fn write_then_abort(dir: &str, what: &str) -> ! {
        let store = SledStore::open(std::path::Path::new(dir)).unwrap();
        match what {
            "append" => drop(append(&store, &[("k1", &[app(1), clock()]), ("k2", &[app(2)])])),
            "appends" => {
                append(&store, &[("k1", &[app(1), clock()]), ("k2", &[app(2)])]);
                append(&store, &[("k3", &[app(1)])]);
            }
            "vault-put" => {
                store.put_app_key(AppId(1400000001), vault_key(1)).unwrap();
            }
            "vault-destroy" => store.destroy_app_key(AppId(1400000001)).unwrap(),
            _ => store.put_snapshot("apps", b"snap").unwrap(),
        }
        std::process::abort();
    }

    /// Runs this test's binary as a child that writes into `dir` and aborts.
    fn crash_child(dir: &std::path::Path, what: &str) {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sled_only::acknowledged_writes_survive_an_abort",
                "--test-threads=1",
            ])
            .env(CRASH_DIR, dir)
            .env(CRASH_AFTER, what)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child aborts after its {what}");
    }

    #[test]
    fn acknowledged_writes_survive_an_abort() {
        if let (Ok(dir), Ok(what)) = (std::env::var(CRASH_DIR), std::env::var(CRASH_AFTER)) {
            write_then_abort(&dir, &what);
        }
        let dir = tempfile::TempDir::new().unwrap();
        crash_child(dir.path(), "append");
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.head().unwrap().seq, 3);
            assert_eq!(store.stored_head().unwrap().map(|h| h.seq), Some(3));
            assert_eq!(store.read(1, 10).unwrap().len(), 3);
            assert_eq!(store.stream_version(&app(1)).unwrap(), 1);
            // The child's runs were waiting in memory: made again from the events on open.
            let seqs = |stream| {
                store
                    .read_stream(&stream, 1, 10)
                    .unwrap()
                    .iter()
                    .map(|e| e.seq)
                    .collect::<Vec<_>>()
            };
            assert_eq!((seqs(app(1)), seqs(clock()), seqs(app(2))), (vec![1], vec![2], vec![3]));
            // So were its key records: made again from the events and their digests.
            let k2 = KeyRecord {
                digest: digest(1),
                first_seq: 3,
                last_seq: 3,
            };
            assert_eq!(store.key_record(&key("k2")).unwrap(), Some(k2));
            assert_eq!(store.key_record(&key("k1")).unwrap().map(|r| r.last_seq), Some(2));
        }
        crash_child(dir.path(), "snapshot");
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.get_snapshot("apps").unwrap().as_deref(), Some(&b"snap"[..]));
            assert_eq!(store.head().unwrap().seq, 3);
        }
        crash_child(dir.path(), "vault-put");
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.app_key(AppId(1400000001)).unwrap(), Some(vault_key(1)));
        }
        crash_child(dir.path(), "vault-destroy");
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.app_key(AppId(1400000001)).unwrap(),
            None,
            "a destruction is durable on return"
        );
        assert_eq!(store.head().unwrap().seq, 3);
    }

    #[test]
    fn the_layout_is_as_documented() {
        let dir = tempfile::TempDir::new().unwrap();
        let events = {
            let store = SledStore::open(dir.path()).unwrap();
            let events = append(&store, &[("k1", &[app(1), clock()]), ("k2", &[app(1)])]);
            store.put_snapshot("apps", b"snap").unwrap();
            store.put_app_key(AppId(1400000001), vault_key(1)).unwrap();
            events
        };
        let db = chat_ledger::store::open_raw_sled(dir.path()).unwrap();
        let log = db.open_tree("log").unwrap();
        let be = |n: u64| n.to_be_bytes().to_vec();
        let cat = |parts: &[&[u8]]| parts.concat();

        // One append, then close: one block, one run per stream touched and one key window
        // (written on close): a chunk of the key records, sorted, and the window's filter.
        let bytes: Vec<&[u8]> = events.iter().map(|e| e.bytes.as_slice()).collect();
        assert_eq!(
            log.get(cat(&[b"e", &be(1)])).unwrap().unwrap().to_vec(),
            cat(&[
                &(bytes[0].len() as u32).to_be_bytes(),
                bytes[0],
                &(bytes[1].len() as u32).to_be_bytes(),
                bytes[1],
                &(bytes[2].len() as u32).to_be_bytes(),
                bytes[2]
            ]),
            "e + first seq holds the block: each event's length (u32) and sealed bytes"
        );
        assert_eq!(
            log.get(cat(&[b"s", b"app:1", &[0], &be(1)])).unwrap().unwrap().to_vec(),
            cat(&[&be(1), &be(3)]),
            "a run: the seqs of app:1's versions 1 and 2"
        );
        assert_eq!(
            log.get(cat(&[b"s", b"clock", &[0], &be(1)])).unwrap().unwrap().to_vec(),
            be(2)
        );
        assert_eq!(
            log.get(cat(&[b"K", &be(3), b"k1"])).unwrap().unwrap().to_vec(),
            cat(&[
                &2u16.to_be_bytes(),
                b"k1",
                &digest(1),
                &be(1),
                &be(2),
                &2u16.to_be_bytes(),
                b"k2",
                &digest(1),
                &be(3),
                &be(3)
            ]),
            "K + window (its last seq) + first key: each record's key length (u16), key, digest, first and last seq"
        );
        let filter = log.get(cat(&[b"F", &be(3)])).unwrap().unwrap();
        assert!(
            filter.len() > 20,
            "F + window: the filter's 20-byte header, then fingerprints"
        );
        assert_eq!(
            log.scan_prefix(b"j").count(),
            0,
            "the commits' digests (j) are gone once their window is written"
        );
        assert_eq!(
            log.get(b"h").unwrap().unwrap().to_vec(),
            cat(&[&be(3), &events[2].hash.0, &be(3)]),
            "h: the head's seq and hash, then the seq up to which the index is written (all, on close)"
        );
        assert_eq!(
            log.get(b"f").unwrap().unwrap().to_vec(),
            chat_ledger::store::LAYOUT_MARKER.to_vec()
        );
        assert_eq!(log.len(), 1 + 2 + 2 + 1 + 1, "nothing else in the log tree");
        let snapshots = db.open_tree("snapshots").unwrap();
        assert_eq!(snapshots.get("apps").unwrap().unwrap().to_vec(), b"snap".to_vec());
        let vault = db.open_tree("vault").unwrap();
        assert_eq!(
            vault.get(be(1400000001)).unwrap().unwrap().to_vec(),
            vault_key(1).to_vec(),
            "SDKAppID u64 big-endian → the 32-byte key"
        );
        assert_eq!(vault.len(), 1, "nothing else in the vault tree");

        // Without `h`, the head falls back on the last event, and says so.
        log.remove(b"h").unwrap();
        db.flush().unwrap();
        drop((log, snapshots, vault, db));
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.stored_head().unwrap(), None);
        assert_eq!(
            store.head().unwrap(),
            Head {
                seq: 3,
                hash: events[2].hash
            }
        );
    }

    #[test]
    fn damaged_index_entries_are_reported_as_corrupt() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            append(&store, &[("k1", &[app(1)])]);
        }
        {
            let db = chat_ledger::store::open_raw_sled(dir.path()).unwrap();
            let log = db.open_tree("log").unwrap();
            log.remove([b'e', 0, 0, 0, 0, 0, 0, 0, 1]).unwrap();
            log.insert(b"sclock\x00\x00\x00\x00\x00\x00\x00\x00\x01", &b"short"[..])
                .unwrap();
            let chunk = [b"K".as_slice(), &1u64.to_be_bytes(), b"k1"].concat();
            assert!(log.insert(chunk, &b"short"[..]).unwrap().is_some(), "k1's chunk");
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert!(matches!(store.read_stream(&app(1), 1, 10), Err(StoreError::Corrupt(_))));
        assert!(matches!(store.stream_version(&clock()), Err(StoreError::Corrupt(_))));
        assert!(matches!(store.key_record(&key("k1")), Err(StoreError::Corrupt(_))));
    }

    /// A store damaged past its last key window (`h` and the events gone, the window
    /// there) still opens, indexed no further than its head, and takes appends.
    #[test]
    fn a_store_without_h_and_its_last_events_opens_and_appends() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            append(&store, &[("k1", &[app(1), clock()]), ("k2", &[app(2)])]);
        }
        {
            let db = chat_ledger::store::open_raw_sled(dir.path()).unwrap();
            let log = db.open_tree("log").unwrap();
            log.remove(b"h").unwrap().expect("a head record");
            log.remove([b"e".as_slice(), &1u64.to_be_bytes()].concat())
                .unwrap()
                .expect("the one block");
            db.flush().unwrap();
        }
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.head().unwrap(), Head::EMPTY);
            append(&store, &[("k3", &[app(3)])]);
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.head().unwrap().seq, 1);
        assert!(store.key_record(&key("k3")).unwrap().is_some());
    }

    /// sled finds a recorded key as it inserts the key records (compare-and-swap), after
    /// the batch's blocks and runs: what the refused batch wrote must be gone from the tree,
    /// not only unreadable past the head.
    #[test]
    fn a_batch_refused_on_a_recorded_key_leaves_the_tree_as_it_was() {
        let dir = tempfile::TempDir::new().unwrap();
        let raw_entries = |dir: &std::path::Path| {
            let db = chat_ledger::store::open_raw_sled(dir).unwrap();
            let log = db.open_tree("log").unwrap();
            log.iter()
                .map(|e| e.unwrap())
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect::<Vec<_>>()
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            append(&store, &[("taken", &[app(3)])]);
        }
        let before = raw_entries(dir.path());
        {
            let store = SledStore::open(dir.path()).unwrap();
            let mut b = Builder::new(&store);
            // Two fresh commits over new and known streams, then the recorded key, then one more.
            let fresh = b.commit("fresh", 1, &[app(1), clock()]);
            let also = b.commit("also", 2, &[app(3), app(2)]);
            let reused = b.commit("taken", 3, &[app(2)]);
            let after = b.commit("after", 4, &[app(1)]);
            match store.append(&b.batch(vec![fresh, also, reused, after])) {
                Err(StoreError::KeyConflict { key: k, first_seq }) => assert_eq!((k, first_seq), (key("taken"), 1)),
                other => panic!("expected KeyConflict, got {other:?}"),
            }
        }
        assert_eq!(raw_entries(dir.path()), before);
        let store = SledStore::open(dir.path()).unwrap();
        let more = append(&store, &[("fresh", &[app(1)])]);
        assert_eq!((more[0].envelope.seq, more[0].envelope.version), (2, 1));
    }

    /// Rewrites the closed store in `dir` as layout 2 or 3 wrote it: a `k` record per key
    /// (from the key chunks), no key windows; layout 2 with a 40-byte `h`, layout 3 as a
    /// process that stopped with every run waiting (`h` indexed to 0, no runs).
    fn as_older_layout(dir: &std::path::Path, layout: u8) {
        let db = chat_ledger::store::open_raw_sled(dir).unwrap();
        let log = db.open_tree("log").unwrap();
        for entry in log.scan_prefix(b"K") {
            let (_, chunk) = entry.unwrap();
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let (key, record) = rest[2..].split_at(len);
                log.insert([b"k", key].concat(), &record[..48]).unwrap();
                rest = &record[48..];
            }
        }
        for prefix in [b"K", b"F", b"j"] {
            for entry in log.scan_prefix(prefix) {
                log.remove(entry.unwrap().0).unwrap();
            }
        }
        let h = log.get(b"h").unwrap().unwrap();
        if layout == 2 {
            log.insert(b"h", &h[..40]).unwrap();
        } else {
            log.insert(b"h", [&h[..40], &0u64.to_be_bytes()].concat()).unwrap();
            for entry in log.scan_prefix(b"s") {
                log.remove(entry.unwrap().0).unwrap();
            }
        }
        log.insert(b"f", format!("chat-ledger log layout {layout}").as_bytes())
            .unwrap();
        db.flush().unwrap();
    }

    /// A store of layout 2 or 3 opens as it is, reads and appends (its key records found,
    /// a repeated key refused), and is marked layout 4.
    #[test]
    fn a_store_of_layout_2_or_3_opens_and_goes_on() {
        for layout in [2, 3] {
            let dir = tempfile::TempDir::new().unwrap();
            let before = {
                let store = SledStore::open(dir.path()).unwrap();
                append(&store, &[("k1", &[app(1), clock()]), ("k2", &[app(2), app(1)])]);
                visible(&store, &["k1", "k2"])
            };
            as_older_layout(dir.path(), layout);
            {
                let db = chat_ledger::store::open_raw_sled(dir.path()).unwrap();
                let log = db.open_tree("log").unwrap();
                assert_eq!(log.scan_prefix(b"k").count(), 2, "layout {layout}: a record a key");
            }
            {
                let store = SledStore::open(dir.path()).unwrap();
                assert_eq!(visible(&store, &["k1", "k2"]), before, "layout {layout}");
                let mut b = Builder::new(&store);
                let again = b.commit("k2", 1, &[app(3)]);
                assert!(matches!(
                    store.append(&b.batch(vec![again])),
                    Err(StoreError::KeyRepeated { .. })
                ));
                let more = append(&store, &[("k3", &[app(1)])]);
                assert_eq!((more[0].envelope.seq, more[0].envelope.version), (5, 3));
                assert_eq!(store.stored_head().unwrap().map(|h| h.hash), Some(more[0].hash));
            }
            let store = SledStore::open(dir.path()).unwrap();
            let records = ["k1", "k2", "k3"].map(|k| store.key_record(&key(k)).unwrap().map(|r| r.first_seq));
            assert_eq!(records, [Some(1), Some(3), Some(5)], "layout {layout}");
            drop(store);
            let db = chat_ledger::store::open_raw_sled(dir.path()).unwrap();
            let log = db.open_tree("log").unwrap();
            assert_eq!(
                log.get(b"f").unwrap().unwrap().to_vec(),
                chat_ledger::store::LAYOUT_MARKER.to_vec()
            );
        }
    }

    /// An append that writes the waiting index writes it for committed events; torn before
    /// its `h`, it is not committed and is removed on open like the rest of it (a run, a
    /// key window, digests past the head).
    #[test]
    fn a_torn_write_of_the_waiting_index_is_removed_on_open() {
        let dir = tempfile::TempDir::new().unwrap();
        crash_child(dir.path(), "appends");
        let stray_run = [b"s".as_slice(), b"app:1", &[0], &2u64.to_be_bytes()].concat();
        let stray_chunk = [b"K".as_slice(), &5u64.to_be_bytes(), b"k9"].concat();
        let stray_filter = [b"F".as_slice(), &5u64.to_be_bytes()].concat();
        let stray_digests = [b"j".as_slice(), &5u64.to_be_bytes()].concat();
        {
            let db = chat_ledger::store::open_raw_sled(dir.path()).unwrap();
            let log = db.open_tree("log").unwrap();
            assert!(
                log.scan_prefix(b"s").next().is_none() && log.scan_prefix(b"K").next().is_none(),
                "the child's index was all waiting"
            );
            assert_eq!(log.scan_prefix(b"j").count(), 2, "a digests entry an append");
            // What a torn append that wrote the waiting index could leave: a run at app:1's
            // version 2, a key window up to its own event 5, its digests.
            log.insert(&stray_run, &77u64.to_be_bytes()[..]).unwrap();
            log.insert(&stray_chunk, &b"x"[..]).unwrap();
            log.insert(&stray_filter, &b""[..]).unwrap();
            log.insert(&stray_digests, &[9u8; 32][..]).unwrap();
            db.flush().unwrap();
        }
        {
            let store = SledStore::open(dir.path()).unwrap();
            let seqs = store
                .read_stream(&app(1), 1, 10)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>();
            assert_eq!(seqs, vec![1, 4]);
            let records = ["k1", "k3", "k9"].map(|k| store.key_record(&key(k)).unwrap().map(|r| r.first_seq));
            assert_eq!(records, [Some(1), Some(4), None]);
        }
        let db = chat_ledger::store::open_raw_sled(dir.path()).unwrap();
        let log = db.open_tree("log").unwrap();
        for stray in [&stray_run, &stray_chunk, &stray_filter, &stray_digests] {
            assert_eq!(log.get(stray).unwrap(), None, "{stray:?} is gone");
        }
        assert_eq!(
            log.get([b"s".as_slice(), b"app:1", &[0], &1u64.to_be_bytes()].concat())
                .unwrap()
                .unwrap()
                .to_vec(),
            [1u64.to_be_bytes(), 4u64.to_be_bytes()].concat(),
            "closing wrote app:1's waiting run: versions 1 and 2"
        );
        assert!(log
            .get([b"F".as_slice(), &4u64.to_be_bytes()].concat())
            .unwrap()
            .is_some());
    }

    /// What a crash in the middle of an append leaves (a prefix of its writes: blocks,
    /// digests, runs, never `h`) is removed on open; the same append then succeeds.
    #[test]
    fn a_torn_append_is_removed_on_open() {
        let dir = tempfile::TempDir::new().unwrap();
        let (first, torn) = {
            let store = SledStore::open(dir.path()).unwrap();
            let first = append(&store, &[("k1", &[app(1), clock()])]);
            let mut b = Builder::new(&store);
            let commits = vec![b.commit("k2", 2, &[app(1), app(2)]), b.commit("k3", 3, &[clock()])];
            (first, b.batch(commits))
        };
        let head = Head {
            seq: 2,
            hash: first[1].hash,
        };
        // Write the torn append's prefix by hand: every block, every run, its digests.
        {
            let db = chat_ledger::store::open_raw_sled(dir.path()).unwrap();
            let log = db.open_tree("log").unwrap();
            let events: Vec<&SealedEvent> = torn.commits.iter().flat_map(|c| &c.events).collect();
            let block = chat_ledger::store::block_of_events(events.iter().map(|e| e.bytes.as_slice()));
            log.insert([b"e".as_slice(), &3u64.to_be_bytes()].concat(), block)
                .unwrap();
            for (stream, version, seqs) in [
                ("app:1", 2u64, vec![3u64]),
                ("app:2", 1, vec![4]),
                ("clock", 2, vec![5]),
            ] {
                let key = [b"s", stream.as_bytes(), &[0], &version.to_be_bytes()].concat();
                let seqs: Vec<u8> = seqs.iter().flat_map(|s| s.to_be_bytes()).collect();
                log.insert(key, seqs).unwrap();
            }
            log.insert(
                [b"j".as_slice(), &3u64.to_be_bytes()].concat(),
                [digest(2), digest(3)].concat(),
            )
            .unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.head().unwrap(), head);
        assert_eq!(store.read(1, 10).unwrap(), stored(&first.iter().collect::<Vec<_>>()));
        assert_eq!(store.stream_version(&app(1)).unwrap(), 1);
        assert_eq!(store.stream_version(&app(2)).unwrap(), 0);
        assert_eq!(store.stream_version(&clock()).unwrap(), 1);
        assert_eq!(store.key_record(&key("k2")).unwrap(), None);
        assert!(
            store.key_record(&key("k1")).unwrap().is_some(),
            "the committed key stays"
        );
        store.append(&torn).unwrap();
        let all: Vec<&SealedEvent> = first
            .iter()
            .chain(torn.commits.iter().flat_map(|c| &c.events))
            .collect();
        assert_eq!(store.read(1, 10).unwrap(), stored(&all));
        assert_eq!(store.read_stream(&app(1), 1, 10).unwrap(), stored(&[all[0], all[2]]));
        assert_eq!(store.stream_version(&clock()).unwrap(), 2);
    }

    #[test]
    fn a_store_of_an_older_layout_is_refused_with_the_way_to_move_it() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let db = chat_ledger::store::open_raw_sled(dir.path()).unwrap();
            let log = db.open_tree("log").unwrap();
            log.insert([b"e".as_slice(), &1u64.to_be_bytes()].concat(), &b"{}"[..])
                .unwrap();
            db.flush().unwrap();
        }
        match SledStore::open(dir.path()) {
            Err(StoreError::Layout(message)) => {
                assert!(message.contains("layout 1"), "{message}");
                assert!(message.contains("chat-ledger export"), "{message}");
                assert!(message.contains("import --events"), "{message}");
            }
            Err(other) => panic!("expected Layout, got {other:?}"),
            Ok(_) => panic!("expected Layout, got a store"),
        }
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_an_io_error() {
        let dir = tempfile::TempDir::new().unwrap();
        let _store = SledStore::open(dir.path()).unwrap();
        match SledStore::open(dir.path()) {
            Err(StoreError::Io(message)) => assert!(message.contains("opening the store"), "{message}"),
            Err(other) => panic!("expected Io, got {other:?}"),
            Ok(_) => panic!("expected Io, got a second store"),
        }
    }
}
