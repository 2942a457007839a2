//! Shared by every bench: run sizes, timing, result digests and the cache of large logs.
//!
//! A bench binary runs at "smoke" size unless `cargo bench` started it (cargo passes
//! `--bench`), so `cargo test --benches` (CI) exercises every code path in seconds.
//! `CHAT_LEDGER_BENCH_SCALE=full` runs the sizes the issue asks for.

#![allow(dead_code)]

use std::path::PathBuf;
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
