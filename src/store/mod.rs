//! The event store: an append-only, hash-chained log with a stream index and an
//! idempotency-key index, behind a trait free of any backend's types so that a
//! server-backed store (PostgreSQL, a later issue) can implement it and pass the same
//! conformance suite (`tests/store_conformance.rs`).

mod key_windows;
mod memory;
mod sled_store;
mod validate;

pub use key_windows::DIGESTS_PER_ENTRY;
pub use memory::MemoryStore;
pub use sled_store::{block_events, block_of_events, open_raw as open_raw_sled, SledStore, LAYOUT_MARKER};

use chat_ledger_events::{AppId, Hash, Key, SealedEvent, StreamId};

/// Position and hash of the last event in the log (`seq` 0 and [`Hash::GENESIS`] when empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

impl Head {
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: Hash::GENESIS,
    };
}

/// All the events one input (or one fired deadline) produced, under its idempotency key.
#[derive(Clone, Debug)]
pub struct Commit {
    pub key: Key,
    /// Digest of the input's payload: the same key with another digest is a conflict.
    pub digest: [u8; 32],
    /// Sealed, with consecutive `seq`s continuing the previous commit of the batch.
    pub events: Vec<SealedEvent>,
}

/// Commits appended all-or-nothing, across every stream they touch.
#[derive(Clone, Debug)]
pub struct AppendBatch {
    /// The head the batch was sealed against: a store whose head moved refuses the batch.
    pub expected_head: Head,
    pub commits: Vec<Commit>,
}

/// What the idempotency index remembers of a key: its payload digest and the events its
/// input produced, so a repeat can be answered with the original outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub digest: [u8; 32],
    pub first_seq: u64,
    pub last_seq: u64,
}

/// One event as read back: its position as the store indexes it, and the stored bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the log moved: expected head {} at {}, found {} at {}; re-read and decide again", .expected.hash, .expected.seq, .found.hash, .found.seq)]
    HeadMoved { expected: Head, found: Head },
    #[error(
        "stream {stream} is at version {found}, the batch expected {expected}; re-read the stream and decide again"
    )]
    StaleStream {
        stream: StreamId,
        expected: u64,
        found: u64,
    },
    #[error("key \"{key}\" is already recorded (events {} to {}) with this payload; nothing was appended", .record.first_seq, .record.last_seq)]
    KeyRepeated { key: Key, record: KeyRecord },
    #[error(
        "key \"{key}\" is already recorded (event {first_seq}) with a different payload; use a new key for a new input"
    )]
    KeyConflict { key: Key, first_seq: u64 },
    #[error("malformed batch: {0}")]
    BadBatch(String),
    #[error("the store is damaged: {0}; run `chat-ledger verify` for the first bad position")]
    Corrupt(String),
    #[error("storage failed: {0}")]
    Io(String),
    /// The directory holds a store this build cannot read (another on-disk layout).
    #[error("{0}")]
    Layout(String),
}

/// How many events a paged reader asks the store for at once: bounds one read's memory.
pub const READ_PAGE_EVENTS: usize = 4096;

/// The contract every backend keeps. Reads by position and by stream use an index; only
/// `scan`, which walks the log on purpose (replay, verify, export), reads it in order.
/// Calls come from more than one thread at once: a ledger appends a batch on one thread
/// while it reads keys and vault keys on another (`Ledger::submit_chunks`), and a long
/// replay scans on one while it reads snapshot parts on another.
pub trait EventStore: Send + Sync {
    /// The last event's position and hash.
    fn head(&self) -> Result<Head, StoreError>;

    /// The head as the store records it apart from the events, for `verify` to compare
    /// with the chain; `None` when that record is missing. Backends that derive the head
    /// from the events alone return `head()`.
    fn recorded_head(&self) -> Result<Option<Head>, StoreError> {
        self.head().map(Some)
    }

