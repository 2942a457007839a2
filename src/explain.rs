//! `explain`: why an app or an account is in its state, for a support person. The answer
//! is found by following the causation links of the log back from what holds the app
//! (each event's `cause`: the `input.recorded` of its input, or the event that set the
//! deadline that fired), not by mapping a status to a template: the steps, dates, rule
//! ids, rulebooks and amounts shown are those of the events themselves.
//!
//! Reads: the app's stream and its account's stream (at most `view.seq`, so `--at` sees
//! the log as it was), the streams of the account's other apps only when a link leads
//! there (a bill of another app can put the account in arrears), and each input record a
//! chain reaches, found by its key (every event carries its input's key; the record is
//! event 0 of that key, located by the idempotency index, one read) — so the `inputs`
//! stream is never scanned.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chat_ledger_events::{
    decode, event_id, AccountId, AppId, Command, Direction, Envelope, EventBody, HoldKind, Instant, Key, KindAmounts,
    Money, MoneyKind, PurchasePurpose, Reminder, RenewalOutcome, StreamId,
};
use chat_ledger_projections::{AccountView, AppStatus, AppView, LedgerView};
use chrono::FixedOffset;
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use crate::describe::{self, status_word, zone_of};
use crate::replay;
use crate::store::{EventStore, StoreError, StoredEvent};
use crate::story::{self, List};

/// Longest causation chain followed: a guard against a cycle in a damaged log.
pub const CHAIN_MAX: usize = 64;

/// Refused commands listed in full; the rest are counted.
pub const REFUSALS_LISTED_MAX: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event {seq} cannot be read: {reason}; run `chat-ledger verify` to find the first bad position")]
    Corrupt { seq: u64, reason: String },
    #[error("{0}")]
    NotFound(String),
}

/// The settled history (`replay`) is derived data read like the log: the same errors.
impl From<replay::ReplayError> for ExplainError {
    fn from(e: replay::ReplayError) -> ExplainError {
        match e {
            replay::ReplayError::Store(e) => ExplainError::Store(e),
            replay::ReplayError::Corrupt { seq, reason } => ExplainError::Corrupt { seq, reason },
        }
    }
}

/// What is explained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    App {
        app: AppId,
        name: String,
        account: AccountId,
    },
    Account {
        account: AccountId,
    },
}

/// One event of a causation chain, told in plain words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub at: Instant,
    pub event_seq: u64,
    pub event_type: String,
    pub stream: String,
    /// The rule that decided it (`None` for an input's own record).
    pub rule: Option<String>,
    pub rulebook: Option<String>,
    pub text: String,
}

/// One hold on the app and the chain of events that led to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HoldExplanation {
    pub hold: HoldKind,
    pub since: Instant,
    /// The `hold.placed` event.
    pub event_seq: u64,
    /// The chain in one sentence.
    pub summary: String,
    /// The events of the chain (and of the commits along it), oldest first: positions of `steps`.
    pub steps: Vec<u64>,
}

/// Expiry reminders sent for the app's current (or last expired) plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reminders {
    pub count: usize,
    pub to: String,
    pub last_at: Instant,
    pub last_text: String,
}

/// An app of an explained account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppLine {
    pub app: AppId,
    pub name: String,
    pub status: String,
    pub holds: Vec<HoldKind>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub subject: Subject,
    pub status: String,
    /// Why, in one paragraph.
    pub summary: String,
    /// The business time asked for (`--at`), if any.
    pub as_of: Option<Instant>,
    /// The last event taken into account.
    pub as_of_seq: u64,
    /// Business time reached by that event.
    pub clock: Option<Instant>,
    /// The zone instants are shown in (the rulebook's).
    pub zone: String,
    /// Every event the explanation rests on, in log order.
    pub steps: Vec<Step>,
    pub holds: Vec<HoldExplanation>,
    /// When the app's resources are reclaimed unless it is usable again before.
    pub reclamation_at: Option<Instant>,
    pub reminders: Option<Reminders>,
    /// Commands refused on the app since it was last made unusable, newest last.
    pub refusals: Vec<Step>,
    pub refusals_total: usize,
    /// For an account: its apps.
    pub apps: Vec<AppLine>,
    pub notes: Vec<String>,
    /// What the customer can do now.
    pub advice: Vec<String>,
}

/// The part of the log an explanation reads, indexed by position and by event id.
struct Log<'a> {
    store: &'a dyn EventStore,
    view: &'a LedgerView,
    zone: FixedOffset,
    events: BTreeMap<u64, Envelope>,
    by_id: HashMap<Uuid, u64>,
    loaded: BTreeSet<StreamId>,
    /// Streams read only when a link leads out of the loaded ones.
    fallback: Vec<StreamId>,
    /// Whether accounts' charges are read (`explain account` tells them; see `AccountView::charges`).
    charges: bool,
    /// Users counted in the months the view does not hold (settled: see
    /// `replay::settled_month_users`) of the counts read, for the counts told.
    settled_users: HashMap<(AppId, String), u64>,
}

