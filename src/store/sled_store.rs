//! The embedded [`EventStore`], on sled 0.34.7.
//!
//! # On-disk layout (layout 4)
//!
//! Everything an append writes lives in the tree named `log`. Integers are u64 big-endian,
//! so byte order is numeric order and range scans walk in position order. Keys, by their
//! first byte:
//!
//! | key | value |
//! |---|---|
//! | `f` | the layout marker, [`LAYOUT_MARKER`]; written with `h` when the tree is created |
//! | `e` first-seq | a *block*: events first-seq, first-seq + 1, … of one append, each as its length (u32) then its stored canonical bytes, exactly [`SealedEvent::bytes`](chat_ledger_events::SealedEvent); at most [`BLOCK_MAX_EVENTS`] events, and past the first at most [`BLOCK_MAX_BYTES`] |
//! | `j` seq | the *digests* (32 bytes each) of one append's commits from the one starting at seq, in order, at most [`DIGESTS_PER_ENTRY`] (192) an entry; removed once their window is written |
//! | `s` stream-id bytes, `0x00`, first-version | a *run*: the seqs (8 bytes each) of that stream's versions first-version, first-version + 1, …, written with its window |
//! | `K` window, first key bytes | a *key chunk* of the window ending at event `window`: [`KeyRecord`]s sorted by key, each as key length (u16), key, digest (32), first_seq (8), last_seq (8); at most 6 KiB past the first |
//! | `F` window | the window's binary fuse filter of its keys (`src/store/key_windows.rs`; empty: none) |
//! | `k` key bytes | a key record of layout 2 or 3 (digest, first_seq, last_seq), read, never written |
//! | `h` | the head: seq (8 bytes), the hash of event seq (32 bytes), then the *indexed seq* (8 bytes): every event up to it has its run and key record in the tree, none after it |
//!
//! Why blocks and runs: sled's cost is per entry far more than per byte, and an entry per
//! event plus one per stream version cost 2.5 entries an event (docs/BENCHMARKS.md,
//! Append). A stream's version is its last run's end, so no entry holds it.
//!
//! Why the index waits: a bulk batch touches most of its streams once, so a run per stream
//! per append was half of what an append wrote, and a key record per input most of the
//! rest. The runs and key records of the events past the indexed seq wait in memory (the
//! *waiting index*: one run per stream, one record per key) and are written together —
//! each stream's run as one entry, the key records as a *key window* of sorted chunks and
//! a filter. Once [`WAITING_EVENTS_MAX`] events wait, the window is written on a thread
//! of its own while appends go on (the next window waits meanwhile); the first append
//! after it is done commits it, its `h` naming the window's last event as indexed. On
//! close (`Drop`) that thread is joined and the rest written at once (runs, key window,
//! then `h`, then a flush). A bulk append writes its blocks and a few `j` entries.
//! Reads of a stream take the waiting runs for their versions and the tree for the ones
//! before (the window being written is read from memory too, until committed); a key is
//! looked up in the waiting records, then in each written window whose
//! filter may hold it, newest first (a key never recorded reads nothing, but for a false
//! positive of < 0.4 % a window), then in the `k` records of layout 2 or 3. After a
//! process stopped without closing the store, `open` makes the waiting index again by
//! decoding the events past the indexed seq (at most twice [`WAITING_EVENTS_MAX`]: a
//! window being written and the next one): a commit's
//! events are consecutive under its key, and its digest is read from `j`.
//!
//! Layout 2 (every run written by its append, a 40-byte `h`: indexed seq = head) and
//! layout 3 (runs waiting, `k` key records) open as they are: their waiting runs are
//! written, then the marker says layout 4; their `k` records stay and are read.
//!
//! Stream ids never contain `0x00` (appends refuse them), so the `s` entries of one stream
//! are exactly those under the prefix `s` stream `0x00`.
//!
//! # Atomicity: the head record is the commit point
//!
//! An append checks the batch (head, versions, keys: nothing is written for a refused
//! batch), then inserts its blocks, its digests, then `h` (with the indexed seq of a
//! window written since), then flushes. sled recovers its log up to the first torn record (`LogIter` stops there:
//! a prefix of the writes, in order), so after a crash either `h` names the append and
//! everything before it is there, or `h` still names the previous head and what is past
//! it is a torn append. [`SledStore::open`] removes such a tail (its blocks, its digests,
//! and the runs of its events, found by decoding them) before anything reads the store;
//! an append that fails half-way marks the store so the next append removes its tail
//! first. Nothing past the indexed seq is indexed in a committed store: a window written
//! but not yet committed by an `h` (a crash, or a failed write, which also puts the
//! window back in front of the waiting index) leaves runs starting at versions of events
//! past the committed indexed seq and a key window past it, and the removal takes those
//! too (after joining the thread, so that nothing writes the index meanwhile). Reads never look past the committed head. This is cheaper than
//! `apply_batch`, which logs a batch manifest and takes sled's global write lock
//! (docs/BENCHMARKS.md).
//!
//! The head is read from `h` on open. Should `h` be missing (damage: every store has one
//! from creation), the head is the last event, found by one reverse seek, the indexed seq
//! the last key window's, nothing is removed, and [`SledStore::stored_head`] tells
//! `verify`, which reports it.
//!
//! A directory written by an older build (layout 1: one `e` entry per event, a `v` entry
//! per stream, no `f`) is refused on open with [`StoreError::Layout`], which says how to
//! move it: export with the build that wrote it, import with this one.
//!
//! Projection snapshots live in the tree `snapshots` (name → bytes), flushed on each put;
//! `put_snapshots` writes several in one atomic batch.
//! Apps' user-digest keys live in the tree `vault` (SDKAppID as u64 big-endian → 32 bytes),
//! removed at reclamation. sled keeps removed values in its files until it reclaims their
//! segments, so the removal makes a key unreadable through the store, not wiped from the
//! disk at once. Nothing else is stored. sled's own file format may change between its versions: the
//! ledger's portable form is its export, not this directory.

use foldhash::{HashMap, HashMapExt};
use std::fmt::Display;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chat_ledger_events::{decode, AppId, Hash, Key, StreamId};

use super::key_windows::{
    find_in_chunk, key_hash, read_window, window_entries, window_key, KeyWindow, DIGESTS_PER_ENTRY, KEY_CHUNK,
    KEY_DIGESTS, KEY_FILTER,
};
use super::validate::{check_keys, key_record, validate};
use super::{AppendBatch, EventStore, Head, KeyRecord, StoreError, StoredEvent};

const LOG_TREE: &str = "log";
const SNAPSHOT_TREE: &str = "snapshots";
const VAULT_TREE: &str = "vault";

