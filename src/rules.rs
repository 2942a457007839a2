//! The decider: pure functions from an input (or a due deadline) and the current state
//! to the events that follow, or to a refusal. No IO, no clock, no randomness: time comes
//! from the input or the deadline, every parameter from the rulebook.

use std::collections::{BTreeMap, HashMap};

use chat_ledger_events::{
    round_cents, AccountId, Actor, AppId, BillLine, Command, CountedUser, Direction, EditionId, EventBody, HoldKind,
    Input, Instant, KindAmounts, Money, MoneyKind, Price, PurchasePurpose, Reminder, RenewalOutcome, StreamId,
};
use chat_ledger_projections::{
    AccountView, AppView, Deadline, DeadlineKind, DigestHashSet, LedgerView, Prefetch, Subject, PREFETCH_AHEAD,
};
use rust_decimal::Decimal;

use crate::rulebook::{rule, Rulebook};

/// Most users one `mau.counted` event carries; more make more events.
pub const MAU_USERS_PER_EVENT_MAX: usize = 1000;

const SECONDS_PER_DAY: i64 = 86_400;

/// One event the rules decided, with the rule that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    pub stream: StreamId,
    pub rule: &'static str,
    pub body: EventBody,
}

/// Why the rules refused a command. Recorded as `command.rejected`, never silently dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub reason: String,
}

/// One login, its user already replaced by the per-app digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRow<'a> {
    pub app: AppId,
    pub user: u128,
    pub logged_in_at: Instant,
    pub login: LoginName<'a>,
}

/// Which login a counted user came from, as `CountedUser::login` names it. Only counted
/// users need the text, so a bulk file's rows carry the parts, not a string each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginName<'a> {
    /// The input key of a single login.
    Key(&'a str),
    /// `<source>:<line>` of a bulk file.
    Line { source: &'a str, line: u64 },
}

impl std::fmt::Display for LoginName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginName::Key(key) => f.write_str(key),
            LoginName::Line { source, line } => write!(f, "{source}:{line}"),
        }
    }
}

/// The 32-digit hex form of a user digest, as events carry it.
pub fn digest_hex(user: u128) -> String {
    let mut text = [0u8; 32];
    hex::encode_to_slice(user.to_be_bytes(), &mut text).expect("32 hex digits for 16 bytes");
    String::from_utf8(text.to_vec()).expect("hex digits are ASCII")
}

fn refuse<T>(rule: &'static str, reason: String) -> Result<T, Refusal> {
    Err(Refusal { rule, reason })
}

fn fact(stream: StreamId, rule: &'static str, body: EventBody) -> Fact {
    Fact { stream, rule, body }
}

fn money(amount: Decimal, book: &Rulebook) -> Money {
    Money::new(round_cents(amount), book.currency)
}

