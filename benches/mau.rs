//! Logins → MAU: logins/s of `Ledger::ingest_logins` into a fresh, durable `SledStore`
//! (HMAC digest per login, the decision, packed `mau.counted` events, one flush per
//! acknowledged chunk), against a bare `FxHashSet` dedup of the same user ids; memory
//! held by the projection per distinct user-month (counting allocator); on-disk bytes
//! per distinct user-month. Digest: the distinct count of the bare dedup equals the
//! projection's MAU, and the projection rebuilt from the log equals the live one.
//!
//! Sizes: full = 10 M logins over 1 M users; quick = 1 M over 100 k; smoke = 20 k over 2 k.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant as Clock};

use chat_ledger::import;
use chat_ledger::ledger::{Ledger, RawLogin, SeededKeys};
use chat_ledger::logins::CHUNK_ROWS_DEFAULT;
use chat_ledger::replay;
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::{EventStore, SledStore, StoredEvent};
use chat_ledger_events::{decode, AppId, Hash, Instant};
use chat_ledger_projections::LedgerView;
use common::Scale;
use rustc_hash::FxHashSet;

/// Counts the bytes the program holds (requested sizes; the allocator's own overhead is not seen).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const APP: AppId = AppId(1400000001);
const MONTH: &str = "2025-04";