impl<'a> Log<'a> {
    fn new(store: &'a dyn EventStore, view: &'a LedgerView) -> Log<'a> {
        Log {
            store,
            view,
            zone: zone_of(view.rulebook.as_ref().map(|r| r.zone.as_str())),
            events: BTreeMap::new(),
            by_id: HashMap::new(),
            loaded: BTreeSet::new(),
            fallback: Vec::new(),
            charges: true,
            settled_users: HashMap::new(),
        }
    }

    fn insert(&mut self, stored: &StoredEvent) -> Result<Option<u64>, ExplainError> {
        if stored.seq > self.view.seq {
            return Ok(None);
        }
        let event = decode(&stored.bytes).map_err(|e| ExplainError::Corrupt {
            seq: stored.seq,
            reason: e.0,
        })?;
        if event.seq != stored.seq {
            return Err(ExplainError::Corrupt {
                seq: stored.seq,
                reason: format!("its bytes say position {}", event.seq),
            });
        }
        if let EventBody::MauCounted { app, month, .. } = &event.event {
            let held = self.view.apps.get(app).is_none_or(|v| v.usage.contains_key(month));
            let key = (*app, month.clone());
            if !held && !self.settled_users.contains_key(&key) {
                let users = replay::settled_month_users(self.store, *app, month, self.view.seq)?.unwrap_or(0);
                self.settled_users.insert(key, users);
            }
        }
        self.by_id.insert(event.id, event.seq);
        self.events.insert(event.seq, event);
        Ok(Some(stored.seq))
    }

    fn load_stream(&mut self, stream: &StreamId) -> Result<(), ExplainError> {
        if !self.loaded.insert(stream.clone()) {
            return Ok(());
        }
        // An app's stream is mostly MAU counts, an account's mostly expiry reminders, that
        // explain nothing here: read the positions their views keep (an app's `story` and
        // the `reminders` of its current plan; an account's `story`, and its `charges` when
        // told), not the whole stream; the story lists from their segments as far as they
        // go, the rest from the log.
        let view: &'a LedgerView = self.view;
        let app = stream.app_id().and_then(|a| view.apps.get(&a));
        let account = || view.accounts.get(stream.as_str().strip_prefix("account:")?);
        // (list, entries settled out of the view, entries it holds)
        type Held<'v> = (List, u64, &'v [u64]);
        let (lists, mut loose): (Vec<Held>, Vec<u64>) = match (app, account()) {
            (Some(app), _) => (
                vec![(List::Story, app.story_settled, &app.story)],
                app.reminders.clone(),
            ),
            (None, Some(account)) if self.charges => (
                vec![
                    (List::Story, account.story_settled, &account.story),
                    (List::Charges, account.charges_settled, &account.charges),
                ],
                Vec::new(),
            ),
            (None, Some(account)) => (vec![(List::Story, account.story_settled, &account.story)], Vec::new()),
            (None, None) => (Vec::new(), Vec::new()),
        };
        if !lists.is_empty() {
            for (list, settled, held) in lists {
                let positions = replay::story_positions(self.store, stream, list, settled, held, view.seq)?;
                let positions = positions.as_slice();
                let held = story::read_segments(self.store, stream, list, positions)?;
                loose.extend(&positions[held.len()..]);
                for event in &held {
                    self.insert(event)?;
                }
            }
            loose.sort_unstable();
            let stored = self.store.read_positions(&loose)?;
            let missing = (0..loose.len()).find(|&i| stored.get(i).map(|e| e.seq) != Some(loose[i]));
            if let Some(i) = missing {
                return Err(ExplainError::Corrupt {
                    seq: loose[i],
                    reason: format!("the log has no event at this position of {stream}'s story"),
                });
            }
            for event in &stored {
                self.insert(event)?;
            }
            return Ok(());
        }
        for stored in self.store.read_stream(stream, 1, usize::MAX)? {
            if self.insert(&stored)?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn get(&self, seq: u64) -> &Envelope {
        &self.events[&seq]
    }

    /// The event with id `id`, the cause of an event whose input key is `key`.
    fn find(&mut self, id: Uuid, key: &Key) -> Result<Option<u64>, ExplainError> {
        if let Some(seq) = self.by_id.get(&id) {
            return Ok(Some(*seq));
        }
        // The input's own record: event 0 of its key, located by the idempotency index.
        if event_id(key, 0) == id {
            if let Some(record) = self.store.key_record(key)? {
                if let Some(stored) = self.store.read(record.first_seq, 1)?.first() {
                    if let Some(seq) = self.insert(stored)? {
                        if self.get(seq).id == id {
                            return Ok(Some(seq));
                        }
                    }
                }
            }
        }
        // A deadline set on another app of the account (its bill put the account in arrears).
        for stream in std::mem::take(&mut self.fallback) {
            self.load_stream(&stream)?;
        }
        Ok(self.by_id.get(&id).copied())
    }

    /// The causation chain ending at `seq`, oldest first, and the id of a cause that could
    /// not be found, if the chain stops at one.
    fn chain(&mut self, seq: u64) -> Result<(Vec<u64>, Option<Uuid>), ExplainError> {
        let mut out = vec![seq];
        let mut current = seq;
        let mut missing = None;
        while out.len() < CHAIN_MAX {
            let event = self.get(current);
            let Some(cause) = event.cause else { break };
            let key = event.key.clone();
            match self.find(cause, &key)? {
                Some(found) if !out.contains(&found) => {
                    out.push(found);
                    current = found;
                }
                Some(_) => break,
                None => {
                    missing = Some(cause);
                    break;
                }
            }
        }
        out.reverse();
        Ok((out, missing))
    }

    /// The chain plus the events decided together with each of its links (same input or
    /// deadline) that explain something: the auto-renewal attempt beside an expiry, the
    /// bill and its charge beside the arrears, the refund beside its hold.
    fn story(&mut self, seq: u64, app: Option<AppId>) -> Result<(BTreeSet<u64>, Option<Uuid>), ExplainError> {
        let (chain, missing) = self.chain(seq)?;
        let mut out: BTreeSet<u64> = chain.iter().copied().collect();
        for link in &chain {
            let key = &self.get(*link).key;
            out.extend(
                self.events
                    .values()
                    .filter(|e| &e.key == key && companion(e, app))
                    .map(|e| e.seq),
            );
        }
        // A refund: the purchase of the plan it refunded, and how that came about.
        let refunded: Vec<String> = out
            .iter()
            .filter_map(|s| match &self.get(*s).event {
                EventBody::EditionRefunded { orders, .. } => orders.first().cloned(),
                _ => None,
            })
            .collect();
        for order in refunded {
            if let Some(purchase) = self.purchase_of(&order) {
                let (more, _) = self.chain(purchase)?;
                out.extend(more);
            }
        }
        Ok((out, missing))
    }

    fn purchase_of(&self, order_id: &str) -> Option<u64> {
        self.events.values().find_map(|e| match &e.event {
            EventBody::EditionPurchased { order, .. } if order == order_id => Some(e.seq),
            _ => None,
        })
    }

    fn when(&self, t: Instant) -> String {
        when(t, self.zone)
    }

    fn step(&self, seq: u64, app: Option<AppId>) -> Step {
        let e = self.get(seq);
        Step {
            at: e.occurred_at,
            event_seq: e.seq,
            event_type: e.event.type_name().to_owned(),
            stream: e.stream.to_string(),
            rule: e.decision.as_ref().map(|d| d.rule.to_string()),
            rulebook: e.decision.as_ref().map(|d| d.rulebook.to_string()),
            text: self.narrate(e, app),
        }
    }

    fn cause_of(&self, e: &Envelope) -> Option<&Envelope> {
        e.cause.and_then(|id| self.by_id.get(&id)).map(|s| self.get(*s))
    }

    /// One event in words a support person reads without the schema.
    fn narrate(&self, e: &Envelope, app: Option<AppId>) -> String {
        let z = self.zone;
        let other_app = |a: &AppId| {
            if app == Some(*a) {
                String::new()
            } else {
                format!("app {a}: ")
            }
        };
        match &e.event {
            EventBody::InputRecorded { input } => {
                format!("{} asked to {} (input {})", input.actor, self.input_words(&input.command), input.key)
            }
            EventBody::AppCreated { app: a, account, name, edition } => {
                format!("{}app {name:?} created for account {account}, on the free edition {edition}", other_app(a))
            }
            EventBody::EditionPurchased { app: a, order, edition, months, monthly_price, amount, purpose, valid_from, valid_until, .. } => {
                let how = match purpose {
                    PurchasePurpose::New => "bought",
                    PurchasePurpose::Renewal => "renewed",
                    PurchasePurpose::AutoRenewal => "auto-renewed",
                    PurchasePurpose::Reactivation => "bought to reactivate the app",
                };
                format!(
                    "{}{edition} {how}: {} at {monthly_price}/month = {amount} (order {order}), valid {} → {}",
                    other_app(a),
                    plural(*months, "month"),
                    when(*valid_from, z),
                    when(*valid_until, z)
                )
            }
            EventBody::AutoRenewAttempted { outcome, price, available, .. } => match outcome {
                RenewalOutcome::Renewed => format!("auto-renew was on: renewed for one month at {price}"),
                RenewalOutcome::InsufficientFunds => format!(
                    "auto-renew was on, but the renewal failed: the balance ({available}) was below the price ({price})"
                ),
                RenewalOutcome::NotRenewable => "auto-renew was on, but this plan cannot be renewed as such".to_owned(),
            },
            EventBody::AutoRenewSwitched { on, .. } => format!("auto-renew switched {}", if *on { "on" } else { "off" }),
            EventBody::PlanExpired { valid_until, grace_ends_at, .. } => format!(
                "the plan expired (valid until {}); {} grace to renew, until {}",
                when(*valid_until, z),
                span(*valid_until, *grace_ends_at),
                when(*grace_ends_at, z)
            ),
            EventBody::HoldPlaced { app: a, hold, reclamation_at } => {
                let why = match (hold, self.cause_of(e).map(|c| &c.event)) {
                    (HoldKind::Expiry, Some(EventBody::PlanExpired { valid_until, grace_ends_at, .. })) => format!(
                        "not renewed within the {} grace after expiry",
                        span(*valid_until, *grace_ends_at)
                    ),
                    (HoldKind::Expiry, _) => "not renewed within the grace after expiry".to_owned(),
                    (HoldKind::Arrears, Some(EventBody::ArrearsStarted { .. })) => format!(
                        "still in arrears {} after the bill push",
                        span(self.cause_of(e).map_or(e.occurred_at, |c| c.occurred_at), e.occurred_at)
                    ),
                    (HoldKind::Arrears, Some(EventBody::InputRecorded { .. })) => {
                        "created while its account was suspended for arrears".to_owned()
                    }
                    (HoldKind::Arrears, _) => "the account is suspended for arrears".to_owned(),
                    (HoldKind::Refund, _) => "the plan was refunded".to_owned(),
                    (HoldKind::Violation, _) => "flagged for a content violation".to_owned(),
                };
                let kind = match hold {
                    HoldKind::Violation => "violation hold, never lifted".to_owned(),
                    other => format!("{} hold", other.as_str()),
                };
                match (reclamation_at, hold) {
                    (Some(at), HoldKind::Violation) => format!(
                        "{}{why}: app suspended ({kind}); its resources will be reclaimed at {}",
                        other_app(a),
                        when(*at, z)
                    ),
                    (Some(at), _) => format!(
                        "{}{why}: app suspended ({kind}); its resources will be reclaimed at {} unless it is usable again before",
                        other_app(a),
                        when(*at, z)
                    ),
                    (None, _) => format!(
                        "{}{why}: {kind} added; the app was already unusable, so its reclamation date stays",
                        other_app(a)
                    ),
                }
            }
            EventBody::HoldLifted { app: a, hold } => format!("{}{} hold lifted", other_app(a), hold.as_str()),
            EventBody::EditionRefunded { orders, refund, days_used, days_total, .. } => format!(
                "plan refunded within the five-day window: {days_used} of {days_total} days used (a started day counts), {refund} back for order {}",
                orders.join(", ")
            ),
            EventBody::AccountRefunded { amount, split, .. } => {
                format!("{amount} returned to the balance ({}; vouchers are never refunded)", kinds(split))
            }
            EventBody::AccountCharged { order, amount, split, .. } => {
                format!("{amount} taken from the balance for order {order} ({})", kinds(split))
            }
            EventBody::MauCounted { app: a, month, users, bill_push_at, late, .. } => {
                let in_month = match self.view.apps.get(a).and_then(|v| v.usage.get(month)) {
                    Some(usage) => usage.users.len() as u64,
                    None => self.settled_users.get(&(*a, month.clone())).copied().unwrap_or(0),
                };
                let push = match (bill_push_at, late) {
                    (Some(p), false) => format!("; this first count of the month set its bill for {}", when(*p, z)),
                    (Some(p), true) => format!(
                        "; late logins of a month already billed: billed as an adjustment at {}",
                        when(*p, z)
                    ),
                    (None, _) => String::new(),
                };
                format!(
                    "{}{} counted in the {month} MAU ({in_month} in that month in all){push}",
                    other_app(a),
                    plural(users.len() as u64, "user")
                )
            }
            EventBody::BillIssued { app: a, bill, month, lines, total, .. } => {
                let lines: Vec<String> = lines
                    .iter()
                    .map(|l| match (l.usable_seconds, l.month_seconds) {
                        (Some(usable), Some(month)) => format!(
                            "{}: {} × {} × {usable}/{month} s usable = {} [{}]",
                            l.item, l.quantity, l.unit_price, l.amount, l.rule
                        ),
                        _ => format!("{}: {} × {} = {} [{}]", l.item, l.quantity, l.unit_price, l.amount, l.rule),
                    })
                    .collect();
                format!("{}bill {bill} for {month} pushed: {total} ({})", other_app(a), lines.join("; "))
            }
            EventBody::BillCharged { bill, amount, balance_after, .. } => {
                format!("bill {bill} charged to the balance: {amount}; balance after: {balance_after}")
            }
            EventBody::ArrearsStarted { balance, suspend_at, .. } => format!(
                "the balance went negative ({balance}): the account is in arrears; its apps are held at {} unless it is topped up to zero or above before",
                when(*suspend_at, z)
            ),
            EventBody::AccountSuspended { .. } => {
                let grace = self
                    .cause_of(e)
                    .map(|c| format!(" {} after the bill push", span(c.occurred_at, e.occurred_at)))
                    .unwrap_or_default();
                format!("still in arrears{grace}: the account is suspended, every app of it held")
            }
            EventBody::ArrearsCleared { balance, .. } => format!("out of arrears: balance {balance}"),
            EventBody::ReminderSent { to, reminder, .. } => {
                format!("reminder sent to {} / {}: {}", to.email, to.sms, self.reminder_words(reminder))
            }
            EventBody::AppReclaimed { unusable_since, .. } => format!(
                "unusable since {}: resources reclaimed for good (account data, users, groups, messages); they cannot be restored",
                when(*unusable_since, z)
            ),
            EventBody::CommandRejected { command, reason } => format!("{command} refused: {reason}"),
            other => describe::describe(other, z),
        }
    }

    /// What a reminder told the customer.
    fn reminder_words(&self, reminder: &Reminder) -> String {
        match reminder {
            Reminder::ExpiryUpcoming { valid_until, .. } => format!("the plan expires {}", self.when(*valid_until)),
            Reminder::Expired { valid_until, .. } => {
                format!(
                    "the plan expired {}; renew before the app is suspended",
                    self.when(*valid_until)
                )
            }
            Reminder::Arrears { balance, suspend_at } => {
                format!(
                    "the balance is {balance}; top up before {} or services stop",
                    self.when(*suspend_at)
                )
            }
        }
    }

    fn input_words(&self, command: &Command) -> String {
        let money = |amount: Decimal| match self.view.currency {
            Some(currency) => Money::new(amount, currency).to_string(),
            None => amount.to_string(),
        };
        match command {
            Command::OpenAccount { account, .. } => format!("open account {account}"),
            Command::AddFunds { account, kind, amount } => {
                format!("add {} to account {account} as {}", money(amount.0), kind.as_str())
            }
            Command::CreateApp { app, name, .. } => format!("create app {app} {name:?}"),
            Command::BuyEdition { edition, months, .. } => format!("buy {edition} for {}", plural(*months, "month")),
            Command::SetAutoRenew { on, .. } => format!("switch auto-renew {}", if *on { "on" } else { "off" }),
            Command::Login { app, .. } => format!("log a user in to app {app}"),
            Command::LoginBatch {
                source,
                first_line,
                last_line,
                rows,
                ..
            } => {
                format!("count the logins of {source}, lines {first_line}–{last_line} ({rows} rows)")
            }
            Command::RefundEdition { app } => format!("refund the plan of app {app}"),
            Command::AdjustBalance {
                account,
                kind,
                direction,
                amount,
                reason,
            } => format!(
                "{} account {account} {} ({}): {reason:?}",
                match direction {
                    Direction::Credit => "credit",
                    Direction::Debit => "debit",
                },
                money(amount.0),
                kind.as_str()
            ),
            Command::FlagViolation { app, reason } => format!("flag app {app} for a content violation: {reason:?}"),
            Command::AdvanceClock {} => "let business time pass".to_owned(),
        }
    }
}