/// Decides an input against the state. References (accounts and apps named) are checked
/// by the importer before anything is appended; here they are refused all the same, so
/// any other caller gets a recorded refusal rather than a panic.
pub fn decide(input: &Input, state: &LedgerView, book: &Rulebook) -> Result<Vec<Fact>, Refusal> {
    let at = input.at;
    match &input.command {
        Command::OpenAccount { account, creator } => {
            if state.accounts.contains_key(account) {
                return refuse(rule::ACCOUNT_OPEN, format!("account {account} is already open"));
            }
            Ok(vec![fact(
                StreamId::account(account),
                rule::ACCOUNT_OPEN,
                EventBody::AccountOpened {
                    account: account.clone(),
                    creator: creator.clone(),
                },
            )])
        }
        Command::AddFunds { account, kind, amount } => {
            let view = known_account(state, account, rule::FUNDS_ADD)?;
            if amount.0.is_zero() {
                return refuse(rule::FUNDS_ADD, "a top-up of 0 adds nothing".to_owned());
            }
            let added = Money::new(amount.0, book.currency);
            let mut facts = vec![fact(
                StreamId::account(account),
                rule::FUNDS_ADD,
                EventBody::FundsAdded {
                    account: account.clone(),
                    kind: *kind,
                    amount: added,
                },
            )];
            facts.extend(clear_arrears(view, state, added.amount()));
            Ok(facts)
        }
        Command::AdjustBalance {
            account,
            kind,
            direction,
            amount,
            reason,
        } => {
            let view = known_account(state, account, rule::ADJUSTMENT)?;
            if !matches!(input.actor, Actor::Support(_)) {
                return refuse(
                    rule::ADJUSTMENT,
                    format!("only support staff adjust balances, not {}", input.actor),
                );
            }
            if reason.trim().is_empty() {
                return refuse(rule::ADJUSTMENT, "an adjustment needs a reason".to_owned());
            }
            let signed = match direction {
                Direction::Credit => amount.0,
                Direction::Debit => -amount.0,
            };
            let mut facts = vec![fact(
                StreamId::account(account),
                rule::ADJUSTMENT,
                EventBody::BalanceAdjusted {
                    account: account.clone(),
                    kind: *kind,
                    amount: Money::new(signed, book.currency),
                    reason: reason.clone(),
                },
            )];
            if signed > Decimal::ZERO {
                facts.extend(clear_arrears(view, state, signed));
            }
            Ok(facts)
        }
        Command::CreateApp { account, app, name } => {
            let owner = known_account(state, account, rule::APP_CREATE)?;
            if state.apps.contains_key(app) {
                return refuse(rule::APP_CREATE, format!("SDKAppID {app} already exists"));
            }
            let max = book.app_limit.max_apps_per_account;
            let live = owner
                .apps
                .iter()
                .filter(|a| state.apps.get(a).is_some_and(|v| v.reclaimed_at.is_none()))
                .count();
            if live >= max as usize {
                return refuse(
                    rule::APP_LIMIT,
                    format!("account {account} already has {live} apps, the most one account may have ({max})"),
                );
            }
            let mut facts = vec![fact(
                StreamId::app(*app),
                rule::APP_CREATE,
                EventBody::AppCreated {
                    app: *app,
                    account: account.clone(),
                    name: name.clone(),
                    edition: book.catalog.free_edition.clone(),
                },
            )];
            if owner.arrears.as_ref().is_some_and(|a| a.suspended) {
                facts.push(fact(
                    StreamId::app(*app),
                    rule::ARREARS_GRACE,
                    EventBody::HoldPlaced {
                        app: *app,
                        hold: HoldKind::Arrears,
                        reclamation_at: Some(book.reclamation_at(at)),
                    },
                ));
            }
            Ok(facts)
        }
        Command::BuyEdition {
            app,
            edition,
            months,
            contract_monthly_price,
        } => decide_purchase(
            state,
            book,
            at,
            *app,
            edition,
            *months,
            contract_monthly_price.map(|p| p.0),
        ),
        Command::SetAutoRenew { app, on } => {
            known_app(state, *app)?;
            Ok(vec![fact(
                StreamId::app(*app),
                rule::AUTO_RENEW_SWITCH,
                EventBody::AutoRenewSwitched { app: *app, on: *on },
            )])
        }
        Command::Login {
            app,
            user,
            logged_in_at,
        } => {
            let view = known_app(state, *app)?;
            let when = logged_in_at.unwrap_or(at);
            if when > at {
                return refuse(
                    rule::MAU_COUNT,
                    format!("logged in at {when}, after the login was received ({at})"),
                );
            }
            if !view.usable_at(when) {
                return refuse(
                    rule::LOGIN_SUSPENDED,
                    format!(
                        "app {app} was suspended when the user logged in ({}): no login, no MAU",
                        when.display_in(book.zone)
                    ),
                );
            }
            let user = chat_ledger_projections::user_digest(user).map_err(|e| Refusal {
                rule: rule::MAU_COUNT,
                reason: format!("the login was not pseudonymized: {e}"),
            })?;
            let row = LoginRow {
                app: *app,
                user,
                logged_in_at: logged_in_at.unwrap_or(at),
                login: LoginName::Key(input.key.as_str()),
            };
            let (facts, _) = decide_logins(std::slice::from_ref(&row), at, state, book);
            Ok(facts)
        }
        Command::LoginBatch { .. } => refuse(
            rule::MAU_COUNT,
            "a login batch is decided with its rows (Ledger::ingest_logins)".to_owned(),
        ),
        Command::RefundEdition { app } => decide_refund(state, book, at, *app),
        Command::FlagViolation { app, .. } => {
            let view = known_app(state, *app)?;
            if !matches!(input.actor, Actor::Support(_)) {
                return refuse(
                    rule::VIOLATION,
                    format!("only support staff flag violations, not {}", input.actor),
                );
            }
            if view.holds.contains_key(&HoldKind::Violation) {
                return refuse(rule::VIOLATION, format!("app {app} is already held for a violation"));
            }
            Ok(vec![hold(view, HoldKind::Violation, at, book, rule::VIOLATION)])
        }
        Command::AdvanceClock {} => Ok(vec![fact(
            StreamId::named(StreamId::CLOCK),
            rule::CLOCK_ADVANCE,
            EventBody::ClockAdvanced { to: at },
        )]),
    }
}

fn known_account<'a>(
    state: &'a LedgerView,
    account: &AccountId,
    rule: &'static str,
) -> Result<&'a AccountView, Refusal> {
    state.accounts.get(account).ok_or_else(|| Refusal {
        rule,
        reason: format!("account {account} is not open"),
    })
}

fn known_app(state: &LedgerView, app: AppId) -> Result<&AppView, Refusal> {
    let Some(view) = state.apps.get(&app) else {
        return refuse(rule::APP_CREATE, format!("SDKAppID {app} does not exist"));
    };
    if let Some(when) = view.reclaimed_at {
        return refuse(
            rule::APP_RECLAIMED,
            format!("app {app}'s resources were reclaimed at {when}; create a new app"),
        );
    }
    Ok(view)
}

