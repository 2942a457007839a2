//! Peer: the same decide + append + apply workload, and the same rebuild, on `cqrs-es`
//! 0.5 (`MemStore`, in memory: the crate a Rust user would otherwise pick) and on ours
//! (durable `SledStore`).
//!
//! The workload: accounts × 100 commands, interleaved across accounts (step k of every
//! account, then step k + 1): open the account, add funds, create two apps, then cycles
//! of buy a plan (new, then renewals), switch auto-renewal, add gift credit, and a
//! purchase the validation refuses (25 months). cqrs-es gets one aggregate per account
//! holding its apps, with the same validation (catalog price and purchasability, months
//! 1-24, renewal from the running plan's end, downgrade refused, payment order voucher →
//! gift → income transfer → cash, balance check, app limit) and the same events.
//!
//! Ours is measured (a) in batches of `GROUP_INPUTS_MAX` inputs by `Ledger::submit_chunks`
//! (each batch all or nothing, acknowledged in turn once flushed; batches are written on
//! a second thread while the next are decided, and those decided during a flush are
//! appended together, with one flush) and (b) one input per `Ledger::submit` (one flush
//! per command) over a prefix.
//! Rebuild: ours `replay::load_from_zero` (every event, decoded, hash-chained and folded,
//! conservation checked); theirs `MemStore::load_aggregate` of every account.
//!
//! cqrs-es' `MemStore` prints a line to stdout for every load and commit, so its part
//! runs in a child process (this binary again) whose stdout is /dev/null; the child
//! reports its timings on stderr. Digest: the two sides end with the same balances,
//! orders, plan ends, auto-renew switches and refusals.

mod common;

use std::collections::BTreeMap;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant as Clock};

use chat_ledger::commit::GROUP_INPUTS_MAX;
use chat_ledger::ledger::{Ledger, Outcome};
use chat_ledger::replay;
use chat_ledger::rulebook::Rulebook;
use chat_ledger::store::SledStore;
use chat_ledger_events::{
    AccountId, Actor, Amount, AppId, Command, Contact, EditionId, Input, Instant, Key, MoneyKind,
};
use chat_ledger_projections::LedgerView;
use chrono::{DateTime, FixedOffset, Months, Utc};
use common::Scale;
use cqrs_es::mem_store::MemStore;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, CqrsFramework, DomainEvent, EventStore};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Commands per account.
const STEPS: usize = 100;
const CHILD_ENV: &str = "CHAT_LEDGER_PEER_CHILD";

fn accounts(scale: Scale) -> usize {
    match scale {
        Scale::Smoke => 10,
        Scale::Quick => 1_000,
        Scale::Full => 10_000,
    }
}

/// Commands submitted one per `Ledger::submit` (one flush each): a prefix of the workload.
fn single_prefix(scale: Scale) -> usize {
    match scale {
        Scale::Smoke => 100,
        Scale::Quick => 3_000,
        Scale::Full => 10_000,
    }
}

// ---------------------------------------------------------------------------------------
// The workload, independent of either system.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Step {
    Open,
    AddFunds { kind: MoneyKind, amount: Amount },
    CreateApp { app: u64 },
    Buy { app: u64, edition: String, months: u32 },
    AutoRenew { app: u64, on: bool },
}

fn app_of(account: usize, which: u64) -> u64 {
    1_400_000_000 + 2 * account as u64 + which
}

fn step(account: usize, step: usize) -> Step {
    let (a, b) = (app_of(account, 0), app_of(account, 1));
    let standard = || "standard".to_owned();
    match step {
        0 => Step::Open,
        1 => Step::AddFunds {
            kind: MoneyKind::Cash,
            amount: Amount("20000.00".parse().expect("a decimal")),
        },
        2 => Step::CreateApp { app: a },
        3 => Step::CreateApp { app: b },
        _ => {
            let cycle = (step - 4) / 6;
            match (step - 4) % 6 {
                0 => Step::Buy {
                    app: a,
                    edition: standard(),
                    months: 1,
                },
                1 => Step::AutoRenew {
                    app: a,
                    on: cycle % 2 == 0,
                },
                2 => Step::AddFunds {
                    kind: MoneyKind::Gift,
                    amount: Amount("50.00".parse().expect("a decimal")),
                },
                3 => Step::Buy {
                    app: b,
                    edition: standard(),
                    months: 1 + (cycle % 3) as u32,
                },
                4 => Step::AutoRenew {
                    app: b,
                    on: cycle % 3 == 0,
                },
                _ => Step::Buy {
                    app: a,
                    edition: standard(),
                    months: 25,
                },
            }
        }
    }
}