/// Events decided together with a link of a chain that are worth telling.
fn companion(e: &Envelope, app: Option<AppId>) -> bool {
    let ours = |a: &AppId| app.is_none_or(|x| x == *a);
    match &e.event {
        EventBody::AutoRenewAttempted { app: a, .. }
        | EventBody::PlanExpired { app: a, .. }
        | EventBody::EditionPurchased { app: a, .. }
        | EventBody::EditionRefunded { app: a, .. }
        | EventBody::HoldPlaced { app: a, .. }
        | EventBody::HoldLifted { app: a, .. } => ours(a),
        // A bill is decided with the arrears it causes, whichever app of the account it bills.
        EventBody::BillIssued { .. }
        | EventBody::BillCharged { .. }
        | EventBody::ArrearsStarted { .. }
        | EventBody::AccountSuspended { .. }
        | EventBody::AccountRefunded { .. }
        | EventBody::ArrearsCleared { .. } => true,
        EventBody::ReminderSent {
            reminder: Reminder::Arrears { .. },
            ..
        } => true,
        _ => false,
    }
}

/// `2025-04-02 10:00` (seconds only when there are some), in `zone`.
pub fn when(t: Instant, zone: FixedOffset) -> String {
    let local = t.in_zone(zone);
    if local.format("%S").to_string() == "00" {
        local.format("%Y-%m-%d %H:%M").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// A duration as people say it: `24 h`, `7 days`, `90 min`.
fn span(from: Instant, to: Instant) -> String {
    let seconds = (to.utc() - from.utc()).num_seconds();
    match seconds {
        s if s >= 2 * 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn kinds(split: &KindAmounts) -> String {
    let parts: Vec<String> = MoneyKind::ALL
        .iter()
        .filter(|k| !split.get(**k).amount().is_zero())
        .map(|k| format!("{} {}", k.as_str().replace('_', " "), split.get(*k).amount()))
        .collect();
    if parts.is_empty() {
        "nothing".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `1 month`, `3 months`.
fn plural(n: impl Into<u64>, one: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

fn zone_label(zone: FixedOffset) -> String {
    format!("UTC{zone}")
}

/// Why app `app` is in its state as of `view` (the projections replayed up to the time asked for).
pub fn explain_app(
    store: &dyn EventStore,
    view: &LedgerView,
    app: AppId,
    as_of: Option<Instant>,
) -> Result<Explanation, ExplainError> {
    let app_view = view
        .apps
        .get(&app)
        .ok_or_else(|| ExplainError::NotFound(not_found(view, &format!("app {app}"), as_of)))?;
    let account = view
        .accounts
        .get(&app_view.account)
        .ok_or_else(|| ExplainError::NotFound(format!("account {} of app {app}", app_view.account)))?;
    let mut log = Log::new(store, view);
    // An app's explanation never tells a charge: causes are recorded inputs or the events
    // that set a deadline, and charges are not among the events told beside a link.
    log.charges = false;
    log.load_stream(&StreamId::app(app))?;
    log.load_stream(&StreamId::account(&account.account))?;
    log.fallback = account
        .apps
        .iter()
        .filter(|a| **a != app)
        .map(|a| StreamId::app(*a))
        .collect();

    let mut all: BTreeSet<u64> = BTreeSet::new();
    let mut notes = Vec::new();
    let note_missing = |missing: Option<Uuid>, notes: &mut Vec<String>| {
        if let Some(id) = missing {
            notes.push(format!(
                "the chain stops at cause {id}, which is not in this app's or its account's streams"
            ));
        }
    };

    // The holds, first placed first.
    let mut holds = Vec::new();
    let mut placed: Vec<(&HoldKind, _)> = app_view.holds.iter().collect();
    placed.sort_by_key(|(kind, h)| (h.since, **kind));
    for (kind, hold) in placed {
        let seq = *log.by_id.get(&hold.cause).ok_or_else(|| ExplainError::Corrupt {
            seq: view.seq,
            reason: format!(
                "the {} hold's event {} is not in the app's stream",
                kind.as_str(),
                hold.cause
            ),
        })?;
        let (mut story, missing) = log.story(seq, Some(app))?;
        note_missing(missing, &mut notes);
        // An app created while its account was suspended is held by its creation: tell
        // the arrears too.
        let arrears_told = story
            .iter()
            .any(|s| matches!(log.get(*s).event, EventBody::ArrearsStarted { .. }));
        if *kind == HoldKind::Arrears && !arrears_told {
            if let Some(started) = account.arrears.as_ref().and_then(|a| log.by_id.get(&a.cause).copied()) {
                let (more, missing) = log.story(started, Some(app))?;
                note_missing(missing, &mut notes);
                story.extend(more);
            }
        }
        let summary = hold_summary(&log, *kind, seq, &story);
        all.extend(&story);
        holds.push(HoldExplanation {
            hold: *kind,
            since: hold.since,
            event_seq: seq,
            summary,
            steps: story.into_iter().collect(),
        });
    }

    // The status's own chain when nothing holds the app (or what reclaimed it).
    let status_start = match app_view.status {
        AppStatus::Reclaimed => log
            .events
            .values()
            .rev()
            .find(|e| matches!(e.event, EventBody::AppReclaimed { app: a, .. } if a == app))
            .map(|e| e.seq),
        AppStatus::Grace => app_view.expired.as_ref().and_then(|x| log.by_id.get(&x.cause).copied()),
        AppStatus::Active => app_view.plan.as_ref().and_then(|p| log.by_id.get(&p.cause).copied()),
        AppStatus::Trial => log
            .events
            .values()
            .find(|e| matches!(e.event, EventBody::AppCreated { app: a, .. } if a == app))
            .map(|e| e.seq),
        AppStatus::Suspended => None,
    };
    if let Some(seq) = status_start {
        let (story, missing) = log.story(seq, Some(app))?;
        note_missing(missing, &mut notes);
        all.extend(story);
    }

    let reminders = reminders_of(&log, app_view);
    let (refusals, refusals_total) = refusals_of(&log, app_view);
    let reclamation_at = app_view.reclamation.as_ref().map(|r| r.at);

    if app_view.status != AppStatus::Active {
        notes.push(format!(
            "auto-renew is {}",
            if app_view.auto_renew { "on" } else { "off" }
        ));
    }
    notes.extend(paid_note(&log, account));
    if let Some(arrears) = account.arrears.as_ref().filter(|a| !a.suspended) {
        notes.push(format!(
            "account {} is in arrears ({}): its apps are held at {} unless it is topped up to zero or above before",
            account.account,
            account.available(),
            log.when(arrears.suspend_at)
        ));
    }
    let summary = app_summary(&log, app_view, account, &holds);
    let advice = app_advice(&log, app_view, account);
    let steps = all.iter().map(|s| log.step(*s, Some(app))).collect();
    Ok(Explanation {
        subject: Subject::App {
            app,
            name: app_view.name.clone(),
            account: app_view.account.clone(),
        },
        status: status_word(app_view.status).to_owned(),
        summary,
        as_of,
        as_of_seq: view.seq,
        clock: view.clock,
        zone: log.zone.to_string(),
        steps,
        holds,
        reclamation_at,
        reminders,
        refusals,
        refusals_total,
        apps: Vec::new(),
        notes,
        advice,
    })
}

fn not_found(view: &LedgerView, what: &str, as_of: Option<Instant>) -> String {
    let zone = zone_of(view.rulebook.as_ref().map(|r| r.zone.as_str()));
    match (as_of, view.clock) {
        (Some(t), _) => format!("no {what} as of {} (events 1..{})", when(t, zone), view.seq),
        (None, Some(_)) => format!("no {what} (events 1..{})", view.seq),
        (None, None) => format!("no {what}: the ledger is empty"),
    }
}

/// The events of `story` with `type`, in log order.
fn of_type<'l>(log: &'l Log, story: &BTreeSet<u64>, pick: impl Fn(&EventBody) -> bool) -> Option<&'l Envelope> {
    story.iter().map(|s| log.get(*s)).find(|e| pick(&e.event))
}

/// The last event of `story` that `pick` accepts.
fn last_of_type<'l>(log: &'l Log, story: &BTreeSet<u64>, pick: impl Fn(&EventBody) -> bool) -> Option<&'l Envelope> {
    story.iter().rev().map(|s| log.get(*s)).find(|e| pick(&e.event))
}

/// Whether auto-renew was on for `app` just before event `seq`.
fn auto_renew_before(log: &Log, app: AppId, seq: u64) -> bool {
    log.events
        .range(..seq)
        .rev()
        .find_map(|(_, e)| match e.event {
            EventBody::AutoRenewSwitched { app: a, on } if a == app => Some(on),
            _ => None,
        })
        .unwrap_or(false)
}

fn rule_of(e: &Envelope) -> String {
    e.decision
        .as_ref()
        .map(|d| format!("rule {}, {}", d.rule, d.rulebook))
        .unwrap_or_default()
}

/// A hold's chain in one sentence, the facts taken from its events.
fn hold_summary(log: &Log, kind: HoldKind, placed: u64, story: &BTreeSet<u64>) -> String {
    let placed = log.get(placed);
    let since = log.when(placed.occurred_at);
    let mut parts = Vec::new();
    match kind {
        HoldKind::Expiry => {
            let purchase = last_of_type(log, story, |b| matches!(b, EventBody::EditionPurchased { .. }));
            let expired = of_type(log, story, |b| matches!(b, EventBody::PlanExpired { .. }));
            if let Some(Envelope {
                event:
                    EventBody::PlanExpired {
                        valid_until,
                        grace_ends_at,
                        ..
                    },
                ..
            }) = expired
            {
                let bought = match purchase.map(|p| (&p.event, p.occurred_at)) {
                    Some((
                        EventBody::EditionPurchased {
                            edition,
                            months,
                            purpose,
                            ..
                        },
                        at,
                    )) => format!(
                        " ({edition}, {} {}, {})",
                        match purpose {
                            PurchasePurpose::New | PurchasePurpose::Reactivation => "bought",
                            PurchasePurpose::Renewal => "renewed",
                            PurchasePurpose::AutoRenewal => "auto-renewed",
                        },
                        log.when(at),
                        plural(*months, "month")
                    ),
                    _ => String::new(),
                };
                parts.push(format!("plan expired {}{bought}", log.when(*valid_until)));
                parts.push(format!(
                    "not renewed within the {} grace ({})",
                    span(*valid_until, *grace_ends_at),
                    rule_of(placed)
                ));
            } else {
                parts.push(format!(
                    "the plan was not renewed within the grace ({})",
                    rule_of(placed)
                ));
            }
            parts.push(format!("suspended {since}"));
            match of_type(log, story, |b| matches!(b, EventBody::AutoRenewAttempted { .. })).map(|e| &e.event) {
                Some(EventBody::AutoRenewAttempted {
                    outcome: RenewalOutcome::InsufficientFunds,
                    price,
                    available,
                    ..
                }) => parts.push(format!(
                    "auto-renew was on but the balance ({available}) was below the price ({price})"
                )),
                Some(EventBody::AutoRenewAttempted {
                    outcome: RenewalOutcome::NotRenewable,
                    ..
                }) => parts.push("auto-renew was on but this plan cannot be renewed as such".to_owned()),
                _ => match expired {
                    Some(Envelope {
                        event: EventBody::PlanExpired { app, .. },
                        seq,
                        ..
                    }) if auto_renew_before(log, *app, *seq) => {
                        parts.push("auto-renew was on, but an app already suspended is never auto-renewed".to_owned())
                    }
                    _ => parts.push("auto-renew was off".to_owned()),
                },
            }
        }
        HoldKind::Arrears => {
            if let Some(Envelope {
                event:
                    EventBody::BillIssued {
                        bill,
                        app,
                        month,
                        total,
                        ..
                    },
                occurred_at,
                ..
            }) = of_type(log, story, |b| matches!(b, EventBody::BillIssued { .. }))
            {
                let whose = match &placed.event {
                    EventBody::HoldPlaced { app: held, .. } if held != app => format!(" of app {app}"),
                    _ => String::new(),
                };
                parts.push(format!(
                    "bill {bill}{whose} ({month}, {total}) pushed {}",
                    log.when(*occurred_at)
                ));
            }
            if let Some(Envelope {
                event: EventBody::BillCharged { balance_after, .. },
                ..
            }) = of_type(log, story, |b| matches!(b, EventBody::BillCharged { .. }))
            {
                parts.push(format!("charged to the balance, which went to {balance_after}"));
            }
            match of_type(log, story, |b| matches!(b, EventBody::ArrearsStarted { .. })) {
                Some(started) if placed.cause == Some(started.id) => parts.push(format!(
                    "not topped up within the {} arrears grace ({})",
                    span(started.occurred_at, placed.occurred_at),
                    rule_of(placed)
                )),
                Some(_) => parts.push(format!(
                    "the app was created while the account was suspended for these arrears ({})",
                    rule_of(placed)
                )),
                None => parts.push(format!("the account was suspended for arrears ({})", rule_of(placed))),
            }
            parts.push(format!("suspended {since}"));
        }
        HoldKind::Refund => {
            if let Some(Envelope {
                event: EventBody::EditionPurchased { edition, amount, .. },
                occurred_at,
                ..
            }) = of_type(log, story, |b| matches!(b, EventBody::EditionPurchased { .. }))
            {
                parts.push(format!("{edition} bought {} for {amount}", log.when(*occurred_at)));
            }
            match of_type(log, story, |b| matches!(b, EventBody::EditionRefunded { .. })) {
                Some(Envelope {
                    event:
                        EventBody::EditionRefunded {
                            refund,
                            days_used,
                            days_total,
                            ..
                        },
                    occurred_at,
                    ..
                }) => parts.push(format!(
                    "refunded {} within the five-day window ({days_used} of {days_total} days used, {refund} back)",
                    log.when(*occurred_at)
                )),
                _ => parts.push("the plan was refunded".to_owned()),
            }
            parts.push(format!("suspended {since} ({})", rule_of(placed)));
        }
        HoldKind::Violation => {
            let flagged = of_type(log, story, |b| matches!(b, EventBody::InputRecorded { .. }));
            match flagged.map(|e| &e.event) {
                Some(EventBody::InputRecorded { input }) => {
                    let reason = match &input.command {
                        Command::FlagViolation { reason, .. } => format!(": {reason:?}"),
                        _ => String::new(),
                    };
                    parts.push(format!(
                        "flagged for a content violation by {} on {}{reason}",
                        input.actor,
                        log.when(input.at)
                    ))
                }
                _ => parts.push("flagged for a content violation".to_owned()),
            }
            parts.push(format!(
                "suspended {since} ({}), for good: a violation hold is never lifted",
                rule_of(placed)
            ));
        }
    }
    parts.join("; ")
}

fn app_summary(log: &Log, app: &AppView, account: &AccountView, holds: &[HoldExplanation]) -> String {
    let mut text = match app.status {
        AppStatus::Suspended | AppStatus::Reclaimed => {
            let mut lines: Vec<String> = Vec::new();
            let was = match app.reclaimed_at {
                Some(at) => {
                    lines.push(format!("Reclaimed {}: its resources are gone for good.", log.when(at)));
                    "It had been suspended"
                }
                None => "Suspended",
            };
            match holds {
                [one] => lines.push(format!("{was} ({} hold): {}.", one.hold.as_str(), one.summary)),
                _ => {
                    lines.push(format!("{was} by {} holds, each explained below.", holds.len()));
                    for hold in holds {
                        lines.push(format!("{} hold: {}.", capitalize(hold.hold.as_str()), hold.summary));
                    }
                }
            }
            if let Some(pending) = &app.reclamation {
                let unless = if app.holds.contains_key(&HoldKind::Violation) {
                    String::new()
                } else {
                    format!(" unless {} before", lifting_actions(app))
                };
                lines.push(format!(
                    "Its resources will be reclaimed on {}{unless}.",
                    log.when(pending.at)
                ));
            }
            lines.join("\n")
        }
        AppStatus::Grace => {
            let expired = app.expired.as_ref().expect("grace has an expiry");
            let attempt = log
                .by_id
                .get(&expired.cause)
                .map(|s| &log.get(*s).key)
                .and_then(|key| {
                    log.events
                        .values()
                        .find(|e| &e.key == key && matches!(e.event, EventBody::AutoRenewAttempted { .. }))
                })
                .map(|e| format!(" {}.", capitalize(&log.narrate(e, Some(app.app)))))
                .unwrap_or_default();
            format!(
                "In grace: the plan expired {} and was not renewed; the app stays usable until {}, then it is suspended unless renewed.{attempt}",
                log.when(expired.valid_until),
                log.when(expired.grace_ends_at)
            )
        }
        AppStatus::Active => {
            let plan = app.plan.as_ref().expect("active has a plan");
            format!(
                "Active: the {} plan is valid until {}; auto-renew is {}.",
                plan.edition,
                log.when(plan.valid_until),
                if app.auto_renew { "on" } else { "off" }
            )
        }
        AppStatus::Trial => format!(
            "On the free edition ({}), usable; no paid plan was ever bought.",
            app.edition
        ),
    };
    if let Some(arrears) = account.arrears.as_ref().filter(|a| !a.suspended) {
        text.push_str(&format!(
            "\nThe account is in arrears ({}): its apps are held at {} unless it is topped up to zero before.",
            account.available(),
            log.when(arrears.suspend_at)
        ));
    }
    text
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What makes a held app usable again, in words, for the holds it has.
fn lifting_actions(app: &AppView) -> String {
    let buy = app.holds.contains_key(&HoldKind::Expiry) || app.holds.contains_key(&HoldKind::Refund);
    let top_up = app.holds.contains_key(&HoldKind::Arrears);
    match (buy, top_up) {
        (true, true) => "a top-up to zero and a purchase arrive".to_owned(),
        (true, false) => "a purchase arrives".to_owned(),
        (false, true) => "a top-up to zero arrives".to_owned(),
        (false, false) => "the holds are lifted".to_owned(),
    }
}

/// The expiry reminders sent for the app's current (or last expired) plan.
fn reminders_of(log: &Log, app: &AppView) -> Option<Reminders> {
    let valid_until = app
        .expired
        .as_ref()
        .map(|x| x.valid_until)
        .or(app.plan.as_ref().map(|p| p.valid_until))?;
    let sent: Vec<&Envelope> = log
        .events
        .values()
        .filter(|e| match &e.event {
            EventBody::ReminderSent {
                reminder:
                    Reminder::ExpiryUpcoming { app: a, valid_until: v } | Reminder::Expired { app: a, valid_until: v },
                ..
            } => *a == app.app && *v == valid_until,
            _ => false,
        })
        .collect();
    let last = sent.last()?;
    let EventBody::ReminderSent { to, reminder, .. } = &last.event else {
        return None;
    };
    Some(Reminders {
        count: sent.len(),
        to: format!("{} / {}", to.email, to.sms),
        last_at: last.occurred_at,
        last_text: log.reminder_words(reminder),
    })
}

/// Commands refused on the app since it was last made unusable (all of them if usable).
fn refusals_of(log: &Log, app: &AppView) -> (Vec<Step>, usize) {
    let since = app.unusable_since.or(app.reclaimed_at);
    let stream = StreamId::app(app.app);
    let refused: Vec<u64> = log
        .events
        .values()
        .filter(|e| e.stream == stream && matches!(e.event, EventBody::CommandRejected { .. }))
        .filter(|e| since.is_none_or(|t| e.occurred_at >= t))
        .map(|e| e.seq)
        .collect();
    let total = refused.len();
    let listed = refused[total.saturating_sub(REFUSALS_LISTED_MAX)..]
        .iter()
        .map(|s| log.step(*s, Some(app.app)))
        .collect();
    (listed, total)
}

/// Money put into an account in arrears since its arrears started, not enough to clear them.
fn paid_since_arrears(log: &Log, account: &AccountView) -> Vec<String> {
    let Some(arrears) = &account.arrears else {
        return Vec::new();
    };
    let Some(started) = log.by_id.get(&arrears.cause).copied() else {
        return Vec::new();
    };
    log.events
        .range(started + 1..)
        .filter_map(|(_, e)| match &e.event {
            EventBody::FundsAdded {
                account: a,
                kind,
                amount,
            } if *a == account.account => Some(format!(
                "{} {amount} added as {}",
                log.when(e.occurred_at),
                kind.as_str().replace('_', " ")
            )),
            EventBody::BalanceAdjusted {
                account: a,
                kind,
                amount,
                reason,
            } if *a == account.account => Some(format!(
                "{} {} adjusted by {amount} by support ({reason:?})",
                log.when(e.occurred_at),
                kind.as_str().replace('_', " ")
            )),
            _ => None,
        })
        .collect()
}

/// The note telling what was paid since the arrears, if anything.
fn paid_note(log: &Log, account: &AccountView) -> Option<String> {
    let paid = paid_since_arrears(log, account);
    (!paid.is_empty()).then(|| {
        format!(
            "since the arrears started: {}; not enough to bring the balance to zero (now {})",
            paid.join("; "),
            account.available()
        )
    })
}

/// The last plan bought for the app: edition and monthly price.
fn last_plan(log: &Log, app: &AppView) -> Option<(String, Money)> {
    if let Some(plan) = &app.plan {
        return Some((plan.edition.to_string(), plan.monthly_price));
    }
    log.events.values().rev().find_map(|e| match &e.event {
        EventBody::EditionPurchased {
            app: a,
            edition,
            monthly_price,
            ..
        } if *a == app.app => Some((edition.to_string(), *monthly_price)),
        _ => None,
    })
}

/// "top up at least N first" when the balance does not cover `price`.
fn top_up_for(balance: Money, price: Money) -> Option<Money> {
    let short = price.amount() - balance.amount();
    (short > Decimal::ZERO).then(|| Money::new(short, price.currency()))
}

fn app_advice(log: &Log, app: &AppView, account: &AccountView) -> Vec<String> {
    let balance = account.available();
    let mut advice = Vec::new();
    if let Some(at) = app.reclaimed_at {
        advice.push(format!(
            "Nothing brings this app back: its resources were reclaimed on {} and cannot be restored. To go on, create a new app (a new SDKAppID) and buy a plan for it.",
            log.when(at)
        ));
        return advice;
    }
    let deadline = app
        .reclamation
        .as_ref()
        .map(|r| format!(" before {}, when its resources are reclaimed", log.when(r.at)))
        .unwrap_or_default();
    if app.holds.contains_key(&HoldKind::Violation) {
        advice.push(
            "Nothing lifts the violation hold: it was placed for a content violation, and no purchase, top-up or refund changes it; the app's plans are never refunded.".to_owned(),
        );
        let others: Vec<&str> = app
            .holds
            .keys()
            .filter(|k| **k != HoldKind::Violation)
            .map(|k| k.as_str())
            .collect();
        match others.as_slice() {
            [] => {}
            [one] => advice.push(format!(
                "The {one} hold does not matter while the violation hold stays."
            )),
            many => advice.push(format!(
                "The {} holds do not matter while the violation hold stays.",
                many.join(" and ")
            )),
        }
        if let Some(pending) = &app.reclamation {
            advice.push(format!(
                "The app's resources will be reclaimed on {}.",
                log.when(pending.at)
            ));
        }
        return advice;
    }
    let in_arrears = account.arrears.is_some() && balance.is_negative();
    let owed = Money::new(-balance.amount(), balance.currency());
    if app.holds.contains_key(&HoldKind::Arrears) {
        advice.push(format!(
            "Top up at least {owed}{deadline}: that brings the balance ({balance}) to zero and lifts the arrears hold at once, on every app of account {}.",
            account.account
        ));
    } else if let Some(arrears) = account.arrears.as_ref().filter(|_| in_arrears) {
        advice.push(format!(
            "Top up at least {owed} before {}: the account is in arrears ({balance}), and then every app of it is held.",
            log.when(arrears.suspend_at)
        ));
    }
    let lapsed: Vec<&str> = [HoldKind::Expiry, HoldKind::Refund]
        .into_iter()
        .filter(|k| app.holds.contains_key(k))
        .map(|k| k.as_str())
        .collect();
    if !lapsed.is_empty() {
        let mut text = format!(
            "Buy a plan (any paid edition){deadline}: the purchase reactivates the app at once, with a new validity from the purchase, and lifts the {} hold.",
            lapsed.join(" and ")
        );
        if let Some((edition, price)) = last_plan(log, app) {
            text.push_str(&format!(" The last plan was {edition} at {price}/month"));
            match top_up_for(balance, price) {
                Some(short) if in_arrears => text.push_str(&format!(
                    "; with the arrears, top up at least {short} in all before buying it."
                )),
                Some(short) => text.push_str(&format!("; the balance is {balance}: top up at least {short} first.")),
                None => text.push_str(&format!("; the balance ({balance}) covers one month.")),
            }
        }
        advice.push(text);
    }
    if app.holds.len() > 1 {
        advice.push("Every hold must go before the app is usable again.".to_owned());
    }
    match app.status {
        AppStatus::Grace => {
            let expired = app.expired.as_ref().expect("grace has an expiry");
            let mut text = format!(
                "Renew before {}, or the app is suspended then: buying the same edition again starts the new month at the old expiry ({}), with no gap.",
                log.when(expired.grace_ends_at),
                log.when(expired.valid_until)
            );
            if let Some((edition, price)) = last_plan(log, app) {
                text.push_str(&format!(" The {edition} plan is {price}/month"));
                match top_up_for(balance, price) {
                    Some(short) => {
                        text.push_str(&format!("; the balance is {balance}: top up at least {short} first."))
                    }
                    None => text.push_str(&format!("; the balance ({balance}) covers it.")),
                }
            }
            advice.push(text);
        }
        AppStatus::Active => {
            let plan = app.plan.as_ref().expect("active has a plan");
            let until = log.when(plan.valid_until);
            advice.push(format!(
                "Nothing is needed now: the {} plan is valid until {until}.",
                plan.edition
            ));
            if app.auto_renew {
                let mut text = format!(
                    "Auto-renew is on: at {until} the ledger renews one month for {} if the balance covers it",
                    plan.monthly_price
                );
                match top_up_for(balance, plan.monthly_price) {
                    Some(short) => text.push_str(&format!(
                        "; the balance is {balance}: top up at least {short} before {until}, or the renewal fails."
                    )),
                    None => text.push_str(&format!(" (it does now: {balance}).")),
                }
                advice.push(text);
            } else {
                advice.push(format!(
                    "Auto-renew is off: renew before {until} (or switch auto-renew on), or the app is suspended when the grace after expiry ends."
                ));
            }
        }
        AppStatus::Trial => advice.push(format!(
            "Nothing is needed: the app is on the free edition ({}) and usable.",
            app.edition
        )),
        AppStatus::Suspended | AppStatus::Reclaimed => {}
    }
    advice
}

/// Why account `account` is in its state as of `view`: its arrears, followed back to the
/// bill that caused them and forward to the holds they placed. Reads the account's stream
/// and every one of its apps' streams (at most `app.limit` of them); an index of events by
/// cause would spare reading the apps' streams whole — future work.
pub fn explain_account(
    store: &dyn EventStore,
    view: &LedgerView,
    account_id: &AccountId,
    as_of: Option<Instant>,
) -> Result<Explanation, ExplainError> {
    let account = view
        .accounts
        .get(account_id)
        .ok_or_else(|| ExplainError::NotFound(not_found(view, &format!("account {account_id}"), as_of)))?;
    let mut log = Log::new(store, view);
    log.load_stream(&StreamId::account(account_id))?;
    for app in &account.apps {
        log.load_stream(&StreamId::app(*app))?;
    }
    let balance = account.available();
    let mut all = BTreeSet::new();
    let mut notes = Vec::new();
    let mut advice = Vec::new();
    let (status, summary) = match &account.arrears {
        Some(arrears) => {
            let started = *log.by_id.get(&arrears.cause).ok_or_else(|| ExplainError::Corrupt {
                seq: view.seq,
                reason: format!("the arrears event {} is not in the account's stream", arrears.cause),
            })?;
            let (story, missing) = log.story(started, None)?;
            all.extend(story);
            if let Some(id) = missing {
                notes.push(format!(
                    "the chain stops at cause {id}, which is not in the account's or its apps' streams"
                ));
            }
            // What the arrears led to: the suspension and the holds it placed.
            let cause = log.get(started).id;
            let consequences: Vec<u64> = log
                .events
                .values()
                .filter(|e| e.cause == Some(cause))
                .map(|e| e.seq)
                .collect();
            for seq in consequences {
                let key = log.get(seq).key.clone();
                all.extend(
                    log.events
                        .values()
                        .filter(|e| e.key == key && companion(e, None))
                        .map(|e| e.seq),
                );
            }
            let bill = of_type(&log, &all, |b| matches!(b, EventBody::BillIssued { .. }));
            let because = match bill.map(|b| (&b.event, b.occurred_at)) {
                Some((EventBody::BillIssued { bill, app, month, total, .. }, at)) => format!(
                    "bill {bill} of app {app} for {month} ({total}) was pushed {} and charged to the balance, which went to {}",
                    log.when(at),
                    log.events
                        .values()
                        .find_map(|e| match &e.event {
                            EventBody::BillCharged { bill: b, balance_after, .. } if b == bill => Some(balance_after.to_string()),
                            _ => None,
                        })
                        .unwrap_or_else(|| "below zero".to_owned())
                ),
                _ => "a bill was charged to the balance, which went negative".to_owned(),
            };
            let owed = Money::new(-balance.amount(), balance.currency());
            advice.push(format!(
                "Top up at least {owed}: that brings the balance ({balance}) to zero and lifts the arrears hold of every app of the account at once."
            ));
            if arrears.suspended {
                let held: Vec<String> = account
                    .apps
                    .iter()
                    .filter(|a| {
                        view.apps
                            .get(a)
                            .is_some_and(|v| v.holds.contains_key(&HoldKind::Arrears))
                    })
                    .map(ToString::to_string)
                    .collect();
                (
                    "in arrears, suspended".to_owned(),
                    format!(
                        "In arrears since {}: {because}.\nNot topped up within the {} arrears grace: suspended {}; apps held: {}.\nThe balance is now {balance}.",
                        log.when(arrears.since),
                        span(arrears.since, arrears.suspend_at),
                        log.when(arrears.suspend_at),
                        if held.is_empty() { "none".to_owned() } else { held.join(", ") }
                    ),
                )
            } else {
                (
                    "in arrears".to_owned(),
                    format!(
                        "In arrears since {}: {because}.\nEvery app of the account is held at {} unless the balance (now {balance}) is topped up to zero or above before.",
                        log.when(arrears.since),
                        log.when(arrears.suspend_at)
                    ),
                )
            }
        }
        None => {
            advice.push("Nothing is needed for the account itself.".to_owned());
            (
                "in good standing".to_owned(),
                format!("Not in arrears; the balance is {balance}."),
            )
        }
    };
    let b = &account.balances;
    notes.push(format!(
        "balance {balance}: cash {}, income transfer {}, gift {}, voucher {}",
        b.cash.amount(),
        b.income_transfer.amount(),
        b.gift.amount(),
        b.voucher.amount()
    ));
    notes.extend(paid_note(&log, account));
    notes.push(format!(
        "reminders go to {} / {}",
        account.creator.email, account.creator.sms
    ));
    let apps: Vec<AppLine> = account
        .apps
        .iter()
        .filter_map(|a| view.apps.get(a))
        .map(|v| AppLine {
            app: v.app,
            name: v.name.clone(),
            status: status_word(v.status).to_owned(),
            holds: v.holds.keys().copied().collect(),
        })
        .collect();
    for app in apps.iter().filter(|a| a.status != status_word(AppStatus::Reclaimed)) {
        let others: Vec<&str> = app
            .holds
            .iter()
            .filter(|h| **h != HoldKind::Arrears)
            .map(|h| h.as_str())
            .collect();
        if others.is_empty() {
            continue;
        }
        let what = if account.arrears.is_some() {
            "also has a hold that a top-up does not lift"
        } else {
            "is held"
        };
        advice.push(format!(
            "App {} {what} ({}): see `chat-ledger explain app {}`.",
            app.app,
            others.join(", "),
            app.app
        ));
    }
    let steps = all.iter().map(|s| log.step(*s, None)).collect();
    Ok(Explanation {
        subject: Subject::Account {
            account: account_id.clone(),
        },
        status,
        summary,
        as_of,
        as_of_seq: view.seq,
        clock: view.clock,
        zone: log.zone.to_string(),
        steps,
        holds: Vec::new(),
        reclamation_at: None,
        reminders: None,
        refusals: Vec::new(),
        refusals_total: 0,
        apps,
        notes,
        advice,
    })
}

/// Width the plain text is wrapped to.
pub const RENDER_WIDTH: usize = 100;

/// `text` wrapped to `width`, the first line after `first`, the others after `rest`.
fn wrap(text: &str, width: usize, first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The plain text a support person reads.
pub fn render(x: &Explanation) -> String {
    let zone = zone_of(Some(&x.zone));
    let mut out = String::new();
    match &x.subject {
        Subject::App { app, name, account } => {
            out.push_str(&format!("app {app} {name:?} (account {account}): {}\n", x.status))
        }
        Subject::Account { account } => out.push_str(&format!("account {account}: {}\n", x.status)),
    }
    let as_of = match (x.as_of, x.clock) {
        (Some(t), _) => format!("as of {} (events 1..{})", when(t, zone), x.as_of_seq),
        (None, Some(clock)) => format!("as of event {} ({})", x.as_of_seq, when(clock, zone)),
        (None, None) => "the ledger is empty".to_owned(),
    };
    out.push_str(&format!("{as_of}; times in {}\n", zone_label(zone)));
    for paragraph in x.summary.lines() {
        out.push('\n');
        out.push_str(&wrap(paragraph, RENDER_WIDTH, "", ""));
    }

    let by_seq: BTreeMap<u64, &Step> = x.steps.iter().map(|s| (s.event_seq, s)).collect();
    let time_width = x.steps.iter().map(|s| when(s.at, zone).len()).max().unwrap_or(16);
    let pad = " ".repeat(2 + time_width + 2);
    let step_text = |step: &Step| {
        let mut text = wrap(
            &step.text,
            RENDER_WIDTH,
            &format!("  {:<time_width$}  ", when(step.at, zone)),
            &pad,
        );
        let rule = match (&step.rule, &step.rulebook) {
            (Some(rule), Some(book)) => format!("rule {rule}, {book} · "),
            _ => String::new(),
        };
        text.push_str(&format!("{pad}[{rule}event {} {}]\n", step.event_seq, step.event_type));
        text
    };
    for hold in &x.holds {
        out.push_str(&format!(
            "\n{} hold, since {}: how it came about\n",
            capitalize(hold.hold.as_str()),
            when(hold.since, zone)
        ));
        for step in hold.steps.iter().filter_map(|s| by_seq.get(s)) {
            out.push_str(&step_text(step));
        }
    }
    let in_holds: BTreeSet<u64> = x.holds.iter().flat_map(|h| h.steps.iter().copied()).collect();
    let rest: Vec<&Step> = x.steps.iter().filter(|s| !in_holds.contains(&s.event_seq)).collect();
    if !rest.is_empty() {
        out.push_str(match (&x.subject, x.status.as_str()) {
            (Subject::App { .. }, "reclaimed") => "\nHow it was reclaimed:\n",
            _ => "\nHow it came about:\n",
        });
        for step in rest {
            out.push_str(&step_text(step));
        }
    }
    if !x.apps.is_empty() {
        out.push_str("\nApps:\n");
        for app in &x.apps {
            let holds: Vec<&str> = app.holds.iter().map(|h| h.as_str()).collect();
            let holds = if holds.is_empty() {
                String::new()
            } else {
                format!(" (holds: {})", holds.join(", "))
            };
            out.push_str(&format!("  app {} {:?}: {}{holds}\n", app.app, app.name, app.status));
        }
    }
    let mut also = String::new();
    if let Some(r) = &x.reminders {
        let what = format!(
            "{} for this plan were sent to {}; the last on {}: {}.",
            plural(r.count as u64, "expiry reminder"),
            r.to,
            when(r.last_at, zone),
            r.last_text
        );
        also.push_str(&wrap(&what, RENDER_WIDTH, "  - ", "    "));
    }
    if x.refusals_total > 0 {
        let shown = if x.refusals_total > x.refusals.len() {
            format!(", the last {}", x.refusals.len())
        } else {
            String::new()
        };
        let what = format!(
            "{} since the app became unusable{shown}:",
            match x.refusals_total {
                1 => "1 command refused".to_owned(),
                n => format!("{n} commands refused"),
            }
        );
        also.push_str(&wrap(&what, RENDER_WIDTH, "  - ", "    "));
        for r in &x.refusals {
            let text = format!("{} [{}]", r.text, r.rule.as_deref().unwrap_or("-"));
            let first = format!("    {}  ", when(r.at, zone));
            also.push_str(&wrap(&text, RENDER_WIDTH, &first, &" ".repeat(first.chars().count())));
        }
    }
    for note in &x.notes {
        also.push_str(&wrap(note, RENDER_WIDTH, "  - ", "    "));
    }
    if !also.is_empty() {
        out.push_str("\nAlso:\n");
        out.push_str(&also);
    }
    out.push_str("\nWhat the customer can do now:\n");
    for advice in &x.advice {
        out.push_str(&wrap(advice, RENDER_WIDTH, "  - ", "    "));
    }
    out
}
