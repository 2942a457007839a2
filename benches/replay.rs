//! Replay and queries (issue 4).
//!
//! Builds two logs (1 M and 10 M events at full scale) once, caches them under
//! `target/bench-cache/`, and measures in one run:
//! - rebuilding every projection from position 0 (`replay::load_from_zero`), in events/s,
//!   against the raw reference: a sled scan of the same log plus `decode` of every event;
//! - startup from the stored projection snapshot (`replay::load_working`, what
//!   `Ledger::open` does, with a snapshot at the head), small log against large log: it
//!   should not grow with the log; and the whole view (`replay::load`, settled history
//!   read back), for comparison;
//! - p50/p99 of the queries a support person runs for one "hot" app with ~10 k events of
//!   its own: `state app` (as the CLI does it), `explain app`, `state app --as-of T`,
//!   each after a few uncounted warm-up queries (printed), with what the kernel counted
//!   for the counted ones. The hot app lives the last `hot_days` of either log, on the
//!   same calendar days (every log ends on one date), in an account of its own opened with
//!   it, so its own history and its account's are the same in both and only the log
//!   around them grows: the flatness figures compare like with like.
//!   `explain app` of a *long-lived* app (there from the first day, renewing monthly) is
//!   measured too: what it tells, and so what it reads, grows with the app's own history.
//!
//! The rebuild's CPU time is printed beside its wall time: a long replay decodes on a
//! second thread (`replay::replay_into`), the raw reference on one.
//! Every measured result is checked against a digest computed independently (from the
//! projections rebuilt from position 0), so a faster path that answers differently fails.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallClock};

use chat_ledger::describe::{app_block, zone_of};
use chat_ledger::explain;
use chat_ledger::ledger::{Ledger, SeededKeys};
use chat_ledger::replay;
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::{block_events, open_raw_sled, EventStore, SledStore, LAYOUT_MARKER};
use chat_ledger_events::{
    decode, AccountId, Actor, Amount, AppId, Command, Contact, EditionId, HoldKind, Input, Instant, Key, MoneyKind,
    SCHEMA_VERSION,
};
use chat_ledger_projections::{LedgerView, PROJECTION_VERSION};
use chrono::{Duration as Span, TimeZone, Utc};
use common::Scale;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// Raise when the generated workload changes: cached logs of another version are rebuilt.
const GENERATOR_VERSION: u32 = 4;

/// Inputs per `Ledger::submit` (one acknowledged batch, one flush) while building a log.
const BUILD_CHUNK_INPUTS: usize = 4096;

/// Sled's directory per stored event, measured at 1 M events (~1.3 KB), with margin.
const DISK_BYTES_PER_EVENT: u64 = 2_000;

/// One generated log.
#[derive(Clone, Copy, Debug)]
struct Spec {
    label: &'static str,
    accounts: u64,
    apps_per_account: u64,
    /// Simulated days; the log ends after the last one.
    days: u64,
    /// Events the hot app's own stream should reach (logins, renewals, bills).
    hot_events: u64,
    /// The hot app's life: the last `hot_days` days of the log.
    hot_days: u64,
    /// The size the spec is calibrated for (the cache key; the real count is reported).
    nominal_events: u64,
}

fn specs(scale: Scale) -> [Spec; 2] {
    // One population; the large log runs ten times longer, so the current state (apps,
    // accounts) is the same size and only history grows with the log.
    let (accounts, small_days, hot, small_n, large_n) = match scale {
        Scale::Smoke => (6, 8, 100, 500, 2_000),
        Scale::Quick => (500, 73, 10_000, 100_000, 1_000_000),
        Scale::Full => (5_800, 73, 10_000, 1_000_000, 10_000_000),
    };
    let small = Spec {
        label: "small",
        accounts,
        apps_per_account: 4,
        days: small_days,
        hot_events: hot,
        hot_days: small_days,
        nominal_events: small_n,
    };
    let large = Spec {
        label: "large",
        days: small_days * 10,
        nominal_events: large_n,
        ..small
    };
    [small, large]
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn key(text: String) -> Key {
    Key::new(text).expect("bench keys are well-formed")
}

fn app_id(global: u64) -> AppId {
    AppId(1_400_000_000 + global)
}

fn account_id(index: u64) -> AccountId {
    AccountId::new(format!("acct-{index:05}")).expect("well-formed")
}

fn cash(amount: i64) -> Amount {
    Amount(Decimal::new(amount * 100, 2))
}

/// What a generated app does, by its global index.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Persona {
    /// Buys Standard once, auto-renews every month.
    AutoRenew,
    /// Buys Standard, renews by hand two days before it expires.
    Manual,
    /// Stays on Trial; logins only.
    Trial,
    /// Lets the plan expire, is suspended, and buys again five days later (reactivation).
    Lapser,
}

fn persona(global: u64) -> Persona {
    match global % 10 {
        _ if global == 0 => Persona::AutoRenew,
        0..=3 => Persona::AutoRenew,
        4..=6 => Persona::Manual,
        7..=8 => Persona::Trial,
        _ => Persona::Lapser,
    }
}