/// Every command in submission order: (index, account, step), `at` rising 10 ms apart
/// (whole seconds: the ledger keeps seconds), all within hours: no deadline falls inside.
fn workload(accounts: usize) -> Vec<(usize, Step, DateTime<Utc>)> {
    let base = DateTime::parse_from_rfc3339("2025-03-02T09:00:00+08:00")
        .expect("a valid instant")
        .to_utc();
    let mut out = Vec::with_capacity(accounts * STEPS);
    for s in 0..STEPS {
        for a in 0..accounts {
            let index = out.len() as i64;
            out.push((a, step(a, s), base + chrono::Duration::seconds(index / 100)));
        }
    }
    out
}

fn account_name(account: usize) -> String {
    format!("acct-{account:06}")
}

/// What both sides must agree on at the end.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Digest {
    /// Sum of every account's balance (all kinds), in cents.
    balance_cents: i64,
    orders: u64,
    auto_renew_on: u64,
    /// Sum of every plan's end, Unix seconds.
    plan_end_seconds: i64,
}

fn cents(amount: Decimal) -> i64 {
    (amount * Decimal::from(100)).trunc().try_into().expect("cents fit i64")
}

// ---------------------------------------------------------------------------------------
// cqrs-es: one aggregate per account.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Balances {
    cash: Amount,
    income_transfer: Amount,
    gift: Amount,
    voucher: Amount,
}

impl Default for Balances {
    fn default() -> Balances {
        let zero = Amount(Decimal::ZERO);
        Balances {
            cash: zero,
            income_transfer: zero,
            gift: zero,
            voucher: zero,
        }
    }
}