/// An account with a Standard plan valid over the whole of April 2025: no deadline falls
/// inside the month, so every row is one decision (no chunk is split).
const SETUP: &str = r#"{"key":"open","at":"2025-03-31T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}
{"key":"cash","at":"2025-03-31T09:01:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"5000.00"}
{"key":"app","at":"2025-03-31T09:10:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"One"}
{"key":"buy","at":"2025-03-31T10:00:00+08:00","actor":"customer","type":"buy_edition","app":1400000001,"edition":"standard","months":2}
"#;

struct Size {
    logins: u64,
    users: u64,
    chunk: usize,
    /// Runs of ours, each right after one of the reference.
    runs: usize,
}

fn size(scale: Scale) -> Size {
    match scale {
        Scale::Smoke => Size {
            logins: 20_000,
            users: 2_000,
            chunk: 5_000,
            runs: 1,
        },
        Scale::Quick => Size {
            logins: 1_000_000,
            users: 100_000,
            chunk: CHUNK_ROWS_DEFAULT,
            runs: 5,
        },
        Scale::Full => Size {
            logins: 10_000_000,
            users: 1_000_000,
            chunk: CHUNK_ROWS_DEFAULT,
            runs: 3,
        },
    }
}

/// xorshift64*: a fixed, seeded shuffle, so every run sees the same file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `logins` rows over exactly `users` distinct ids, each user logging in logins/users
/// times, in a shuffled order, the times spread evenly over April (local time).
fn generate(size: &Size) -> (Vec<RawLogin>, Vec<u64>) {
    let mut ids: Vec<u64> = (0..size.logins).map(|i| i % size.users).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in (1..ids.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    let start = Instant::parse("2025-04-01T00:00:00+08:00")
        .expect("a valid instant")
        .utc();
    let month_seconds = 30 * 24 * 3600;
    let rows = ids
        .iter()
        .enumerate()
        .map(|(i, id)| RawLogin {
            line: i as u64 + 2,
            app: APP,
            user: format!("user-{id:08}"),
            logged_in_at: Instant::from_utc(
                start + chrono::Duration::seconds((i as u64 * month_seconds / size.logins) as i64),
            ),
        })
        .collect();
    (rows, ids)
}

fn fresh_ledger(dir: &Path) -> Ledger {
    let store = common::TimedStore(SledStore::open(dir).expect("open the store"));
    let mut ledger = Ledger::open_with_keys(
        Box::new(store),
        Rulebook::intl_2025(),
        Box::new(SeededKeys("bench".into())),
    )
    .expect("open the ledger");
    import::import(&mut ledger, "setup", SETUP, 100, |_| {}).expect("the setup imports");
    ledger
}

fn read_all(store: &dyn EventStore, from: u64) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    loop {
        let page = store
            .read(from + out.len() as u64, chat_ledger::store::READ_PAGE_EVENTS)
            .expect("read");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Folds `events` into `view`; returns the bytes the view holds afterwards, less before.
/// Decoded events are dropped inside, so only what the view keeps is counted.
fn fold_counting(view: &mut LedgerView, events: &[StoredEvent]) -> isize {
    let before = live();
    for stored in events {
        let event = decode(&stored.bytes).expect("stored events decode");
        view.apply(&event, Hash::of(&stored.bytes))
            .expect("stored events apply");
    }
    live() - before
}

fn median(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[0], times[times.len() / 2])
}

fn main() {
    let scale = common::scale();
    let size = size(scale);
    println!(
        "mau: {scale:?}: {} logins over {} users of one Standard app in {MONTH}, chunks of {} rows",
        size.logins, size.users, size.chunk
    );
    let (rows, ids) = generate(&size);

    // The reference, a bare dedup of the same ids (the raw id bytes, and the ids as u64),
    // is timed right before each run of ours, so both see the same noise.
    let reference = || {
        let mut set: FxHashSet<&str> = FxHashSet::default();
        let mut new = 0u64;
        for row in &rows {
            new += u64::from(set.insert(row.user.as_str()));
        }
        new
    };
    let reference_u64 = || {
        let mut set: FxHashSet<u64> = FxHashSet::default();
        ids.iter().map(|id| u64::from(set.insert(*id))).sum::<u64>()
    };
    let root = common::cache_dir("mau");
    let (mut times, mut ref_times, mut u64_times, mut cpu_times) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut distinct = 0;
    let mut last = None;
    for run in 0..size.runs {
        let (_, ref_time, ref_distinct) = common::time_runs(1, reference);
        let (_, u64_time, u64_distinct) = common::time_runs(1, reference_u64);
        assert_eq!(ref_distinct, size.users, "digest: every user logs in");
        assert_eq!(u64_distinct, ref_distinct, "digest: the two references agree");
        distinct = ref_distinct;
        ref_times.push(ref_time);
        u64_times.push(u64_time);

        let dir = root.join(format!("run-{run}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut ledger = fresh_ledger(&dir);
        let disk_before = common::dir_bytes(&dir);
        let seq_before = ledger.head().seq;
        let live_before = live();
        common::take_append_time();
        let cpu_before = common::cpu_time();
        let start = Clock::now();
        let summary = ledger
            .ingest_logins("april.csv", "00000000000000aa", &rows, size.chunk, |_, _| {})
            .expect("the logins ingest");
        let elapsed = start.elapsed();
        // The users' HMACs of the next chunk run on a second core: CPU time says how much.
        let cpu = common::cpu_time().zip(cpu_before).map(|(after, before)| after - before);
        cpu_times.extend(cpu);
        let live_after = live();
        let in_append = common::take_append_time();
        times.push(elapsed);
        let mau = ledger.state().apps[&APP].usage[MONTH].users.len() as u64;
        assert_eq!(mau, distinct, "digest: the projection's MAU is the distinct count");
        assert_eq!(
            summary.users_counted, distinct,
            "digest: the summary counts each user once"
        );
        println!(
            "  run {run}: ours {:.2} s = {:.0} logins/s, CPU {} ({:.0}% in store.append: sled write + flush; {} events appended); FxHashSet<&str> {:.3} s = {:.0} logins/s",
            elapsed.as_secs_f64(),
            common::rate(size.logins, elapsed),
            cpu.map_or("unknown".to_owned(), |cpu| format!("{:.2} s", cpu.as_secs_f64())),
            100.0 * in_append.as_secs_f64() / elapsed.as_secs_f64(),
            summary.events_appended,
            ref_time.as_secs_f64(),
            common::rate(size.logins, ref_time),
        );
        if run + 1 == size.runs {
            last = Some((ledger, dir, disk_before, seq_before, live_after - live_before));
        } else {
            drop(ledger);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let (ledger, dir, disk_before, seq_before, live_delta) = last.expect("ran at least once");
    let head = ledger.head();
    // Each run against the reference timed just before it: the ratio least moved by noise.
    let mut paired: Vec<f64> = times
        .iter()
        .zip(&ref_times)
        .map(|(ours, reference)| reference.as_secs_f64() / ours.as_secs_f64())
        .collect();
    paired.sort_by(f64::total_cmp);
    let paired_median = paired[paired.len() / 2];
    let runs = times.len();
    let (min, med) = median(times);
    let (ref_min, ref_median) = median(ref_times);
    let (u64_min, _) = median(u64_times);

    // Memory held by the projection: rebuild it from the log with the same applies, in a
    // counted region, before and after the ingested events.
    let events = read_all(ledger.store(), 1);
    let (setup_events, ingested) = events.split_at(seq_before as usize);
    let mut view = LedgerView::default();
    let setup_bytes = fold_counting(&mut view, setup_events);
    let usage_bytes = fold_counting(&mut view, ingested);
    assert!(
        &view == ledger.state(),
        "digest: the projection rebuilt from the log equals the live one"
    );
    let stored_event_bytes: u64 = ingested.iter().map(|e| e.bytes.len() as u64).sum();
    let rebuilt = replay::load_from_zero(ledger.store(), None).expect("replay");
    assert_eq!(rebuilt.apps[&APP].usage[MONTH].users.len() as u64, distinct);
    drop(rebuilt);
    drop(ledger);
    let disk_after = common::dir_bytes(&dir);

    let d = distinct as f64;
    println!();
    // Ours against each reference, as logins/s; per CPU second when the CPU time was read.
    let cpu_median = (cpu_times.len() == runs).then(|| median(cpu_times).1);
    let rates = [
        (
            "ingest_logins, durable (best run)",
            Some(min),
            "FxHashSet<&str> dedup (best run)",
            ref_min,
        ),
        (
            "ingest_logins, durable (median)",
            Some(med),
            "FxHashSet<&str> dedup (median)",
            ref_median,
        ),
        (
            "ingest_logins, durable (best run)",
            Some(min),
            "FxHashSet<u64> dedup (best run)",
            u64_min,
        ),
        (
            "ingest_logins per CPU second (median)",
            cpu_median,
            "FxHashSet<&str> dedup (median)",
            ref_median,
        ),
    ];
    for (what, ours, reference_name, reference) in rates {
        if let Some(ours) = ours {
            common::report(
                what,
                common::rate(size.logins, ours),
                reference_name,
                common::rate(size.logins, reference),
                "logins/s",
            );
        }
    }
    println!(
        "{:<44} {:>14.2} (per-run ratios: {})",
        "paired ratio, median of runs",
        paired_median,
        paired.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
    );
    common::report(
        "projection bytes / distinct user-month",
        usage_bytes as f64 / d,
        "target",
        32.0,
        "bytes",
    );
    println!(
        "{:<44} {:>14.1} bytes      (process-wide live bytes after − before the ingestion, sled's cache included)",
        "process live bytes / distinct user-month",
        live_delta as f64 / d
    );
    println!(
        "{:<44} {:>14.1} bytes      (stored event bytes of the ingestion: {} bytes; setup projection {} bytes)",
        "stored event bytes / distinct user-month",
        stored_event_bytes as f64 / d,
        stored_event_bytes,
        setup_bytes
    );
    println!(
        "{:<44} {:>14.1} bytes      (sled directory after − before: {} bytes)",
        "on-disk bytes / distinct user-month",
        (disk_after as f64 - disk_before as f64) / d,
        disk_after as i64 - disk_before as i64
    );
    println!(
        "digest: {distinct} distinct users = MAU {distinct} of {APP} in {MONTH}; head {}:{}",
        head.seq, head.hash
    );
    let _ = std::fs::remove_dir_all(&dir);
}
