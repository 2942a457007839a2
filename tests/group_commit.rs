//! Group commit (`chat_ledger::commit`): concurrent single inputs share flushes, every
//! caller is answered with its own outcome, the log verifies and holds exactly what was
//! sent, and one bad input in a group is refused alone. And `Ledger::submit_chunks`, which
//! decides batches while those before them are appended: keys in flight count as
//! recorded, batches decided during a flush are appended together, and a failed append
//! leaves the acknowledged batches and a rebuilt state.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chat_ledger::commit::{CommitError, GroupCommitter};
use chat_ledger::ledger::{Ledger, LedgerError, Outcome, SeededKeys};
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::{AppendBatch, EventStore, Head, KeyRecord, MemoryStore, SledStore, StoreError, StoredEvent};
use chat_ledger::verify::verify_store;
use chat_ledger_events::{decode, AppId, EventBody, Input, Key, StreamId};

const THREADS: usize = 8;
const PER_THREAD: usize = 40;
const AT: &str = "2025-05-10T12:00:00+08:00";

fn input(line: &str) -> Input {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Accounts `acct-0..n`, each with cash and an app `1400000000 + i`.
fn setup(n: usize) -> Vec<Input> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(input(&format!(
            r#"{{"key":"open-{i}","at":"2025-05-10T09:00:00+08:00","actor":"customer","type":"open_account","account":"acct-{i}","creator":{{"email":"a{i}@example.com","sms":"+1-555-0{i:03}"}}}}"#
        )));
    }
    for i in 0..n {
        out.push(input(&format!(
            r#"{{"key":"cash-{i}","at":"2025-05-10T09:01:00+08:00","actor":"customer","type":"add_funds","account":"acct-{i}","kind":"cash","amount":"1000.00"}}"#
        )));
    }
    for i in 0..n {
        out.push(input(&format!(
            r#"{{"key":"app-{i}","at":"2025-05-10T09:02:00+08:00","actor":"customer","type":"create_app","account":"acct-{i}","app":{},"name":"App {i}"}}"#,
            1_400_000_000 + i
        )));
    }
    out
}

/// Thread `t`'s `j`-th input: alternately funds for its account and an auto-renew switch of its app.
fn client_input(t: usize, j: usize, at: &str) -> Input {
    if j % 2 == 0 {
        input(&format!(
            r#"{{"key":"t{t}-{j}","at":"{at}","actor":"customer","type":"add_funds","account":"acct-{t}","kind":"gift","amount":"{}.25"}}"#,
            j + 1
        ))
    } else {
        input(&format!(
            r#"{{"key":"t{t}-{j}","at":"{at}","actor":"customer","type":"set_auto_renew","app":{},"on":{}}}"#,
            1_400_000_000 + t,
            j % 4 == 1
        ))
    }
}

fn open(store: Box<dyn EventStore>) -> Ledger {
    Ledger::open_with_keys(
        store,
        Rulebook::intl_2025(),
        Box::new(SeededKeys("group-commit".to_owned())),
    )
    .unwrap()
}

/// Every recorded input of the log from `from_seq` on.
fn recorded_inputs(store: &dyn EventStore, from_seq: u64) -> Vec<Input> {
    store
        .read(from_seq, usize::MAX)
        .unwrap()
        .iter()
        .filter_map(|e| match decode(&e.bytes).unwrap().event {
            EventBody::InputRecorded { input } => Some(input),
            _ => None,
        })
        .collect()
}

