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

/// What the kernel counts while a bench part runs. For the calling thread: nanoseconds on
/// a CPU and waiting for one (`/proc/thread-self/schedstat`; on a virtual machine, time the
/// host gives to others still counts as on a CPU). For the process: page faults (minor: a
/// page mapped without IO; major: one read from disk), `read`/`pread` calls and the bytes
/// they asked for, wherever they came from (sled reads its file so when a page is not in
/// its cache; the OS's page cache may serve them), and bytes read from the block device
/// (`/proc/self/io`). For the machine (`/proc/stat`, 10 ms ticks summed over its cores):
/// ticks busy (neither idle nor waiting for IO), and ticks stolen by the host.
#[derive(Clone, Copy, Default)]
pub struct KernelCounters {
    pub thread_cpu_nanos: u64,
    pub thread_wait_nanos: u64,
    pub minor_faults: u64,
    pub major_faults: u64,
    pub read_calls: u64,
    pub read_call_bytes: u64,
    pub read_bytes: u64,
    pub machine_ticks: u64,
    pub machine_busy_ticks: u64,
    pub machine_steal_ticks: u64,
}

impl KernelCounters {
    pub fn now() -> Option<KernelCounters> {
        let sched = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let mut sched = sched.split_whitespace().map(|f| f.parse::<u64>().ok());
        let (thread_cpu_nanos, thread_wait_nanos) = (sched.next()??, sched.next()??);
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let io = std::fs::read_to_string("/proc/self/io").ok()?;
        let io_field = |name: &str| -> Option<u64> {
            io.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
                .trim()
                .parse()
                .ok()
        };
        // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest time
        // is counted in user too).
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = machine
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|t| t.parse().ok())
            .collect::<Option<_>>()?;
        let tick = |i: usize| ticks.get(i).copied();
        Some(KernelCounters {
            thread_cpu_nanos,
            thread_wait_nanos,
            minor_faults: fields.get(7)?.parse().ok()?,
            major_faults: fields.get(9)?.parse().ok()?,
            read_calls: io_field("syscr")?,
            read_call_bytes: io_field("rchar")?,
            read_bytes: io_field("read_bytes")?,
            machine_ticks: (0..8).map(tick).sum::<Option<u64>>()?,
            machine_busy_ticks: [0, 1, 2, 5, 6].into_iter().map(tick).sum::<Option<u64>>()?,
            machine_steal_ticks: tick(7)?,
        })
    }

    /// What was counted since `earlier`.
    pub fn since(self, earlier: KernelCounters) -> KernelCounters {
        KernelCounters {
            thread_cpu_nanos: self.thread_cpu_nanos - earlier.thread_cpu_nanos,
            thread_wait_nanos: self.thread_wait_nanos - earlier.thread_wait_nanos,
            minor_faults: self.minor_faults - earlier.minor_faults,
            major_faults: self.major_faults - earlier.major_faults,
            read_calls: self.read_calls - earlier.read_calls,
            read_call_bytes: self.read_call_bytes - earlier.read_call_bytes,
            read_bytes: self.read_bytes - earlier.read_bytes,
            machine_ticks: self.machine_ticks - earlier.machine_ticks,
            machine_busy_ticks: self.machine_busy_ticks - earlier.machine_busy_ticks,
            machine_steal_ticks: self.machine_steal_ticks - earlier.machine_steal_ticks,
        }
    }

    /// Per sample of `samples`, in words (one line).
    pub fn describe(&self, samples: usize) -> String {
        let n = samples.max(1) as f64;
        let share = |t: u64| 100.0 * t as f64 / self.machine_ticks.max(1) as f64;
        format!(
            "a sample on average: {:.3} ms on a CPU, {:.3} ms waiting for one; {:.1} minor page faults, {:.2} major; \
             {:.1} read calls for {:.1} KB, {:.1} KB from disk. The machine meanwhile ({} ticks): {:.0} % busy, {:.0} % stolen",
            self.thread_cpu_nanos as f64 / n / 1e6,
            self.thread_wait_nanos as f64 / n / 1e6,
            self.minor_faults as f64 / n,
            self.major_faults as f64 / n,
            self.read_calls as f64 / n,
            self.read_call_bytes as f64 / n / 1e3,
            self.read_bytes as f64 / n / 1e3,
            self.machine_ticks,
            share(self.machine_busy_ticks),
            share(self.machine_steal_ticks),
        )
    }
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