/// A hold on `view`; when it makes a usable app unusable it sets the reclamation instant.
fn hold(view: &AppView, kind: HoldKind, at: Instant, book: &Rulebook, rule: &'static str) -> Fact {
    fact(
        StreamId::app(view.app),
        rule,
        EventBody::HoldPlaced {
            app: view.app,
            hold: kind,
            reclamation_at: view.is_usable().then(|| book.reclamation_at(at)),
        },
    )
}

/// Rule `arrears.cleared`: money that brings an account in arrears back to zero or above
/// ends its arrears and lifts its apps' arrears holds.
fn clear_arrears(account: &AccountView, state: &LedgerView, added: Decimal) -> Vec<Fact> {
    if account.arrears.is_none() {
        return Vec::new();
    }
    let after = account.available().amount() + added;
    if after < Decimal::ZERO {
        return Vec::new();
    }
    let mut facts = vec![fact(
        StreamId::account(&account.account),
        rule::ARREARS_CLEARED,
        EventBody::ArrearsCleared {
            account: account.account.clone(),
            balance: Money::new(after, account.available().currency()),
        },
    )];
    for app in &account.apps {
        if state
            .apps
            .get(app)
            .is_some_and(|v| v.reclaimed_at.is_none() && v.holds.contains_key(&HoldKind::Arrears))
        {
            facts.push(fact(
                StreamId::app(*app),
                rule::ARREARS_CLEARED,
                EventBody::HoldLifted {
                    app: *app,
                    hold: HoldKind::Arrears,
                },
            ));
        }
    }
    facts
}

/// Rule `payment.order` (and `bill.payment`): takes `amount` from the kinds in `order`;
/// what they cannot cover is taken from `shortfall`, driving it below zero (or refused
/// by the caller, for purchases).
fn split_payment(amount: Decimal, balances: &KindAmounts, order: &[MoneyKind], shortfall: MoneyKind) -> KindAmounts {
    let currency = balances.cash.currency();
    let mut left = amount;
    let mut split = KindAmounts::zero(currency);
    for kind in order {
        let take = balances.get(*kind).amount().max(Decimal::ZERO).min(left);
        *split.get_mut(*kind) = Money::new(take, currency);
        left -= take;
    }
    if !left.is_zero() {
        let part = split.get_mut(shortfall);
        *part = Money::new(part.amount() + left, currency);
    }
    split
}

fn edition_price(book: &Rulebook, edition: &EditionId, contract: Option<Decimal>) -> Result<Decimal, Refusal> {
    let Some(entry) = book.edition(edition).filter(|e| e.purchasable) else {
        return refuse(
            rule::EDITION_CATALOG,
            format!("edition {edition} cannot be bought under {}", book.label()),
        );
    };
    match (entry.monthly_price, contract) {
        (Some(list), None) => Ok(list.0),
        (None, Some(contract)) => Ok(contract),
        (Some(_), Some(_)) => refuse(
            rule::EDITION_CATALOG,
            format!("edition {edition} has a list price; drop contract_monthly_price"),
        ),
        (None, None) => refuse(
            rule::EDITION_CATALOG,
            format!("edition {edition} is sold at a contract price: give contract_monthly_price"),
        ),
    }
}

fn rank(book: &Rulebook, edition: &EditionId) -> u32 {
    book.edition(edition).map_or(0, |e| e.rank)
}

/// The facts of charging `amount` for `order` to the app's account, or the refusal when
/// the balance is short (rule `payment.balance`).
fn charge(account: &AccountView, order: &str, amount: Decimal, book: &Rulebook, what: &str) -> Result<Fact, Refusal> {
    let available = account.available();
    if available.amount() < amount {
        return refuse(
            rule::PAYMENT_BALANCE,
            format!(
                "the balance ({available}) is below the price ({}) of {what}; add funds and buy again",
                money(amount, book)
            ),
        );
    }
    Ok(fact(
        StreamId::account(&account.account),
        rule::PAYMENT_ORDER,
        EventBody::AccountCharged {
            account: account.account.clone(),
            order: order.to_owned(),
            amount: money(amount, book),
            split: split_payment(amount, &account.balances, &book.payment_order.order, MoneyKind::Cash),
        },
    ))
}