/// The facts of a built log, kept next to it; the cache is valid only if this file exists.
#[derive(Clone, Debug)]
struct Built {
    dir: PathBuf,
    events: u64,
    head_hash: String,
    hot: AppId,
    hot_stream_events: u64,
    /// Business time of the `--as-of` query: the middle of the log.
    as_of: Instant,
    build_seconds: Option<f64>,
    disk_bytes: u64,
}

const DONE_FILE: &str = "built.json";

/// Names the cached log by everything that shapes its bytes on disk: a change to any of
/// them builds a new one.
fn cache_name(spec: &Spec, scale: Scale) -> String {
    let layout = String::from_utf8_lossy(LAYOUT_MARKER).replace(' ', "-");
    format!(
        "replay-{:?}-{}-{}ev-pv{PROJECTION_VERSION}-schema{SCHEMA_VERSION}-gen{GENERATOR_VERSION}-{layout}",
        scale, spec.label, spec.nominal_events
    )
    .to_lowercase()
}

/// Free bytes on the filesystem holding `dir` (`df -Pk`).
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().nth(1)?;
    let kb: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kb * 1024)
}

/// The first instant after every log's last day (2025-03-15T00:00:00+08:00). A log starts
/// its `days` before it (the small log on 2025-01-01), so the hot app lives the same
/// calendar days in either log: its months, bills and reminders fall on the same dates and
/// its working view holds the same months of users. (Generator 2 started both logs on
/// 2025-01-01: the large log's hot app then ended on 31 December with a full month of
/// users where the small log's had half of March, and `state app` decoded twice the users.)
fn end_instant() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 16, 0, 0).unwrap()
}

/// The hot app's account: one past the population's.
fn hot_account(spec: &Spec) -> AccountId {
    account_id(spec.accounts)
}

impl Spec {
    fn at(&self, day: u64, second_of_day: u64) -> Instant {
        assert!(day < self.days, "day {day} is inside the log's {} days", self.days);
        let start = end_instant() - Span::days(self.days as i64);
        Instant::from_utc(start + Span::days(day as i64) + Span::seconds(second_of_day.min(86_399) as i64))
    }

    /// The day the hot app is created, bought and starts its logins.
    fn hot_from_day(&self) -> u64 {
        self.days - self.hot_days
    }
}

/// The app of the whole log's age whose `explain` is measured beside the hot app's: an
/// auto-renewing app of account 2, there from the first day.
const LONG_LIVED: u64 = 10;

/// In the middle of the hot app's life.
fn as_of_instant(spec: &Spec) -> Instant {
    spec.at(spec.hot_from_day() + spec.hot_days / 2, 13 * 3600 + 1)
}

