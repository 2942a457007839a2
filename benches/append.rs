//! Append: durable events/s of a bulk import, the latency of one durable single-command
//! append, and group commit — each against raw sled measured in the same run.
//!
//! (a) bulk: realistic inputs (open_account, add_funds, create_app, set_auto_renew,
//!     buy_edition across many accounts and apps) through `Ledger::submit_chunks` in
//!     chunks of `CHUNK_INPUTS_DEFAULT` (appended on a second thread while the next are
//!     decided; chunks decided during a flush share the next append and flush), and
//!     through `import::import` of the same
//!     inputs as JSON Lines (parse + check + submit), into a fresh `SledStore`;
//! (b) reference: raw `sled::Tree::insert` of the SAME stored bytes (read back from (a)),
//!     one entry per event, into a fresh sled database, then one flush; and (b2) the
//!     store's own write sets (event blocks, commit digests, stream runs and key windows,
//!     head: rebuilt from the store after (a)), raw inserts + one flush per append — sled's
//!     cost of the store's layout;
//! (c) one `Ledger::submit` of one input at a time (durable on return), interleaved with
//! (d) reference: raw insert + flush of one stored event per record; and (d2) each single
//!     command's own write set, raw inserts + flush;
//! (e) group commit: K client threads submitting single inputs through `GroupCommitter`,
//!     against the same committer with groups of 1 (one flush per input).
//!
//! Every part checks a digest of its result (head hash, counts), so no work can be dropped.
//! `cargo bench --bench append` (Quick); `CHAT_LEDGER_BENCH_SCALE=full` for Full; smoke
//! size under `cargo test --benches`.

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant as Clock};

use chat_ledger::commit::{GroupCommitter, GroupSizes};
use chat_ledger::import::{self, CHUNK_INPUTS_DEFAULT};
use chat_ledger::ledger::{Ledger, Outcome, SeededKeys};
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::{open_raw_sled, EventStore, Head, SledStore, DIGESTS_PER_ENTRY};
use chat_ledger::verify::verify_store;
use chat_ledger_events::{decode, Hash, Input};
use chrono::{DateTime, FixedOffset, SecondsFormat};
use common::{percentile, rate, report, scale, Scale};

struct Sizes {
    /// Accounts (one app each) in the bulk workload.
    accounts: usize,
    /// Inputs after the accounts' setup (funds, auto-renew switches, purchases).
    mixed_inputs: usize,
    /// Sequential single-command appends (and as many raw insert+flush).
    singles: usize,
    /// Client threads of the group-commit runs.
    threads: &'static [usize],
    /// Inputs per group-commit run (split over the threads).
    group_inputs: usize,
    /// Timed repetitions of the bulk runs (min and median reported).
    runs: usize,
}