impl Balances {
    fn get_mut(&mut self, kind: MoneyKind) -> &mut Decimal {
        match kind {
            MoneyKind::Cash => &mut self.cash.0,
            MoneyKind::IncomeTransfer => &mut self.income_transfer.0,
            MoneyKind::Gift => &mut self.gift.0,
            MoneyKind::Voucher => &mut self.voucher.0,
        }
    }
    fn total(&self) -> Decimal {
        self.cash.0 + self.income_transfer.0 + self.gift.0 + self.voucher.0
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PlanState {
    edition: String,
    valid_until: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct AppState {
    edition: String,
    auto_renew: bool,
    orders: u32,
    plan: Option<PlanState>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Account {
    opened: bool,
    balances: Balances,
    apps: BTreeMap<u64, AppState>,
}

#[derive(Clone, Debug)]
struct AccountCommand {
    at: DateTime<Utc>,
    step: Step,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Opened {
        account: String,
        email: String,
        sms: String,
        at: DateTime<Utc>,
    },
    FundsAdded {
        kind: MoneyKind,
        amount: Amount,
    },
    AppCreated {
        app: u64,
        edition: String,
    },
    EditionPurchased {
        app: u64,
        order: String,
        edition: String,
        months: u32,
        monthly_price: Amount,
        amount: Amount,
        valid_from: DateTime<Utc>,
        valid_until: DateTime<Utc>,
    },
    Charged {
        order: String,
        amount: Amount,
        split: BTreeMap<MoneyKind, Amount>,
    },
    AutoRenewSwitched {
        app: u64,
        on: bool,
    },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::Opened { .. } => "account.opened",
            AccountEvent::FundsAdded { .. } => "funds.added",
            AccountEvent::AppCreated { .. } => "app.created",
            AccountEvent::EditionPurchased { .. } => "edition.purchased",
            AccountEvent::Charged { .. } => "account.charged",
            AccountEvent::AutoRenewSwitched { .. } => "auto_renew.switched",
        }
        .to_owned()
    }
    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The catalog and the rules' parameters, from the same rulebook ours runs under.
struct Catalog {
    /// edition → (monthly price, rank), purchasable ones only.
    editions: BTreeMap<String, (Decimal, u32)>,
    ranks: BTreeMap<String, u32>,
    months: std::ops::RangeInclusive<u32>,
    max_apps: usize,
    zone: FixedOffset,
    free_edition: String,
}

impl Catalog {
    fn of(book: &Rulebook) -> Catalog {
        let entries = &book.catalog.editions;
        Catalog {
            editions: entries
                .iter()
                .filter(|e| e.purchasable)
                .filter_map(|e| e.monthly_price.map(|p| (e.edition.0.clone(), (p.0, e.rank))))
                .collect(),
            ranks: entries.iter().map(|e| (e.edition.0.clone(), e.rank)).collect(),
            months: book.validity.months_min..=book.validity.months_max,
            max_apps: book.app_limit.max_apps_per_account as usize,
            zone: book.zone,
            free_edition: book.catalog.free_edition.0.clone(),
        }
    }
}

fn refuse<T>(reason: String) -> Result<T, Refused> {
    Err(Refused(reason))
}

impl Account {
    fn decide(&self, command: AccountCommand, catalog: &Catalog) -> Result<Vec<AccountEvent>, Refused> {
        let at = command.at;
        if !self.opened && !matches!(command.step, Step::Open) {
            return refuse("account is not open".to_owned());
        }
        let known = |app: u64| {
            self.apps
                .get(&app)
                .ok_or_else(|| Refused(format!("app {app} does not exist")))
        };
        match command.step {
            Step::Open => {
                if self.opened {
                    return refuse("account is already open".to_owned());
                }
                Ok(vec![AccountEvent::Opened {
                    account: String::new(),
                    email: "ops@example.com".to_owned(),
                    sms: "+65-8000-0001".to_owned(),
                    at,
                }])
            }
            Step::AddFunds { kind, amount } => {
                if amount.0.is_zero() {
                    return refuse("a top-up of 0 adds nothing".to_owned());
                }
                Ok(vec![AccountEvent::FundsAdded { kind, amount }])
            }
            Step::CreateApp { app } => {
                if self.apps.contains_key(&app) {
                    return refuse(format!("SDKAppID {app} already exists"));
                }
                if self.apps.len() >= catalog.max_apps {
                    return refuse("too many apps".to_owned());
                }
                Ok(vec![AccountEvent::AppCreated {
                    app,
                    edition: catalog.free_edition.clone(),
                }])
            }
            Step::AutoRenew { app, on } => {
                known(app)?;
                Ok(vec![AccountEvent::AutoRenewSwitched { app, on }])
            }
            Step::Buy { app, edition, months } => {
                let view = known(app)?;
                let Some(&(monthly, rank)) = catalog.editions.get(&edition) else {
                    return refuse(format!("edition {edition} cannot be bought"));
                };
                if !catalog.months.contains(&months) {
                    return refuse(format!("{months} months: a plan is bought for 1 to 24 months"));
                }
                let valid_from = match &view.plan {
                    None => at,
                    Some(plan) if plan.edition == edition => plan.valid_until,
                    Some(plan) if rank < catalog.ranks[&plan.edition] => {
                        return refuse(format!("{edition} is below the running {} plan", plan.edition))
                    }
                    Some(_) => return refuse("an upgrade is not part of this workload".to_owned()),
                };
                let amount = monthly * Decimal::from(months);
                if self.balances.total() < amount {
                    return refuse(format!(
                        "the balance is below the price of {months} month(s) of {edition}"
                    ));
                }
                let valid_until = valid_from
                    .with_timezone(&catalog.zone)
                    .checked_add_months(Months::new(months))
                    .expect("within chrono's range")
                    .to_utc();
                let order = format!("{app}-{}", view.orders + 1);
                let mut left = amount;
                let mut split = BTreeMap::new();
                let mut balances = self.balances.clone();
                for kind in [
                    MoneyKind::Voucher,
                    MoneyKind::Gift,
                    MoneyKind::IncomeTransfer,
                    MoneyKind::Cash,
                ] {
                    let take = (*balances.get_mut(kind)).max(Decimal::ZERO).min(left);
                    split.insert(kind, Amount(take));
                    left -= take;
                }
                Ok(vec![
                    AccountEvent::EditionPurchased {
                        app,
                        order: order.clone(),
                        edition,
                        months,
                        monthly_price: Amount(monthly),
                        amount: Amount(amount),
                        valid_from,
                        valid_until,
                    },
                    AccountEvent::Charged {
                        order,
                        amount: Amount(amount),
                        split,
                    },
                ])
            }
        }
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = Refused;
    type Services = Catalog;

    async fn handle(
        &mut self,
        command: AccountCommand,
        catalog: &Catalog,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Refused> {
        for event in self.decide(command, catalog)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Opened { .. } => self.opened = true,
            AccountEvent::FundsAdded { kind, amount } => *self.balances.get_mut(kind) += amount.0,
            AccountEvent::AppCreated { app, edition } => {
                self.apps.insert(
                    app,
                    AppState {
                        edition,
                        auto_renew: false,
                        orders: 0,
                        plan: None,
                    },
                );
            }
            AccountEvent::EditionPurchased {
                app,
                edition,
                valid_until,
                ..
            } => {
                let view = self.apps.get_mut(&app).expect("decided for a known app");
                view.orders += 1;
                view.edition = edition.clone();
                view.plan = Some(PlanState { edition, valid_until });
            }
            AccountEvent::Charged { split, .. } => {
                for (kind, amount) in split {
                    *self.balances.get_mut(kind) -= amount.0;
                }
            }
            AccountEvent::AutoRenewSwitched { app, on } => {
                self.apps.get_mut(&app).expect("decided for a known app").auto_renew = on;
            }
        }
    }
}

fn digest_of_accounts<'a>(accounts: impl Iterator<Item = &'a Account>) -> Digest {
    let mut digest = Digest::default();
    for account in accounts {
        digest.balance_cents += cents(account.balances.total());
        for app in account.apps.values() {
            digest.orders += u64::from(app.orders);
            digest.auto_renew_on += u64::from(app.auto_renew);
            digest.plan_end_seconds += app.plan.as_ref().map_or(0, |p| p.valid_until.timestamp());
        }
    }
    digest
}

/// The child: runs the workload on cqrs-es, stdout going to /dev/null; reports on stderr.
fn run_cqrs_es(scale: Scale) {
    let accounts = accounts(scale);
    let commands: Vec<(String, AccountCommand)> = workload(accounts)
        .into_iter()
        .map(|(a, step, at)| (account_name(a), AccountCommand { at, step }))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let store = MemStore::<Account>::default();
        let cqrs = CqrsFramework::new(store.clone(), vec![], Catalog::of(&Rulebook::intl_2025()));
        let (start, cpu_start) = (Clock::now(), common::cpu_time().unwrap_or_default());
        let mut refused = 0u64;
        for (id, command) in commands {
            match cqrs.execute(&id, command).await {
                Ok(()) => {}
                Err(AggregateError::UserError(_)) => refused += 1,
                Err(e) => panic!("cqrs-es failed: {e}"),
            }
        }
        let commands_time = start.elapsed();
        let commands_cpu = common::cpu_time().unwrap_or_default() - cpu_start;

        let start = Clock::now();
        let mut loaded = Vec::with_capacity(accounts);
        for a in 0..accounts {
            let mut context = store.load_aggregate(&account_name(a)).await.expect("load");
            loaded.push(std::mem::take(context.aggregate()));
        }
        let replay_time = start.elapsed();
        let digest = digest_of_accounts(loaded.iter());
        let events: usize = {
            #[allow(deprecated)]
            let all = store.get_events();
            let all = all.read().expect("the store's lock");
            all.values().map(Vec::len).sum()
        };
        eprintln!(
            "PEER {}",
            serde_json::to_string(&(
                commands_time.as_nanos() as u64,
                commands_cpu.as_nanos() as u64,
                replay_time.as_nanos() as u64,
                refused,
                events,
                digest
            ))
            .expect("serializes")
        );
    });
}

// ---------------------------------------------------------------------------------------
// Ours.

fn inputs(accounts: usize) -> Vec<Input> {
    workload(accounts)
        .into_iter()
        .enumerate()
        .map(|(index, (a, step, at))| {
            let account = AccountId::new(account_name(a)).expect("a valid account id");
            let command = match step {
                Step::Open => Command::OpenAccount {
                    account,
                    creator: Contact {
                        email: "ops@example.com".to_owned(),
                        sms: "+65-8000-0001".to_owned(),
                    },
                },
                Step::AddFunds { kind, amount } => Command::AddFunds { account, kind, amount },
                Step::CreateApp { app } => Command::CreateApp {
                    account,
                    app: AppId(app),
                    name: format!("app {app}"),
                },
                Step::Buy { app, edition, months } => Command::BuyEdition {
                    app: AppId(app),
                    edition: EditionId(edition),
                    months,
                    contract_monthly_price: None,
                },
                Step::AutoRenew { app, on } => Command::SetAutoRenew { app: AppId(app), on },
            };
            Input {
                key: Key::new(format!("c{index}")).expect("a valid key"),
                at: Instant::from_utc(at),
                actor: Actor::Customer,
                command,
            }
        })
        .collect()
}

fn digest_of_view(view: &LedgerView) -> Digest {
    let mut digest = Digest::default();
    for account in view.accounts.values() {
        digest.balance_cents += cents(account.available().amount());
    }
    for app in view.apps.values() {
        digest.orders += u64::from(app.orders);
        digest.auto_renew_on += u64::from(app.auto_renew);
        digest.plan_end_seconds += app.plan.as_ref().map_or(0, |p| p.valid_until.utc().timestamp());
    }
    digest
}

fn refusals(outcomes: &[Outcome]) -> u64 {
    outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Recorded { refusal: Some(_), .. }))
        .count() as u64
}

