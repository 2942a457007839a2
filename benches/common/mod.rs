//! Shared by every bench: run sizes, timing, result digests and the cache of large logs.
//!
//! A bench binary runs at "smoke" size unless `cargo bench` started it (cargo passes
//! `--bench`), so `cargo test --benches` (CI) exercises every code path in seconds.
//! `CHAT_LEDGER_BENCH_SCALE=full` runs the sizes the issue asks for.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Tiny: every path runs; numbers mean nothing.
    Smoke,
    /// A quick look (defaults of `cargo bench`).
    Quick,
    /// The sizes (10 M events, 10 M logins).
    Full,
}

pub fn scale() -> Scale {
    let benching = std::env::args().any(|a| a == "--bench");
    match std::env::var("CHAT_LEDGER_BENCH_SCALE").as_deref() {
        Ok("full") => Scale::Full,
        Ok("quick") => Scale::Quick,
        Ok("smoke") => Scale::Smoke,
        _ if benching => Scale::Quick,
        _ => Scale::Smoke,
    }
}

/// Runs `f` `runs` times; returns (min, median) of the wall times and the last result.
pub fn time_runs<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    assert!(runs > 0);
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let out = f();
        times.push(start.elapsed());
        last = Some(out);
    }
    times.sort();
    (times[0], times[times.len() / 2], last.expect("ran at least once"))
}

/// Percentile `p` (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    assert!(!sorted.is_empty());
    sorted[((sorted.len() - 1) * p) / 100]
}

/// Per-second rate of `count` items in `elapsed`.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// Where large generated logs are cached between runs (inside target/, never committed).
pub fn cache_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let dir = target.join("bench-cache").join(name);
    std::fs::create_dir_all(&dir).expect("create the bench cache");
    dir
}

/// Prints one result row: what, the figure, the reference, the ratio.
pub fn report(what: &str, ours: f64, reference_name: &str, reference: f64, unit: &str) {
    println!(
        "{what:<44} {ours:>14.1} {unit:<10} | {reference_name:<34} {reference:>14.1} {unit:<10} | ratio {:.2}",
        ours / reference
    );
}

/// CPU time of this process so far (user + system, every thread), from /proc/self/stat in
/// clock ticks of 10 ms: a cross-check of wall time that other processes on a busy machine
/// disturb less. `None` off Linux.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (in parentheses, and it may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Time spent in `EventStore::append` (sled batch + flush) by every [`TimedStore`].
static APPEND_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Calls of `EventStore::append` (one flush each) by every [`TimedStore`].
static APPENDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The time spent appending since the last call (the timing split of a run).
pub fn take_append_time() -> Duration {
    Duration::from_nanos(APPEND_NANOS.swap(0, std::sync::atomic::Ordering::Relaxed))
}

/// The appends (flushes) since the last call.
pub fn take_appends() -> u64 {
    APPENDS.swap(0, std::sync::atomic::Ordering::Relaxed)
}

/// The sled store, its appends timed into [`take_append_time`] and counted into [`take_appends`].
pub struct TimedStore(pub chat_ledger::store::SledStore);

mod timed_store {
    use super::{TimedStore, APPENDS, APPEND_NANOS};
    use chat_ledger::store::{AppendBatch, EventStore, Head, KeyRecord, StoreError, StoredEvent};
    use chat_ledger_events::{AppId, Key, StreamId};
    use std::sync::atomic::Ordering;

    impl EventStore for TimedStore {
        fn head(&self) -> Result<Head, StoreError> {
            self.0.head()
        }
        fn recorded_head(&self) -> Result<Option<Head>, StoreError> {
            self.0.recorded_head()
        }
        fn append(&self, batch: &AppendBatch) -> Result<(), StoreError> {
            let start = std::time::Instant::now();
            let result = self.0.append(batch);
            APPEND_NANOS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            APPENDS.fetch_add(1, Ordering::Relaxed);
            result
        }
        fn key_record(&self, key: &Key) -> Result<Option<KeyRecord>, StoreError> {
            self.0.key_record(key)
        }
        fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
            self.0.stream_version(stream)
        }
        fn read(&self, from_seq: u64, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
            self.0.read(from_seq, max)
        }
        fn read_stream(
            &self,
            stream: &StreamId,
            from_version: u64,
            max: usize,
        ) -> Result<Vec<StoredEvent>, StoreError> {
            self.0.read_stream(stream, from_version, max)
        }
        fn put_snapshot(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
            self.0.put_snapshot(name, bytes)
        }
        fn get_snapshot(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.get_snapshot(name)
        }
        fn last_snapshot_in(&self, from: &str, to: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
            self.0.last_snapshot_in(from, to)
        }
        fn snapshots_in(&self, from: &str, to: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.0.snapshots_in(from, to)
        }
        fn put_snapshots(&self, snapshots: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
            self.0.put_snapshots(snapshots)
        }
        fn app_key(&self, app: AppId) -> Result<Option<[u8; 32]>, StoreError> {
            self.0.app_key(app)
        }
        fn put_app_key(&self, app: AppId, key: [u8; 32]) -> Result<[u8; 32], StoreError> {
            self.0.put_app_key(app, key)
        }
        fn destroy_app_key(&self, app: AppId) -> Result<(), StoreError> {
            self.0.destroy_app_key(app)
        }
        fn write_waiting_index(&self) -> Result<(), StoreError> {
            self.0.write_waiting_index()
        }
    }
}

/// Bytes of every file under `dir` (what a store takes on disk); 0 for what cannot be read.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}