fn decide_purchase(
    state: &LedgerView,
    book: &Rulebook,
    at: Instant,
    app: AppId,
    edition: &EditionId,
    months: u32,
    contract: Option<Decimal>,
) -> Result<Vec<Fact>, Refusal> {
    let view = known_app(state, app)?;
    if view.holds.contains_key(&HoldKind::Violation) {
        return refuse(
            rule::VIOLATION,
            format!("app {app} is held for a content violation: it cannot be reactivated"),
        );
    }
    let monthly = edition_price(book, edition, contract)?;
    if !(book.validity.months_min..=book.validity.months_max).contains(&months) {
        return refuse(
            rule::PLAN_VALIDITY,
            format!(
                "{months} months: a plan is bought for {} to {} months",
                book.validity.months_min, book.validity.months_max
            ),
        );
    }
    let account = state.accounts.get(&view.account).expect("an app's account is open");
    if let Some(offer) = book.newcomer.as_ref().filter(|o| &o.edition == edition) {
        if months != offer.months {
            return refuse(
                rule::OFFER_NEWCOMER,
                format!("the newcomer offer is {} month(s), not {months}", offer.months),
            );
        }
        if let Some(bought) = offer.not_after.iter().find(|e| account.editions_bought.contains(*e)) {
            return refuse(
                rule::OFFER_NEWCOMER,
                format!(
                    "the newcomer offer is for accounts that never bought {bought}; {} did",
                    account.account
                ),
            );
        }
    }
    let order = format!("{app}-{}", view.orders + 1);
    let held = view.holds.contains_key(&HoldKind::Expiry) || view.holds.contains_key(&HoldKind::Refund);
    let (purpose, valid_from, purpose_rule) = match &view.plan {
        _ if held => (PurchasePurpose::Reactivation, at, rule::PLAN_REACTIVATION),
        None => (PurchasePurpose::New, at, rule::PLAN_PURCHASE),
        Some(plan) if &plan.edition == edition => (PurchasePurpose::Renewal, plan.valid_until, rule::PLAN_RENEWAL),
        Some(plan) if view.expired.is_none() && rank(book, edition) > rank(book, &plan.edition) => {
            return decide_upgrade(view, account, plan, book, at, edition, monthly, &order);
        }
        Some(plan) if view.expired.is_none() && rank(book, edition) < rank(book, &plan.edition) => {
            return refuse(
                rule::EDITION_DOWNGRADE,
                format!(
                    "{edition} is below the running {} plan: a downgrade goes through a refund (within the refund window), then a purchase",
                    plan.edition
                ),
            );
        }
        Some(plan) => {
            return refuse(
                rule::EDITION_CHANGE,
                format!(
                    "app {app} has a {} plan until {}; renew {} now, or buy {edition} once the app is suspended",
                    plan.edition,
                    plan.valid_until.display_in(book.zone),
                    plan.edition
                ),
            )
        }
    };
    let amount = monthly * Decimal::from(months);
    let valid_until = book.validity_end(valid_from, months);
    let charged = charge(
        account,
        &order,
        amount,
        book,
        &format!("{months} month(s) of {edition}"),
    )?;
    let mut facts = vec![
        fact(
            StreamId::app(app),
            purpose_rule,
            EventBody::EditionPurchased {
                app,
                order,
                edition: edition.clone(),
                months,
                monthly_price: money(monthly, book),
                amount: money(amount, book),
                purpose,
                valid_from,
                valid_until,
                first_reminder_at: book.next_reminder(valid_until, at),
            },
        ),
        charged,
    ];
    if purpose == PurchasePurpose::Reactivation {
        for kind in [HoldKind::Expiry, HoldKind::Refund] {
            if view.holds.contains_key(&kind) {
                facts.push(fact(
                    StreamId::app(app),
                    rule::PLAN_REACTIVATION,
                    EventBody::HoldLifted { app, hold: kind },
                ));
            }
        }
    }
    Ok(facts)
}

/// Rule `edition.upgrade`: the difference of monthly prices × the plan's months, for the
/// remaining share of its validity, to the second. Validity is unchanged.
#[allow(clippy::too_many_arguments)]
fn decide_upgrade(
    view: &AppView,
    account: &AccountView,
    plan: &chat_ledger_projections::PlanView,
    book: &Rulebook,
    at: Instant,
    edition: &EditionId,
    monthly: Decimal,
    order: &str,
) -> Result<Vec<Fact>, Refusal> {
    let period_seconds = (plan.valid_until.utc() - plan.valid_from.utc()).num_seconds().max(1) as u64;
    let remaining_seconds = (plan.valid_until.utc() - at.utc().max(plan.valid_from.utc()))
        .num_seconds()
        .max(0) as u64;
    let difference = (monthly - plan.monthly_price.amount()) * Decimal::from(plan.months);
    let amount = difference * Decimal::from(remaining_seconds) / Decimal::from(period_seconds);
    let charged = charge(
        account,
        order,
        round_cents(amount),
        book,
        &format!("the upgrade to {edition}"),
    )?;
    Ok(vec![
        fact(
            StreamId::app(view.app),
            rule::EDITION_UPGRADE,
            EventBody::EditionUpgraded {
                app: view.app,
                order: order.to_owned(),
                from: plan.edition.clone(),
                to: edition.clone(),
                monthly_price: money(monthly, book),
                amount: money(amount, book),
                remaining_seconds,
                period_seconds,
                valid_until: plan.valid_until,
            },
        ),
        charged,
    ])
}

/// Whole days from `start` to `end`, a started day counting as a whole one.
fn started_days(start: Instant, end: Instant) -> u32 {
    let seconds = (end.utc() - start.utc()).num_seconds().max(0);
    ((seconds + SECONDS_PER_DAY - 1) / SECONDS_PER_DAY) as u32
}