const LAYOUT: &[u8] = b"f";
/// The value of `f`: names the layout this module documents.
pub const LAYOUT_MARKER: &[u8] = b"chat-ledger log layout 4";
/// Layouts 2 and 3 (module doc) open as they are; their marker is rewritten to layout 4
/// (after the waiting runs are written) so that an older build refuses the store once key
/// records may be waiting.
const OLDER_MARKERS: [&[u8]; 2] = [b"chat-ledger log layout 2", b"chat-ledger log layout 3"];
const EVENT: u8 = b'e';
const STREAM_RUN: u8 = b's';
const KEY: u8 = b'k';
const HEAD: &[u8] = b"h";

/// A block holds at most this many events, so a point read copies a bounded value.
pub const BLOCK_MAX_EVENTS: usize = 16;
/// A block grows past this many bytes only with its first event (a larger event is alone).
/// Why this small: a sled leaf splits past 16 entries, and a leaf serialized over a quarter
/// of a segment (512 KiB by default) is written as a separate blob file, one per rewrite;
/// 17 blocks of 6 KiB stay under it (with 32 KiB blocks a profile showed 4 % of a bulk
/// import in creating blob files).
pub const BLOCK_MAX_BYTES: usize = 6 * 1024;

/// The runs and key records of at most this many events wait in memory (the runs merged,
/// one per stream) before they are written, as one window, on a thread of their own. Why: a bulk batch touches most of its
/// streams once, so a run an append was an entry for every stream of every batch — 0.5 of
/// the 1.13 sled entries an event of the Full append bench, and without them part (a) ran
/// in 13–14 s instead of 23; and a key record an input was then most of the rest
/// (docs/BENCHMARKS.md). Bounded so that the memory (8 bytes of run an event; a key's
/// bytes, its 48-byte record and a map entry an input; twice that while a window is
/// written) and what an open after a crash decodes again stay small.
pub const WAITING_EVENTS_MAX: usize = 1 << 18;

const KEY_RECORD_LEN: usize = 32 + 8 + 8;
/// `h`: the head's seq and hash, then the seq up to which every event's run and key record
/// is written.
const HEAD_LEN: usize = 8 + 32 + 8;
const HEAD_LEN_LAYOUT_2: usize = 8 + 32;

pub struct SledStore {
    db: sled::Db,
    log: sled::Tree,
    snapshots: sled::Tree,
    vault: sled::Tree,
    /// Serializes appends (the checks read the tree, so two appends validated against the
    /// same head must not both write), and holds the versions of the streams appends have
    /// met since open: the checks read a stream's version from the tree once, not once per
    /// append (a reverse seek was 5 % of a bulk import). One entry per stream — accounts,
    /// apps and two more — cleared when a torn tail is removed.
    append_lock: Mutex<HashMap<StreamId, u64>>,
    /// The committed head: `h` as this process last wrote or read it. Reads stop there.
    committed: RwLock<Head>,
    /// An append failed after its first write: the next append removes its tail first.
    torn: AtomicBool,
    /// The index of the committed events past `h`'s indexed seq, not yet in the tree, and
    /// the filters of the key windows that are.
    index: RwLock<IndexInMemory>,
    /// [`WAITING_EVENTS_MAX`] unless a test asks for less ([`SledStore::write_index_every`]).
    waiting_events_max: usize,
    /// The tree holds key records of layout 2 or 3 (`k`): a lookup reads them last.
    older_key_records: bool,
    /// The `j` entries up to this seq belong to written windows: the next append removes
    /// them first (0: none).
    stale_digests_to: AtomicU64,
}

#[derive(Default)]
struct IndexInMemory {
    /// Every event up to this seq has its run and key record in the tree (`h` says so);
    /// none after it does.
    indexed_to: u64,
    /// A full window, written into the tree on its own thread; the next append after it is
    /// done commits it with its `h`. Its events come before `waiting`'s.
    writing: Option<WindowWrite>,
    waiting: WaitingIndex,
    /// The written key windows, oldest first.
    key_windows: Vec<KeyWindow>,
}

impl IndexInMemory {
    /// What a read consults before the tree, newest first.
    fn in_memory(&self) -> impl Iterator<Item = &WaitingIndex> {
        std::iter::once(&self.waiting).chain(self.writing.as_ref().map(|w| &*w.index))
    }
}

/// A window's index being written ([`IndexInMemory::writing`]).
struct WindowWrite {
    /// Its last event's seq: the indexed seq once it is committed.
    last_seq: u64,
    index: Arc<WaitingIndex>,
    /// Taken when joined.
    thread: Option<std::thread::JoinHandle<sled::Result<Option<KeyWindow>>>>,
}

/// Stream runs and key records waiting to be written ([`WAITING_EVENTS_MAX`]).
#[derive(Default)]
struct WaitingIndex {
    /// Per stream: its first version not in the tree, and the seqs from that version on.
    runs: HashMap<StreamId, (u64, Vec<u8>)>,
    keys: HashMap<Key, KeyRecord>,
    events: usize,
}

impl WaitingIndex {
    /// An empty index with room for as many streams and keys as `last` (their growth was
    /// 9 % of a bulk append's thread).
    fn with_room_of(last: &WaitingIndex) -> WaitingIndex {
        WaitingIndex {
            runs: HashMap::with_capacity(last.runs.len()),
            keys: HashMap::with_capacity(last.keys.len()),
            events: 0,
        }
    }

    /// `older` then `self`, as one index (a window whose write failed, back in front):
    /// a stream's run in `self` continues its run in `older`.
    fn after(self, older: &WaitingIndex) -> WaitingIndex {
        let mut out = WaitingIndex {
            runs: older.runs.clone(),
            keys: older.keys.clone(),
            events: older.events + self.events,
        };
        for (stream, (first, seqs)) in self.runs {
            match out.runs.get_mut(&stream) {
                Some((older_first, older_seqs)) => {
                    assert_eq!(
                        *older_first + (older_seqs.len() / 8) as u64,
                        first,
                        "stream {stream}: the newer run continues the older"
                    );
                    older_seqs.extend_from_slice(&seqs);
                }
                None => {
                    out.runs.insert(stream, (first, seqs));
                }
            }
        }
        out.keys.extend(self.keys);
        out
    }

    /// Event `seq`, version `version` of `stream`, committed after the others.
    fn add(&mut self, stream: &StreamId, version: u64, seq: u64) {
        match self.runs.get_mut(stream) {
            Some((first, seqs)) => {
                assert_eq!(
                    *first + (seqs.len() / 8) as u64,
                    version,
                    "stream {stream}: versions in order"
                );
                seqs.extend_from_slice(&seq.to_be_bytes());
            }
            None => {
                self.runs.insert(stream.clone(), (version, seq.to_be_bytes().to_vec()));
            }
        }
        self.events += 1;
    }