fn load_built(dir: &Path) -> Option<Built> {
    let text = std::fs::read_to_string(dir.join(DONE_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(Built {
        dir: dir.to_owned(),
        events: v["events"].as_u64()?,
        head_hash: v["head_hash"].as_str()?.to_owned(),
        hot: AppId(v["hot"].as_u64()?),
        hot_stream_events: v["hot_stream_events"].as_u64()?,
        as_of: Instant::parse(v["as_of"].as_str()?).ok()?,
        build_seconds: None,
        disk_bytes: common::dir_bytes(dir),
    })
}

/// The log described by `spec`: from the cache, or generated now.
fn build_or_load(spec: &Spec, scale: Scale) -> Option<Built> {
    let dir = common::cache_dir(&cache_name(spec, scale));
    if let Some(built) = load_built(&dir) {
        eprintln!(
            "replay: {} log cached in {} ({} events)",
            spec.label,
            dir.display(),
            built.events
        );
        return Some(built);
    }
    let need = spec.nominal_events * DISK_BYTES_PER_EVENT;
    if let Some(free) = free_bytes(&dir) {
        if free < need + (2 << 30) {
            eprintln!(
                "replay: SKIPPING the {} log: it needs ~{:.1} GB on disk, {:.1} GB are free under {}",
                spec.label,
                need as f64 / 1e9,
                free as f64 / 1e9,
                dir.display()
            );
            return None;
        }
    }
    std::fs::remove_dir_all(&dir).expect("clear a partial cached log");
    std::fs::create_dir_all(&dir).expect("create the cache dir");
    eprintln!(
        "replay: building the {} log ({} events nominal) in {}",
        spec.label,
        spec.nominal_events,
        dir.display()
    );
    let started = WallClock::now();
    let (events, head_hash, hot_stream_events) = generate(spec, &dir.join("ledger"));
    let build_seconds = started.elapsed().as_secs_f64();
    let built = Built {
        dir: dir.clone(),
        events,
        head_hash,
        hot: app_id(0),
        hot_stream_events,
        as_of: as_of_instant(spec),
        build_seconds: Some(build_seconds),
        disk_bytes: common::dir_bytes(&dir),
    };
    let done = serde_json::json!({
        "events": built.events, "head_hash": built.head_hash, "hot": built.hot.0,
        "hot_stream_events": built.hot_stream_events, "as_of": built.as_of.to_string(),
        "build_seconds": build_seconds, "generator": GENERATOR_VERSION,
    });
    std::fs::write(dir.join(DONE_FILE), done.to_string()).expect("write the cache marker");
    eprintln!(
        "replay: built the {} log: {} events in {:.1} s ({:.0} events/s), {:.2} GB on disk",
        spec.label,
        events,
        build_seconds,
        events as f64 / build_seconds,
        built.disk_bytes as f64 / 1e9
    );
    Some(built)
}

/// Appends the workload through `Ledger::submit`, a day at a time, in big chunks.
/// Returns (events, head hash, events in the hot app's stream).
fn generate(spec: &Spec, dir: &Path) -> (u64, String, u64) {
    let store = SledStore::open(dir).expect("open the bench store");
    let mut ledger = Ledger::open_with_keys(
        Box::new(store),
        Rulebook::intl_2025(),
        Box::new(SeededKeys("replay-bench".into())),
    )
    .expect("open the bench ledger");
    let apps = spec.accounts * spec.apps_per_account;
    let standard = EditionId("standard".into());
    let pro = EditionId("pro".into());
    let hot = app_id(0);
    let hot_from_day = spec.hot_from_day();
    let hot_per_day = spec.hot_events.div_ceil(spec.hot_days).max(1);
    assert!(persona(0) == Persona::AutoRenew && persona(LONG_LIVED) == Persona::AutoRenew);
    // Logins per app per week: a small pool of users per app, so most logins repeat.
    for day in 0..spec.days {
        let mut inputs: Vec<Input> = Vec::new();
        let mut push = |key_text: String, second: u64, actor: Actor, command: Command| {
            inputs.push(Input {
                key: key(key_text),
                at: spec.at(day, second),
                actor,
                command,
            })
        };
        push(format!("tick/{day}"), 0, Actor::System, Command::AdvanceClock {});
        if day == 0 {
            for a in 0..spec.accounts {
                let account = account_id(a);
                push(
                    format!("open/{a}"),
                    8 * 3600,
                    Actor::Customer,
                    Command::OpenAccount {
                        account: account.clone(),
                        creator: Contact {
                            email: format!("ops@acct{a}.example"),
                            sms: format!("+65-8{a:07}"),
                        },
                    },
                );
                push(
                    format!("fund/{a}/0"),
                    8 * 3600 + 1,
                    Actor::Customer,
                    Command::AddFunds {
                        account: account.clone(),
                        kind: MoneyKind::Cash,
                        amount: cash(if a % 20 == 19 { 1_000 } else { 5_000 }),
                    },
                );
                for i in 0..spec.apps_per_account {
                    let g = a * spec.apps_per_account + i;
                    if g == 0 {
                        continue;
                    }
                    push(
                        format!("create/{g}"),
                        8 * 3600 + 2,
                        Actor::Customer,
                        Command::CreateApp {
                            account: account.clone(),
                            app: app_id(g),
                            name: format!("App {g}"),
                        },
                    );
                }
            }
        }
        if day == hot_from_day {
            // The hot app's account holds it alone and opens with it, so the account's
            // story, which `explain app` tells from too, is the same in either log.
            let account = hot_account(spec);
            push(
                "open/hot".into(),
                8 * 3600,
                Actor::Customer,
                Command::OpenAccount {
                    account: account.clone(),
                    creator: Contact {
                        email: "ops@hot.example".into(),
                        sms: format!("+65-8{:07}", spec.accounts),
                    },
                },
            );
            push(
                "fund/hot/0".into(),
                8 * 3600 + 1,
                Actor::Customer,
                Command::AddFunds {
                    account: account.clone(),
                    kind: MoneyKind::Cash,
                    amount: cash(5_000),
                },
            );
            push(
                "create/0".into(),
                8 * 3600 + 2,
                Actor::Customer,
                Command::CreateApp {
                    account,
                    app: hot,
                    name: "App 0".into(),
                },
            );
        }
        let state = ledger.state();
        // Top-ups: once a month per account (small ones for one account in twenty, whose
        // auto-renewals end up failing), a gift now and then.
        if day > 0 {
            for a in (0..spec.accounts).filter(|a| (day + a) % 30 == 0) {
                let (kind, amount) = match (a % 20, (day / 30) % 4) {
                    (19, _) => (MoneyKind::Cash, 100),
                    (_, 3) => (MoneyKind::Gift, 50),
                    _ => (MoneyKind::Cash, 2_000),
                };
                push(
                    format!("fund/{a}/{day}"),
                    9 * 3600 + a % 3600,
                    Actor::Customer,
                    Command::AddFunds {
                        account: account_id(a),
                        kind,
                        amount: cash(amount),
                    },
                );
            }
        }
        for g in 0..apps {
            let app = app_id(g);
            let second = 10 * 3600 + g % 7200;
            let buy = |edition: &EditionId| Command::BuyEdition {
                app,
                edition: edition.clone(),
                months: 1,
                contract_monthly_price: None,
            };
            let view = state.apps.get(&app);
            let gone = view.is_none_or(|v| v.reclaimed_at.is_some() || v.holds.contains_key(&HoldKind::Violation));
            let born = if g == 0 { hot_from_day } else { 0 };
            if day == born {
                match persona(g) {
                    Persona::Trial => {}
                    p => {
                        push(format!("buy/{g}/0"), second, Actor::Customer, buy(&standard));
                        if p == Persona::AutoRenew {
                            push(
                                format!("auto/{g}"),
                                second + 1,
                                Actor::Customer,
                                Command::SetAutoRenew { app, on: true },
                            );
                        }
                    }
                }
            } else if !gone {
                let view = view.expect("not gone");
                let now = spec.at(day, second);
                match persona(g) {
                    Persona::Manual => {
                        let due = view
                            .plan
                            .as_ref()
                            .is_some_and(|p| view.expired.is_none() && p.valid_until.utc() - now.utc() < Span::days(2));
                        if due {
                            push(format!("buy/{g}/{day}"), second, Actor::Customer, buy(&view.edition));
                        }
                    }
                    Persona::Lapser => {
                        let back = view
                            .holds
                            .get(&HoldKind::Expiry)
                            .is_some_and(|h| now.utc() - h.since.utc() >= Span::days(5));
                        if back {
                            push(format!("buy/{g}/{day}"), second, Actor::Customer, buy(&standard));
                        }
                    }
                    Persona::AutoRenew if g % 50 == 1 && day == spec.days / 2 && view.plan.is_some() => {
                        push(format!("upgrade/{g}"), second, Actor::Customer, buy(&pro));
                    }
                    _ => {}
                }
                if g % 997 == 500 && day == spec.days / 3 {
                    push(
                        format!("violation/{g}"),
                        second + 2,
                        Actor::Support("bench".into()),
                        Command::FlagViolation {
                            app,
                            reason: "spam reported".into(),
                        },
                    );
                }
            }
            // Logins: every app, once a week, from a pool of 12 users (most repeat).
            if g != 0 && (day + g) % 7 == 0 {
                let user = (day / 7 + g) % 12;
                push(
                    format!("login/{g}/{day}"),
                    12 * 3600 + g % 28_800,
                    Actor::System,
                    Command::Login {
                        app,
                        user: format!("user-{user}"),
                        logged_in_at: None,
                    },
                );
            }
        }
        // The hot app: a steady stream of logins from many users.
        for j in (0..hot_per_day).filter(|_| day >= hot_from_day) {
            let n = (day - hot_from_day) * hot_per_day + j;
            push(
                format!("login/hot/{n}"),
                12 * 3600 + (j * 28_800) / hot_per_day,
                Actor::System,
                Command::Login {
                    app: hot,
                    user: format!("hot-user-{}", n % 4_000),
                    logged_in_at: None,
                },
            );
        }
        inputs.sort_by_key(|i| i.at);
        for chunk in inputs.chunks(BUILD_CHUNK_INPUTS) {
            ledger.submit(chunk).expect("the bench workload is accepted");
        }
    }
    ledger.save_snapshot().expect("save the projection snapshot");
    let hot_stream_events = ledger.state().stream_version(&chat_ledger_events::StreamId::app(hot));
    (ledger.head().seq, ledger.head().hash.to_string(), hot_stream_events)
}

/// Queries run and timed before a query's samples, printed and not counted: the first
/// queries after the bench's scans of the logs find the page cache and sled's cache cold
/// (the first three took 181 / 45 / 26 ms at 10 M when they were counted, then ≤ 0.5 ms),
/// which says how long the first query of a process waits for the disk, not how the index
/// answers. A fresh process per query is the other measure (the profile loops).
const WARM_UP_SAMPLES: usize = 5;

/// Samples `f` until `max` samples or `budget` is spent (at least `min`), after
/// [`WARM_UP_SAMPLES`] uncounted ones; sorted. Prints what the kernel counted for the
/// counted samples ([`common::KernelCounters`]): a query that waits for the disk or for a
/// CPU, maps fresh memory, or runs while the machine is busy or its host takes the CPU,
/// says so, which its time alone does not.
fn sample(what: &str, min: usize, max: usize, budget: Duration, mut f: impl FnMut()) -> Vec<Duration> {
    println!("{what}:");
    let warm_up: Vec<String> = (0..WARM_UP_SAMPLES)
        .map(|_| {
            let t = WallClock::now();
            f();
            format!("{:.2}", ms(t.elapsed()))
        })
        .collect();
    println!("  warm-up, not counted: {} ms", warm_up.join(", "));
    let started = WallClock::now();
    let counted_from = common::KernelCounters::now();
    let mut out = Vec::new();
    while out.len() < min || (out.len() < max && started.elapsed() < budget) {
        let t = WallClock::now();
        f();
        out.push(t.elapsed());
    }
    if let (Some(from), Some(to)) = (counted_from, common::KernelCounters::now()) {
        println!("  {}", to.since(from).describe(out.len()));
    }
    // Where the slowest samples fell (a tail of first samples is a cold cache).
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(out[*i]));
    let slowest: Vec<String> = order
        .iter()
        .take(3)
        .map(|i| format!("#{i} {:.2} ms", ms(out[*i])))
        .collect();
    println!("  slowest samples (of {}): {}", out.len(), slowest.join(", "));
    out.sort();
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Bytes of the settled history parts (`projections/history/v<PROJECTION_VERSION>/…`).
fn history_bytes(store: &SledStore) -> usize {
    let prefix = format!("{}/history/v{PROJECTION_VERSION}/", replay::SNAPSHOT_NAME);
    store
        .snapshots_in(&prefix, &format!("{prefix}\u{10FFFF}"))
        .expect("read the history parts")
        .iter()
        .map(|(_, bytes)| bytes.len())
        .sum()
}

/// Bytes of the stored snapshot, every part.
fn snapshot_bytes(store: &SledStore) -> usize {
    let view = replay::load_working(store).expect("load");
    let mut total = store
        .get_snapshot(replay::SNAPSHOT_NAME)
        .unwrap()
        .map_or(0, |b| b.len());
    for part in ["shared", "part-list"] {
        total += store
            .get_snapshot(&format!("{}/{part}", replay::SNAPSHOT_NAME))
            .unwrap()
            .map_or(0, |b| b.len());
    }
    for id in view.accounts.keys() {
        total += store
            .get_snapshot(&format!("{}/account/{id}", replay::SNAPSHOT_NAME))
            .unwrap()
            .map_or(0, |b| b.len());
    }
    for id in view.apps.keys() {
        total += store
            .get_snapshot(&format!("{}/app/{id}", replay::SNAPSHOT_NAME))
            .unwrap()
            .map_or(0, |b| b.len());
    }
    total
}

/// `state app <hot>` as the CLI prints it.
fn state_app_text(view: &LedgerView, app: AppId, until: Option<Instant>) -> String {
    let zone = zone_of(view.rulebook.as_ref().map(|r| r.zone.as_str()));
    let app_view = view.apps.get(&app).expect("the hot app exists");
    let clock = view.clock.expect("not empty");
    let as_of_line = match until {
        Some(t) => format!(
            "as of {}: events 1..{} (the last at {})",
            t.display_in(zone),
            view.seq,
            clock.display_in(zone)
        ),
        None => format!("as of event {} ({})", view.seq, clock.display_in(zone)),
    };
    format!("{}  {as_of_line}\n", app_block(app_view, zone))
}

fn explain_text(store: &dyn EventStore, view: &LedgerView, app: AppId) -> String {
    let x = explain::explain_app(store, view, app, None).expect("explain the hot app");
    explain::render(&x)
}

/// What one log measured.
struct Measured {
    events: u64,
    raw_rate: (f64, f64),
    replay_rate: (f64, f64),
    /// Events per CPU second, best run.
    raw_cpu_rate: f64,
    replay_cpu_rate: f64,
    open: Duration,
    /// The snapshot's parts: what startup reads.
    snapshot_bytes: usize,
    /// The settled history parts: what a whole load reads besides.
    history_bytes: usize,
    /// Startup: the working view (`replay::load_working`), best and median.
    startup: (Duration, Duration),
    /// The whole view from the snapshot and its history (`replay::load`), median.
    whole_load: Duration,
    state: Vec<Duration>,
    explain: Vec<Duration>,
    /// `explain app` of the long-lived app ([`LONG_LIVED`]).
    explain_long_lived: Vec<Duration>,
    as_of: Vec<Duration>,
}

/// A raw sled scan of the log's event blocks, each event decoded; (count, last seq, digest of its bytes).
fn raw_scan(dir: &Path) -> (u64, u64, String) {
    let db = open_raw_sled(dir).expect("open sled");
    let log = db.open_tree("log").expect("the log tree");
    let mut count = 0u64;
    let mut last = (0, Vec::new());
    for entry in log.scan_prefix(b"e") {
        let (_, block) = entry.expect("read");
        for bytes in block_events(&block).expect("a block of events") {
            let event = decode(bytes).expect("decode");
            count += 1;
            if event.seq > last.0 {
                last = (event.seq, bytes.to_vec());
            }
        }
    }
    (count, last.0, digest(&last.1))
}

fn measure(built: &Built, scale: Scale) -> Measured {
    let dir = built.dir.join("ledger");
    let runs = if scale == Scale::Full { 2 } else { 3 };

    // Rebuild from 0 against the reference (a raw sled scan + decode of the same events,
    // nothing else), alternating run by run, each on a freshly opened database (sled's
    // cache cold, the OS's warm for both). Wall and CPU time.
    let (mut raw_wall, mut raw_cpu, mut rep_wall, mut rep_cpu) = (vec![], vec![], vec![], vec![]);
    let mut zero = None;
    for _ in 0..runs {
        let (t, c) = (WallClock::now(), common::cpu_time().unwrap_or_default());
        let (count, last_seq, last_hash) = raw_scan(&dir);
        raw_wall.push(t.elapsed());
        raw_cpu.push(common::cpu_time().unwrap_or_default() - c);
        assert_eq!(count, built.events, "raw scan counts every event");
        assert_eq!(last_seq, built.events);
        assert_eq!(last_hash, built.head_hash, "raw scan ends at the recorded head");

        let store = SledStore::open(&dir).expect("open the store");
        drop(zero.take());
        let (t, c) = (WallClock::now(), common::cpu_time().unwrap_or_default());
        let view = replay::load_from_zero(&store, None).expect("replay");
        rep_wall.push(t.elapsed());
        rep_cpu.push(common::cpu_time().unwrap_or_default() - c);
        assert_eq!(view.seq, built.events);
        assert_eq!(
            view.head_hash.to_string(),
            built.head_hash,
            "replay ends at the recorded head"
        );
        zero = Some(view);
    }
    for v in [&mut raw_wall, &mut raw_cpu, &mut rep_wall, &mut rep_cpu] {
        v.sort();
    }
    let mut zero = zero.expect("ran");

    let open_started = WallClock::now();
    let store = SledStore::open(&dir).expect("open the store");
    let open = open_started.elapsed();

    // The reference answers for every query below come from the view rebuilt from 0.
    let want_state = digest(state_app_text(&zero, built.hot, None).as_bytes());
    let long_lived = app_id(LONG_LIVED);
    let (explained, explained_long_lived) = (
        explain_text(&store, &zero, built.hot),
        explain_text(&store, &zero, long_lived),
    );
    println!(
        "explain app: {} lines for the hot app, {} for the long-lived app {long_lived}",
        explained.lines().count(),
        explained_long_lived.lines().count()
    );
    let want_explain = digest(explained.as_bytes());
    let want_explain_long_lived = digest(explained_long_lived.as_bytes());
    let zero_view_digest = digest(&serde_json::to_vec(&zero).expect("serialize"));
    let usage_months: usize = zero.apps.values().map(|a| a.usage.len()).sum();
    let digests: usize = zero
        .apps
        .values()
        .flat_map(|a| a.usage.values())
        .map(|u| u.users.len())
        .sum();
    println!(
        "{} projections: {} apps, {} accounts, {} orders, {} bills, {} usage months holding {} user digests, {} deadlines, {} streams",
        built.events,
        zero.apps.len(),
        zero.accounts.len(),
        zero.orders.len(),
        zero.bills.len(),
        usage_months,
        digests,
        zero.deadlines.len(),
        zero.streams.len()
    );
    // Startup from the snapshot stored at the head (stored again if this build's snapshot
    // format or projection version differs from the one that built the log).
    // `CHAT_LEDGER_BENCH_RESAVE=1` stores it again anyway (a view change during development,
    // before the projection version is raised).
    let resave = std::env::var_os("CHAT_LEDGER_BENCH_RESAVE").is_some();
    if resave || replay::snapshot_position(&store).expect("snapshot") != Some(built.events) {
        let started = WallClock::now();
        replay::save_snapshot(&store, &mut zero).expect("save the snapshot");
        println!(
            "snapshot stored again (another projection version or snapshot format), app checkpoints and story segments caught up from scratch: {:.1} s",
            started.elapsed().as_secs_f64()
        );
    } else {
        zero.settle().expect("the view settles");
    }
    // The working view a snapshot at the head holds: the whole view less its settled
    // history (saving settles the view it stores).
    let working_view_digest = digest(&serde_json::to_vec(&zero).expect("serialize"));
    // What `state app` decodes besides the app's fields: the same in both logs.
    let hot = &zero.apps[&built.hot];
    let hot_months: Vec<String> = hot
        .usage
        .iter()
        .map(|(month, usage)| format!("{month}: {} users", usage.users.len()))
        .collect();
    let hot_account = &zero.accounts[&hot.account];
    println!(
        "hot app's working view: usage {}; story {} positions, its account's {}",
        hot_months.join(", "),
        hot.story_settled + hot.story.len() as u64,
        hot_account.story_settled + hot_account.story.len() as u64
    );
    drop(zero);
    let as_of_zero = replay::load_from_zero(&store, Some(built.as_of)).expect("replay as of");
    let want_as_of = digest(state_app_text(&as_of_zero, built.hot, Some(built.as_of)).as_bytes());
    drop(as_of_zero);
    assert_eq!(
        replay::snapshot_position(&store).expect("snapshot"),
        Some(built.events),
        "the snapshot is at the head"
    );
    let snapshot_bytes = snapshot_bytes(&store);
    // Startup is what `Ledger::open` does: the working view, from the snapshot's parts.
    let (st_min, st_med, view) = common::time_runs(runs.max(3), || replay::load_working(&store).expect("load"));
    assert_eq!(
        digest(&serde_json::to_vec(&view).expect("serialize")),
        working_view_digest,
        "the snapshot gives the working view of the projections replayed from 0"
    );
    drop(view);

    // Queries, as the CLI runs them (after opening the store): load, look up, render.
    let budget = Duration::from_millis(if scale == Scale::Smoke { 200 } else { 20_000 });
    let state = sample("state app", 3, 200, budget, || {
        let view = replay::load_for_app(&store, built.hot, None).expect("load");
        let text = state_app_text(&view, built.hot, None);
        assert_eq!(digest(text.as_bytes()), want_state, "state app answers as from 0");
    });
    let explain = sample("explain app", 3, 200, budget, || {
        let view = replay::load_for_app(&store, built.hot, None).expect("load");
        let text = explain_text(&store, &view, built.hot);
        assert_eq!(digest(text.as_bytes()), want_explain, "explain app answers as from 0");
    });
    let explain_long_lived = sample("explain app, long-lived", 3, 200, budget, || {
        let view = replay::load_for_app(&store, long_lived, None).expect("load");
        let text = explain_text(&store, &view, long_lived);
        assert_eq!(
            digest(text.as_bytes()),
            want_explain_long_lived,
            "explain app (long-lived) answers as from 0"
        );
    });
    let as_of = sample("state app --as-of", 3, 200, budget, || {
        let view = replay::load_app(&store, built.hot, Some(built.as_of)).expect("load as of");
        let text = state_app_text(&view, built.hot, Some(built.as_of));
        assert_eq!(
            digest(text.as_bytes()),
            want_as_of,
            "state app --as-of answers as from 0"
        );
    });
    // Last, after the queries: it reads half a gigabyte of history parts at 10 M.
    // The whole view from the snapshot: its parts and every settled history part.
    let history_bytes = history_bytes(&store);
    let (_, whole_med, view) = common::time_runs(runs.max(3), || replay::load(&store, None).expect("load"));
    assert_eq!(
        digest(&serde_json::to_vec(&view).expect("serialize")),
        zero_view_digest,
        "the snapshot and its settled history give the projections replayed from 0"
    );
    drop(view);

    Measured {
        events: built.events,
        raw_rate: (
            common::rate(built.events, raw_wall[0]),
            common::rate(built.events, raw_wall[raw_wall.len() / 2]),
        ),
        replay_rate: (
            common::rate(built.events, rep_wall[0]),
            common::rate(built.events, rep_wall[rep_wall.len() / 2]),
        ),
        raw_cpu_rate: common::rate(built.events, raw_cpu[0]),
        replay_cpu_rate: common::rate(built.events, rep_cpu[0]),
        open,
        snapshot_bytes,
        history_bytes,
        startup: (st_min, st_med),
        whole_load: whole_med,
        state,
        explain,
        explain_long_lived,
        as_of,
    }
}

mod erased {
    /// Serialized JSON size of anything, for the `sizes` profile.
    pub trait Ser {
        fn len(&self) -> usize;
    }
    impl<T: serde::Serialize> Ser for T {
        fn len(&self) -> usize {
            serde_json::to_vec(self).expect("serialize").len()
        }
    }
}

/// `CHAT_LEDGER_REPLAY_PROFILE=zero|startup|whole|state|explain|as-of|sizes`: runs only that
/// operation, in a loop, on the cached large log — for `perf record` or callgrind.
fn profile(what: &str, built: &Built) {
    let store = SledStore::open(&built.dir.join("ledger")).expect("open the store");
    let runs: usize = std::env::var("CHAT_LEDGER_REPLAY_PROFILE_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    if replay::snapshot_position(&store).expect("snapshot") != Some(built.events) {
        // Another build's snapshot format: stored again, as the bench does.
        let mut view = replay::load_from_zero(&store, None).expect("replay");
        replay::save_snapshot(&store, &mut view).expect("save the snapshot");
    }
    if std::env::var("CHAT_LEDGER_REPLAY_PROFILE_AFTER_STARTUP").is_ok_and(|v| v == "1") {
        // As the bench's queries run: after startups.
        for _ in 0..4 {
            drop(replay::load_working(&store).expect("load"));
        }
    }
    let started = WallClock::now();
    let mut each = Vec::with_capacity(runs);
    for _ in 0..runs {
        let run_started = WallClock::now();
        let text = match what {
            "zero" => replay::load_from_zero(&store, None).expect("replay").seq.to_string(),
            "sizes" | "working-sizes" => {
                let v = if what == "sizes" {
                    replay::load(&store, None).expect("load")
                } else {
                    replay::load_working(&store).expect("load")
                };
                let size = |x: &dyn erased::Ser| x.len();
                let lists = |v: &LedgerView| {
                    let apps: usize = v
                        .apps
                        .values()
                        .map(|a| size(&a.story) + size(&a.reminders) + size(&a.unusable_periods))
                        .sum();
                    let accounts: usize = v.accounts.values().map(|a| size(&a.story) + size(&a.charges)).sum();
                    (apps, accounts)
                };
                println!(
                    "position lists (apps' story+reminders+unusable periods, accounts' story+charges): {:?}",
                    lists(&v)
                );
                let size = |x: &dyn erased::Ser| x.len();
                format!(
                    "streams {} ({}), accounts {} ({}), apps {} ({}), orders {} ({}), bills {} ({}), deadlines {} ({}), usage months {}, user digests {}",
                    v.streams.len(), size(&v.streams), v.accounts.len(), size(&v.accounts), v.apps.len(), size(&v.apps),
                    v.orders.len(), size(&v.orders), v.bills.len(), size(&v.bills), v.deadlines.len(), size(&v.deadlines),
                    v.apps.values().map(|a| a.usage.len()).sum::<usize>(),
                    v.apps.values().flat_map(|a| a.usage.values()).map(|u| u.users.len()).sum::<usize>(),
                )
            }
            "startup" => replay::load_working(&store).expect("load").seq.to_string(),
            "whole" => replay::load(&store, None).expect("load").seq.to_string(),
            "state" => state_app_text(
                &replay::load_for_app(&store, built.hot, None).expect("load"),
                built.hot,
                None,
            ),
            "explain" => explain_text(
                &store,
                &replay::load_for_app(&store, built.hot, None).expect("load"),
                built.hot,
            ),
            "as-of" => state_app_text(
                &replay::load_app(&store, built.hot, Some(built.as_of)).expect("load"),
                built.hot,
                Some(built.as_of),
            ),
            other => panic!("unknown profile {other:?}"),
        };
        if what == "sizes" {
            println!("{text}");
        }
        std::hint::black_box(text);
        each.push(run_started.elapsed());
    }
    let first = each[0];
    each.sort();
    println!(
        "{what}: {runs} runs, {:.2} ms each (first {:.2}, p50 {:.2}, p99 {:.2}, max {:.2} ms)",
        ms(started.elapsed()) / runs as f64,
        ms(first),
        ms(common::percentile(&each, 50)),
        ms(common::percentile(&each, 99)),
        ms(each.iter().copied().max().unwrap_or_default())
    );
}

fn main() {
    let scale = common::scale();
    println!("replay bench, scale {scale:?}");
    let [small_spec, large_spec] = specs(scale);
    if let Ok(what) = std::env::var("CHAT_LEDGER_REPLAY_PROFILE") {
        // `CHAT_LEDGER_REPLAY_PROFILE_LOG=small`: the small log instead.
        let small = std::env::var("CHAT_LEDGER_REPLAY_PROFILE_LOG").is_ok_and(|l| l == "small");
        let spec = if small { &small_spec } else { &large_spec };
        let built = build_or_load(spec, scale).expect("the log");
        return profile(&what, &built);
    }
    let mut results = Vec::new();
    for spec in [small_spec, large_spec] {
        let Some(built) = build_or_load(&spec, scale) else {
            continue;
        };
        if let Some(s) = built.build_seconds {
            println!(
                "built {} log: {} events in {:.1} s ({:.0} events/s through Ledger::submit)",
                spec.label,
                built.events,
                s,
                built.events as f64 / s
            );
        }
        println!(
            "{} log: {} events, {:.2} GB on disk, hot app {} has {} events in its stream, --as-of {}",
            spec.label,
            built.events,
            built.disk_bytes as f64 / 1e9,
            built.hot,
            built.hot_stream_events,
            built.as_of
        );
        results.push((spec, measure(&built, scale)));
    }
    for (spec, m) in &results {
        let n = format!("{} ({:.2} M events)", spec.label, m.events as f64 / 1e6);
        println!("-- {n}");
        common::report(
            &format!("replay from 0, median, {n}"),
            m.replay_rate.1,
            "raw sled scan + decode, median",
            m.raw_rate.1,
            "events/s",
        );
        common::report(
            &format!("replay from 0, best, {n}"),
            m.replay_rate.0,
            "raw sled scan + decode, best",
            m.raw_rate.0,
            "events/s",
        );
        common::report(
            &format!("replay from 0, per CPU s, {n}"),
            m.replay_cpu_rate,
            "raw sled scan + decode, per CPU s",
            m.raw_cpu_rate,
            "events/s",
        );
        println!(
            "{:<44} {:>14.1} ms  (sled open {:.1} ms; snapshot {:.1} MB)",
            format!("startup from snapshot, median, {n}"),
            ms(m.startup.1),
            ms(m.open),
            m.snapshot_bytes as f64 / 1e6
        );
        println!(
            "{:<44} {:>14.1} ms  (settled history {:.1} MB)",
            format!("whole view from snapshot + history, median, {n}"),
            ms(m.whole_load),
            m.history_bytes as f64 / 1e6
        );
        for (what, samples) in [
            ("state app", &m.state),
            ("explain app", &m.explain),
            ("state app --as-of", &m.as_of),
            ("explain app, long-lived", &m.explain_long_lived),
        ] {
            common::report(
                &format!("{what} p99, {n}"),
                ms(common::percentile(samples, 99)),
                "target",
                5.0,
                "ms",
            );
            println!(
                "{:<44} p50 {:.2} ms, p99 {:.2} ms, {} samples",
                "",
                ms(common::percentile(samples, 50)),
                ms(common::percentile(samples, 99)),
                samples.len()
            );
        }
    }
    if let [(_, small), (_, large)] = &results[..] {
        println!(
            "-- flatness: large log against small log (1.00 = flat); the hot app's history, calendar and account are the same in both"
        );
        common::report(
            "startup from snapshot, median",
            ms(large.startup.1),
            "same, small log",
            ms(small.startup.1),
            "ms",
        );
        for (what, l, s) in [
            ("state app p99", &large.state, &small.state),
            ("explain app p99", &large.explain, &small.explain),
            ("state app --as-of p99", &large.as_of, &small.as_of),
        ] {
            common::report(
                what,
                ms(common::percentile(l, 99)),
                "same, small log",
                ms(common::percentile(s, 99)),
                "ms",
            );
        }
        println!("-- not a flatness figure: the long-lived app's history is ten times longer in the large log");
        common::report(
            "explain app p99, long-lived app",
            ms(common::percentile(&large.explain_long_lived, 99)),
            "same, small log",
            ms(common::percentile(&small.explain_long_lived, 99)),
            "ms",
        );
    }
}