/// Rule `refund.five_day` arithmetic: `paid × remaining whole days / days of the order`,
/// a started day counting as used, rounded by `money.round`.
pub fn five_day_refund(paid: Decimal, valid_from: Instant, valid_until: Instant, at: Instant) -> (Decimal, u32, u32) {
    let days_total = started_days(valid_from, valid_until).max(1);
    let days_used = started_days(valid_from, at).min(days_total);
    let refund = round_cents(paid * Decimal::from(days_total - days_used) / Decimal::from(days_total));
    (refund, days_used, days_total)
}

fn decide_refund(state: &LedgerView, book: &Rulebook, at: Instant, app: AppId) -> Result<Vec<Fact>, Refusal> {
    let view = known_app(state, app)?;
    let terms = &book.refund;
    if view.holds.contains_key(&HoldKind::Violation) {
        return refuse(
            rule::VIOLATION,
            format!("app {app} is held for a content violation: its plans are never refunded"),
        );
    }
    let Some(plan) = view.plan.as_ref().filter(|_| view.expired.is_none()) else {
        return refuse(
            rule::REFUND_FIVE_DAY,
            format!("app {app} has no running plan to refund"),
        );
    };
    let window_end =
        Instant::from_utc(plan.purchased_at.utc() + chrono::Duration::hours(i64::from(terms.window_hours)));
    if at > window_end {
        return refuse(
            rule::REFUND_FIVE_DAY,
            format!(
                "bought {}; a refund was possible until {} ({} h), not after",
                plan.purchased_at.display_in(book.zone),
                window_end.display_in(book.zone),
                terms.window_hours
            ),
        );
    }
    if terms.unused_only {
        if let Some(login) = view.last_counted_login.filter(|t| *t >= plan.purchased_at) {
            return refuse(
                rule::REFUND_FIVE_DAY,
                format!(
                    "the plan was used: users were counted in the MAU since its purchase (last at {})",
                    login.display_in(book.zone)
                ),
            );
        }
    }
    let currency = book.currency;
    let mut split = KindAmounts::zero(currency);
    let (mut days_used, mut days_total) = (0, 0);
    for (index, order_id) in plan.orders.iter().enumerate() {
        let order = &state.orders[order_id];
        let paid = order.paid.expect("orders are charged with their purchase");
        // Rule `refund.split`: vouchers are never refunded; the rest goes back in the
        // proportion of what each kind paid, the rounding remainder to cash.
        let base = paid.total().amount() - paid.voucher.amount();
        let start = if index == 0 {
            plan.valid_from
        } else {
            order.purchased_at
        };
        let (refund, used, total) = five_day_refund(base, start, plan.valid_until, at);
        if index == 0 {
            (days_used, days_total) = (used, total);
        }
        if base.is_zero() || refund.is_zero() {
            continue;
        }
        let share = |kind: MoneyKind| round_cents(refund * paid.get(kind).amount() / base);
        let (gift, income) = (share(MoneyKind::Gift), share(MoneyKind::IncomeTransfer));
        for (kind, part) in [
            (MoneyKind::Gift, gift),
            (MoneyKind::IncomeTransfer, income),
            (MoneyKind::Cash, refund - gift - income),
        ] {
            let slot = split.get_mut(kind);
            *slot = Money::new(slot.amount() + part, currency);
        }
    }
    let refund = split.total();
    let account = &state.accounts[&view.account];
    let mut facts = vec![
        fact(
            StreamId::app(app),
            rule::REFUND_FIVE_DAY,
            EventBody::EditionRefunded {
                app,
                orders: plan.orders.clone(),
                refund,
                days_used,
                days_total,
            },
        ),
        fact(
            StreamId::account(&view.account),
            rule::REFUND_SPLIT,
            EventBody::AccountRefunded {
                account: view.account.clone(),
                orders: plan.orders.clone(),
                amount: refund,
                split,
            },
        ),
        hold(view, HoldKind::Refund, at, book, rule::REFUND_FIVE_DAY),
    ];
    facts.extend(clear_arrears(account, state, refund.amount()));
    Ok(facts)
}