fn fresh_ledger(dir: &std::path::Path) -> Ledger {
    let _ = std::fs::remove_dir_all(dir);
    let store = common::TimedStore(SledStore::open(dir).expect("open the store"));
    Ledger::open(Box::new(store), Rulebook::intl_2025()).expect("open")
}

/// `replay::load_working` (`whole`: `replay::load`) in a loop on the store in `dir`, after
/// saving a snapshot at its head if it has none.
fn profile_load(dir: &std::path::Path, whole: bool) {
    let store = SledStore::open(dir).expect("open the profile store");
    if replay::snapshot_position(&store).expect("snapshot").is_none() {
        let mut view = replay::load_from_zero(&store, None).expect("replay");
        replay::save_snapshot(&store, &mut view).expect("save the snapshot");
    }
    let runs: usize = std::env::var("CHAT_LEDGER_PEER_PROFILE_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let mut each: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Clock::now();
            if whole {
                std::hint::black_box(replay::load(&store, None).expect("load the whole view"));
            } else {
                std::hint::black_box(replay::load_working(&store).expect("load the working view"));
            }
            started.elapsed()
        })
        .collect();
    each.sort();
    println!(
        "{}, {runs} runs: best {:.1} ms, median {:.1} ms",
        if whole { "whole view" } else { "startup (working view)" },
        each[0].as_secs_f64() * 1e3,
        each[runs / 2].as_secs_f64() * 1e3
    );
}