#[test]
fn concurrent_single_inputs_share_flushes_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(Box::new(SledStore::open(dir.path()).unwrap()));
    ledger.submit(&setup(THREADS)).unwrap();
    let start = ledger.head().seq + 1;

    let committer = GroupCommitter::start(ledger);
    let sent: Vec<Input> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let committer = &committer;
                s.spawn(move || {
                    let mut sent = Vec::new();
                    for j in 0..PER_THREAD {
                        let input = client_input(t, j, AT);
                        match committer.submit(input.clone()) {
                            Ok(Outcome::Recorded { refusal: None, .. }) => {}
                            other => panic!("{}: {other:?}", input.key),
                        }
                        sent.push(input);
                    }
                    sent
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let sizes = committer.group_sizes();
    let ledger = committer.shutdown();

    assert_eq!(sizes.inputs(), (THREADS * PER_THREAD) as u64, "{sizes:?}");
    assert!(sizes.max().unwrap() > 1, "no group held more than one input: {sizes:?}");
    assert!(sizes.groups() < (THREADS * PER_THREAD) as u64, "{sizes:?}");

    let report = verify_store(ledger.store(), None).unwrap().expect("the log verifies");
    assert_eq!(report.head, ledger.head());
    let logged: HashSet<Input> = recorded_inputs(ledger.store(), start).into_iter().collect();
    let sent_set: HashSet<Input> = sent.iter().cloned().collect();
    assert_eq!(sent_set.len(), sent.len());
    assert_eq!(logged, sent_set, "the log holds exactly the inputs sent");
    // Each client's own inputs are in its order (it waited for each acknowledgement).
    let order: Vec<Key> = recorded_inputs(ledger.store(), start)
        .into_iter()
        .map(|i| i.key)
        .collect();
    for t in 0..THREADS {
        let mine: Vec<&Key> = order
            .iter()
            .filter(|k| k.as_str().starts_with(&format!("t{t}-")))
            .collect();
        let expected: Vec<Key> = (0..PER_THREAD)
            .map(|j| Key::new(format!("t{t}-{j}")).unwrap())
            .collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
    // And the result survives a reopen.
    let head = ledger.head();
    drop(ledger);
    let reopened = open(Box::new(SledStore::open(dir.path()).unwrap()));
    assert_eq!(reopened.head(), head);
}

/// A store that delays any batch holding the key `slow` (so that what is queued meanwhile
/// forms one group), fails any batch holding the key `poison` or `refused`, and holds
/// one holding `sluggish` a while (for a batch still in flight when the next is decided).
struct GateStore {
    inner: MemoryStore,
    /// Every call of `append`, passed or failed.
    appends: Arc<AtomicUsize>,
}

/// Set once the `slow` batch is being appended.
static SLOWED: AtomicBool = AtomicBool::new(false);
/// The most commits a batch holding `poison` had.
static POISONED_COMMITS: AtomicUsize = AtomicUsize::new(0);

impl GateStore {
    fn new() -> GateStore {
        GateStore {
            inner: MemoryStore::new(),
            appends: Arc::default(),
        }
    }

    fn holds(batch: &AppendBatch, key: &str) -> bool {
        batch.commits.iter().any(|c| c.key.as_str() == key)
    }
}

impl EventStore for GateStore {
    fn head(&self) -> Result<Head, StoreError> {
        self.inner.head()
    }
    fn write_waiting_index(&self) -> Result<(), StoreError> {
        self.inner.write_waiting_index()
    }
    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if GateStore::holds(batch, "slow") {
            SLOWED.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
        }
        if GateStore::holds(batch, "poison") {
            POISONED_COMMITS.fetch_max(batch.commits.len(), Ordering::SeqCst);
            return Err(StoreError::Io("the disk refused the poisoned batch".to_owned()));
        }
        if GateStore::holds(batch, "sluggish") {
            std::thread::sleep(Duration::from_millis(200));
        }
        if GateStore::holds(batch, "refused") {
            return Err(StoreError::Io("the disk refused the batch".to_owned()));
        }
        self.inner.append(batch)
    }
    fn key_record(&self, key: &Key) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.key_record(key)
    }
    fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        self.inner.stream_version(stream)
    }
    fn read(&self, from_seq: u64, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read(from_seq, max)
    }
    fn read_stream(&self, stream: &StreamId, from_version: u64, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read_stream(stream, from_version, max)
    }
    fn put_snapshot(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.put_snapshot(name, bytes)
    }
    fn get_snapshot(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_snapshot(name)
    }
    fn last_snapshot_in(&self, from: &str, to: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        self.inner.last_snapshot_in(from, to)
    }
    fn snapshots_in(&self, from: &str, to: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.snapshots_in(from, to)
    }
    fn app_key(&self, app: AppId) -> Result<Option<[u8; 32]>, StoreError> {
        self.inner.app_key(app)
    }
    fn put_app_key(&self, app: AppId, key: [u8; 32]) -> Result<[u8; 32], StoreError> {
        self.inner.put_app_key(app, key)
    }
    fn destroy_app_key(&self, app: AppId) -> Result<(), StoreError> {
        self.inner.destroy_app_key(app)
    }
}