/// Counts logins into the MAU (rule `mau.count`): a user counts once per app and local
/// natural month, at their first login; repeats are tallied; on an edition with a MAU cap
/// (Trial) the users beyond it are refused, not billed. Logins to unusable apps are
/// refused (`login.suspended`) and returned apart. Users are packed many to an event.
pub fn decide_logins(
    rows: &[LoginRow],
    at: Instant,
    state: &LedgerView,
    book: &Rulebook,
) -> (Vec<Fact>, BTreeMap<AppId, u64>) {
    struct Month<'a> {
        app: AppId,
        view: &'a AppView,
        month: String,
        /// The month's bounds: a row within them needs no `month_of`.
        start: Instant,
        end: Instant,
        users: Vec<CountedUser>,
        refused: Vec<CountedUser>,
        repeats: u64,
        seen: DigestHashSet,
        base: Option<&'a chat_ledger_projections::MonthUsage>,
    }
    // In order of each (app, month)'s first login; `index` finds one, `last` the latest.
    let mut months: Vec<Month> = Vec::new();
    let mut index: HashMap<(AppId, String), usize> = HashMap::new();
    let mut last: Option<usize> = None;
    let mut suspended: BTreeMap<AppId, u64> = BTreeMap::new();
    // First each row's month (none when the app was unusable), ...
    let mut slots: Vec<Option<usize>> = Vec::with_capacity(rows.len());
    for row in rows {
        // Usability is judged when the user logged in, not when the login arrived.
        let Some(view) = state.apps.get(&row.app).filter(|v| v.usable_at(row.logged_in_at)) else {
            *suspended.entry(row.app).or_default() += 1;
            slots.push(None);
            continue;
        };
        let within = |m: &Month| m.app == row.app && m.start <= row.logged_in_at && row.logged_in_at < m.end;
        let slot = match last.filter(|i| within(&months[*i])) {
            Some(slot) => slot,
            None => {
                let month_key = book.month_of(row.logged_in_at);
                *index.entry((row.app, month_key.clone())).or_insert_with(|| {
                    let (start, end) = book.month_bounds(&month_key);
                    months.push(Month {
                        app: row.app,
                        view,
                        base: view.usage.get(&month_key),
                        month: month_key,
                        start,
                        end,
                        users: Vec::new(),
                        refused: Vec::new(),
                        repeats: 0,
                        seen: DigestHashSet::default(),
                    });
                    months.len() - 1
                })
            }
        };
        last = Some(slot);
        slots.push(Some(slot));
    }
    // ... then whether each user was counted in an earlier batch, in a loop of its own:
    // the lookups are independent, so each row's is prefetched (in two steps) rows before
    // it is made and the cache misses overlap ...
    let base_of = |i: usize| {
        slots
            .get(i)
            .copied()
            .flatten()
            .and_then(|s| months[s].base)
            .map(|u| &u.users)
    };
    let mut counted_before: Vec<bool> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        for (ahead, step) in [
            (2 * PREFETCH_AHEAD, Prefetch::Index),
            (PREFETCH_AHEAD, Prefetch::Digests),
        ] {
            if let Some(users) = base_of(i + ahead) {
                users.prefetch(rows[i + ahead].user, step);
            }
        }
        counted_before.push(base_of(i).is_some_and(|u| u.contains(&row.user)));
    }
    // ... then the count, in row order.
    for ((row, slot), counted_before) in rows.iter().zip(slots).zip(counted_before) {
        let Some(slot) = slot else { continue };
        let month = &mut months[slot];
        if counted_before || month.seen.contains(&row.user) {
            month.repeats += 1;
            continue;
        }
        let user = CountedUser {
            user: digest_hex(row.user),
            logged_in_at: row.logged_in_at,
            login: row.login.to_string(),
        };
        let cap = book.edition(&month.view.edition).and_then(|e| e.mau_cap);
        let count = month.base.map_or(0, |u| u.users.len()) + month.users.len();
        // A refused user is not counted, so their next login is refused again, in this
        // batch or a later one: the tallies do not depend on how logins are batched.
        if cap.is_some_and(|cap| count >= cap as usize) {
            month.refused.push(user);
        } else {
            month.seen.insert(row.user);
            month.users.push(user);
        }
    }
    let mut facts = Vec::new();
    for month in months {
        let (app, month_key) = (month.app, month.month);
        let push_of_month = book.bill_push_at(book.month_bounds(&month_key).0);
        let billed = month.base.is_some_and(|u| u.billed_mau.is_some());
        let late = billed || push_of_month <= at;
        let has_push = month.base.is_some_and(|u| u.bill_push.is_some());
        let mut bill_push_at = match (late, has_push) {
            (true, _) if !month.users.is_empty() => Some(book.bill_push_at(at)),
            (false, false) => Some(push_of_month),
            _ => None,
        };
        let mut users = month.users.into_iter().peekable();
        let (mut refused, mut repeats) = (month.refused, month.repeats);
        loop {
            let packed: Vec<CountedUser> = users.by_ref().take(MAU_USERS_PER_EVENT_MAX).collect();
            facts.push(fact(
                StreamId::app(app),
                rule::MAU_COUNT,
                EventBody::MauCounted {
                    app,
                    month: month_key.clone(),
                    users: packed,
                    refused: std::mem::take(&mut refused),
                    repeats: std::mem::take(&mut repeats),
                    bill_push_at: bill_push_at.take(),
                    late,
                },
            ));
            if users.peek().is_none() {
                break;
            }
        }
    }
    (facts, suspended)
}

/// Share of `month` the app was usable, in seconds: (usable, month length).
fn usable_seconds(view: &AppView, month: &str, book: &Rulebook) -> (u64, u64) {
    let (start, end) = book.month_bounds(month);
    let month_seconds = (end.utc() - start.utc()).num_seconds();
    let unusable: i64 = view
        .unusable_periods
        .iter()
        .map(|(from, to)| {
            let from = from.utc().max(start.utc());
            let to = to.map_or(end.utc(), |t| t.utc()).min(end.utc());
            (to - from).num_seconds().max(0)
        })
        .sum();
    ((month_seconds - unusable).max(0) as u64, month_seconds as u64)
}