fn main() {
    let scale = common::scale();
    if std::env::var_os(CHILD_ENV).is_some() {
        run_cqrs_es(scale);
        return;
    }
    let accounts = accounts(scale);
    let all = inputs(accounts);
    let count = all.len() as u64;
    println!(
        "peer: {scale:?}: {count} commands over {accounts} accounts ({STEPS} each), ours in batches of {GROUP_INPUTS_MAX}"
    );

    // `CHAT_LEDGER_PEER_PROFILE=startup` (`whole`): `replay::load_working` (`replay::load`)
    // alone, in a loop (`CHAT_LEDGER_PEER_PROFILE_RUNS`, 20), on the store the batched
    // profile leaves (made first if there is none), with a snapshot at its head.
    let profile = std::env::var("CHAT_LEDGER_PEER_PROFILE").unwrap_or_default();
    let profile_dir = common::cache_dir("peer").join(format!("profile-{scale:?}"));
    let load_profile = profile == "startup" || profile == "whole";
    if load_profile
        && SledStore::open(&profile_dir)
            .is_ok_and(|s| chat_ledger::store::EventStore::head(&s).is_ok_and(|h| h.seq > 0))
    {
        return profile_load(&profile_dir, profile == "whole");
    }

    // `CHAT_LEDGER_PEER_PROFILE=batched`: ours batched alone, the batches' rate by tenth
    // of the run (for `perf record`).
    if profile == "batched" || load_profile {
        let dir = profile_dir;
        let mut ledger = fresh_ledger(&dir);
        let mut batch_times = Vec::new();
        let (start, mut acked) = (Clock::now(), Clock::now());
        ledger
            .submit_chunks(&all, GROUP_INPUTS_MAX, |_, _, _| {
                batch_times.push(acked.elapsed());
                acked = Clock::now();
            })
            .expect("every batch appends");
        ledger.store().write_waiting_index().expect("write the waiting index");
        println!("{} batches in {} appends", batch_times.len(), common::take_appends());
        let tenth = (batch_times.len() / 10).max(1);
        let rates: Vec<String> = batch_times
            .chunks(tenth)
            .map(|t| {
                format!(
                    "{:.0}",
                    common::rate((t.len() * GROUP_INPUTS_MAX) as u64, t.iter().sum())
                )
            })
            .collect();
        println!(
            "ours batched: {:?}; cmd/s by tenth: {}",
            start.elapsed(),
            rates.join(" ")
        );
        if load_profile {
            drop(ledger);
            profile_load(&dir, profile == "whole");
        }
        return;
    }

    // Theirs, in a child process whose stdout is /dev/null.
    let scale_name = match scale {
        Scale::Smoke => "smoke",
        Scale::Quick => "quick",
        Scale::Full => "full",
    };
    let child = Process::new(std::env::current_exe().expect("this binary"))
        .env(CHILD_ENV, "1")
        .env("CHAT_LEDGER_BENCH_SCALE", scale_name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run the cqrs-es child");
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "the cqrs-es child failed: {stderr}");
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("PEER "))
        .expect("the child reports");
    type Report = (u64, u64, u64, u64, usize, Digest);
    let (their_commands, their_cpu, their_replay, their_refused, their_events, their_digest): Report =
        serde_json::from_str(line).expect("the child's report parses");
    let (their_commands, their_cpu, their_replay) = (
        Duration::from_nanos(their_commands),
        Duration::from_nanos(their_cpu),
        Duration::from_nanos(their_replay),
    );

    // Ours, batched: each batch all or nothing, appended while the next are decided (those
    // decided during a flush share the next append and flush).
    let root = common::cache_dir("peer");
    let dir = root.join("batched");
    let mut ledger = fresh_ledger(&dir);
    common::take_append_time();
    common::take_appends();
    let (start, cpu_start) = (Clock::now(), common::cpu_time().unwrap_or_default());
    let mut refused = 0;
    // A batch's time: from the acknowledgement before it to its own.
    let mut batch_times = Vec::new();
    let mut acked = Clock::now();
    ledger
        .submit_chunks(&all, GROUP_INPUTS_MAX, |_, outcomes, _| {
            refused += refusals(&outcomes);
            batch_times.push(acked.elapsed());
            acked = Clock::now();
        })
        .expect("every batch appends");
    // Up to the index waiting in memory written too (what closing the store does).
    ledger.store().write_waiting_index().expect("write the waiting index");
    let ours_batched = start.elapsed();
    let ours_batched_cpu = common::cpu_time().unwrap_or_default() - cpu_start;
    // Does a batch cost more as the log grows? The first and the last quarter of batches.
    let quarter = (batch_times.len() / 4).max(1);
    let quarter_rate =
        |times: &[Duration]| common::rate((times.len() * GROUP_INPUTS_MAX) as u64, times.iter().sum::<Duration>());
    let (first_quarter, last_quarter) = (
        quarter_rate(&batch_times[..quarter]),
        quarter_rate(&batch_times[batch_times.len() - quarter..]),
    );
    let batched_appending = common::take_append_time();
    let (batched_appends, batches) = (common::take_appends(), all.len().div_ceil(GROUP_INPUTS_MAX));
    let events = ledger.head().seq;
    let digest = digest_of_view(ledger.state());
    assert_eq!(digest, their_digest, "digest: both sides end in the same state");
    assert_eq!(refused, their_refused, "digest: both sides refuse the same commands");
    let live = ledger.state().clone();
    ledger.save_snapshot().expect("save a projection snapshot at the head");
    // Saving settles: the ledger keeps the working view, as its next start loads it.
    let working = ledger.state().clone();
    drop(ledger);

    // Ours, rebuilt from the durable log: every event from 0, and from the snapshot.
    let store = SledStore::open(&dir).expect("reopen the store");
    let (rebuild_min, rebuild_median, rebuilt) =
        common::time_runs(3, || replay::load_from_zero(&store, None).expect("replay"));
    assert!(rebuilt == live, "digest: the rebuilt projections equal the live ones");
    drop(rebuilt);
    let (snapshot_min, snapshot_median, loaded) =
        common::time_runs(3, || replay::load(&store, None).expect("load from the snapshot"));
    assert!(
        loaded == live,
        "digest: the projections loaded from the snapshot and its settled history equal the live ones"
    );
    drop(loaded);
    let (working_min, working_median, loaded) =
        common::time_runs(3, || replay::load_working(&store).expect("load the working view"));
    assert!(
        loaded == working,
        "digest: the working view loaded from the snapshot is the live one, settled"
    );
    drop(loaded);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);

    // Ours, one input per submit (one flush each), over a prefix.
    let prefix = single_prefix(scale).min(all.len());
    let dir = root.join("single");
    let mut ledger = fresh_ledger(&dir);
    common::take_append_time();
    let start = Clock::now();
    for input in &all[..prefix] {
        ledger.submit(std::slice::from_ref(input)).expect("an input appends");
    }
    let ours_single = start.elapsed();
    let single_appending = common::take_append_time();
    drop(ledger);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "  cqrs-es: {:.2} s for the commands ({their_events} events, {their_refused} refused), {:.3} s to load every aggregate",
        their_commands.as_secs_f64(),
        their_replay.as_secs_f64()
    );
    println!(
        "  ours: {:.2} s batched ({events} events; {:.0}% in store.append; {batches} batches in {batched_appends} appends), one-per-submit {prefix} commands in {:.2} s ({:.0}% in store.append)",
        ours_batched.as_secs_f64(),
        100.0 * batched_appending.as_secs_f64() / ours_batched.as_secs_f64(),
        ours_single.as_secs_f64(),
        100.0 * single_appending.as_secs_f64() / ours_single.as_secs_f64(),
    );
    println!("  ours batched: first quarter of batches {first_quarter:.0} cmd/s, last quarter {last_quarter:.0} cmd/s");
    println!();
    let their_rate = common::rate(count, their_commands);
    common::report(
        "commands, durable, batches of 256",
        common::rate(count, ours_batched),
        "cqrs-es MemStore (in memory)",
        their_rate,
        "cmd/s",
    );
    common::report(
        "commands per CPU second, batches of 256",
        common::rate(count, ours_batched_cpu),
        "cqrs-es per CPU second",
        common::rate(count, their_cpu),
        "cmd/s",
    );
    common::report(
        "commands, durable, one per submit",
        common::rate(prefix as u64, ours_single),
        "cqrs-es MemStore (in memory)",
        their_rate,
        "cmd/s",
    );
    for (what, best) in [
        ("rebuild (load_from_zero), best of 3", rebuild_min),
        ("whole view from the snapshot + history, best of 3", snapshot_min),
        ("startup: working view from the snapshot, best of 3", working_min),
    ] {
        common::report(
            what,
            common::rate(count, best),
            "cqrs-es load every aggregate",
            common::rate(count, their_replay),
            "cmd/s",
        );
    }
    println!(
        "  (medians: rebuild {:.3} s, whole view {:.3} s, working view {:.3} s)",
        rebuild_median.as_secs_f64(),
        snapshot_median.as_secs_f64(),
        working_median.as_secs_f64()
    );
    println!("digest: {digest:?}, {refused} refused, on both sides");
}
