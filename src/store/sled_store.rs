//! The embedded [`EventStore`], on sled 0.34.7.
//!
//! # On-disk layout
//!
//! Everything an append writes lives in the tree named `log` and is written by one
//! `Tree::apply_batch` (atomic on recovery), followed by a flush before `append` returns.
//! Integers are u64 big-endian, so byte order is numeric order and range scans walk in
//! position order. Keys, by their first byte:
//!
//! | key | value |
//! |---|---|
//! | `e` seq | the event's stored canonical bytes, exactly [`SealedEvent::bytes`](chat_ledger_events::SealedEvent) |
//! | `s` stream-id bytes, `0x00`, version | seq of that stream version (8 bytes) |
//! | `v` stream-id bytes | the stream's current version (8 bytes) |
//! | `k` key bytes | [`KeyRecord`]: digest (32 bytes), first_seq (8), last_seq (8) |
//! | `h` | the head: seq (8 bytes), then the hash of event seq (32 bytes) |
//!
//! Stream ids never contain `0x00` (appends refuse them), so the `s` entries of one stream
//! are exactly those under the prefix `s` stream `0x00`.
//!
//! The head is read from `h` (no scan on open). Should `h` be missing, the head is the
//! last `e` entry, found by one reverse seek; [`SledStore::stored_head`] tells the two
//! apart for `verify`.
//!
//! Projection snapshots live in the tree `snapshots` (name → bytes), flushed on each put;
//! `put_snapshots` writes several in one atomic batch.
//! Apps' user-digest keys live in the tree `vault` (SDKAppID as u64 big-endian → 32 bytes),
//! removed at reclamation. sled keeps removed values in its files until it reclaims their
//! segments, so the removal makes a key unreadable through the store, not wiped from the
//! disk at once. Nothing else is stored. sled's own file format may change between its versions: the
//! ledger's portable form is its export, not this directory.

use std::fmt::Display;
use std::path::Path;
use std::sync::Mutex;

use chat_ledger_events::{AppId, Hash, Key, StreamId};

use super::validate::{key_record, validate};
use super::{AppendBatch, EventStore, Head, KeyRecord, StoreError, StoredEvent};

const LOG_TREE: &str = "log";
const SNAPSHOT_TREE: &str = "snapshots";
const VAULT_TREE: &str = "vault";

const EVENT: u8 = b'e';
const STREAM_INDEX: u8 = b's';
const STREAM_VERSION: u8 = b'v';
const KEY: u8 = b'k';
const HEAD: &[u8] = b"h";

const KEY_RECORD_LEN: usize = 32 + 8 + 8;
const HEAD_LEN: usize = 8 + 32;