    /// The stream's last version, if it has events waiting.
    fn version(&self, stream: &StreamId) -> Option<u64> {
        let (first, seqs) = self.runs.get(stream)?;
        Some(first + (seqs.len() / 8) as u64 - 1)
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`, removing a torn append's tail. sled
    /// locks the directory: one process at a time.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let context = || format!("opening the store in {}", dir.display());
        // Every write flushes before it returns, so sled's background flusher would only
        // add IO: durability is exactly "up to the last acknowledged append".
        let config = sled::Config::new().path(dir).flush_every_ms(None);
        let db = open_waiting_for_lock(&config).map_err(sled_error(context()))?;
        let log = db.open_tree(LOG_TREE).map_err(sled_error(context()))?;
        let snapshots = db.open_tree(SNAPSHOT_TREE).map_err(sled_error(context()))?;
        let vault = db.open_tree(VAULT_TREE).map_err(sled_error(context()))?;
        let upgrading = match log.get(LAYOUT).map_err(sled_error(context()))? {
            Some(marker) if marker == LAYOUT_MARKER => false,
            Some(marker) if OLDER_MARKERS.contains(&&marker[..]) => true,
            Some(marker) => {
                return Err(StoreError::Layout(format!(
                    "the store in {} has layout {:?}, this build reads {:?}: open it with the build that wrote it",
                    dir.display(),
                    String::from_utf8_lossy(&marker),
                    String::from_utf8_lossy(LAYOUT_MARKER)
                )))
            }
            None if log.first().map_err(sled_error(context()))?.is_some() => {
                return Err(StoreError::Layout(format!(
                    "the store in {} was written by an older chat-ledger (layout 1, one sled entry per event); \
                     this build reads layouts 2 to 4. Move it: `chat-ledger export` with the build that wrote it, \
                     then `chat-ledger import --events` with this one",
                    dir.display()
                )))
            }
            None => {
                let mut create = sled::Batch::default();
                create.insert(LAYOUT, LAYOUT_MARKER);
                create.insert(HEAD, &head_record(Head::EMPTY, 0)[..]);
                log.apply_batch(create).map_err(sled_error(context()))?;
                db.flush().map_err(sled_error(context()))?;
                false
            }
        };
        let older_key_records = log.scan_prefix([KEY]).next().is_some();
        let store = SledStore {
            db,
            log,
            snapshots,
            vault,
            append_lock: Mutex::new(HashMap::new()),
            committed: RwLock::new(Head::EMPTY),
            torn: AtomicBool::new(false),
            index: RwLock::new(IndexInMemory::default()),
            waiting_events_max: WAITING_EVENTS_MAX,
            older_key_records,
            stale_digests_to: AtomicU64::new(0),
        };
        // The indexed seq, and the last key window to read (past the head only if damaged).
        let (indexed_to, windows_to, waiting) = match store.head_record()? {
            Some((head, indexed_to)) => {
                store.remove_tail_after(head, indexed_to)?;
                *store.committed.write().unwrap_or_else(|p| p.into_inner()) = head;
                (indexed_to, indexed_to, store.waiting_index(indexed_to, !upgrading)?)
            }
            // Damage (`verify` reports it, so this must open): the events are indexed up to
            // the last key window (runs and key windows are written together), or all of
            // them in a store of layout 2 or 3; the waiting key records are left out if
            // the digests do not match the events.
            None => {
                let head = store.last_event_head()?;
                *store.committed.write().unwrap_or_else(|p| p.into_inner()) = head;
                let last_window = store.key_windows(u64::MAX)?.last().map(|w| w.last_seq);
                let windows_to = last_window.unwrap_or(if older_key_records { head.seq } else { 0 });
                let indexed_to = windows_to.min(head.seq);
                let waiting = match store.waiting_index(indexed_to, true) {
                    Err(StoreError::Corrupt(_)) => store.waiting_index(indexed_to, false)?,
                    other => other?,
                };
                (indexed_to, windows_to, waiting)
            }
        };
        *store.index.write().unwrap_or_else(|p| p.into_inner()) = IndexInMemory {
            indexed_to,
            writing: None,
            waiting,
            key_windows: store.key_windows(windows_to)?,
        };
        store.stale_digests_to.store(indexed_to, Ordering::Release);
        if upgrading {
            // A layout-3 store's waiting runs are written before the marker says layout 4
            // (its key records are `k` entries, read as they are).
            store.write_waiting_index()?;
            store.log.insert(LAYOUT, LAYOUT_MARKER).map_err(sled_error(context()))?;
            store.db.flush().map_err(sled_error(context()))?;
        }
        Ok(store)
    }

    /// The waiting index of the events past `indexed_to` (a process that stopped without
    /// closing the store): made again from the events, at most two windows of them, and
    /// with `keys` from their `j` digests.
    fn waiting_index(&self, indexed_to: u64, keys: bool) -> Result<WaitingIndex, StoreError> {
        let context = || format!("indexing the events after {indexed_to} again");
        let mut waiting = WaitingIndex::default();
        // Each commit's key, first and last seq: its events are consecutive, under its key.
        let mut commits: Vec<(Key, u64, u64)> = Vec::new();
        let mut bad = None;
        self.scan(indexed_to + 1, &mut |seq, bytes| match decode(bytes) {
            Ok(env) => {
                waiting.add(&env.stream, env.version, seq);
                match commits.last_mut() {
                    Some((key, _, last)) if *key == env.key => *last = seq,
                    _ => commits.push((env.key, seq, seq)),
                }
                true
            }
            Err(e) => {
                bad = Some(StoreError::Corrupt(format!("{}: event {seq}: {e}", context())));
                false
            }
        })?;
        if let Some(e) = bad {
            return Err(e);
        }
        if !keys {
            return Ok(waiting);
        }
        let mut digests: Vec<(u64, [u8; 32])> = Vec::with_capacity(commits.len());
        let mut from = Vec::with_capacity(9);
        window_key(&mut from, KEY_DIGESTS, indexed_to + 1);
        for entry in self.log.range(&from[..]..&[KEY_DIGESTS + 1][..]) {
            let (key, value) = entry.map_err(sled_error(context()))?;
            if key.len() != 9 || value.is_empty() || value.len() % 32 != 0 {
                return Err(StoreError::Corrupt(format!(
                    "{}: a digests entry is malformed",
                    context()
                )));
            }
            let first = be_u64(&key[1..]);
            digests.extend(value.chunks_exact(32).map(|d| (first, d.try_into().expect("32 bytes"))));
        }
        if digests.len() != commits.len() {
            return Err(StoreError::Corrupt(format!(
                "{}: {} commits, {} digests recorded for them",
                context(),
                commits.len(),
                digests.len()
            )));
        }
        let mut entry_first = 0;
        for ((key, first_seq, last_seq), (entry, digest)) in commits.into_iter().zip(digests) {
            // An entry's key is the first seq of its first commit.
            if entry != entry_first && entry != first_seq {
                return Err(StoreError::Corrupt(format!(
                    "{}: the digests entry at {entry} does not start at a commit",
                    context()
                )));
            }
            entry_first = entry;
            waiting.keys.insert(
                key,
                KeyRecord {
                    digest,
                    first_seq,
                    last_seq,
                },
            );
        }
        Ok(waiting)
    }

    /// The key windows written up to `indexed_to`, oldest first.
    fn key_windows(&self, indexed_to: u64) -> Result<Vec<KeyWindow>, StoreError> {
        let mut to = Vec::with_capacity(9);
        window_key(&mut to, KEY_FILTER, indexed_to);
        let mut windows = Vec::new();
        for entry in self.log.range(&[KEY_FILTER][..]..=&to[..]) {
            let (key, value) = entry.map_err(sled_error("reading the key windows"))?;
            if key.len() != 9 {
                return Err(StoreError::Corrupt("a key filter's key is not `F` and 8 bytes".into()));
            }
            windows.push(read_window(be_u64(&key[1..]), &value)?);
        }
        Ok(windows)
    }

    /// Writes the waiting index once `events` events wait, instead of `WAITING_EVENTS_MAX`
    /// (tests: the conformance suite runs with a window of a few events).
    pub fn write_index_every(mut self, events: usize) -> SledStore {
        assert!(events > 0, "at least one event a window");
        self.waiting_events_max = events;
        self
    }

    /// The head record `h` as stored, `None` if it is missing (where [`EventStore::head`]
    /// falls back on the last event). For `verify`, which compares it with the chain.
    pub fn stored_head(&self) -> Result<Option<Head>, StoreError> {
        Ok(self.head_record()?.map(|(head, _)| head))
    }

    /// `h`: the head and the seq up to which the index is written (the head itself in layout 2).
    fn head_record(&self) -> Result<Option<(Head, u64)>, StoreError> {
        let Some(value) = self.log.get(HEAD).map_err(sled_error("reading the head"))? else {
            return Ok(None);
        };
        if value.len() != HEAD_LEN && value.len() != HEAD_LEN_LAYOUT_2 {
            return Err(StoreError::Corrupt(format!(
                "the head record is {} bytes, not {HEAD_LEN}",
                value.len()
            )));
        }
        let head = Head {
            seq: be_u64(&value[..8]),
            hash: Hash(value[8..40].try_into().expect("32 bytes")),
        };
        let indexed_to = if value.len() == HEAD_LEN {
            be_u64(&value[40..])
        } else {
            head.seq
        };
        if indexed_to > head.seq {
            return Err(StoreError::Corrupt(format!(
                "the head record says runs are written up to event {indexed_to}, past the head {}",
                head.seq
            )));
        }
        Ok(Some((head, indexed_to)))
    }

    fn committed(&self) -> Head {
        *self.committed.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes what a torn append left past `head`: its blocks, its `j` digests, the runs
    /// (and in layout 2 or 3, key records) of its events, and what it may have written of the
    /// index of the committed events past `indexed_to` (an append that writes the waiting
    /// index writes it up to its own events; nothing committed is indexed past
    /// `indexed_to`): their runs, and the key window past it. Returns how many events it
    /// removed.
    fn remove_tail_after(&self, head: Head, indexed_to: u64) -> Result<usize, StoreError> {
        let context = || format!("removing a torn append after event {}", head.seq);
        let (mut removed, mut touched) = (0, false);
        let mut run_key = Vec::with_capacity(64);
        let mut key_key = Vec::with_capacity(64);
        let runs_from = indexed_to + 1;
        let start = match self.block_of(runs_from)? {
            Some((first, _)) => first,
            None => runs_from,
        };
        for block in self.log.range(&event_key(start)[..]..&[EVENT + 1][..]) {
            let (block_key, block) = block.map_err(sled_error(context()))?;
            let first = event_seq(&block_key)?;
            for (seq, bytes) in (first..).zip(block_events(&block)?) {
                if seq < runs_from {
                    continue;
                }
                let env = decode(bytes).map_err(|e| StoreError::Corrupt(format!("{}: event {seq}: {e}", context())))?;
                stream_run_key(&mut run_key, &env.stream, env.version);
                touched |= self.log.remove(&run_key[..]).map_err(sled_error(context()))?.is_some();
                if seq > head.seq {
                    if self.older_key_records {
                        prefixed(&mut key_key, KEY, env.key.as_str().as_bytes());
                        let record = self.log.get(&key_key[..]).map_err(sled_error(context()))?;
                        if let Some(value) = record {
                            if parse_key_record(&env.key, &value)?.first_seq > head.seq {
                                self.log.remove(&key_key[..]).map_err(sled_error(context()))?;
                            }
                        }
                    }
                    removed += 1;
                }
            }
            if first > head.seq {
                self.log.remove(block_key).map_err(sled_error(context()))?;
            }
        }
        for (prefix, from) in [
            (KEY_DIGESTS, head.seq + 1),
            (KEY_CHUNK, runs_from),
            (KEY_FILTER, runs_from),
        ] {
            window_key(&mut key_key, prefix, from);
            for entry in self.log.range(&key_key[..]..&[prefix + 1][..]) {
                let (key, _) = entry.map_err(sled_error(context()))?;
                self.log.remove(key).map_err(sled_error(context()))?;
                touched = true;
            }
        }
        if removed > 0 || touched {
            self.db.flush().map_err(sled_error(context()))?;
        }
        Ok(removed)
    }

    /// [`EventStore::stream_version`], building keys in `buf`: the end of the stream's last
    /// run, waiting or written.
    fn version_with(&self, buf: &mut Vec<u8>, stream: &StreamId) -> Result<u64, StoreError> {
        if let Some(version) = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .in_memory()
            .find_map(|waiting| waiting.version(stream))
        {
            return Ok(version);
        }
        let end = stream_runs_end(buf, stream);
        let last = self.log.range(&buf[..]..&end[..]).next_back();
        let Some(entry) = last else {
            return Ok(0);
        };
        let (key, seqs) = entry.map_err(sled_error(format_args!("reading the version of stream {stream}")))?;
        let first_version = be_u64(&key[key.len() - 8..]);
        Ok(first_version + run_len(stream, &seqs)? as u64 - 1)
    }

    /// [`EventStore::key_record`], building keys in `buf`: the waiting key records, then
    /// the written windows whose filter may hold the key (newest first), then the key
    /// records of layout 2 or 3.
    fn key_record_with(&self, buf: &mut Vec<u8>, key: &Key) -> Result<Option<KeyRecord>, StoreError> {
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            if let Some(record) = index.in_memory().find_map(|waiting| waiting.keys.get(key)) {
                return Ok(Some(*record));
            }
            if !index.key_windows.is_empty() {
                let hash = key_hash(key);
                for window in index.key_windows.iter().rev().filter(|w| w.may_hold(hash)) {
                    let prefix = window_key(buf, KEY_CHUNK, window.last_seq);
                    buf.extend_from_slice(key.as_str().as_bytes());
                    let Some(chunk) = self.log.range(&buf[..prefix]..=&buf[..]).next_back() else {
                        continue;
                    };
                    let (_, chunk) = chunk.map_err(sled_error(format_args!("reading key {key}")))?;
                    if let Some(record) = find_in_chunk(&chunk, key)? {
                        return Ok(Some(record));
                    }
                }
            }
        }
        if !self.older_key_records {
            return Ok(None);
        }
        prefixed(buf, KEY, key.as_str().as_bytes());
        let value = self
            .log
            .get(&buf[..])
            .map_err(sled_error(format_args!("reading key {key}")))?;
        value.map(|value| parse_key_record(key, &value)).transpose()
    }

    fn last_event_head(&self) -> Result<Head, StoreError> {
        let last = self.log.range([EVENT]..[EVENT + 1]).next_back();
        match last {
            None => Ok(Head::EMPTY),
            Some(entry) => {
                let (key, block) = entry.map_err(sled_error("reading the last event"))?;
                let events = block_events(&block)?;
                let last = events.last().expect("a block holds at least one event");
                Ok(Head {
                    seq: event_seq(&key)? + events.len() as u64 - 1,
                    hash: Hash::of(last),
                })
            }
        }
    }

    /// The block holding `seq`, if any: the last block starting at or before it.
    fn block_of(&self, seq: u64) -> Result<Option<(u64, sled::IVec)>, StoreError> {
        let Some(entry) = self.log.range(&[EVENT][..]..=&event_key(seq)[..]).next_back() else {
            return Ok(None);
        };
        let (key, block) = entry.map_err(sled_error(format_args!("reading event {seq}")))?;
        Ok(Some((event_seq(&key)?, block)))
    }

    /// Event `seq`'s bytes, through `cache` (the last block read: a stream's events often
    /// share one).
    fn event_with(&self, cache: &mut Option<(u64, sled::IVec)>, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((first, block)) = cache.as_ref() {
            if *first <= seq {
                if let Some(bytes) = nth_block_event(block, seq - first)? {
                    return Ok(Some(bytes.to_vec()));
                }
            }
        }
        *cache = self.block_of(seq)?;
        let Some((first, block)) = cache.as_ref() else {
            return Ok(None);
        };
        Ok(nth_block_event(block, seq - first)?.map(|b| b.to_vec()))
    }

    /// The writes of a checked batch, in commit-point order (module doc): blocks, the
    /// commits' digests, then `h` saying the events are indexed up to `indexed_to`.
    fn write(&self, batch: &AppendBatch, last: Head, key: &mut Vec<u8>, indexed_to: u64) -> Result<(), StoreError> {
        let first = batch.expected_head.seq + 1;
        // The error's text is made only on an error (it was a `format!` an insert).
        let failed = |e| sled_error(format_args!("appending events {first} to {}", last.seq))(e);
        let mut block = Vec::with_capacity(BLOCK_MAX_BYTES);
        let (mut block_first, mut block_events) = (first, 0);
        for event in batch.commits.iter().flat_map(|c| &c.events) {
            let env = &event.envelope;
            if block_events == BLOCK_MAX_EVENTS
                || (block_events > 0 && block.len() + event.bytes.len() > BLOCK_MAX_BYTES)
            {
                self.log
                    .insert(&event_key(block_first)[..], block.as_slice())
                    .map_err(failed)?;
                (block_first, block_events) = (env.seq, 0);
                block.clear();
            }
            let len = u32::try_from(event.bytes.len()).map_err(|_| {
                StoreError::BadBatch(format!("event {} is {} bytes, over 4 GiB", env.seq, event.bytes.len()))
            })?;
            block.extend_from_slice(&len.to_be_bytes());
            block.extend_from_slice(&event.bytes);
            block_events += 1;
        }
        self.log
            .insert(&event_key(block_first)[..], block.as_slice())
            .map_err(failed)?;
        // What an open after a crash cannot read back from the events: each commit's digest.
        let mut digests = Vec::with_capacity(DIGESTS_PER_ENTRY * 32);
        for commits in batch.commits.chunks(DIGESTS_PER_ENTRY) {
            digests.clear();
            for commit in commits {
                digests.extend_from_slice(&commit.digest);
            }
            window_key(key, KEY_DIGESTS, commits[0].events[0].envelope.seq);
            self.log.insert(key.as_slice(), digests.as_slice()).map_err(failed)?;
        }
        self.log
            .insert(HEAD, &head_record(last, indexed_to)[..])
            .map_err(failed)?;
        Ok(())
    }

    /// Joins the window being written, if it is done or `wait`: its last seq and key window
    /// (`None` inside: it had no keys), for the next `h` to commit — then call
    /// [`SledStore::committed_window`], or [`SledStore::window_failed`] if that `h` is not
    /// written. A failed write of the window puts it back in front of the waiting index
    /// (`window_failed`) and is an error.
    fn join_window_write(&self, wait: bool) -> Result<Option<(u64, Option<KeyWindow>)>, StoreError> {
        let (last_seq, thread) = {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            let Some(writing) = index.writing.as_mut() else {
                return Ok(None);
            };
            let done = writing.thread.as_ref().is_none_or(|t| t.is_finished());
            if !(wait || done) {
                return Ok(None);
            }
            (writing.last_seq, writing.thread.take())
        };
        let failure = match thread.map(|t| t.join()) {
            Some(Ok(Ok(window))) => return Ok(Some((last_seq, window))),
            Some(Ok(Err(e))) => sled_error(format_args!("writing the index up to event {last_seq}"))(e),
            _ => StoreError::Io(format!("writing the index up to event {last_seq}: its thread stopped")),
        };
        self.window_failed();
        Err(failure)
    }

    /// The window joined by [`SledStore::join_window_write`] is committed: an `h` naming
    /// its last event as indexed is written. Returns it, to be freed outside the lock.
    #[must_use]
    fn committed_window(
        &self,
        index: &mut IndexInMemory,
        last_seq: u64,
        window: Option<KeyWindow>,
    ) -> Option<WindowWrite> {
        index.indexed_to = last_seq;
        index.key_windows.extend(window);
        self.stale_digests_to.store(last_seq, Ordering::Release);
        index.writing.take()
    }

    /// The window being written is not committed: what it wrote is a torn tail (removed
    /// by the next append), and its index waits again, in front of the one after it.
    fn window_failed(&self) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        if let Some(writing) = index.writing.take() {
            let newer = std::mem::take(&mut index.waiting);
            index.waiting = newer.after(&writing.index);
        }
        self.torn.store(true, Ordering::Release);
    }

    /// Starts writing the waiting index, full, on its own thread (the next append after it
    /// is done commits it). If the thread cannot start, the index keeps waiting.
    fn start_window_write(&self, index: &mut IndexInMemory, last_seq: u64) {
        debug_assert!(index.writing.is_none(), "one window written at a time");
        let next = WaitingIndex::with_room_of(&index.waiting);
        let full = Arc::new(std::mem::replace(&mut index.waiting, next));
        let (log, frozen) = (self.log.clone(), Arc::clone(&full));
        let started = std::thread::Builder::new()
            .name("chat-ledger-index".into())
            .spawn(move || write_window(&log, last_seq, &frozen));
        match started {
            Ok(thread) => {
                index.writing = Some(WindowWrite {
                    last_seq,
                    index: full,
                    thread: Some(thread),
                });
            }
            Err(_) => {
                let next = std::mem::take(&mut index.waiting);
                index.waiting = next.after(&full);
            }
        }
    }

    /// Removes the `j` entries of events already indexed (`stale_digests_to`).
    fn remove_stale_digests(&self) -> Result<(), StoreError> {
        let to = self.stale_digests_to.swap(0, Ordering::AcqRel);
        if to == 0 {
            return Ok(());
        }
        let mut end = Vec::with_capacity(9);
        window_key(&mut end, KEY_DIGESTS, to);
        for entry in self.log.range(&[KEY_DIGESTS][..]..=&end[..]) {
            let (key, _) = entry.map_err(sled_error("removing indexed digests"))?;
            self.log.remove(key).map_err(sled_error("removing indexed digests"))?;
        }
        Ok(())
    }

    /// Removes a torn append's tail (`torn`), before anything else writes.
    fn remove_torn_tail(&self, versions: &mut HashMap<StreamId, u64>) -> Result<(), StoreError> {
        if self.torn.load(Ordering::Acquire) {
            // Nothing may write the index while its tail is removed.
            if let Ok(Some(_)) = self.join_window_write(true) {
                self.window_failed();
            }
            versions.clear();
            let indexed_to = self.index.read().unwrap_or_else(|p| p.into_inner()).indexed_to;
            self.remove_tail_after(self.committed(), indexed_to)?;
            self.torn.store(false, Ordering::Release);
        }
        Ok(())
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Nothing is lost if this fails: the next open indexes the events again.
        let _ = self.write_waiting_index();
    }
}

impl EventStore for SledStore {
    /// The window being written, joined, and the waiting index, written here; then a head
    /// record saying they are written, then a flush.
    fn write_waiting_index(&self) -> Result<(), StoreError> {
        // Not beside an append: it writes `h` too.
        let mut versions = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.remove_torn_tail(&mut versions)?;
        let joined = self.join_window_write(true)?;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        if joined.is_none() && index.waiting.events == 0 {
            return Ok(());
        }
        let head = self.committed();
        let failed = |e| sled_error("writing the waiting index")(e);
        let written = write_window(&self.log, head.seq, &index.waiting)
            .and_then(|window| {
                self.log.insert(HEAD, &head_record(head, head.seq)[..])?;
                self.db.flush()?;
                Ok(window)
            })
            .map_err(failed);
        let window = match written {
            Ok(window) => window,
            Err(e) => {
                drop(index);
                self.window_failed();
                return Err(e);
            }
        };
        let done = joined.and_then(|(last_seq, joined)| self.committed_window(&mut index, last_seq, joined));
        let next = WaitingIndex::with_room_of(&index.waiting);
        let written = std::mem::replace(&mut index.waiting, next);
        index.indexed_to = head.seq;
        index.key_windows.extend(window);
        self.stale_digests_to.store(head.seq, Ordering::Release);
        drop((index, done, written));
        // What a closed store leaves is its index alone: no digests of indexed events.
        self.remove_stale_digests()?;
        self.db.flush().map_err(failed)?;
        Ok(())
    }

    fn recorded_head(&self) -> Result<Option<Head>, StoreError> {
        self.stored_head()
    }

    fn head(&self) -> Result<Head, StoreError> {
        Ok(self.committed())
    }

    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        let mut versions = self.append_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.remove_torn_tail(&mut versions)?;
        let head = self.committed();
        // The checks' key buffer, reused to build the writes.
        let mut key = Vec::with_capacity(64);
        let after = validate(batch, head, |stream| match versions.get(stream) {
            Some(&version) => Ok(version),
            None => self.version_with(&mut key, stream),
        })?;
        // Keys are checked in memory and read, never written one by one (key_windows.rs).
        check_keys(batch, |k| self.key_record_with(&mut key, k))?;
        self.remove_stale_digests()?;
        let last_event = batch
            .commits
            .last()
            .and_then(|c| c.events.last())
            .expect("validated: not empty");
        let last = Head {
            seq: last_event.envelope.seq,
            hash: last_event.hash,
        };
        // This batch fills the window when the one before it must be written already.
        let (fills, indexed_to) = {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            let events = (last.seq - head.seq) as usize;
            (
                index.waiting.events + events >= self.waiting_events_max,
                index.indexed_to,
            )
        };
        let joined = self.join_window_write(fills)?;
        let indexed_to = joined.as_ref().map_or(indexed_to, |(last_seq, _)| *last_seq);
        if let Err(e) = self.write(batch, last, &mut key, indexed_to) {
            if joined.is_some() {
                self.window_failed();
            }
            self.torn.store(true, Ordering::Release);
            return Err(e);
        }
        let done = {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            let done = joined.and_then(|(last_seq, window)| self.committed_window(&mut index, last_seq, window));
            let waiting = &mut index.waiting;
            for commit in &batch.commits {
                for event in &commit.events {
                    waiting.add(&event.envelope.stream, event.envelope.version, event.envelope.seq);
                }
                waiting.keys.insert(commit.key.clone(), key_record(commit));
            }
            if index.waiting.events >= self.waiting_events_max && index.writing.is_none() {
                self.start_window_write(&mut index, last.seq);
            }
            done
        };
        drop(done);
        *self.committed.write().unwrap_or_else(|p| p.into_inner()) = last;
        for (stream, version) in after {
            match versions.get_mut(stream) {
                Some(known) => *known = version,
                None => {
                    versions.insert(stream.clone(), version);
                }
            }
        }
        // A failed flush leaves the batch written in memory but perhaps not on disk: the
        // caller gets Io and must re-read the head before deciding again.
        let flush_failed = |e| sled_error(format_args!("flushing events {} to {}", head.seq + 1, last.seq))(e);
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
        // One event (explain, as-of searches): the block's one seek, no iterator after it.
        if max == 1 {
            if let Some(bytes) = self.event_with(&mut None, from_seq)? {
                if from_seq <= self.committed().seq {
                    out.push(StoredEvent { seq: from_seq, bytes });
                    return Ok(out);
                }
            }
        }
        self.scan(from_seq, &mut |seq, bytes| {
            out.push(StoredEvent {
                seq,
                bytes: bytes.to_vec(),
            });
            out.len() < max
        })?;
        Ok(out)
    }

    fn read_positions(&self, seqs: &[u64]) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = self.committed().seq;
        let mut cache = None;
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs.iter().filter(|&&seq| seq <= limit) {
            if let Some(bytes) = self.event_with(&mut cache, seq)? {
                out.push(StoredEvent { seq, bytes });
            }
        }
        Ok(out)
    }

    fn scan(&self, from_seq: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<u64, StoreError> {
        let limit = self.committed().seq;
        if from_seq > limit {
            return Ok(0);
        }
        // From the block holding from_seq (or, in a damaged store, the next one).
        let start = match self.block_of(from_seq)? {
            Some((first, _)) => first,
            None => from_seq,
        };
        let context = || format!("reading events from {from_seq}");
        let mut handed = 0;
        for entry in self.log.range(&event_key(start)[..]..=&event_key(limit)[..]) {
            let (key, block) = entry.map_err(sled_error(context()))?;
            let mut rest = &block[..];
            let mut seq = event_seq(&key)?;
            while let Some(bytes) = next_block_event(&mut rest)? {
                if seq > limit {
                    return Ok(handed);
                }
                if seq >= from_seq {
                    handed += 1;
                    if !visit(seq, bytes) {
                        return Ok(handed);
                    }
                }
                seq += 1;
            }
        }
        Ok(handed)
    }

    fn read_stream(&self, stream: &StreamId, from_version: u64, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = self.committed().seq;
        let mut out = Vec::with_capacity(max.min(1024));
        if max == 0 {
            return Ok(out);
        }
        // Versions from `waiting_from` on are read from the runs in memory (the window being
        // written, then the waiting one), whatever the tree holds (a thread writing them may
        // be under way). Copied out of the lock: at most `max` seqs of each from
        // `from_version` (a stream's waiting run can be long, and a binary search over
        // versions reads one at a time).
        let (waiting_from, waiting) = {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            let mut runs: Vec<(u64, Vec<u8>)> = index
                .in_memory()
                .filter_map(|waiting| waiting.runs.get(stream))
                .map(|(first, seqs)| {
                    let skip = from_version.saturating_sub(*first).min((seqs.len() / 8) as u64) as usize;
                    let count = (seqs.len() / 8 - skip).min(max);
                    (first + skip as u64, seqs[skip * 8..(skip + count) * 8].to_vec())
                })
                .collect();
            runs.reverse(); // oldest first
            let from = index
                .in_memory()
                .filter_map(|waiting| waiting.runs.get(stream))
                .map(|(first, _)| *first)
                .min()
                .unwrap_or(u64::MAX);
            (from, runs)
        };
        let mut lo = Vec::with_capacity(stream.as_str().len() + 10);
        let end = stream_runs_end(&mut lo, stream);
        let mut from = Vec::with_capacity(lo.len());
        stream_run_key(&mut from, stream, from_version);
        let context = || format!("reading stream {stream}");
        // The run holding from_version starts at or before it.
        let start = match self.log.range(&lo[..]..=&from[..]).next_back() {
            Some(entry) => entry.map_err(sled_error(context()))?.0.to_vec(),
            None => from,
        };
        let mut cache = None;
        let mut take = |version: u64, seq: u64, out: &mut Vec<StoredEvent>| -> Result<bool, StoreError> {
            if version < from_version {
                return Ok(true);
            }
            if seq > limit || out.len() == max {
                return Ok(false);
            }
            let Some(bytes) = self.event_with(&mut cache, seq)? else {
                return Err(StoreError::Corrupt(format!(
                    "stream {stream} indexes event {seq}, which is missing"
                )));
            };
            out.push(StoredEvent { seq, bytes });
            Ok(true)
        };
        if from_version < waiting_from {
            for entry in self.log.range(start..end) {
                let (key, seqs) = entry.map_err(sled_error(context()))?;
                run_len(stream, &seqs)?;
                let first_version = be_u64(&key[key.len() - 8..]);
                for (version, seq) in (first_version..).zip(seqs.chunks_exact(8).map(be_u64)) {
                    if version >= waiting_from {
                        break;
                    }
                    if !take(version, seq, &mut out)? {
                        return Ok(out);
                    }
                }
            }
        }
        for (first, seqs) in waiting {
            for (version, seq) in (first..).zip(seqs.chunks_exact(8).map(be_u64)) {
                if !take(version, seq, &mut out)? {
                    return Ok(out);
                }
            }
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
        Ok(Some((snapshot_name(&name, from, to)?, bytes.to_vec())))
    }

    fn snapshots_in(&self, from: &str, to: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let context = || format!("reading snapshots {from:?} to {to:?}");
        let mut out = Vec::new();
        for entry in self.snapshots.range(from.as_bytes()..=to.as_bytes()) {
            let (name, bytes) = entry.map_err(sled_error(context()))?;
            out.push((snapshot_name(&name, from, to)?, bytes.to_vec()));
        }
        Ok(out)
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

/// Inserts `index`'s runs and its key window (the events up to `last_seq`): what a window
/// writes before the `h` that commits it.
fn write_window(log: &sled::Tree, last_seq: u64, index: &WaitingIndex) -> sled::Result<Option<KeyWindow>> {
    insert_runs(log, index)?;
    #[cfg(test)]
    tests::window_fail_point()?;
    insert_key_window(log, last_seq, index)
}

/// Inserts `index`'s runs, one entry a stream, in key order, so that consecutive inserts
/// walk down to the same leaves (30,000–40,000 runs a window at the Full benches' sizes).
fn insert_runs(log: &sled::Tree, index: &WaitingIndex) -> sled::Result<()> {
    let mut runs: Vec<(&StreamId, &(u64, Vec<u8>))> = index.runs.iter().collect();
    runs.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut key = Vec::with_capacity(64);
    for (stream, (first, seqs)) in runs {
        stream_run_key(&mut key, stream, *first);
        log.insert(key.as_slice(), seqs.as_slice())?;
    }
    Ok(())
}

/// Inserts the key window of `index`'s records, ending at event `last_seq`. None if it has
/// no records.
fn insert_key_window(log: &sled::Tree, last_seq: u64, index: &WaitingIndex) -> sled::Result<Option<KeyWindow>> {
    let mut records: Vec<(&Key, KeyRecord)> = index.keys.iter().map(|(k, r)| (k, *r)).collect();
    if records.is_empty() {
        return Ok(None);
    }
    let (entries, window) = window_entries(last_seq, &mut records);
    for (key, value) in entries {
        log.insert(key, value)?;
    }
    Ok(Some(window))
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

/// The events of a block, in order (module doc).
pub fn block_events(block: &[u8]) -> Result<Vec<&[u8]>, StoreError> {
    let mut events = Vec::with_capacity(BLOCK_MAX_EVENTS);
    let mut rest = block;
    while let Some(bytes) = next_block_event(&mut rest)? {
        events.push(bytes);
    }
    if events.is_empty() {
        return Err(StoreError::Corrupt("an event block is empty".into()));
    }
    Ok(events)
}

/// The `n`th event of a block (from 0), without collecting the others.
fn nth_block_event(block: &[u8], n: u64) -> Result<Option<&[u8]>, StoreError> {
    let mut rest = block;
    for _ in 0..n {
        if next_block_event(&mut rest)?.is_none() {
            return Ok(None);
        }
    }
    next_block_event(&mut rest)
}

/// The event at the front of `rest`, which moves past it.
fn next_block_event<'a>(rest: &mut &'a [u8]) -> Result<Option<&'a [u8]>, StoreError> {
    if rest.is_empty() {
        return Ok(None);
    }
    let bad = |short: usize| StoreError::Corrupt(format!("an event block ends mid-event ({short} bytes left)"));
    let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(|| bad(rest.len()))?;
    let len = u32::from_be_bytes(*len) as usize;
    if tail.len() < len {
        return Err(bad(tail.len()));
    }
    let (event, tail) = tail.split_at(len);
    *rest = tail;
    Ok(Some(event))
}

/// A block holding `events`, as an append writes it.
pub fn block_of_events<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut block = Vec::new();
    for bytes in events {
        block.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        block.extend_from_slice(bytes);
    }
    block
}

/// The number of seqs in a run, checked.
fn run_len(stream: &StreamId, seqs: &[u8]) -> Result<usize, StoreError> {
    if seqs.is_empty() || seqs.len() % 8 != 0 {
        return Err(StoreError::Corrupt(format!(
            "a run of stream {stream} is {} bytes, not a positive multiple of 8",
            seqs.len()
        )));
    }
    Ok(seqs.len() / 8)
}

/// `s` stream `0x00` version, into `buf`.
fn stream_run_key(buf: &mut Vec<u8>, stream: &StreamId, version: u64) {
    prefixed(buf, STREAM_RUN, stream.as_str().as_bytes());
    buf.push(0);
    buf.extend_from_slice(&version.to_be_bytes());
}

/// A stream's runs lie in `[buf, returned)`: `buf` becomes the key of version 0, the
/// returned key is just past the `0x00` separator.
fn stream_runs_end(buf: &mut Vec<u8>, stream: &StreamId) -> Vec<u8> {
    stream_run_key(buf, stream, 0);
    let mut end = buf[..buf.len() - 8].to_vec();
    *end.last_mut().expect("the separator") = 1;
    end
}

fn head_record(head: Head, indexed_to: u64) -> [u8; HEAD_LEN] {
    debug_assert!(indexed_to <= head.seq, "runs are written for committed events only");
    let mut value = [0u8; HEAD_LEN];
    value[..8].copy_from_slice(&head.seq.to_be_bytes());
    value[8..40].copy_from_slice(&head.hash.0);
    value[40..].copy_from_slice(&indexed_to.to_be_bytes());
    value
}

/// `prefix` then `rest`, into `buf`.
fn prefixed(buf: &mut Vec<u8>, prefix: u8, rest: &[u8]) {
    buf.clear();
    buf.push(prefix);
    buf.extend_from_slice(rest);
}

/// A key record's stored value.
fn parse_key_record(key: &Key, value: &[u8]) -> Result<KeyRecord, StoreError> {
    if value.len() != KEY_RECORD_LEN {
        return Err(StoreError::Corrupt(format!(
            "the record of key {key} is {} bytes, not {KEY_RECORD_LEN}",
            value.len()
        )));
    }
    Ok(KeyRecord {
        digest: value[..32].try_into().expect("32 bytes"),
        first_seq: be_u64(&value[32..40]),
        last_seq: be_u64(&value[40..]),
    })
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

/// A snapshot's name as stored (found between `from` and `to`), back as text.
fn snapshot_name(stored: &[u8], from: &str, to: &str) -> Result<String, StoreError> {
    String::from_utf8(stored.to_vec())
        .map_err(|_| StoreError::Corrupt(format!("a snapshot name between {from:?} and {to:?} is not UTF-8")))
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use chat_ledger_events::{AccountId, Input, Key, StreamId};

    use super::SledStore;
    use crate::ledger::{Ledger, LedgerError, Outcome, SeededKeys};
    use crate::rulebook::Rulebook;
    use crate::store::{EventStore, StoreError};
    use crate::verify::verify_store;

    /// Set: the next window written on the index thread fails half-way, after its runs
    /// and before its key window (sled cannot be made to fail on demand). Only that thread
    /// takes it, so a store closing elsewhere in the tests does not.
    static FAIL_NEXT_WINDOW: AtomicBool = AtomicBool::new(false);

    pub(super) fn window_fail_point() -> sled::Result<()> {
        let on_index_thread = std::thread::current().name() == Some("chat-ledger-index");
        if on_index_thread && FAIL_NEXT_WINDOW.swap(false, Ordering::SeqCst) {
            return Err(sled::Error::Io(std::io::Error::other("the disk refused the window")));
        }
        Ok(())
    }

    fn input(key: &str, body: &str) -> Input {
        let line = format!(r#"{{"key":"{key}","at":"2025-05-10T12:00:00+08:00","actor":"customer",{body}}}"#);
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn funds(n: usize) -> Input {
        input(
            &format!("cash-{n}"),
            &format!(r#""type":"add_funds","account":"acct","kind":"cash","amount":"{n}.00""#),
        )
    }

    #[test]
    fn a_window_whose_write_fails_waits_again_and_nothing_recorded_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let store = SledStore::open(dir.path()).unwrap().write_index_every(5);
            Ledger::open_with_keys(Box::new(store), Rulebook::intl_2025(), Box::new(SeededKeys("w".into()))).unwrap()
        };
        let mut ledger = open();
        let account =
            r#""type":"open_account","account":"acct","creator":{"email":"a@example.com","sms":"+1-555-0100"}"#;
        ledger.submit(&[input("open", account)]).unwrap();
        FAIL_NEXT_WINDOW.store(true, Ordering::SeqCst);
        let mut recorded = Vec::new();
        let mut failures = Vec::new();
        for n in 1..=40 {
            // The append that meets the failed window fails, and nothing of it is stored;
            // the same input again goes through.
            let outcomes = match ledger.submit(&[funds(n)]) {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    failures.push(e.to_string());
                    assert!(matches!(e, LedgerError::Store(StoreError::Io(_))), "{e}");
                    ledger.submit(&[funds(n)]).unwrap()
                }
            };
            let Outcome::Recorded {
                first_seq, last_seq, ..
            } = outcomes[0]
            else {
                panic!("{:?}", outcomes[0])
            };
            recorded.push((Key::new(format!("cash-{n}")).unwrap(), first_seq, last_seq));
        }
        assert!(
            !FAIL_NEXT_WINDOW.load(Ordering::SeqCst),
            "a window was written on its thread"
        );
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("writing the index up to event"), "{failures:?}");

        // Every key and every stream version, found by the index before and after a reopen.
        let check = |store: &dyn EventStore| {
            for (key, first_seq, last_seq) in &recorded {
                let record = store.key_record(key).unwrap().unwrap_or_else(|| panic!("{key} lost"));
                assert_eq!((record.first_seq, record.last_seq), (*first_seq, *last_seq), "{key}");
            }
            let account = StreamId::account(&AccountId::new("acct").unwrap());
            let versions = store.read_stream(&account, 1, usize::MAX).unwrap().len() as u64;
            assert_eq!(versions, store.stream_version(&account).unwrap());
            assert_eq!(versions, 41, "opened, then funded 40 times");
        };
        check(ledger.store());
        let head = ledger.head();
        drop(ledger);
        let ledger = open();
        assert_eq!(ledger.head(), head);
        check(ledger.store());
        verify_store(ledger.store(), None).unwrap().expect("the log verifies");
    }
}
