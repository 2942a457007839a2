use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use chat_ledger_events::{
    AccountId, AppId, BillLine, Contact, Currency, EditionId, Envelope, EventBody, Hash, HoldKind, Instant,
    KindAmounts, Money, MoneyKind, StreamId,
};

use crate::app::{AppView, ExpiredView, HoldView, Pending, PlanView};
use crate::deadline::{Deadline, DeadlineKind, Subject};

/// Version of the projection code. Raise it whenever `apply` or a view's shape changes:
/// stored projection snapshots of another version are ignored and rebuilt by replay.
pub const PROJECTION_VERSION: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulebookView {
    /// `id@version`, e.g. `intl-2025@1`.
    pub rulebook: String,
    pub seed: String,
    /// The zone instants are shown in, e.g. `+08:00`.
    pub zone: String,
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
            EventBody::RulebookAdopted {
                rulebook,
                seed,
                zone,
                currency,
            } => {
                if self.rulebook.is_some() {
                    return Err("a rulebook was already adopted".into());
                }
                self.rulebook = Some(RulebookView {
                    rulebook: rulebook.clone(),
                    seed: seed.clone(),
                    zone: zone.clone(),
                });
                self.currency = Some(*currency);
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
            EventBody::AppCreated {
                app,
                account,
                name,
                edition,
            } => {
                if self.apps.contains_key(app) {
                    return Err(format!("app {app} already exists"));
                }
                self.account_mut(account)?.apps.insert(*app);
                self.apps.insert(
                    *app,
                    AppView::new(*app, account.clone(), name.clone(), edition.clone(), at),
                );
            }
            EventBody::EditionPurchased {
                app,
                order,
                edition,
                months,
                monthly_price,
                amount,
                valid_from,
                valid_until,
                first_reminder_at,
                ..
            } => {
                let account = self
                    .apps
                    .get(app)
                    .ok_or_else(|| format!("unknown app {app}"))?
                    .account
                    .clone();
                self.new_order(order, *app, &account, edition, *amount, at)?;
                self.change_app(*app, |view| {
                    view.edition = edition.clone();
                    view.orders += 1;
                    view.plan = Some(PlanView {
                        orders: vec![order.clone()],
                        edition: edition.clone(),
                        monthly_price: *monthly_price,
                        months: *months,
                        purchased_at: at,
                        valid_from: *valid_from,
                        valid_until: *valid_until,
                        cause: id,
                    });
                    view.expired = None;
                    view.next_reminder = first_reminder_at.map(|at| Pending { at, cause: id });
                    Ok(())
                })?;
            }
            EventBody::EditionUpgraded {
                app,
                order,
                to,
                monthly_price,
                amount,
                ..
            } => {
                let account = self
                    .apps
                    .get(app)
                    .ok_or_else(|| format!("unknown app {app}"))?
                    .account
                    .clone();
                self.new_order(order, *app, &account, to, *amount, at)?;
                self.change_app(*app, |view| {
                    let plan = view.plan.as_mut().ok_or("no plan to upgrade")?;
                    plan.orders.push(order.clone());
                    plan.edition = to.clone();
                    plan.monthly_price = *monthly_price;
                    view.edition = to.clone();
                    view.orders += 1;
                    Ok(())
                })?;
            }
            EventBody::EditionRefunded { app, .. } => self.change_app(*app, |view| {
                if view.plan.take().is_none() {
                    return Err("no plan to refund".into());
                }
                view.next_reminder = None;
                view.expired = None;
                Ok(())
            })?,
            EventBody::AutoRenewSwitched { app, on } => self.change_app(*app, |view| {
                view.auto_renew = *on;
                Ok(())
            })?,
            EventBody::AutoRenewAttempted { .. } => {}
            EventBody::PlanExpired {
                app,
                valid_until,
                grace_ends_at,
            } => self.change_app(*app, |view| {
                if view.plan.is_none() || view.expired.is_some() {
                    return Err("no valid plan to expire".into());
                }
                view.expired = Some(ExpiredView {
                    valid_until: *valid_until,
                    grace_ends_at: *grace_ends_at,
                    cause: id,
                });
                Ok(())
            })?,
            EventBody::HoldPlaced {
                app,
                hold,
                reclamation_at,
            } => self.change_app(*app, |view| {
                if view.holds.contains_key(hold) {
                    return Err(format!("hold {} is already placed", hold.as_str()));
                }
                match (view.is_usable(), reclamation_at) {
                    (true, Some(reclaim)) => {
                        view.unusable_since = Some(at);
                        view.unusable_periods.push((at, None));
                        view.reclamation = Some(Pending {
                            at: *reclaim,
                            cause: id,
                        });
                    }
                    (false, None) => {}
                    (true, None) => return Err("makes the app unusable but sets no reclamation instant".into()),
                    (false, Some(_)) => return Err("sets a reclamation instant on an app already unusable".into()),
                }
                view.holds.insert(*hold, HoldView { since: at, cause: id });
                if *hold == HoldKind::Violation {
                    // Nothing can renew a plan under a violation hold: its reminders stop.
                    view.next_reminder = None;
                }
                Ok(())
            })?,
            EventBody::HoldLifted { app, hold } => self.change_app(*app, |view| {
                if view.holds.remove(hold).is_none() {
                    return Err(format!("hold {} is not placed", hold.as_str()));
                }
                if *hold == HoldKind::Expiry {
                    view.expired = None;
                }
                if view.holds.is_empty() {
                    view.unusable_since = None;
                    view.reclamation = None;
                    if let Some(open) = view.unusable_periods.last_mut() {
                        open.1 = Some(at);
                    }
                }
                Ok(())
            })?,
            EventBody::AppReclaimed { app, .. } => self.change_app(*app, |view| {
                if view.is_usable() {
                    return Err("reclaims a usable app".into());
                }
                view.reclaimed_at = Some(at);
                view.reclamation = None;
                view.next_reminder = None;
                Ok(())
            })?,
            EventBody::ReminderSent { reminder, next_at, .. } => {
                if let chat_ledger_events::Reminder::ExpiryUpcoming { app, .. }
                | chat_ledger_events::Reminder::Expired { app, .. } = reminder
                {
                    self.change_app(*app, |view| {
                        view.next_reminder = next_at.map(|at| Pending { at, cause: id });
                        Ok(())
                    })?;
                }
            }
            EventBody::MauCounted {
                app,
                month,
                users,
                refused,
                repeats,
                bill_push_at,
                late,
            } => {
                self.change_usage(*app, |view| {
                    let usage = view.usage.entry(month.clone()).or_default();
                    for user in users {
                        if !usage.users.insert(user_digest(&user.user)?) {
                            return Err(format!("user {} counted twice in {month}", user.user));
                        }
                        view.last_counted_login = view.last_counted_login.max(Some(user.logged_in_at));
                    }
                    usage.refused += refused.len() as u64;
                    usage.repeats += repeats;
                    match (bill_push_at, late) {
                        (Some(push), true) => view.adjustment_push_at = Some(Pending { at: *push, cause: id }),
                        (Some(push), false) if usage.bill_push.is_none() => {
                            usage.bill_push = Some(Pending { at: *push, cause: id })
                        }
                        (None, false) if usage.bill_push.is_some() => {}
                        (None, true) => {}
                        _ => return Err(format!("sets no bill push for month {month}, or sets it twice")),
                    }
                    Ok(())
                })?;
            }
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
                self.change_usage(*app, |view| {
                    for line in lines {
                        let usage = view
                            .usage
                            .get_mut(&line.month)
                            .ok_or_else(|| format!("no usage in {}", line.month))?;
                        usage.billed_mau = Some(usage.users.len() as u64);
                        usage.billed_edition.get_or_insert_with(|| edition.clone());
                    }
                    if let Some(usage) = view.usage.get_mut(month) {
                        usage.billed_mau = Some(usage.users.len() as u64);
                        usage.billed_edition.get_or_insert_with(|| edition.clone());
                    }
                    view.adjustment_push_at = None;
                    Ok(())
                })?;
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

    /// Changes one live app and keeps the deadline index equal to what the app implies.
    fn change_app(
        &mut self,
        app: AppId,
        change: impl FnOnce(&mut AppView) -> Result<(), String>,
    ) -> Result<(), String> {
        self.change(app, false, change)
    }

    /// As `change_app`, for usage and bills, which go on after reclamation.
    fn change_usage(
        &mut self,
        app: AppId,
        change: impl FnOnce(&mut AppView) -> Result<(), String>,
    ) -> Result<(), String> {
        self.change(app, true, change)
    }

    fn change(
        &mut self,
        app: AppId,
        reclaimed_ok: bool,
        change: impl FnOnce(&mut AppView) -> Result<(), String>,
    ) -> Result<(), String> {
        let view = self.apps.get_mut(&app).ok_or_else(|| format!("unknown app {app}"))?;
        if view.reclaimed_at.is_some() && !reclaimed_ok {
            return Err(format!("app {app} was reclaimed"));
        }
        let before = view.deadlines();
        change(view)?;
        view.status = view.derive_status();
        let after = view.deadlines();
        // The index holds every deadline of `before` (it is kept equal to what each app
        // implies): when the app implies the same ones, there is nothing to move.
        if before != after {
            for deadline in &before {
                self.deadlines.remove(deadline);
            }
            self.deadlines.extend(after);
        }
        Ok(())
    }

    /// Conservation, per account and money kind: funds added, plus adjustments, minus order
    /// charges, plus refunds, minus bill charges, equals the balance. The flows come from
    /// the orders and bills projections and the funding totals, folded apart from the balances.
    ///
    /// One pass over the orders and the bills, each flow added to its account's sum: linear
    /// in the size of the projections (it runs on every replay, snapshot loads included).
    pub fn check_conservation(&self) -> Result<(), String> {
        // Per account: the flows so far, `None` once two currencies met.
        let mut expected: BTreeMap<&AccountId, Option<KindAmounts>> = self
            .accounts
            .iter()
            .map(|(id, account)| (id, account.funded.checked_add(&account.adjusted)))
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