#[test]
fn a_bad_input_in_a_group_is_refused_alone() {
    let store = GateStore::new();
    let mut ledger = open(Box::new(store));
    ledger.submit(&setup(2)).unwrap();
    let start = ledger.head().seq + 1;
    let committer = GroupCommitter::start(ledger);

    let at = "2025-05-10T12:00:00+08:00";
    let funds = |key: &str, account: usize| {
        input(&format!(
            r#"{{"key":"{key}","at":"{at}","actor":"customer","type":"add_funds","account":"acct-{account}","kind":"cash","amount":"5.00"}}"#
        ))
    };
    // `slow` holds the writer in its append; everything below queues up meanwhile.
    let slow = committer.enqueue(funds("slow", 0));
    while !SLOWED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let good_1 = funds("good-1", 0);
    let late = input(
        r#"{"key":"late","at":"2025-05-10T10:00:00+08:00","actor":"customer","type":"add_funds","account":"acct-1","kind":"cash","amount":"1.00"}"#,
    );
    // The key of a setup input, with another payload.
    let conflict = funds("cash-1", 1);
    let tickets = vec![
        ("good-1", committer.enqueue(good_1.clone())),
        ("late", committer.enqueue(late)),
        ("poison", committer.enqueue(funds("poison", 1))),
        ("cash-1", committer.enqueue(conflict)),
        ("good-2", committer.enqueue(funds("good-2", 1))),
        ("good-1 again", committer.enqueue(good_1.clone())),
        ("good-3", committer.enqueue(funds("good-3", 0))),
    ];
    assert!(matches!(slow.wait(), Ok(Outcome::Recorded { refusal: None, .. })));
    let mut answers = std::collections::HashMap::new();
    for (name, ticket) in tickets {
        answers.insert(name, ticket.wait());
    }
    for good in ["good-1", "good-2", "good-3"] {
        assert!(
            matches!(answers[good], Ok(Outcome::Recorded { refusal: None, .. })),
            "{good}: {:?}",
            answers[good]
        );
    }
    assert!(
        matches!(
            answers["late"],
            Err(CommitError::Ledger(LedgerError::BeforeClock { .. }))
        ),
        "{:?}",
        answers["late"]
    );
    assert!(
        matches!(
            answers["cash-1"],
            Err(CommitError::Ledger(LedgerError::KeyConflict { .. }))
        ),
        "{:?}",
        answers["cash-1"]
    );
    assert!(
        matches!(
            answers["poison"],
            Err(CommitError::Ledger(LedgerError::Store(StoreError::Io(_))))
        ),
        "{:?}",
        answers["poison"]
    );
    let Ok(Outcome::Recorded {
        first_seq, last_seq, ..
    }) = answers["good-1"]
    else {
        unreachable!()
    };
    match &answers["good-1 again"] {
        Ok(Outcome::Repeated(record)) => assert_eq!((record.first_seq, record.last_seq), (first_seq, last_seq)),
        other => panic!("a repeat of good-1: {other:?}"),
    }
    let sizes = committer.group_sizes();
    let ledger = committer.shutdown();
    verify_store(ledger.store(), None).unwrap().expect("the log verifies");
    let keys: HashSet<String> = recorded_inputs(ledger.store(), start)
        .into_iter()
        .map(|i| i.key.as_str().to_owned())
        .collect();
    let expected: HashSet<String> = ["slow", "good-1", "good-2", "good-3"].map(String::from).into();
    assert_eq!(keys, expected);
    // good-1, poison, good-2 and good-3 were tried as one group, then one at a time.
    assert_eq!(POISONED_COMMITS.load(Ordering::SeqCst), 4);
    assert!(sizes.histogram.get(&1).copied().unwrap_or(0) >= 3, "{sizes:?}");
}