    /// Appends every commit of the batch or none of them, and returns only once the batch
    /// is durable: an `Ok` is an acknowledgement. Checks, before writing anything: the head
    /// equals `expected_head`; `seq`s continue it without a gap and each `prev` is the hash
    /// of the event before; each event's stream version is its stream's current version + 1;
    /// no key is already recorded (same digest → `KeyRepeated`, else `KeyConflict`) or
    /// repeated inside the batch; each event carries its commit's key. The first failing
    /// check wins, in the order of `validate.rs`. An `Err(Io)` leaves the outcome unknown
    /// (the write may have reached the disk): re-read the head before deciding again.
    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError>;

    /// What the idempotency index holds for `key`.
    fn key_record(&self, key: &Key) -> Result<Option<KeyRecord>, StoreError>;

    /// The stream's current version (0 for a stream with no events).
    fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError>;

    /// Up to `max` events from position `from_seq` on, in order.
    fn read(&self, from_seq: u64, max: usize) -> Result<Vec<StoredEvent>, StoreError>;

    /// The events at `seqs` (any order; each answered in that order), leaving out positions
    /// the log does not hold. For readers of scattered positions (`explain`'s stories): a
    /// backend that stores events together may answer neighbours from one read.
    fn read_positions(&self, seqs: &[u64]) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            out.extend(self.read(seq, 1)?.into_iter().filter(|e| e.seq == seq));
        }
        Ok(out)
    }

    /// Hands each event from position `from_seq` on, in order, to `visit` (its position and
    /// stored bytes, borrowed from the store: nothing is copied) until `visit` returns
    /// `false` or the log ends. Returns how many it handed over. Replay and verify walk the
    /// log this way; a backend that cannot lend its bytes keeps this default, which pages.
    fn scan(&self, from_seq: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<u64, StoreError> {
        let (mut next, mut handed) = (from_seq, 0);
        loop {
            let page = self.read(next, READ_PAGE_EVENTS)?;
            let Some(last) = page.last() else { return Ok(handed) };
            next = last.seq + 1;
            for event in &page {
                handed += 1;
                if !visit(event.seq, &event.bytes) {
                    return Ok(handed);
                }
            }
        }
    }

    /// Up to `max` events of `stream` from stream version `from_version` on, in order.
    fn read_stream(&self, stream: &StreamId, from_version: u64, max: usize) -> Result<Vec<StoredEvent>, StoreError>;

    /// Stores a projection snapshot under `name`, replacing the previous one.
    fn put_snapshot(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError>;

    fn get_snapshot(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The snapshot with the greatest name in `from..=to` (names compared as bytes), with
    /// its bytes: how a reader finds the latest checkpoint at or before a position without
    /// knowing which were written. An index seek, not a scan.
    fn last_snapshot_in(&self, from: &str, to: &str) -> Result<Option<(String, Vec<u8>)>, StoreError>;

    /// Every snapshot with a name in `from..=to` (names compared as bytes), in name order:
    /// how a reader takes a run of parts written under one prefix (a story list's
    /// segments) in one index walk instead of one seek each.
    fn snapshots_in(&self, from: &str, to: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Stores several snapshots, in order, each replacing the previous one of its name;
    /// durable on return. Backends that can write them all at once (all or none) do; this
    /// default writes them one by one, so a failure may leave the first ones written.
    fn put_snapshots(&self, snapshots: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        for (name, bytes) in snapshots {
            self.put_snapshot(name, bytes)?;
        }
        Ok(())
    }

    /// The vault: each app's key for user-id digests, kept apart from the append-only log
    /// so that reclamation can destroy it (crypto-shredding: the digests in the log can no
    /// longer be tied to user ids, and the chain still verifies). Writes are durable on return.
    fn app_key(&self, app: AppId) -> Result<Option<[u8; 32]>, StoreError>;

    /// Stores `key` unless the app already has one; returns the app's key either way.
    fn put_app_key(&self, app: AppId, key: [u8; 32]) -> Result<[u8; 32], StoreError>;

    fn destroy_app_key(&self, app: AppId) -> Result<(), StoreError>;

    /// Writes what the store keeps waiting in memory to be written together (sled: the
    /// streams' runs and the key records), so that an open after a crash has nothing to
    /// make again; closing the store does it too. Everything acknowledged is durable
    /// without it.
    fn write_waiting_index(&self) -> Result<(), StoreError>;
}