/// Rule `bill.push` with `mau.overage` and `bill.proration`: the bill of every finished
/// month with MAU not yet billed, adjustments for months billed before late logins.
fn decide_bill(view: &AppView, at: Instant, state: &LedgerView, book: &Rulebook) -> Vec<Fact> {
    let account = &state.accounts[&view.account];
    let unit = book.mau_overage.unit_price.0;
    let mut lines = Vec::new();
    for (month, usage) in &view.usage {
        let (_, month_end) = book.month_bounds(month);
        let mau = usage.users.len() as u64;
        if month_end > at || usage.billed_mau == Some(mau) {
            continue;
        }
        let edition = usage.billed_edition.as_ref().unwrap_or(&view.edition);
        let entry = book.edition(edition);
        let free = u64::from(entry.map_or(0, |e| e.free_mau));
        let billable = entry.is_some_and(|e| e.mau_overage);
        let over = |n: u64| if billable { n.saturating_sub(free) } else { 0 };
        let (item, quantity) = match usage.billed_mau {
            None => ("MAU overage", over(mau)),
            Some(before) => ("MAU overage adjustment (late logins)", over(mau) - over(before)),
        };
        let (usable, month_seconds) = usable_seconds(view, month, book);
        let prorated = usable < month_seconds;
        let mut amount = Decimal::from(quantity) * unit;
        if prorated {
            amount = amount * Decimal::from(usable) / Decimal::from(month_seconds);
        }
        lines.push(BillLine {
            item: format!("{item}: {mau} MAU, {free} free on {edition}"),
            month: month.clone(),
            quantity,
            unit_price: Price {
                amount: unit,
                currency: book.currency,
            },
            rule: if prorated {
                rule::BILL_PRORATION
            } else {
                rule::MAU_OVERAGE
            }
            .to_owned(),
            amount: money(amount, book),
            usable_seconds: prorated.then_some(usable),
            month_seconds: prorated.then_some(month_seconds),
        });
    }
    let billed_month = book.month_of(Instant::from_utc(at.utc() - chrono::Duration::seconds(1)));
    let total = lines.iter().fold(Money::zero(book.currency), |sum, l| {
        sum.checked_add(l.amount).expect("one currency")
    });
    let bill = format!("{}-{billed_month}", view.app);
    let mut facts = vec![fact(
        StreamId::app(view.app),
        rule::BILL_PUSH,
        EventBody::BillIssued {
            account: view.account.clone(),
            app: view.app,
            bill: bill.clone(),
            month: billed_month,
            edition: view.edition.clone(),
            lines,
            total,
        },
    )];
    if total.amount().is_zero() {
        return facts;
    }
    let split = split_payment(
        total.amount(),
        &account.balances,
        &book.bill_payment.order,
        book.bill_payment.shortfall,
    );
    let balance_after = Money::new(account.available().amount() - total.amount(), book.currency);
    facts.push(fact(
        StreamId::account(&view.account),
        rule::BILL_PAYMENT,
        EventBody::BillCharged {
            account: view.account.clone(),
            bill,
            amount: total,
            split,
            balance_after,
        },
    ));
    if balance_after.is_negative() && account.arrears.is_none() {
        let suspend_at = book.arrears_suspend_at(at);
        facts.push(fact(
            StreamId::account(&view.account),
            rule::ARREARS_GRACE,
            EventBody::ArrearsStarted {
                account: view.account.clone(),
                balance: balance_after,
                suspend_at,
            },
        ));
        facts.push(fact(
            StreamId::account(&view.account),
            rule::REMINDER_ARREARS,
            EventBody::ReminderSent {
                account: view.account.clone(),
                to: account.creator.clone(),
                reminder: Reminder::Arrears {
                    balance: balance_after,
                    suspend_at,
                },
                next_at: None,
            },
        ));
    }
    facts
}

/// Decides what a due deadline does. The deadline index is kept equal to the apps'
/// state by the projection, so a due deadline always has something to do.
pub fn decide_deadline(deadline: &Deadline, state: &LedgerView, book: &Rulebook) -> Vec<Fact> {
    let account_id = match &deadline.subject {
        Subject::Account(account) => account,
        Subject::App(app) => &state.apps[app].account,
    };
    if let Subject::Account(_) = deadline.subject {
        return decide_arrears_suspension(&state.accounts[account_id], deadline.at, state, book);
    }
    let Subject::App(app) = deadline.subject else {
        unreachable!("accounts handled above")
    };
    let view = &state.apps[&app];
    let stream = deadline.stream.clone();
    match deadline.kind {
        DeadlineKind::BillPush => decide_bill(view, deadline.at, state, book),
        DeadlineKind::Expiry => decide_expiry(view, deadline.at, state, book),
        DeadlineKind::Reminder => {
            let plan = view.plan.as_ref().expect("reminders follow a plan");
            let reminder = if deadline.at <= plan.valid_until {
                Reminder::ExpiryUpcoming {
                    app,
                    valid_until: plan.valid_until,
                }
            } else {
                Reminder::Expired {
                    app,
                    valid_until: plan.valid_until,
                }
            };
            vec![fact(
                StreamId::account(account_id),
                rule::REMINDER_EXPIRY,
                EventBody::ReminderSent {
                    account: account_id.clone(),
                    to: state.accounts[account_id].creator.clone(),
                    reminder,
                    next_at: book.next_reminder(plan.valid_until, deadline.at),
                },
            )]
        }
        DeadlineKind::Suspension => vec![hold(view, HoldKind::Expiry, deadline.at, book, rule::EXPIRY_GRACE)],
        DeadlineKind::Reclamation => vec![fact(
            stream,
            rule::APP_RECLAMATION,
            EventBody::AppReclaimed {
                app,
                unusable_since: view.unusable_since.expect("a reclamation follows unusability"),
            },
        )],
        DeadlineKind::ArrearsSuspension => unreachable!("arrears deadlines are the account's"),
    }
}