#[test]
fn a_lone_caller_pays_one_flush_per_input_and_shutdown_answers_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(Box::new(SledStore::open(dir.path()).unwrap()));
    ledger.submit(&setup(1)).unwrap();
    let committer = GroupCommitter::start(ledger);
    for j in 0..5 {
        committer.submit(client_input(0, j, AT)).unwrap();
    }
    assert_eq!(committer.group_sizes().histogram.get(&1), Some(&5));
    let handle = committer.handle();
    let queued: Vec<_> = (5..10).map(|j| handle.enqueue(client_input(0, j, AT))).collect();
    let ledger = committer.shutdown();
    for ticket in queued {
        assert!(matches!(ticket.wait(), Ok(Outcome::Recorded { .. })));
    }
    assert!(matches!(
        handle.submit(client_input(0, 10, AT)),
        Err(CommitError::Stopped)
    ));
    assert_eq!(recorded_inputs(ledger.store(), 1).len(), 3 + 10);
}

fn funds(key: &str, amount: &str) -> Input {
    input(&format!(
        r#"{{"key":"{key}","at":"{AT}","actor":"customer","type":"add_funds","account":"acct-0","kind":"cash","amount":"{amount}"}}"#
    ))
}

fn export_of(store: &dyn EventStore) -> Vec<u8> {
    let mut bytes = Vec::new();
    chat_ledger::verify::export(store, &mut bytes).unwrap();
    bytes
}

/// The outcomes and the log of `inputs` submitted as one batch after `setup(1)`.
fn as_one_batch(inputs: &[Input]) -> (Vec<Outcome>, Vec<u8>) {
    let mut whole = open(Box::new(MemoryStore::new()));
    whole.submit(&setup(1)).unwrap();
    let outcomes = whole.submit(inputs).unwrap();
    (outcomes, export_of(whole.store()))
}

#[test]
fn submit_chunks_treats_the_keys_of_the_batch_in_flight_as_recorded() {
    // In batches of two, `sluggish` comes again in the second batch while the first is in
    // flight (its append is held): a repeat, answered with the first one's record, never
    // stored twice.
    let inputs = [
        funds("a", "1.00"),
        funds("sluggish", "2.00"),
        funds("sluggish", "2.00"),
        funds("c", "3.00"),
    ];
    let mut chunked = open(Box::new(GateStore::new()));
    chunked.submit(&setup(1)).unwrap();
    let mut acks = Vec::new();
    chunked
        .submit_chunks(&inputs, 2, |first, outcomes, head| {
            acks.push((first, outcomes, head.seq))
        })
        .unwrap();
    let (outcomes, log) = as_one_batch(&inputs);
    assert!(export_of(chunked.store()) == log, "the same log as one batch");
    assert_eq!(acks.len(), 2);
    assert_eq!((acks[0].0, acks[1].0), (0, 2), "in order, by first input");
    assert_eq!(acks[1].2, chunked.head().seq);
    assert_eq!(acks[0].1, outcomes[..2].to_vec());
    assert_eq!(acks[1].1, outcomes[2..].to_vec());
    assert!(matches!(acks[1].1[0], Outcome::Repeated(_)), "{:?}", acks[1].1[0]);

    // The same key with another payload in the next batch is a conflict: the batch before
    // it is acknowledged and stored, nothing of the conflicting one.
    let mut ledger = open(Box::new(GateStore::new()));
    ledger.submit(&setup(1)).unwrap();
    let mut acked = Vec::new();
    let conflict = [
        funds("d", "1.00"),
        funds("sluggish", "2.00"),
        funds("sluggish", "9.00"),
        funds("f", "3.00"),
    ];
    let err = ledger
        .submit_chunks(&conflict, 2, |first, _, head| acked.push((first, head.seq)))
        .unwrap_err();
    assert!(matches!(err, LedgerError::KeyConflict { .. }), "{err}");
    assert_eq!(acked, vec![(0, ledger.store().head().unwrap().seq)]);
    assert_eq!(ledger.head(), ledger.store().head().unwrap());
}

/// `submit_chunks` of `inputs`, which a failed append stops: the batches acknowledged
/// before it, as (first input, head after it).
fn acks_before_a_failed_append(ledger: &mut Ledger, inputs: &[Input], chunk_inputs: usize) -> Vec<(usize, u64)> {
    let mut acked = Vec::new();
    let err = ledger
        .submit_chunks(inputs, chunk_inputs, |first, _, head| acked.push((first, head.seq)))
        .unwrap_err();
    assert!(matches!(err, LedgerError::Store(StoreError::Io(_))), "{err}");
    acked
}