fn sizes(scale: Scale) -> Sizes {
    match scale {
        Scale::Smoke => Sizes {
            accounts: 20,
            mixed_inputs: 240,
            singles: 20,
            threads: &[4, 8],
            group_inputs: 64,
            runs: 1,
        },
        Scale::Quick => Sizes {
            accounts: 2_000,
            mixed_inputs: 60_000,
            singles: 1_000,
            threads: &[8, 32],
            group_inputs: 4_000,
            runs: 3,
        },
        Scale::Full => Sizes {
            accounts: 20_000,
            mixed_inputs: 440_000,
            singles: 5_000,
            threads: &[8, 32, 128],
            group_inputs: 20_000,
            runs: 3,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Workload

/// A small deterministic generator (xorshift64*): the same inputs in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const START: &str = "2025-05-01T00:00:00+08:00";

fn at(second: u64) -> String {
    let start = DateTime::<FixedOffset>::parse_from_rfc3339(START).expect("a valid start");
    (start + chrono::Duration::seconds(second as i64)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn app_of(account: usize) -> u64 {
    1_400_000_000 + account as u64
}

const FIRST_NAMES: [&str; 8] = [
    "globex", "initech", "umbrella", "hooli", "acme", "stark", "wayne", "tyrell",
];

/// JSON Lines of a realistic import, in time order: every account opened, funded, given an
/// app; then a mix of top-ups, auto-renew switches and purchases across them.
fn workload(accounts: usize, mixed: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed | 1);
    let mut lines = Vec::with_capacity(3 * accounts + mixed);
    let mut second = 0;
    // 1 to 60 seconds between inputs: at Full size the log spans months, so plans
    // expire, renew, remind and suspend between the inputs (deadlines fire in the bulk).
    let mut tick = |rng: &mut Rng| {
        second += 1 + rng.below(60);
        at(second)
    };
    for a in 0..accounts {
        let name = FIRST_NAMES[a % FIRST_NAMES.len()];
        lines.push(format!(
            r#"{{"key":"open-{a}","at":"{}","actor":"customer","type":"open_account","account":"{name}-{a:06}","creator":{{"email":"billing@{name}-{a}.example.com","sms":"+1-555-{a:07}"}}}}"#,
            tick(&mut rng)
        ));
    }
    for a in 0..accounts {
        let name = FIRST_NAMES[a % FIRST_NAMES.len()];
        lines.push(format!(
            r#"{{"key":"cash-{a}","at":"{}","actor":"customer","type":"add_funds","account":"{name}-{a:06}","kind":"cash","amount":"{}.00"}}"#,
            tick(&mut rng),
            500 + rng.below(4500)
        ));
    }
    for a in 0..accounts {
        let name = FIRST_NAMES[a % FIRST_NAMES.len()];
        lines.push(format!(
            r#"{{"key":"app-{a}","at":"{}","actor":"customer","type":"create_app","account":"{name}-{a:06}","app":{},"name":"{} Support Chat {a}"}}"#,
            tick(&mut rng),
            app_of(a),
            name.to_uppercase()
        ));
    }
    for i in 0..mixed {
        let a = rng.below(accounts as u64) as usize;
        let name = FIRST_NAMES[a % FIRST_NAMES.len()];
        let roll = rng.below(100);
        let line = if roll < 45 {
            let (kind, actor) = match rng.below(4) {
                0 => ("gift", "support:mei"),
                1 => ("income_transfer", "customer"),
                _ => ("cash", "customer"),
            };
            format!(
                r#"{{"key":"topup-{i}","at":"{}","actor":"{actor}","type":"add_funds","account":"{name}-{a:06}","kind":"{kind}","amount":"{}.{:02}"}}"#,
                tick(&mut rng),
                10 + rng.below(990),
                rng.below(100)
            )
        } else if roll < 85 {
            format!(
                r#"{{"key":"renew-{i}","at":"{}","actor":"customer","type":"set_auto_renew","app":{},"on":{}}}"#,
                tick(&mut rng),
                app_of(a),
                rng.below(2) == 0
            )
        } else {
            let edition = if rng.below(3) == 0 { "pro" } else { "standard" };
            format!(
                r#"{{"key":"buy-{i}","at":"{}","actor":"customer","type":"buy_edition","app":{},"edition":"{edition}","months":{}}}"#,
                tick(&mut rng),
                app_of(a),
                1 + rng.below(12)
            )
        };
        lines.push(line);
    }
    lines
}

/// A second after every setup input (open, fund, create app: 3 per account, ≤ 60 s apart).
fn after_setup(accounts: usize) -> u64 {
    60 * 3 * accounts as u64 + 60
}

fn parse(lines: &[String]) -> Vec<Input> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// A client's `j`-th single command on account `a`, at `when`: a top-up or an auto-renew switch.
fn single(tag: &str, a: usize, j: usize, when: &str) -> Input {
    let name = FIRST_NAMES[a % FIRST_NAMES.len()];
    let line = if j % 2 == 0 {
        format!(
            r#"{{"key":"{tag}-{a}-{j}","at":"{when}","actor":"customer","type":"add_funds","account":"{name}-{a:06}","kind":"cash","amount":"{}.50"}}"#,
            10 + j % 90
        )
    } else {
        format!(
            r#"{{"key":"{tag}-{a}-{j}","at":"{when}","actor":"customer","type":"set_auto_renew","app":{},"on":{}}}"#,
            app_of(a),
            j % 4 == 1
        )
    };
    serde_json::from_str(&line).expect("a valid input")
}

// ---------------------------------------------------------------------------------------
// Stores

fn open_ledger(dir: &Path) -> Ledger {
    let store = SledStore::open(dir).expect("open the store");
    Ledger::open_with_keys(
        Box::new(store),
        Rulebook::intl_2025(),
        Box::new(SeededKeys("bench-append".to_owned())),
    )
    .expect("open the ledger")
}

fn temp() -> tempfile::TempDir {
    // On the same disk as target/ (not a tmpfs), so flushes are real.
    tempfile::Builder::new()
        .prefix("append-")
        .tempdir_in(common::cache_dir("append-tmp"))
        .expect("a temporary directory")
}

fn event_key(seq: u64) -> [u8; 9] {
    let mut key = [b'e'; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Every bulk run, whichever path, must give the same log: same head, same hash.
fn same_head(expected: &mut Option<Head>, head: Head, what: &str) {
    match expected {
        None => *expected = Some(head),
        Some(e) => assert_eq!(head, *e, "{what}: every bulk run must give the same log"),
    }
}

/// Min and median wall time of a part's runs, and min and median CPU time.
struct Times {
    wall: (Duration, Duration),
    cpu: Option<(Duration, Duration)>,
}

impl Times {
    fn of(runs: Vec<(Duration, Option<Duration>)>) -> Times {
        let min_median = |mut times: Vec<Duration>| {
            times.sort();
            (times[0], times[times.len() / 2])
        };
        let cpu: Option<Vec<Duration>> = runs.iter().map(|r| r.1).collect();
        Times {
            wall: min_median(runs.iter().map(|r| r.0).collect()),
            cpu: cpu.map(min_median),
        }
    }

    fn print(&self, label: &str) {
        let (min, med) = self.wall;
        print!(
            "{label:<48} wall min {:>7.3} s, median {:>7.3} s",
            min.as_secs_f64(),
            med.as_secs_f64()
        );
        match self.cpu {
            Some((min, med)) => println!(
                " | CPU min {:>7.2} s, median {:>7.2} s",
                min.as_secs_f64(),
                med.as_secs_f64()
            ),
            None => println!(),
        }
    }

    /// Events/s over the min CPU time (0 when unknown).
    fn cpu_rate(&self, events: u64) -> f64 {
        self.cpu
            .map_or(0.0, |(min, _)| rate(events, min.max(Duration::from_millis(10))))
    }
}

/// Wall and CPU time of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (Duration, Option<Duration>, T) {
    let (cpu, start) = (common::cpu_time(), Clock::now());
    let out = f();
    let wall = start.elapsed();
    (
        wall,
        common::cpu_time()
            .zip(cpu)
            .map(|(after, before)| after.saturating_sub(before)),
        out,
    )
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One append's sled writes: (key, value) inserts, `None` a removal.
type WriteSet = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn be(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

/// The write sets the store's appends made, rebuilt from its `log` tree (the layout of
/// src/store/sled_store.rs) and the head after each append: each append's event blocks,
/// its commits' digests (`j`, 32 bytes a commit, `DIGESTS_PER_ENTRY` an entry: removed by the
/// first append after their window is written, so rebuilt here from the events' keys),
/// the stream runs and key window it wrote (with the append that closed the window: the
/// store's close, for the last one), then its head record — what `SledStore::append`
/// inserts before its flush. Returns the sets and the entries left in the tree.
fn write_sets(dir: &Path, heads: &[Head]) -> (Vec<WriteSet>, usize) {
    let db = open_raw_sled(dir).expect("reopen the store raw");
    let tree = db.open_tree("log").expect("the log tree");
    let of = |seq: u64| heads.partition_point(|h| h.seq < seq);
    let mut sets: Vec<WriteSet> = vec![Vec::new(); heads.len()];
    let mut windows: Vec<u64> = Vec::new();
    let mut entries = 0;
    // Each append's commits, by their first seq (a commit's events share its key).
    let mut commits: Vec<Vec<u64>> = vec![Vec::new(); heads.len()];
    let mut last_key = None;
    for entry in tree.iter() {
        let (k, v) = entry.expect("read the store");
        entries += 1;
        let append = match k[0] {
            b'e' => {
                let first = be(&k[1..]);
                for (seq, bytes) in (first..).zip(chat_ledger::store::block_events(&v).expect("a block")) {
                    let key = decode(bytes).expect("decodes").key;
                    if last_key.as_ref() != Some(&key) {
                        commits[of(seq)].push(seq);
                        last_key = Some(key);
                    }
                }
                of(first)
            }
            // Written by the append that closed the window of the run's first event.
            b's' => of(windows[windows.partition_point(|&w| w < be(&v[..8]))]),
            b'K' => of(be(&k[1..9])),
            b'F' => {
                windows.push(be(&k[1..9]));
                of(be(&k[1..9]))
            }
            _ => continue, // `f` (written at creation) and `h`: below, as each append wrote it
        };
        sets[append].push((k.to_vec(), Some(v.to_vec())));
    }
    let order = |key: &[u8]| match key[0] {
        b'e' => 0,
        b'j' => 1,
        b's' => 2,
        _ => 3,
    };
    let mut stale: Vec<Vec<u8>> = Vec::new();
    let last = heads.len() - 1;
    for (i, (set, head)) in sets.iter_mut().zip(heads).enumerate() {
        let mut writes = std::mem::take(set);
        // The digests of a written window go with the next append (the last, on close).
        if i > 0 && windows.contains(&heads[i - 1].seq) {
            set.extend(stale.drain(..).map(|k| (k, None)));
        }
        for firsts in commits[i].chunks(DIGESTS_PER_ENTRY) {
            let key = [&b"j"[..], &firsts[0].to_be_bytes()].concat();
            writes.push((key.clone(), Some(vec![0; 32 * firsts.len()])));
            stale.push(key);
        }
        writes.sort_by_key(|(k, _)| order(k)); // stable: positions stay in order
        set.extend(writes);
        let mut value = head.seq.to_be_bytes().to_vec();
        value.extend_from_slice(&head.hash.0);
        value.extend_from_slice(&head.seq.to_be_bytes());
        set.push((b"h".to_vec(), Some(value)));
        if i == last && windows.contains(&head.seq) {
            set.extend(stale.drain(..).map(|k| (k, None)));
        }
    }
    (sets, entries - 2) // less `f` and `h`, which are not per event
}

fn apply(tree: &sled::Tree, set: &WriteSet) {
    for (k, v) in set {
        match v {
            Some(v) => tree.insert(k.as_slice(), v.as_slice()).map(drop),
            None => tree.remove(k.as_slice()).map(drop),
        }
        .expect("write");
    }
}

// ---------------------------------------------------------------------------------------

fn main() {
    let scale = scale();
    let sz = sizes(scale);
    println!("append bench, scale {scale:?}");
    let lines = workload(sz.accounts, sz.mixed_inputs, 0x5EED);
    let inputs = parse(&lines);
    let text = lines.join("\n") + "\n";
    println!(
        "workload: {} inputs ({} accounts/apps, {} mixed), {:.1} MB of JSON Lines",
        inputs.len(),
        sz.accounts,
        sz.mixed_inputs,
        text.len() as f64 / 1e6
    );

    // `CHAT_LEDGER_APPEND_PROFILE=bulk`: part (a) once, nothing else (for `perf record`).
    if std::env::var("CHAT_LEDGER_APPEND_PROFILE").is_ok_and(|p| p == "bulk") {
        let dir = temp();
        let mut ledger = open_ledger(dir.path());
        let (wall, cpu, head) = timed(|| {
            ledger
                .submit_chunks(&inputs, CHUNK_INPUTS_DEFAULT, |_, outcomes, _| {
                    black_box(outcomes);
                })
                .expect("the bulk is accepted");
            let head = ledger.head();
            drop(ledger);
            head
        });
        println!(
            "(a) once: {} events in {wall:?} (CPU {cpu:?}): {:.0} events/s; head {}:{}",
            head.seq,
            rate(head.seq, wall),
            head.seq,
            head.hash
        );
        return;
    }

    // (a) bulk through the ledger, chunks of CHUNK_INPUTS_DEFAULT; (a') the same through
    // import::import; (b) raw sled: the same bytes, inserted, one flush; (b2) the store's
    // own write sets, inserted + one flush per append as SledStore::append does
    // (decide/seal excluded). Run 0 of (a) also yields the bytes and write sets that
    // (b) and (b2) replay. The four alternate run by run, so that the machine's noise
    // falls on each of them alike.
    let mut expected: Option<Head> = None;
    let mut stored: Vec<Vec<u8>> = Vec::new();
    let mut bulk_sets: Vec<WriteSet> = Vec::new();
    let mut bulk_entries = 0;
    let (mut submit_times, mut import_times, mut raw_times, mut sets_times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..sz.runs {
        let dir = temp();
        let mut ledger = open_ledger(dir.path());
        let mut heads = Vec::with_capacity(inputs.len() / CHUNK_INPUTS_DEFAULT + 1);
        // Timed up to the store's close, which writes the index still waiting.
        let (wall, cpu, head) = timed(|| {
            ledger
                .submit_chunks(&inputs, CHUNK_INPUTS_DEFAULT, |_, outcomes, head| {
                    black_box(outcomes);
                    heads.push(head);
                })
                .expect("the bulk is accepted");
            let head = ledger.head();
            drop(ledger);
            head
        });
        submit_times.push((wall, cpu));
        same_head(&mut expected, head, "submit");
        if run == 0 {
            let store = SledStore::open(dir.path()).expect("reopen the store");
            stored = store
                .read(1, usize::MAX)
                .expect("read back")
                .into_iter()
                .map(|e| e.bytes)
                .collect();
            assert_eq!(stored.len() as u64, head.seq);
            assert_eq!(Hash::of(stored.last().expect("events")), head.hash);
            drop(store);
            (bulk_sets, bulk_entries) = write_sets(dir.path(), &heads);
        }
        drop(dir);

        let dir = temp();
        let mut ledger = open_ledger(dir.path());
        let (wall, cpu, (summary, head)) = timed(|| {
            let summary =
                import::import(&mut ledger, "bench.jsonl", &text, CHUNK_INPUTS_DEFAULT, |_| {}).expect("import");
            let head = ledger.head();
            drop(ledger);
            (summary, head)
        });
        import_times.push((wall, cpu));
        assert_eq!(summary.lines_recorded, inputs.len());
        same_head(&mut expected, head, "import");
        drop(dir);

        let dir = temp();
        let db = open_raw_sled(dir.path()).expect("open raw sled");
        let tree = db.open_tree("log").expect("a tree");
        let (wall, cpu, ()) = timed(|| {
            for (i, b) in stored.iter().enumerate() {
                tree.insert(event_key(i as u64 + 1), b.as_slice()).expect("insert");
            }
            db.flush().expect("flush");
        });
        raw_times.push((wall, cpu));
        let (_, last) = tree.last().expect("read").expect("not empty");
        assert_eq!(Hash::of(&last), head.hash, "raw: the last value is the head event");
        assert_eq!(tree.iter().count() as u64, head.seq);
        drop((tree, db, dir));

        let dir = temp();
        let db = open_raw_sled(dir.path()).expect("open raw sled");
        let tree = db.open_tree("log").expect("a tree");
        let (wall, cpu, ()) = timed(|| {
            for set in &bulk_sets {
                apply(&tree, set);
                db.flush().expect("flush");
            }
        });
        sets_times.push((wall, cpu));
        let stored_head = tree.get(b"h").expect("read").expect("a head");
        assert_eq!(&stored_head[8..40], &head.hash.0[..], "write sets: the head record");
        assert_eq!(tree.iter().count(), bulk_entries + 1, "every entry but `f`");
    }
    let head = expected.expect("a run");
    let events = head.seq;

    // What the events are.
    let bytes: u64 = stored.iter().map(|b| b.len() as u64).sum();
    let mut lens: Vec<usize> = stored.iter().map(Vec::len).collect();
    lens.sort_unstable();
    let mut by_type: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    for b in &stored {
        let entry = by_type
            .entry(decode(b).expect("decodes").event.type_name())
            .or_default();
        entry.0 += 1;
        entry.1 += b.len() as u64;
    }
    println!(
        "stored events: {events}, mean {:.0} bytes (p5 {}, median {}, p95 {}, max {}); {} refused inputs recorded",
        bytes as f64 / events as f64,
        lens[lens.len() * 5 / 100],
        lens[lens.len() / 2],
        lens[lens.len() * 95 / 100],
        lens[lens.len() - 1],
        by_type.get("command.rejected").map_or(0, |t| t.0),
    );
    for (kind, (n, b)) in &by_type {
        println!("  {kind:<22} {n:>9} events, mean {:>4.0} bytes", *b as f64 / *n as f64);
    }
    println!(
        "the store's sled entries: {bulk_entries} ({:.2} per event), {} writes ({:.2} per event) in {} appends",
        bulk_entries as f64 / events as f64,
        bulk_sets.iter().map(Vec::len).sum::<usize>(),
        bulk_sets.iter().map(Vec::len).sum::<usize>() as f64 / events as f64,
        bulk_sets.len()
    );

    let (submit, import, raw, sets) = (
        Times::of(submit_times),
        Times::of(import_times),
        Times::of(raw_times),
        Times::of(sets_times),
    );
    submit.print("(a) Ledger::submit_chunks, 1,000-input chunks");
    import.print("(a) import::import of JSON Lines");
    raw.print("(b) raw sled insert + 1 flush");
    sets.print("(b2) raw inserts of the store's write sets");
    println!("digest: head {}:{}", head.seq, head.hash);

    // (c) single commands, one durable submit each, interleaved with (d) raw insert+flush.
    let single_dir = temp();
    let mut ledger = open_ledger(single_dir.path());
    let setup = sz.accounts.min(64);
    ledger.submit(&inputs[..3 * sz.accounts]).expect("setup");
    let mut single_heads = vec![ledger.head()];
    let raw_dir = temp();
    let raw_db = open_raw_sled(raw_dir.path()).expect("open raw sled");
    let raw_tree = raw_db.open_tree("log").expect("a tree");
    let base = after_setup(sz.accounts);
    let (mut ours, mut theirs) = (Vec::with_capacity(sz.singles), Vec::with_capacity(sz.singles));
    let mut single_events = 0;
    for j in 0..sz.singles {
        let input = single("one", j % setup, j, &at(base + j as u64));
        let start = Clock::now();
        let outcome = ledger.submit(std::slice::from_ref(&input)).expect("a single command");
        ours.push(start.elapsed());
        single_heads.push(ledger.head());
        match &outcome[..] {
            [Outcome::Recorded {
                first_seq,
                last_seq,
                refusal: None,
            }] => single_events += last_seq - first_seq + 1,
            other => panic!("{other:?}"),
        }
        let record = &stored[j % stored.len()];
        let start = Clock::now();
        raw_tree
            .insert(event_key(j as u64 + 1), record.as_slice())
            .expect("insert");
        raw_db.flush().expect("flush");
        theirs.push(start.elapsed());
    }
    assert_eq!(ledger.state().inputs_recorded, (3 * sz.accounts + sz.singles) as u64);
    assert_eq!(raw_tree.iter().count(), sz.singles);
    let single_head = ledger.head();
    println!(
        "digest: singles head {}:{} ({single_events} events)",
        single_head.seq, single_head.hash
    );
    drop(ledger);
    // (d2) each single command's own write set, inserts + flush, interleaved with (d) again.
    let (single_sets, _) = write_sets(single_dir.path(), &single_heads);
    let (sets_dir, again_dir) = (temp(), temp());
    let sets_db = open_raw_sled(sets_dir.path()).expect("open raw sled");
    let sets_tree = sets_db.open_tree("log").expect("a tree");
    apply(&sets_tree, &single_sets[0]);
    let again_db = open_raw_sled(again_dir.path()).expect("open raw sled");
    let again_tree = again_db.open_tree("log").expect("a tree");
    let (mut sets_lat, mut again) = (Vec::with_capacity(sz.singles), Vec::with_capacity(sz.singles));
    let mut writes_per_single = 0;
    for (j, set) in single_sets[1..].iter().enumerate() {
        writes_per_single += set.len();
        let start = Clock::now();
        apply(&sets_tree, set);
        sets_db.flush().expect("flush");
        sets_lat.push(start.elapsed());
        let record = &stored[j % stored.len()];
        let start = Clock::now();
        again_tree
            .insert(event_key(j as u64 + 1), record.as_slice())
            .expect("insert");
        again_db.flush().expect("flush");
        again.push(start.elapsed());
    }
    let stored_head = sets_tree.get(b"h").expect("read").expect("a head");
    assert_eq!(
        &stored_head[8..40],
        &single_head.hash.0[..],
        "write sets: the head record"
    );
    for lat in [&mut ours, &mut theirs, &mut sets_lat, &mut again] {
        lat.sort();
    }

    // (e) group commit: K threads of single commands, against groups of 1.
    let mut group_rows = Vec::new();
    for &threads in sz.threads {
        let per_thread = (sz.group_inputs / threads).max(2);
        let grouped = group_run(&inputs[..3 * sz.accounts], sz.accounts, threads, per_thread, None);
        let alone = group_run(&inputs[..3 * sz.accounts], sz.accounts, threads, per_thread, Some(1));
        group_rows.push((threads, per_thread, grouped, alone));
    }

    // The table.
    println!();
    let raw_rate = rate(events, raw.wall.0);
    report(
        "(a) bulk Ledger::submit_chunks, durable events/s",
        rate(events, submit.wall.0),
        "(b) raw sled insert + 1 flush",
        raw_rate,
        "events/s",
    );
    report(
        "(a) bulk import::import, durable events/s",
        rate(events, import.wall.0),
        "(b) raw sled insert + 1 flush",
        raw_rate,
        "events/s",
    );
    report(
        "(a) bulk submit, median of runs",
        rate(events, submit.wall.1),
        "(b) raw, median of runs",
        rate(events, raw.wall.1),
        "events/s",
    );
    report(
        "(a) bulk submit, per CPU second",
        submit.cpu_rate(events),
        "(b) raw, per CPU second",
        raw.cpu_rate(events),
        "events/s",
    );
    report(
        "(b2) store's write sets, raw inserts",
        rate(events, sets.wall.0),
        "(b) raw sled insert + 1 flush",
        raw_rate,
        "events/s",
    );
    report(
        "(b2) write sets, per CPU second",
        sets.cpu_rate(events),
        "(b) raw, per CPU second",
        raw.cpu_rate(events),
        "events/s",
    );
    report(
        "(a) bulk submit, per CPU second",
        submit.cpu_rate(events),
        "(b2) its write sets, per CPU second",
        sets.cpu_rate(events),
        "events/s",
    );
    report(
        "(c) single command p50",
        micros(percentile(&ours, 50)),
        "(d) raw insert + flush p50",
        micros(percentile(&theirs, 50)),
        "µs",
    );
    report(
        "(c) single command p99",
        micros(percentile(&ours, 99)),
        "(d) raw insert + flush p99",
        micros(percentile(&theirs, 99)),
        "µs",
    );
    report(
        &format!(
            "(d2) its write set ({:.1} keys), raw p50",
            writes_per_single as f64 / sz.singles as f64
        ),
        micros(percentile(&sets_lat, 50)),
        "(d) raw insert + flush p50, same loop",
        micros(percentile(&again, 50)),
        "µs",
    );
    report(
        "(c) single command p50",
        micros(percentile(&ours, 50)),
        "(d2) its write set, raw p50",
        micros(percentile(&sets_lat, 50)),
        "µs",
    );
    for (threads, per_thread, grouped, alone) in &group_rows {
        report(
            &format!("(e) group commit, {threads} threads, acks/s"),
            grouped.acks_per_s,
            "groups of 1 (a flush per input)",
            alone.acks_per_s,
            "acks/s",
        );
        report(
            &format!("(e) group commit, {threads} threads, p50"),
            micros(grouped.p50),
            "groups of 1, p50",
            micros(alone.p50),
            "µs",
        );
        let s = &grouped.sizes;
        println!(
            "    {threads} threads × {per_thread} inputs: p99 {:.0} µs (groups of 1: {:.0} µs); group sizes min {} / median {} / mean {:.1} / p99 {} / max {} over {} flushes",
            micros(grouped.p99),
            micros(alone.p99),
            s.min().unwrap_or(0),
            s.percentile(50).unwrap_or(0),
            s.mean(),
            s.percentile(99).unwrap_or(0),
            s.max().unwrap_or(0),
            s.groups(),
        );
    }
    println!("targets: bulk ≥ 0.70× raw insert rate; single-command p50 ≤ 2× raw insert+flush p50 (ratio ≤ 2.00)");
}

struct GroupRun {
    acks_per_s: f64,
    p50: Duration,
    p99: Duration,
    sizes: GroupSizes,
}

/// `threads` clients, each submitting `per_thread` single inputs on its own accounts, all
/// at one instant (concurrent callers cannot order their clocks), through a committer with
/// groups of up to `max` inputs (default: `GROUP_INPUTS_MAX`).
fn group_run(setup: &[Input], accounts: usize, threads: usize, per_thread: usize, max: Option<usize>) -> GroupRun {
    let dir = temp();
    let mut ledger = open_ledger(dir.path());
    ledger.submit(setup).expect("setup");
    let inputs_before = ledger.state().inputs_recorded;
    let committer = match max {
        None => GroupCommitter::start(ledger),
        Some(max) => GroupCommitter::with_max(ledger, max),
    };
    let when = at(after_setup(accounts) + 100_000);
    let tag = format!("g{threads}");
    let barrier = Barrier::new(threads + 1);
    let (elapsed, mut latencies) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (committer, barrier, when, tag) = (&committer, &barrier, &when, &tag);
                s.spawn(move || {
                    let mine: Vec<Input> = (0..per_thread)
                        .map(|j| single(tag, (t + j * threads) % accounts, j * threads + t, when))
                        .collect();
                    let mut latencies = Vec::with_capacity(per_thread);
                    barrier.wait();
                    for input in mine {
                        let start = Clock::now();
                        match committer.submit(input) {
                            Ok(Outcome::Recorded { refusal: None, .. }) => {}
                            other => panic!("{other:?}"),
                        }
                        latencies.push(start.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        barrier.wait();
        let start = Clock::now();
        let latencies: Vec<Duration> = workers.into_iter().flat_map(|w| w.join().expect("a client")).collect();
        (start.elapsed(), latencies)
    });
    let sizes = committer.group_sizes();
    let ledger = committer.shutdown();
    let total = (threads * per_thread) as u64;
    assert_eq!(
        ledger.state().inputs_recorded - inputs_before,
        total,
        "every ack is in the log"
    );
    assert_eq!(sizes.inputs(), total);
    verify_store(ledger.store(), None)
        .expect("read the log")
        .expect("the log verifies");
    latencies.sort();
    GroupRun {
        acks_per_s: rate(total, elapsed),
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
        sizes,
    }
}