/// At expiry: auto-renewal first, when it is on (rules.md §9: decided before the expiry
/// takes effect; a suspended app never auto-renews); else the plan expires.
fn decide_expiry(view: &AppView, at: Instant, state: &LedgerView, book: &Rulebook) -> Vec<Fact> {
    let plan = view.plan.as_ref().expect("an expiry follows a plan");
    let app = view.app;
    let expired = fact(
        StreamId::app(app),
        rule::PLAN_EXPIRY,
        EventBody::PlanExpired {
            app,
            valid_until: at,
            grace_ends_at: book.grace_end(at),
        },
    );
    if !view.auto_renew || !view.is_usable() {
        return vec![expired];
    }
    let account = &state.accounts[&view.account];
    let price = plan.monthly_price;
    let attempt = |outcome| {
        fact(
            StreamId::app(app),
            rule::AUTO_RENEWAL,
            EventBody::AutoRenewAttempted {
                app,
                outcome,
                price,
                available: account.available(),
            },
        )
    };
    if book.newcomer.as_ref().is_some_and(|o| o.edition == plan.edition) {
        return vec![attempt(RenewalOutcome::NotRenewable), expired];
    }
    let order = format!("{app}-{}", view.orders + 1);
    let Ok(charged) = charge(account, &order, price.amount(), book, "one month") else {
        return vec![attempt(RenewalOutcome::InsufficientFunds), expired];
    };
    let valid_until = book.validity_end(at, 1);
    vec![
        attempt(RenewalOutcome::Renewed),
        fact(
            StreamId::app(app),
            rule::AUTO_RENEWAL,
            EventBody::EditionPurchased {
                app,
                order,
                edition: plan.edition.clone(),
                months: 1,
                monthly_price: price,
                amount: price,
                purpose: PurchasePurpose::AutoRenewal,
                valid_from: at,
                valid_until,
                first_reminder_at: book.next_reminder(valid_until, at),
            },
        ),
        charged,
    ]
}

/// Rule `arrears.grace`: still in arrears when it ends, every live app of the account is held.
fn decide_arrears_suspension(account: &AccountView, at: Instant, state: &LedgerView, book: &Rulebook) -> Vec<Fact> {
    let mut facts = vec![fact(
        StreamId::account(&account.account),
        rule::ARREARS_GRACE,
        EventBody::AccountSuspended {
            account: account.account.clone(),
        },
    )];
    for app in &account.apps {
        let view = &state.apps[app];
        if view.reclaimed_at.is_none() && !view.holds.contains_key(&HoldKind::Arrears) {
            facts.push(hold(view, HoldKind::Arrears, at, book, rule::ARREARS_GRACE));
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Instant {
        Instant::parse(text).unwrap()
    }

    #[test]
    fn seed_003_worked_example_625_refunded_after_five_started_days() {
        // 625 CNY bought 2023-03-01 08:00:00, refunded 2023-03-06 07:59:59: 4 days 23:59:59
        // used, so 5 started days; 31 days in the order: 625 × 26 / 31 = 524.19.
        let (refund, used, total) = five_day_refund(
            Decimal::from(625),
            t("2023-03-01T08:00:00+08:00"),
            t("2023-04-01T08:00:00+08:00"),
            t("2023-03-06T07:59:59+08:00"),
        );
        assert_eq!((refund.to_string().as_str(), used, total), ("524.19", 5, 31));
    }

    #[test]
    fn a_started_day_counts_whole_seconds_matter() {
        let from = t("2025-03-01T10:00:00+08:00");
        let until = t("2025-04-01T10:00:00+08:00");
        let (_, used, _) = five_day_refund(Decimal::from(399), from, until, t("2025-03-03T11:00:00+08:00"));
        assert_eq!(used, 3, "2 days and 1 hour use 3 days");
        let (_, used, _) = five_day_refund(Decimal::from(399), from, until, t("2025-03-03T10:00:00+08:00"));
        assert_eq!(used, 2, "exactly 2 days use 2");
        let (_, used, _) = five_day_refund(Decimal::from(399), from, until, t("2025-03-03T10:00:01+08:00"));
        assert_eq!(used, 3, "one second more starts day 3");
    }
}
