//! An in-memory [`EventStore`]: the reference semantics every other backend must match
//! (`tests/store_conformance.rs` runs the same suite against each), and a store for tests.
//! Nothing survives the process; `append` is "durable" as soon as the lock is released.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use chat_ledger_events::{AppId, Key, StreamId};

use super::validate::{check_keys, key_record, validate};
use super::{AppendBatch, EventStore, Head, KeyRecord, StoreError, StoredEvent};

#[derive(Debug, Default)]
struct Inner {
    head: Option<Head>,
    /// seq → stored bytes.
    events: BTreeMap<u64, Vec<u8>>,
    /// stream → the seq of each of its events, version `v` at index `v - 1`.
    streams: HashMap<StreamId, Vec<u64>>,
    keys: HashMap<Key, KeyRecord>,
    snapshots: BTreeMap<String, Vec<u8>>,
    vault: HashMap<AppId, [u8; 32]>,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation happens after all checks and cannot fail halfway, so a panic
        // elsewhere while the lock was held leaves consistent state behind.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl EventStore for MemoryStore {
    fn write_waiting_index(&self) -> Result<(), StoreError> {
        Ok(()) // its indexes are written with each append
    }

    fn head(&self) -> Result<Head, StoreError> {
        Ok(self.lock().head.unwrap_or(Head::EMPTY))
    }

    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let head = inner.head.unwrap_or(Head::EMPTY);
        let inner_ref = &*inner;
        validate(batch, head, |stream| {
            Ok(inner_ref.streams.get(stream).map_or(0, |seqs| seqs.len() as u64))
        })?;
        check_keys(batch, |key| Ok(inner_ref.keys.get(key).copied()))?;

        let inner = &mut *inner;
        for commit in &batch.commits {
            for event in &commit.events {
                let seq = event.envelope.seq;
                inner.events.insert(seq, event.bytes.clone());
                inner
                    .streams
                    .entry(event.envelope.stream.clone())
                    .or_default()
                    .push(seq);
                inner.head = Some(Head { seq, hash: event.hash });
            }
            inner.keys.insert(commit.key.clone(), key_record(commit));
        }
        Ok(())
    }

    fn key_record(&self, key: &Key) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.lock().keys.get(key).copied())
    }

    fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        Ok(self.lock().streams.get(stream).map_or(0, |seqs| seqs.len() as u64))
    }

    fn read(&self, from_seq: u64, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .events
            .range(from_seq..)
            .take(max)
            .map(|(&seq, bytes)| StoredEvent {
                seq,
                bytes: bytes.clone(),
            })
            .collect())
    }

    fn read_stream(&self, stream: &StreamId, from_version: u64, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = self.lock();
        let Some(seqs) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = usize::try_from(from_version.saturating_sub(1)).unwrap_or(usize::MAX);
        seqs.iter()
            .skip(skip)
            .take(max)
            .map(|&seq| match inner.events.get(&seq) {
                Some(bytes) => Ok(StoredEvent {
                    seq,
                    bytes: bytes.clone(),
                }),
                None => Err(StoreError::Corrupt(format!(
                    "stream {stream} indexes event {seq}, which is missing"
                ))),
            })
            .collect()
    }

    fn put_snapshot(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.lock().snapshots.insert(name.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn get_snapshot(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().snapshots.get(name).cloned())
    }

    fn last_snapshot_in(&self, from: &str, to: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        if from > to {
            return Ok(None);
        }
        let inner = self.lock();
        let last = inner
            .snapshots
            .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Included(to)))
            .next_back();
        Ok(last.map(|(name, bytes)| (name.clone(), bytes.clone())))
    }

    fn snapshots_in(&self, from: &str, to: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let inner = self.lock();
        let range = inner
            .snapshots
            .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Included(to)));
        Ok(range.map(|(name, bytes)| (name.clone(), bytes.clone())).collect())
    }

    fn app_key(&self, app: AppId) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self.lock().vault.get(&app).copied())
    }

    fn put_app_key(&self, app: AppId, key: [u8; 32]) -> Result<[u8; 32], StoreError> {
        Ok(*self.lock().vault.entry(app).or_insert(key))
    }

    fn destroy_app_key(&self, app: AppId) -> Result<(), StoreError> {
        self.lock().vault.remove(&app);
        Ok(())
    }
}