#[test]
fn an_append_failing_in_flight_leaves_the_acknowledged_batches_and_a_rebuilt_state() {
    let mut ledger = open(Box::new(GateStore::new()));
    ledger.submit(&setup(1)).unwrap();
    let before = export_of(ledger.store());
    let inputs = [
        funds("g1", "1.00"),
        funds("g2", "1.00"),
        funds("g3", "1.00"),
        funds("refused", "1.00"),
        funds("g5", "1.00"),
        funds("g6", "1.00"),
    ];
    let acked = acks_before_a_failed_append(&mut ledger, &inputs, 2);
    // The third batch was decided while the second was appended, and is dropped with it.
    let head = ledger.store().head().unwrap();
    assert_eq!(acked, vec![(0, head.seq)]);
    assert_eq!(ledger.head(), head, "the state is rebuilt to what is stored");
    let keys: Vec<String> = recorded_inputs(ledger.store(), 1)
        .into_iter()
        .map(|i| i.key.as_str().to_owned())
        .filter(|k| k.starts_with('g') || k == "refused")
        .collect();
    assert_eq!(keys, ["g1", "g2"]);
    assert!(export_of(ledger.store()).starts_with(&before));
    // And the ledger goes on from there.
    ledger.submit_chunks(&inputs[2..3], 2, |_, _, _| {}).unwrap();
    assert_eq!(ledger.head(), ledger.store().head().unwrap());
}

#[test]
fn submit_chunks_appends_the_batches_decided_during_a_flush_together() {
    // One input a batch. The append of the first is held (`sluggish`): the three decided
    // meanwhile wait, and are appended together.
    let store = GateStore::new();
    let appends = Arc::clone(&store.appends);
    let mut ledger = open(Box::new(store));
    ledger.submit(&setup(1)).unwrap();
    let before = appends.load(Ordering::SeqCst);
    let inputs = ["sluggish", "b1", "b2", "b3"].map(|key| funds(key, "1.00"));
    let mut acked = Vec::new();
    ledger
        .submit_chunks(&inputs, 1, |first, outcomes, head| {
            acked.push((first, outcomes, head.seq))
        })
        .unwrap();
    let appended = appends.load(Ordering::SeqCst) - before;
    assert!(
        (1..=2).contains(&appended),
        "four batches in {appended} appends: those decided during the held one go together"
    );
    let (outcomes, log) = as_one_batch(&inputs);
    assert!(export_of(ledger.store()) == log, "the same log as one batch");
    // Each batch acknowledged on its own, in order, with its outcomes and the head after it.
    assert_eq!(acked.iter().map(|a| a.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    for (ack, outcome) in acked.iter().zip(&outcomes) {
        let Outcome::Recorded { last_seq, .. } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!((&ack.1[..], ack.2), (std::slice::from_ref(outcome), *last_seq));
    }

    // A failed append of batches waiting together: each is tried alone, and those before
    // the one that fails are stored and acknowledged, nothing after it.
    let store = GateStore::new();
    let appends = Arc::clone(&store.appends);
    let mut ledger = open(Box::new(store));
    ledger.submit(&setup(1)).unwrap();
    let start = ledger.head().seq + 1;
    let before = appends.load(Ordering::SeqCst);
    let inputs = ["sluggish", "g7", "refused", "g8"].map(|key| funds(key, "1.00"));
    let acked = acks_before_a_failed_append(&mut ledger, &inputs, 1);
    let head = ledger.store().head().unwrap();
    assert_eq!(acked.iter().map(|a| a.0).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(acked[1].1, head.seq);
    assert_eq!(ledger.head(), head, "the state is rebuilt to what is stored");
    let keys: Vec<String> = recorded_inputs(ledger.store(), start)
        .into_iter()
        .map(|i| i.key.as_str().to_owned())
        .collect();
    assert_eq!(keys, ["sluggish", "g7"]);
    // The held one alone, then the three together (refused), then g7 and `refused` alone.
    let appended = appends.load(Ordering::SeqCst) - before;
    assert!((3..=4).contains(&appended), "{appended} appends");
}