pub struct SledStore {
    db: sled::Db,
    log: sled::Tree,
    snapshots: sled::Tree,
    vault: sled::Tree,
    /// Serializes appends: the checks read the tree, so two appends validated against the
    /// same head must not both write.
    append_lock: Mutex<()>,
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`. sled locks the directory: one process
    /// at a time.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let context = || format!("opening the store in {}", dir.display());
        // Every write flushes before it returns, so sled's background flusher would only
        // add IO: durability is exactly "up to the last acknowledged append".
        let config = sled::Config::new().path(dir).flush_every_ms(None);
        let db = open_waiting_for_lock(&config).map_err(sled_error(context()))?;
        let log = db.open_tree(LOG_TREE).map_err(sled_error(context()))?;
        let snapshots = db.open_tree(SNAPSHOT_TREE).map_err(sled_error(context()))?;
        let vault = db.open_tree(VAULT_TREE).map_err(sled_error(context()))?;
        Ok(SledStore {
            db,
            log,
            snapshots,
            vault,
            append_lock: Mutex::new(()),
        })
    }

    /// The head record `h` as stored, `None` if it is missing (where [`EventStore::head`]
    /// falls back on the last event). For `verify`, which compares it with the chain.
    pub fn stored_head(&self) -> Result<Option<Head>, StoreError> {
        let Some(value) = self.log.get(HEAD).map_err(sled_error("reading the head"))? else {
            return Ok(None);
        };
        if value.len() != HEAD_LEN {
            return Err(StoreError::Corrupt(format!(
                "the head record is {} bytes, not {HEAD_LEN}",
                value.len()
            )));
        }
        Ok(Some(Head {
            seq: be_u64(&value[..8]),
            hash: Hash(value[8..].try_into().expect("32 bytes")),
        }))
    }

    /// [`EventStore::stream_version`], building the key in `buf`.
    fn version_with(&self, buf: &mut Vec<u8>, stream: &StreamId) -> Result<u64, StoreError> {
        prefixed(buf, STREAM_VERSION, stream.as_str().as_bytes());
        match self
            .log
            .get(&buf[..])
            .map_err(sled_error(format_args!("reading the version of stream {stream}")))?
        {
            None => Ok(0),
            Some(value) if value.len() == 8 => Ok(be_u64(&value)),
            Some(value) => Err(StoreError::Corrupt(format!(
                "the version of stream {stream} is {} bytes, not 8",
                value.len()
            ))),
        }
    }

    /// [`EventStore::key_record`], building the key in `buf`.
    fn key_record_with(&self, buf: &mut Vec<u8>, key: &Key) -> Result<Option<KeyRecord>, StoreError> {
        prefixed(buf, KEY, key.as_str().as_bytes());
        let Some(value) = self
            .log
            .get(&buf[..])
            .map_err(sled_error(format_args!("reading key {key}")))?
        else {
            return Ok(None);
        };
        if value.len() != KEY_RECORD_LEN {
            return Err(StoreError::Corrupt(format!(
                "the record of key {key} is {} bytes, not {KEY_RECORD_LEN}",
                value.len()
            )));
        }
        Ok(Some(KeyRecord {
            digest: value[..32].try_into().expect("32 bytes"),
            first_seq: be_u64(&value[32..40]),
            last_seq: be_u64(&value[40..]),
        }))
    }

    fn last_event_head(&self) -> Result<Head, StoreError> {
        let last = self.log.range([EVENT]..[EVENT + 1]).next_back();
        match last {
            None => Ok(Head::EMPTY),
            Some(entry) => {
                let (key, bytes) = entry.map_err(sled_error("reading the last event"))?;
                Ok(Head {
                    seq: event_seq(&key)?,
                    hash: Hash::of(&bytes),
                })
            }
        }
    }
}

impl EventStore for SledStore {
    fn recorded_head(&self) -> Result<Option<Head>, StoreError> {
        self.stored_head()
    }

    fn head(&self) -> Result<Head, StoreError> {
        match self.stored_head()? {
            Some(head) => Ok(head),
            None => self.last_event_head(),
        }
    }

    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        let _writer = self.append_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let head = self.head()?;
        // Two key buffers for the checks' lookups; the first is reused to build the writes.
        let (mut key, mut key2) = (Vec::with_capacity(64), Vec::with_capacity(64));
        let versions = validate(
            batch,
            head,
            |stream| self.version_with(&mut key, stream),
            |k| self.key_record_with(&mut key2, k),
        )?;

        let mut writes = sled::Batch::default();
        let mut last = head;
        for commit in &batch.commits {
            for event in &commit.events {
                let env = &event.envelope;
                writes.insert(&event_key(env.seq)[..], event.bytes.as_slice());
                stream_index_key(&mut key, &env.stream, env.version);
                writes.insert(key.as_slice(), &env.seq.to_be_bytes()[..]);
                last = Head {
                    seq: env.seq,
                    hash: event.hash,
                };
            }
            let record = key_record(commit);
            let mut value = [0u8; KEY_RECORD_LEN];
            value[..32].copy_from_slice(&record.digest);
            value[32..40].copy_from_slice(&record.first_seq.to_be_bytes());
            value[40..].copy_from_slice(&record.last_seq.to_be_bytes());
            prefixed(&mut key, KEY, commit.key.as_str().as_bytes());
            writes.insert(key.as_slice(), &value[..]);
        }
        for (stream, version) in versions {
            prefixed(&mut key, STREAM_VERSION, stream.as_str().as_bytes());
            writes.insert(key.as_slice(), &version.to_be_bytes()[..]);
        }
        let mut head_value = [0u8; HEAD_LEN];
        head_value[..8].copy_from_slice(&last.seq.to_be_bytes());
        head_value[8..].copy_from_slice(&last.hash.0);
        writes.insert(HEAD, &head_value[..]);

        let first = head.seq + 1;
        self.log
            .apply_batch(writes)
            .map_err(sled_error(format_args!("appending events {first} to {}", last.seq)))?;
        // A failed flush leaves the batch applied in memory but perhaps not on disk: the
        // caller gets Io and must re-read the head before deciding again.
        let flush_failed = |e| sled_error(format_args!("flushing events {first} to {}", last.seq))(e);
        self.db.flush().map_err(flush_failed)?; // ACKNOWLEDGED = FLUSHED: Ok means this batch is on disk.
        Ok(())
    }

    fn key_record(&self, key: &Key) -> Result<Option<KeyRecord>, StoreError> {
        self.key_record_with(&mut Vec::new(), key)
    }

    fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        self.version_with(&mut Vec::new(), stream)
    }

    fn read(&self, from_seq: u64, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::with_capacity(max.min(1024));
        if max == 0 {
            return Ok(out);
        }
        let start = event_key(from_seq);
        // One event (explain, as-of searches): a point lookup, far cheaper than an iterator.
        if max == 1 {
            if let Some(bytes) = self
                .log
                .get(start)
                .map_err(sled_error(format_args!("reading event {from_seq}")))?
            {
                out.push(StoredEvent {
                    seq: from_seq,
                    bytes: bytes.to_vec(),
                });
                return Ok(out);
            }
        }
        for entry in self.log.range(&start[..]..&[EVENT + 1][..]).take(max) {
            let (key, bytes) = entry.map_err(sled_error(format_args!("reading events from {from_seq}")))?;
            out.push(StoredEvent {
                seq: event_seq(&key)?,
                bytes: bytes.to_vec(),
            });
        }
        Ok(out)
    }

    fn read_stream(&self, stream: &StreamId, from_version: u64, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::with_capacity(max.min(1024));
        if max == 0 {
            return Ok(out);
        }
        let mut start = Vec::with_capacity(stream.as_str().len() + 10);
        stream_index_key(&mut start, stream, from_version);
        let mut end = start.clone();
        end.truncate(1 + stream.as_str().len());
        end.push(1); // just past the `0x00` separator: the end of this stream's entries
        for entry in self.log.range(start..end).take(max) {
            let (_, seq) = entry.map_err(sled_error(format_args!("reading stream {stream}")))?;
            if seq.len() != 8 {
                return Err(StoreError::Corrupt(format!(
                    "an index entry of stream {stream} is {} bytes, not 8",
                    seq.len()
                )));
            }
            let seq = be_u64(&seq);
            let bytes = self
                .log
                .get(event_key(seq))
                .map_err(sled_error(format_args!("reading event {seq}")))?;
            let Some(bytes) = bytes else {
                return Err(StoreError::Corrupt(format!(
                    "stream {stream} indexes event {seq}, which is missing"
                )));
            };
            out.push(StoredEvent {
                seq,
                bytes: bytes.to_vec(),
            });
        }
        Ok(out)
    }

    fn put_snapshot(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.snapshots
            .insert(name, bytes)
            .map_err(sled_error(format_args!("writing snapshot {name:?}")))?;
        self.db
            .flush()
            .map_err(sled_error(format_args!("flushing snapshot {name:?}")))?;
        Ok(())
    }

    /// One atomic batch on the `snapshots` tree, one flush.
    fn put_snapshots(&self, snapshots: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut writes = sled::Batch::default();
        for (name, bytes) in snapshots {
            writes.insert(name.as_bytes(), bytes.as_slice());
        }
        let context = format!("writing {} snapshot(s)", snapshots.len());
        self.snapshots.apply_batch(writes).map_err(sled_error(&context))?;
        self.db
            .flush()
            .map_err(sled_error(format_args!("flushing {} snapshot(s)", snapshots.len())))?;
        Ok(())
    }

    fn get_snapshot(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .snapshots
            .get(name)
            .map_err(sled_error(format_args!("reading snapshot {name:?}")))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn last_snapshot_in(&self, from: &str, to: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        if from > to {
            return Ok(None);
        }
        let Some(entry) = self.snapshots.range(from.as_bytes()..=to.as_bytes()).next_back() else {
            return Ok(None);
        };
        let (name, bytes) = entry.map_err(sled_error(format_args!("reading snapshots {from:?} to {to:?}")))?;
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| StoreError::Corrupt(format!("a snapshot name between {from:?} and {to:?} is not UTF-8")))?;
        Ok(Some((name, bytes.to_vec())))
    }

    fn app_key(&self, app: AppId) -> Result<Option<[u8; 32]>, StoreError> {
        let value = self
            .vault
            .get(app.0.to_be_bytes())
            .map_err(sled_error(format_args!("reading the key of app {app}")))?;
        value
            .map(|v| {
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("the key of app {app} is not 32 bytes")))
            })
            .transpose()
    }

    fn put_app_key(&self, app: AppId, key: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let context = || format!("storing the key of app {app}");
        let _ = self
            .vault
            .compare_and_swap(app.0.to_be_bytes(), None as Option<&[u8]>, Some(&key[..]))
            .map_err(sled_error(context()))?;
        self.db.flush().map_err(sled_error(context()))?;
        Ok(self.app_key(app)?.expect("just stored"))
    }

    fn destroy_app_key(&self, app: AppId) -> Result<(), StoreError> {
        let context = || format!("destroying the key of app {app}");
        self.vault.remove(app.0.to_be_bytes()).map_err(sled_error(context()))?;
        self.db.flush().map_err(sled_error(context()))?;
        Ok(())
    }
}

/// `e` seq.
fn event_key(seq: u64) -> [u8; 9] {
    let mut key = [EVENT; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn event_seq(key: &[u8]) -> Result<u64, StoreError> {
    match key {
        [EVENT, seq @ ..] if seq.len() == 8 => Ok(be_u64(seq)),
        _ => Err(StoreError::Corrupt(format!(
            "event key {key:?} is not `e` and an 8-byte position"
        ))),
    }
}

/// `s` stream `0x00` version, into `buf`.
fn stream_index_key(buf: &mut Vec<u8>, stream: &StreamId, version: u64) {
    prefixed(buf, STREAM_INDEX, stream.as_str().as_bytes());
    buf.push(0);
    buf.extend_from_slice(&version.to_be_bytes());
}

/// `prefix` then `rest`, into `buf`.
fn prefixed(buf: &mut Vec<u8>, prefix: u8, rest: &[u8]) {
    buf.clear();
    buf.push(prefix);
    buf.extend_from_slice(rest);
}

fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

/// How long `open` waits for the directory lock. sled 0.34 releases it a moment after the
/// last handle is dropped (its IO threads finish first: spacejam/sled#1234, #1289), so an
/// immediate reopen, by this process or the next command, can find it still held.
const LOCK_WAIT_MS: u64 = 2000;
const LOCK_RETRY_MS: u64 = 10;

/// Opens the raw sled database in `dir`, waiting for its lock as [`SledStore::open`]
/// does. For tests and tools that inspect or damage the documented layout on purpose.
pub fn open_raw(dir: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new().path(dir).flush_every_ms(None);
    open_waiting_for_lock(&config).map_err(sled_error(format!("opening {}", dir.display())))
}

/// sled 0.34.7 reports a held lock as `ErrorKind::Other` with this text (config.rs),
/// not as `WouldBlock`; both are matched so a later sled that fixes the kind still works.
fn is_lock_held(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

fn open_waiting_for_lock(config: &sled::Config) -> sled::Result<sled::Db> {
    let mut waited_ms = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if is_lock_held(&e) && waited_ms < LOCK_WAIT_MS => {
                std::thread::sleep(std::time::Duration::from_millis(LOCK_RETRY_MS));
                waited_ms += LOCK_RETRY_MS;
            }
            other => return other,
        }
    }
}

fn sled_error(context: impl Display) -> impl FnOnce(sled::Error) -> StoreError {
    move |e| match e {
        sled::Error::Corruption { at, .. } => {
            StoreError::Corrupt(format!("{context}: sled found corruption at {at:?}"))
        }
        e => StoreError::Io(format!("{context}: {e}")),
    }
}
