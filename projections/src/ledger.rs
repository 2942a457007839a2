use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use chat_ledger_events::{
    AccountId, AppId, BillLine, Contact, Currency, EditionId, Envelope, EventBody, Hash, Instant, KindAmounts, Money,
    MoneyKind, StreamId,
};

use crate::app::{is_zero, AppView, BillPush, DeadlineParts, MonthUsage};
use crate::deadline::{Deadline, DeadlineKind, Subject};

/// Version of the projection code. Raise it whenever `apply` or a view's shape changes:
/// stored projection snapshots of another version are ignored and rebuilt by replay.
pub const PROJECTION_VERSION: u32 = 4;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulebookView {
    /// `id@version`, e.g. `intl-2025@1`.
    pub rulebook: String,
    pub seed: String,
    /// The zone instants are shown in, e.g. `+08:00`.
    pub zone: String,
}

impl RulebookView {
    /// The rulebook and currency a `rulebook.adopted` event adopts.
    pub fn adopted(event: &EventBody) -> Option<(RulebookView, Currency)> {
        let EventBody::RulebookAdopted {
            rulebook,
            seed,
            zone,
            currency,
        } = event
        else {
            return None;
        };
        let view = RulebookView {
            rulebook: rulebook.clone(),
            seed: seed.clone(),
            zone: zone.clone(),
        };
        Some((view, *currency))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrearsView {
    /// The push instant of the bill that left the balance negative.
    pub since: Instant,
    pub suspend_at: Instant,
    /// Set once the account's apps were held.
    pub suspended: bool,
    /// The `arrears.started` event.
    pub cause: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub account: AccountId,
    pub creator: Contact,
    pub opened_at: Instant,
    /// The balance fold: every money event moves it.
    pub balances: KindAmounts,
    /// Flows kept apart from the balance fold, for the conservation check.
    pub funded: KindAmounts,
    pub adjusted: KindAmounts,
    pub apps: BTreeSet<AppId>,
    /// Editions this account ever bought, on any app (offer eligibility).
    pub editions_bought: BTreeSet<EditionId>,
    pub arrears: Option<ArrearsView>,
    /// Positions of the account stream's events that `explain` may tell: all of them but
    /// the expiry reminders, which are in the `story` of the app they remind of, and the
    /// charges (see `charges`).
    pub story: Vec<u64>,
    /// Positions of its `account.charged` events: orders paid, which `explain account`
    /// tells; never a cause nor told beside one, so `explain app` skips them (most of a
    /// long-lived account's stream).
    pub charges: Vec<u64>,
    /// Leading entries of `story` and `charges` out of the working view (0 in a whole view).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub story_settled: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub charges_settled: u64,
    /// The money flows of the orders and bills [`LedgerView::settle`] took out of the
    /// working view, as one sum (charges negative, refunds positive), so the conservation
    /// check still adds up without them. `None` in a whole view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_flows: Option<KindAmounts>,
}

impl AccountView {
    /// Everything the account can spend (negative in arrears).
    pub fn available(&self) -> Money {
        self.balances.total()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub app: AppId,
    pub account: AccountId,
    pub edition: EditionId,
    pub amount: Money,
    /// How it was paid, kind by kind (from `account.charged`).
    pub paid: Option<KindAmounts>,
    pub purchased_at: Instant,
    pub refunded: Option<KindAmounts>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillStatus {
    /// Issued, not yet charged.
    Pushed,
    /// Charged, and the balance covered it.
    Paid,
    /// Charged into a negative balance: unpaid until the account is out of arrears.
    Overdue,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillView {
    pub account: AccountId,
    pub app: AppId,
    pub month: String,
    pub edition: EditionId,
    pub lines: Vec<BillLine>,
    pub total: Money,
    pub pushed_at: Instant,
    pub status: BillStatus,
    pub charged: Option<KindAmounts>,
}

/// Every read model, folded from the log in order. Also the state the rules decide on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LedgerView {
    /// Position and hash of the last event folded in.
    pub seq: u64,
    pub head_hash: Hash,
    /// Business time reached: the latest `occurred_at` folded in. Never goes back.
    pub clock: Option<Instant>,
    pub rulebook: Option<RulebookView>,
    pub currency: Option<Currency>,
    /// Current version of every stream.
    pub streams: BTreeMap<StreamId, u64>,
    pub accounts: BTreeMap<AccountId, AccountView>,
    pub apps: BTreeMap<AppId, AppView>,
    pub orders: BTreeMap<String, OrderView>,
    pub bills: BTreeMap<String, BillView>,
    /// Every pending time-driven decision, in firing order.
    pub deadlines: BTreeSet<Deadline>,
    pub inputs_recorded: u64,
    pub commands_rejected: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("event {seq} ({event_type}): {reason}")]
pub struct ProjectionError {
    pub seq: u64,
    pub event_type: &'static str,
    pub reason: String,
}

/// Parses a stored 128-bit user digest.
pub fn user_digest(hex_text: &str) -> Result<u128, String> {
    u128::from_str_radix(hex_text, 16).map_err(|_| format!("user digest {hex_text:?} is not 32 hexadecimal digits"))
}

fn add(balance: &mut Money, amount: Money) -> Result<(), String> {
    *balance = balance
        .checked_add(amount)
        .ok_or("currency differs from the balance's")?;
    Ok(())
}

fn add_all(to: &mut KindAmounts, amounts: &KindAmounts) -> Result<(), String> {
    *to = to.checked_add(amounts).ok_or("currency differs from the balance's")?;
    Ok(())
}

fn sub_all(to: &mut KindAmounts, amounts: &KindAmounts) -> Result<(), String> {
    *to = to.checked_sub(amounts).ok_or("currency differs from the balance's")?;
    Ok(())
}

impl LedgerView {
    pub fn stream_version(&self, stream: &StreamId) -> u64 {
        self.streams.get(stream).copied().unwrap_or(0)
    }

    /// The earliest pending deadline, if any.
    pub fn next_deadline(&self) -> Option<&Deadline> {
        self.deadlines.first()
    }

    /// Folds one event in. `hash` is the hash of its stored bytes. An error means the
    /// log is inconsistent (an event that cannot follow what came before): `verify`
    /// reports it; the writer treats it as a bug.
    pub fn apply(&mut self, event: &Envelope, hash: Hash) -> Result<(), ProjectionError> {
        let fail = |reason: String| ProjectionError {
            seq: event.seq,
            event_type: event.event.type_name(),
            reason,
        };
        if event.seq != self.seq + 1 {
            return Err(fail(format!(
                "follows position {}, expected position {}",
                self.seq,
                self.seq + 1
            )));
        }
        let version = self.stream_version(&event.stream);
        if event.version != version + 1 {
            return Err(fail(format!(
                "stream {} is at version {version}; this event claims version {}",
                event.stream, event.version
            )));
        }
        if let Some(clock) = self.clock {
            if event.occurred_at < clock {
                return Err(fail(format!(
                    "occurred at {} before the ledger's clock {clock}",
                    event.occurred_at
                )));
            }
        }
        self.apply_body(event).map_err(fail)?;
        self.fold_app(event).map_err(fail)?;
        self.note_account_story(event);
        self.seq = event.seq;
        self.head_hash = hash;
        self.clock = Some(event.occurred_at);
        // Most events go to a stream already known: no key to clone.
        match self.streams.get_mut(&event.stream) {
            Some(current) => *current = event.version,
            None => {
                self.streams.insert(event.stream.clone(), event.version);
            }
        }
        Ok(())
    }

    fn currency(&self) -> Result<Currency, String> {
        self.currency.ok_or_else(|| "no rulebook adopted before it".to_owned())
    }

    fn account_mut(&mut self, account: &AccountId) -> Result<&mut AccountView, String> {
        self.accounts
            .get_mut(account)
            .ok_or_else(|| format!("unknown account {account}"))
    }

    fn apply_body(&mut self, event: &Envelope) -> Result<(), String> {
        let at = event.occurred_at;
        let id = event.id;
        match &event.event {
            EventBody::RulebookAdopted { .. } => {
                if self.rulebook.is_some() {
                    return Err("a rulebook was already adopted".into());
                }
                let (rulebook, currency) = RulebookView::adopted(&event.event).expect("a rulebook.adopted event");
                self.rulebook = Some(rulebook);
                self.currency = Some(currency);
            }
            EventBody::InputRecorded { .. } => self.inputs_recorded += 1,
            EventBody::CommandRejected { .. } => self.commands_rejected += 1,
            EventBody::ClockAdvanced { to } => {
                if *to != at {
                    return Err(format!("advances to {to} but occurred at {at}"));
                }
            }
            EventBody::AccountOpened { account, creator } => {
                let zero = KindAmounts::zero(self.currency()?);
                if self.accounts.contains_key(account) {
                    return Err(format!("account {account} is already open"));
                }
                self.accounts.insert(
                    account.clone(),
                    AccountView {
                        account: account.clone(),
                        creator: creator.clone(),
                        opened_at: at,
                        balances: zero,
                        funded: zero,
                        adjusted: zero,
                        apps: BTreeSet::new(),
                        editions_bought: BTreeSet::new(),
                        arrears: None,
                        story: Vec::new(),
                        charges: Vec::new(),
                        story_settled: 0,
                        charges_settled: 0,
                        settled_flows: None,
                    },
                );
            }
            EventBody::FundsAdded { account, kind, amount } => {
                let view = self.account_mut(account)?;
                add(view.balances.get_mut(*kind), *amount)?;
                add(view.funded.get_mut(*kind), *amount)?;
            }
            EventBody::BalanceAdjusted {
                account, kind, amount, ..
            } => {
                let view = self.account_mut(account)?;
                add(view.balances.get_mut(*kind), *amount)?;
                add(view.adjusted.get_mut(*kind), *amount)?;
            }
            EventBody::AccountCharged {
                account,
                order,
                amount,
                split,
            } => {
                if split.total() != *amount {
                    return Err(format!("split does not add up to {amount}"));
                }
                sub_all(&mut self.account_mut(account)?.balances, split)?;
                let order = self
                    .orders
                    .get_mut(order)
                    .ok_or_else(|| format!("unknown order {order}"))?;
                if order.paid.is_some() {
                    return Err("order already charged".into());
                }
                order.paid = Some(*split);
            }
            EventBody::AccountRefunded {
                account,
                orders,
                amount,
                split,
            } => {
                if split.total() != *amount {
                    return Err(format!("split does not add up to {amount}"));
                }
                add_all(&mut self.account_mut(account)?.balances, split)?;
                // The split is recorded on the first order; the others are marked refunded.
                for (index, order) in orders.iter().enumerate() {
                    let view = self
                        .orders
                        .get_mut(order)
                        .ok_or_else(|| format!("unknown order {order}"))?;
                    if view.refunded.is_some() {
                        return Err(format!("order {order} already refunded"));
                    }
                    view.refunded = Some(if index == 0 {
                        *split
                    } else {
                        KindAmounts::zero(split.cash.currency())
                    });
                }
            }
            EventBody::AppCreated { app, account, .. } => {
                if self.apps.contains_key(app) {
                    return Err(format!("app {app} already exists"));
                }
                self.account_mut(account)?.apps.insert(*app);
            }
            EventBody::EditionPurchased {
                app,
                order,
                edition,
                amount,
                ..
            }
            | EventBody::EditionUpgraded {
                app,
                order,
                to: edition,
                amount,
                ..
            } => {
                let account = self
                    .apps
                    .get(app)
                    .ok_or_else(|| format!("unknown app {app}"))?
                    .account
                    .clone();
                self.new_order(order, *app, &account, edition, *amount, at)?;
            }
            // Only the app changes: `fold_app` folds them.
            EventBody::EditionRefunded { .. }
            | EventBody::AutoRenewSwitched { .. }
            | EventBody::AutoRenewAttempted { .. }
            | EventBody::PlanExpired { .. }
            | EventBody::HoldPlaced { .. }
            | EventBody::HoldLifted { .. }
            | EventBody::AppReclaimed { .. }
            | EventBody::ReminderSent { .. }
            | EventBody::MauCounted { .. } => {}
            EventBody::BillIssued {
                account,
                app,
                bill,
                month,
                edition,
                lines,
                total,
            } => {
                if self.bills.contains_key(bill) {
                    return Err(format!("bill {bill} already issued"));
                }
                self.bills.insert(
                    bill.clone(),
                    BillView {
                        account: account.clone(),
                        app: *app,
                        month: month.clone(),
                        edition: edition.clone(),
                        lines: lines.clone(),
                        total: *total,
                        pushed_at: at,
                        status: if total.amount().is_zero() {
                            BillStatus::Paid
                        } else {
                            BillStatus::Pushed
                        },
                        charged: None,
                    },
                );
            }
            EventBody::BillCharged {
                account,
                bill,
                amount,
                split,
                balance_after,
            } => {
                if split.total() != *amount {
                    return Err(format!("split does not add up to {amount}"));
                }
                let view = self.account_mut(account)?;
                sub_all(&mut view.balances, split)?;
                if view.available() != *balance_after {
                    return Err(format!("balance after is {}, not {balance_after}", view.available()));
                }
                let bill = self.bills.get_mut(bill).ok_or_else(|| format!("unknown bill {bill}"))?;
                bill.charged = Some(*split);
                bill.status = if balance_after.is_negative() {
                    BillStatus::Overdue
                } else {
                    BillStatus::Paid
                };
            }
            EventBody::ArrearsStarted {
                account, suspend_at, ..
            } => {
                let view = self.account_mut(account)?;
                if view.arrears.is_none() {
                    view.arrears = Some(ArrearsView {
                        since: at,
                        suspend_at: *suspend_at,
                        suspended: false,
                        cause: id,
                    });
                }
                self.refresh_account_deadlines(account);
            }
            EventBody::ArrearsCleared { account, .. } => {
                let view = self.account_mut(account)?;
                if view.arrears.take().is_none() {
                    return Err("the account is not in arrears".into());
                }
                for bill in self
                    .bills
                    .values_mut()
                    .filter(|b| &b.account == account && b.status == BillStatus::Overdue)
                {
                    bill.status = BillStatus::Paid;
                }
                self.refresh_account_deadlines(account);
            }
            EventBody::AccountSuspended { account } => {
                let view = self.account_mut(account)?;
                let arrears = view.arrears.as_mut().ok_or("the account is not in arrears")?;
                arrears.suspended = true;
                self.refresh_account_deadlines(account);
            }
        }
        Ok(())
    }

    fn new_order(
        &mut self,
        order: &str,
        app: AppId,
        account: &AccountId,
        edition: &EditionId,
        amount: Money,
        at: Instant,
    ) -> Result<(), String> {
        if self.orders.contains_key(order) {
            return Err(format!("order {order} already exists"));
        }
        self.account_mut(account)?.editions_bought.insert(edition.clone());
        self.orders.insert(
            order.to_owned(),
            OrderView {
                app,
                account: account.clone(),
                edition: edition.clone(),
                amount,
                paid: None,
                purchased_at: at,
                refunded: None,
            },
        );
        Ok(())
    }

    fn refresh_account_deadlines(&mut self, account: &AccountId) {
        self.deadlines
            .retain(|d| !(d.kind == DeadlineKind::ArrearsSuspension && d.subject == Subject::Account(account.clone())));
        if let Some(arrears) = self
            .accounts
            .get(account)
            .and_then(|a| a.arrears.as_ref())
            .filter(|a| !a.suspended)
        {
            self.deadlines.insert(Deadline {
                at: arrears.suspend_at,
                kind: DeadlineKind::ArrearsSuspension,
                stream: StreamId::account(account),
                subject: Subject::Account(account.clone()),
                cause: arrears.cause,
            });
        }
    }

    /// Keeps each account's `story` and `charges`: its stream's events but the expiry reminders.
    fn note_account_story(&mut self, event: &Envelope) {
        let Some(account) = event.stream.as_str().strip_prefix("account:") else {
            return;
        };
        if AppView::changed_by(&event.event).is_some() {
            return;
        }
        // Streams of accounts never opened hold refusals only: nothing to tell.
        if let Some(view) = self.accounts.get_mut(account) {
            match event.event {
                EventBody::AccountCharged { .. } => view.charges.push(event.seq),
                _ => view.story.push(event.seq),
            }
        }
    }

    /// Folds an event of an app's stream, or one that changes an app from elsewhere (an
    /// expiry reminder), into that app (`AppView::fold`, which refuses any other stream)
    /// and keeps the deadline index equal to what the app implies.
    fn fold_app(&mut self, event: &Envelope) -> Result<(), String> {
        let Some(app) = event.stream.app_id().or_else(|| AppView::changed_by(&event.event)) else {
            return Ok(());
        };
        if let Some(created) = AppView::created(event) {
            if created.app != app {
                return Err(format!("creates app {} in the stream of app {app}", created.app));
            }
            self.deadlines.extend(created.deadlines());
            self.apps.insert(app, created);
            return Ok(());
        }
        let Some(view) = self.apps.get_mut(&app) else {
            return match AppView::changed_by(&event.event) {
                Some(_) => Err(format!("unknown app {app}")),
                None => Ok(()),
            };
        };
        // A count that sets no bill push changes only the month's users and tallies, never a
        // deadline; most of a busy app's events are such counts.
        if let EventBody::MauCounted {
            bill_push_at: None,
            late: false,
            ..
        } = &event.event
        {
            #[cfg(debug_assertions)]
            let before = view.deadline_parts(BillPush::Find);
            view.fold(event)?;
            #[cfg(debug_assertions)]
            assert_eq!(
                before,
                view.deadline_parts(BillPush::Find),
                "a count without a bill push moved a deadline"
            );
            return Ok(());
        }
        let bill_push = if AppView::moves_bill_push(&event.event) {
            BillPush::Find
        } else {
            BillPush::Skip
        };
        #[cfg(debug_assertions)]
        let bill_push_before = view.next_bill_push().cloned();
        let before = view.deadline_parts(bill_push);
        view.fold(event)?;
        let after = view.deadline_parts(bill_push);
        #[cfg(debug_assertions)]
        if bill_push == BillPush::Skip {
            assert_eq!(
                bill_push_before.as_ref(),
                view.next_bill_push(),
                "an event that does not touch usage moved the bill push"
            );
        }
        // The index holds every deadline of `before` (it is kept equal to what each app
        // implies): move only the kinds whose deadline changed. Most events change none, and
        // the bill push left in place is the one most often tied with other apps' on its
        // instant (costly to find in the index).
        for (was, is) in before.0.into_iter().zip(after.0) {
            if was != is {
                if let Some(part) = was {
                    let removed = self.deadlines.remove(&DeadlineParts::deadline(part, app));
                    debug_assert!(removed, "app {app}'s deadline was not in the index");
                }
                if let Some(part) = is {
                    self.deadlines.insert(DeadlineParts::deadline(part, app));
                }
            }
        }
        Ok(())
    }

    /// Conservation, per account and money kind: funds added, plus adjustments, minus order
    /// charges, plus refunds, minus bill charges, equals the balance. The flows come from
    /// the orders and bills projections (plus the sum of those settled out of the working
    /// view, `settled_flows`) and the funding totals, folded apart from the balances.
    ///
    /// One pass over the orders and the bills, each flow added to its account's sum: linear
    /// in the size of the projections (it runs on every replay, snapshot loads included).
    pub fn check_conservation(&self) -> Result<(), String> {
        // Per account: the flows so far, `None` once two currencies met.
        let mut expected: BTreeMap<&AccountId, Option<KindAmounts>> = self
            .accounts
            .iter()
            .map(|(id, account)| {
                let flows = account.funded.checked_add(&account.adjusted);
                let flows = match &account.settled_flows {
                    Some(settled) => flows.and_then(|f| f.checked_add(settled)),
                    None => flows,
                };
                (id, flows)
            })
            .collect();
        let mut fold = |account: &AccountId, flow: &KindAmounts, add: bool| {
            if let Some(sum) = expected.get_mut(account) {
                *sum = sum
                    .as_ref()
                    .and_then(|s| if add { s.checked_add(flow) } else { s.checked_sub(flow) });
            }
        };
        for order in self.orders.values() {
            if let Some(paid) = &order.paid {
                fold(&order.account, paid, false);
            }
            if let Some(refunded) = &order.refunded {
                fold(&order.account, refunded, true);
            }
        }
        for bill in self.bills.values() {
            if let Some(charged) = &bill.charged {
                fold(&bill.account, charged, false);
            }
        }
        for (id, account) in &self.accounts {
            let expected = expected[id].ok_or("currency mismatch")?;
            for kind in MoneyKind::ALL {
                if expected.get(kind) != account.balances.get(kind) {
                    return Err(format!(
                        "account {id}, {}: funds, adjustments, orders, refunds and bills add up to {}, but the balance is {}",
                        kind.as_str(),
                        expected.get(kind),
                        account.balances.get(kind)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Settled history: what no rule reads again and no event changes again — paid bills,
/// orders no current plan lists, months billed for every user they counted. It grows with
/// time, not with the live population, so [`LedgerView::settle`] takes it out of the
/// working view (the state the rules decide on, and what a snapshot load returns) and the
/// snapshot stores it apart, read on demand (src/replay.rs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    pub orders: Vec<(String, OrderView)>,
    pub bills: Vec<(String, BillView)>,
    /// (app, month `YYYY-MM`, usage). A late login reopens a settled month: the month is
    /// restored ([`LedgerView::restore_month`]) before the login is decided or its count folded.
    pub months: Vec<(AppId, String, MonthUsage)>,
    /// Runs of story lists: an app's or account's positions for `explain`, which only grow.
    pub lists: Vec<SettledList>,
}

/// The story lists a view keeps for `explain`: an app's `story`; an account's `story` and
/// `charges`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoryList {
    Story,
    Charges,
}

impl StoryList {
    pub fn as_str(self) -> &'static str {
        match self {
            StoryList::Story => "story",
            StoryList::Charges => "charges",
        }
    }
}

/// A run of a story list settled out of the working view: entries `first..` of the list of
/// `stream`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledList {
    pub stream: StreamId,
    pub list: StoryList,
    pub first: u64,
    pub positions: Vec<u64>,
}

impl BillView {
    /// Paid is final: arrears clearing turns overdue bills into paid ones, never back.
    pub fn is_settled(&self) -> bool {
        self.status == BillStatus::Paid
    }
}

impl MonthUsage {
    /// Billed for every user it counted: only a late login changes it again.
    pub fn is_settled(&self) -> bool {
        self.billed_mau == Some(self.users.len() as u64)
    }
}

impl LedgerView {
    /// Whether no app's current plan lists order `id`: refunds and upgrades read only the
    /// current plan's orders, and every purchase starts a new plan with a new order.
    fn order_is_settled(&self, id: &str, order: &OrderView) -> bool {
        !self
            .apps
            .get(&order.app)
            .and_then(|app| app.plan.as_ref())
            .is_some_and(|plan| plan.orders.iter().any(|o| o == id))
    }

    /// What an order moved on its account's balance: its refund less its charge.
    fn order_flow(order: &OrderView) -> Option<KindAmounts> {
        let zero = KindAmounts::zero(order.amount.currency());
        order.refunded.unwrap_or(zero).checked_sub(&order.paid.unwrap_or(zero))
    }

    /// What a bill moved on its account's balance: its charge, taken.
    fn bill_flow(bill: &BillView) -> Option<KindAmounts> {
        let zero = KindAmounts::zero(bill.total.currency());
        zero.checked_sub(&bill.charged.unwrap_or(zero))
    }

    /// Adds `flow` to (`into`) or takes it from its account's `settled_flows`.
    fn move_settled_flow(&mut self, account: &AccountId, flow: Option<KindAmounts>, into: bool) -> Result<(), String> {
        let mismatch = || "currency differs from the balance's".to_owned();
        let flow = flow.ok_or_else(mismatch)?;
        let view = self.account_mut(account)?;
        let sum = view
            .settled_flows
            .get_or_insert(KindAmounts::zero(flow.cash.currency()));
        *sum = if into {
            sum.checked_add(&flow)
        } else {
            sum.checked_sub(&flow)
        }
        .ok_or_else(mismatch)?;
        Ok(())
    }

    /// Takes the settled history out of the view, its money flows summed into each
    /// account's `settled_flows`: what is left is the working view. Pure; the caller stores
    /// what it returns ([`LedgerView::unsettle`] puts it back).
    pub fn settle(&mut self) -> Result<Settled, String> {
        let mut settled = Settled::default();
        let orders = std::mem::take(&mut self.orders);
        let (out, kept): (Vec<_>, Vec<_>) = orders.into_iter().partition(|(id, o)| self.order_is_settled(id, o));
        self.orders = kept.into_iter().collect();
        settled.orders = out;
        let bills = std::mem::take(&mut self.bills);
        let (out, kept): (Vec<_>, Vec<_>) = bills.into_iter().partition(|(_, b)| b.is_settled());
        self.bills = kept.into_iter().collect();
        settled.bills = out;
        for (app, view) in &mut self.apps {
            if !view.usage.values().any(MonthUsage::is_settled) {
                continue;
            }
            let usage = std::mem::take(&mut view.usage);
            for (month, usage) in usage {
                if usage.is_settled() {
                    settled.months.push((*app, month, usage));
                } else {
                    view.usage.insert(month, usage);
                }
            }
        }
        for (app, view) in &mut self.apps {
            settle_list(
                &mut settled.lists,
                StreamId::app(*app),
                StoryList::Story,
                &mut view.story,
                &mut view.story_settled,
            );
        }
        for (id, view) in &mut self.accounts {
            let stream = StreamId::account(id);
            settle_list(
                &mut settled.lists,
                stream.clone(),
                StoryList::Story,
                &mut view.story,
                &mut view.story_settled,
            );
            settle_list(
                &mut settled.lists,
                stream,
                StoryList::Charges,
                &mut view.charges,
                &mut view.charges_settled,
            );
        }
        for (_, order) in &settled.orders {
            self.move_settled_flow(&order.account, Self::order_flow(order), true)?;
        }
        for (_, bill) in &settled.bills {
            self.move_settled_flow(&bill.account, Self::bill_flow(bill), true)?;
        }
        Ok(settled)
    }

    /// Puts settled history back (what the working view does not hold already), and its
    /// flows out of `settled_flows`. Once all of it is back, the view is whole again: equal
    /// to the one folded from position 0, every `settled_flows` gone.
    pub fn unsettle(&mut self, settled: Settled) -> Result<(), String> {
        for (id, order) in settled.orders {
            if !self.orders.contains_key(&id) {
                self.move_settled_flow(&order.account, Self::order_flow(&order), false)?;
                self.orders.insert(id, order);
            }
        }
        for (id, bill) in settled.bills {
            if !self.bills.contains_key(&id) {
                self.move_settled_flow(&bill.account, Self::bill_flow(&bill), false)?;
                self.bills.insert(id, bill);
            }
        }
        for (app, month, usage) in settled.months {
            if let Some(view) = self.apps.get_mut(&app) {
                view.usage.entry(month).or_insert(usage);
            }
        }
        let mut lists = settled.lists;
        lists.sort_by(|a, b| (&a.stream, a.list, a.first).cmp(&(&b.stream, b.list, b.first)));
        for run in lists.chunk_by(|a, b| a.stream == b.stream && a.list == b.list) {
            let (stream, list) = (&run[0].stream, run[0].list);
            let (positions, settled_count) = match (stream.app_id(), stream.as_str().strip_prefix("account:")) {
                (Some(app), _) => match self.apps.get_mut(&app) {
                    Some(view) => (&mut view.story, &mut view.story_settled),
                    None => continue,
                },
                (None, Some(account)) => match (self.accounts.get_mut(account), list) {
                    (Some(view), StoryList::Story) => (&mut view.story, &mut view.story_settled),
                    (Some(view), StoryList::Charges) => (&mut view.charges, &mut view.charges_settled),
                    (None, _) => continue,
                },
                (None, None) => {
                    return Err(format!(
                        "settled {} of {stream}: not an app's or account's",
                        list.as_str()
                    ))
                }
            };
            *positions = whole_list(run, *settled_count, positions)
                .map_err(|why| format!("{stream}'s settled {}: {why}", list.as_str()))?;
            *settled_count = 0;
        }
        Ok(())
    }

    /// Whether every account's settled flows were put back (see [`LedgerView::unsettle`]);
    /// if so, drops the emptied sums, and the view is whole.
    pub fn whole_again(&mut self) -> Result<(), String> {
        let unsettled_app = self.apps.values().find(|a| a.story_settled > 0);
        let unsettled_account = self.accounts.values().find(|a| a.story_settled + a.charges_settled > 0);
        if let Some(app) = unsettled_app {
            return Err(format!("app {}: settled story entries are missing", app.app));
        }
        if let Some(account) = unsettled_account {
            return Err(format!(
                "account {}: settled story entries are missing",
                account.account
            ));
        }
        for (id, account) in &mut self.accounts {
            if let Some(sum) = account.settled_flows {
                if sum != KindAmounts::zero(sum.cash.currency()) {
                    return Err(format!(
                        "account {id}: settled history is missing, its flows left {} unaccounted for",
                        sum.total()
                    ));
                }
                account.settled_flows = None;
            }
        }
        Ok(())
    }

    /// Puts a settled month back before a late login into it is decided or folded.
    pub fn restore_month(&mut self, app: AppId, month: String, usage: MonthUsage) {
        let view = self
            .apps
            .get_mut(&app)
            .expect("a month is restored into an app of the view");
        let previous = view.usage.insert(month, usage);
        assert!(
            previous.is_none(),
            "a month is restored only where the working view lacks it"
        );
    }
}

/// Moves every entry of a story list out of the working view, as one settled run.
fn settle_list(
    out: &mut Vec<SettledList>,
    stream: StreamId,
    list: StoryList,
    positions: &mut Vec<u64>,
    settled: &mut u64,
) {
    if positions.is_empty() {
        return;
    }
    let positions = std::mem::take(positions);
    let first = *settled;
    *settled += positions.len() as u64;
    out.push(SettledList {
        stream,
        list,
        first,
        positions,
    });
}

/// A whole story list: the settled runs (`runs`, in order of `first`) of its first
/// `settled` entries, then `tail`. Runs at or past `settled` are left out: a save that
/// stopped before its header wrote them, and `tail` holds them.
pub fn whole_list(runs: &[SettledList], settled: u64, tail: &[u64]) -> Result<Vec<u64>, String> {
    let mut whole = Vec::with_capacity(settled as usize + tail.len());
    for run in runs.iter().filter(|r| r.first < settled) {
        if run.first != whole.len() as u64 || run.first + run.positions.len() as u64 > settled {
            return Err(format!(
                "a run of entries {}..{} does not follow the {} entries before it",
                run.first,
                run.first + run.positions.len() as u64,
                whole.len()
            ));
        }
        whole.extend_from_slice(&run.positions);
    }
    if whole.len() as u64 != settled {
        return Err(format!("{} of {settled} settled entries are stored", whole.len()));
    }
    whole.extend_from_slice(tail);
    Ok(whole)
}
