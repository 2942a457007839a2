use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use chat_ledger_events::{
    AccountId, AppId, EditionId, Envelope, EventBody, HoldKind, Instant, Money, Reminder, StreamId,
};

use crate::deadline::{Deadline, DeadlineKind, Subject};
use crate::digests::UserDigests;
use crate::ledger::user_digest;

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What an app's holds, plan and history add up to. Derived, never stored in events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppStatus {
    /// On the free edition, usable.
    Trial,
    /// A paid plan is valid and nothing holds the app.
    Active,
    /// The plan expired; the app is usable until the grace period ends.
    Grace,
    /// At least one hold: the app is unusable.
    Suspended,
    /// Resources reclaimed for good.
    Reclaimed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanView {
    /// The order that opened this validity window, then any upgrade orders.
    pub orders: Vec<String>,
    pub edition: EditionId,
    pub monthly_price: Money,
    pub months: u32,
    /// When the first order of the window was bought (the five-day refund counts from here).
    pub purchased_at: Instant,
    pub valid_from: Instant,
    pub valid_until: Instant,
    /// The `edition.purchased` (or `edition.upgraded`) event that set the window.
    pub cause: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    pub since: Instant,
    /// The `hold.placed` event.
    pub cause: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredView {
    pub valid_until: Instant,
    pub grace_ends_at: Instant,
    /// The `plan.expired` event.
    pub cause: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub at: Instant,
    /// The event that set it.
    pub cause: Uuid,
}

/// A natural month of an app's usage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MonthUsage {
    /// Digests (128 bits) of the users counted this month: each once, exactly.
    /// Serialized as one hex string, 32 digits a digest, ascending.
    pub users: UserDigests,
    /// Logins refused over the free edition's limit.
    pub refused: u64,
    /// Logins of users already counted.
    pub repeats: u64,
    /// When this month's bill is pushed, set by its first count.
    pub bill_push: Option<Pending>,
    /// MAU and edition the month was last billed with (adjustments bill the difference).
    pub billed_mau: Option<u64>,
    pub billed_edition: Option<EditionId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppView {
    pub app: AppId,
    pub account: AccountId,
    pub name: String,
    pub created_at: Instant,
    pub edition: EditionId,
    pub status: AppStatus,
    pub auto_renew: bool,
    /// The current (or last expired) validity window; `None` on Trial or after a refund.
    pub plan: Option<PlanView>,
    /// Set while the plan is expired and not renewed.
    pub expired: Option<ExpiredView>,
    pub holds: BTreeMap<HoldKind, HoldView>,
    /// When the app last became unusable; cleared when it is usable again.
    pub unusable_since: Option<Instant>,
    /// Every period the app was unusable, for proration (`bill.proration`).
    pub unusable_periods: Vec<(Instant, Option<Instant>)>,
    pub reclamation: Option<Pending>,
    pub reclaimed_at: Option<Instant>,
    pub next_reminder: Option<Pending>,
    /// Orders bought for this app so far (order ids are `<SDKAppID>-<n>`).
    pub orders: u32,
    /// The latest login time of a user counted in the MAU (refunds need an unused plan).
    pub last_counted_login: Option<Instant>,
    pub usage: BTreeMap<String, MonthUsage>,
    /// Set when late logins wait for an adjustment on the next bill.
    pub adjustment_push_at: Option<Pending>,
    /// Positions of the app's events that `explain` may tell — every event folded into it
    /// but the MAU counts that set no bill push (most of a busy app's stream, and never a
    /// cause) and the expiry reminders (see `reminders`) — so that `explain` reads these
    /// alone, not the whole stream. In a working view, the entries after the first
    /// `story_settled`, which are settled history (see `LedgerView::settle`).
    pub story: Vec<u64>,
    /// Leading entries of `story` out of the working view (0 in a whole view).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub story_settled: u64,
    /// Positions of the expiry reminders of the current (or last expired) plan: the ones
    /// `explain` tells. A new validity window, or a refund, starts the list again.
    pub reminders: Vec<u64>,
}

impl AppView {
    pub fn new(app: AppId, account: AccountId, name: String, edition: EditionId, created_at: Instant) -> AppView {
        AppView {
            app,
            account,
            name,
            created_at,
            edition,
            status: AppStatus::Trial,
            auto_renew: false,
            plan: None,
            expired: None,
            holds: BTreeMap::new(),
            unusable_since: None,
            unusable_periods: Vec::new(),
            reclamation: None,
            reclaimed_at: None,
            next_reminder: None,
            orders: 0,
            last_counted_login: None,
            usage: BTreeMap::new(),
            adjustment_push_at: None,
            story: Vec::new(),
            story_settled: 0,
            reminders: Vec::new(),
        }
    }

    /// The view an `app.created` event starts, with that event folded in.
    pub fn created(event: &Envelope) -> Option<AppView> {
        let EventBody::AppCreated {
            app,
            account,
            name,
            edition,
        } = &event.event
        else {
            return None;
        };
        let mut view = AppView::new(*app, account.clone(), name.clone(), edition.clone(), event.occurred_at);
        view.story.push(event.seq);
        Some(view)
    }

    /// The app whose view `event` changes, if any: the events `fold` folds.
    pub fn changed_by(event: &EventBody) -> Option<AppId> {
        match event {
            EventBody::AppCreated { app, .. }
            | EventBody::EditionPurchased { app, .. }
            | EventBody::EditionUpgraded { app, .. }
            | EventBody::EditionRefunded { app, .. }
            | EventBody::AutoRenewSwitched { app, .. }
            | EventBody::PlanExpired { app, .. }
            | EventBody::HoldPlaced { app, .. }
            | EventBody::HoldLifted { app, .. }
            | EventBody::AppReclaimed { app, .. }
            | EventBody::MauCounted { app, .. }
            | EventBody::BillIssued { app, .. }
            | EventBody::ReminderSent {
                reminder: Reminder::ExpiryUpcoming { app, .. } | Reminder::Expired { app, .. },
                ..
            } => Some(*app),
            _ => None,
        }
    }

    /// Folds one event of the app's own stream (`app:<SDKAppID>`) into the app, or one of
    /// its expiry reminders (recorded in its account's stream). The app is an aggregate:
    /// its view depends on these events alone (`LedgerView::apply` refuses any other that
    /// would change it), so a view can be rebuilt from a checkpoint of the app and its
    /// later events, without the rest of the log (`state app --as-of`). `app.created`
    /// starts the view: see [`AppView::created`].
    pub fn fold(&mut self, event: &Envelope) -> Result<(), String> {
        // The one exception to "its own stream": expiry reminders go to the account's
        // contact and are recorded in the account's stream.
        let own = event.stream.app_id() == Some(self.app)
            || (matches!(event.event, EventBody::ReminderSent { .. })
                && event.stream == StreamId::account(&self.account));
        if !own {
            return Err(format!("changes app {} from stream {}", self.app, event.stream));
        }
        match Self::changed_by(&event.event) {
            Some(app) if app != self.app => {
                return Err(format!("changes app {app} from the stream of app {}", self.app))
            }
            Some(_) if matches!(event.event, EventBody::AppCreated { .. }) => {
                return Err(format!("app {} already exists", self.app))
            }
            Some(_) => self.evolve(event)?,
            None => {}
        }
        match event.event {
            EventBody::MauCounted { bill_push_at: None, .. } => {}
            EventBody::ReminderSent { .. } => self.reminders.push(event.seq),
            EventBody::EditionPurchased { .. } | EventBody::EditionRefunded { .. } => {
                self.reminders.clear();
                self.story.push(event.seq);
            }
            _ => self.story.push(event.seq),
        }
        Ok(())
    }

    fn evolve(&mut self, event: &Envelope) -> Result<(), String> {
        let at = event.occurred_at;
        let id = event.id;
        let goes_on_after_reclamation =
            matches!(event.event, EventBody::MauCounted { .. } | EventBody::BillIssued { .. });
        if self.reclaimed_at.is_some() && !goes_on_after_reclamation {
            return Err(format!("app {} was reclaimed", self.app));
        }
        match &event.event {
            EventBody::EditionPurchased {
                order,
                edition,
                months,
                monthly_price,
                valid_from,
                valid_until,
                first_reminder_at,
                ..
            } => {
                self.edition = edition.clone();
                self.orders += 1;
                self.plan = Some(PlanView {
                    orders: vec![order.clone()],
                    edition: edition.clone(),
                    monthly_price: *monthly_price,
                    months: *months,
                    purchased_at: at,
                    valid_from: *valid_from,
                    valid_until: *valid_until,
                    cause: id,
                });
                self.expired = None;
                self.next_reminder = first_reminder_at.map(|at| Pending { at, cause: id });
            }
            EventBody::EditionUpgraded {
                order,
                to,
                monthly_price,
                ..
            } => {
                let plan = self.plan.as_mut().ok_or("no plan to upgrade")?;
                plan.orders.push(order.clone());
                plan.edition = to.clone();
                plan.monthly_price = *monthly_price;
                self.edition = to.clone();
                self.orders += 1;
            }
            EventBody::EditionRefunded { .. } => {
                if self.plan.take().is_none() {
                    return Err("no plan to refund".into());
                }
                self.next_reminder = None;
                self.expired = None;
            }
            EventBody::AutoRenewSwitched { on, .. } => self.auto_renew = *on,
            EventBody::PlanExpired {
                valid_until,
                grace_ends_at,
                ..
            } => {
                if self.plan.is_none() || self.expired.is_some() {
                    return Err("no valid plan to expire".into());
                }
                self.expired = Some(ExpiredView {
                    valid_until: *valid_until,
                    grace_ends_at: *grace_ends_at,
                    cause: id,
                });
            }
            EventBody::HoldPlaced {
                hold, reclamation_at, ..
            } => {
                if self.holds.contains_key(hold) {
                    return Err(format!("hold {} is already placed", hold.as_str()));
                }
                match (self.is_usable(), reclamation_at) {
                    (true, Some(reclaim)) => {
                        self.unusable_since = Some(at);
                        self.unusable_periods.push((at, None));
                        self.reclamation = Some(Pending {
                            at: *reclaim,
                            cause: id,
                        });
                    }
                    (false, None) => {}
                    (true, None) => return Err("makes the app unusable but sets no reclamation instant".into()),
                    (false, Some(_)) => return Err("sets a reclamation instant on an app already unusable".into()),
                }
                self.holds.insert(*hold, HoldView { since: at, cause: id });
                if *hold == HoldKind::Violation {
                    // Nothing can renew a plan under a violation hold: its reminders stop.
                    self.next_reminder = None;
                }
            }
            EventBody::HoldLifted { hold, .. } => {
                if self.holds.remove(hold).is_none() {
                    return Err(format!("hold {} is not placed", hold.as_str()));
                }
                if *hold == HoldKind::Expiry {
                    self.expired = None;
                }
                if self.holds.is_empty() {
                    self.unusable_since = None;
                    self.reclamation = None;
                    if let Some(open) = self.unusable_periods.last_mut() {
                        open.1 = Some(at);
                    }
                }
            }
            EventBody::AppReclaimed { .. } => {
                if self.is_usable() {
                    return Err("reclaims a usable app".into());
                }
                self.reclaimed_at = Some(at);
                self.reclamation = None;
                self.next_reminder = None;
            }
            EventBody::ReminderSent { next_at, .. } => {
                self.next_reminder = next_at.map(|at| Pending { at, cause: id });
            }
            EventBody::MauCounted {
                month,
                users,
                refused,
                repeats,
                bill_push_at,
                late,
                ..
            } => {
                // Most counts go to a month already known: no key to clone.
                if !self.usage.contains_key(month) {
                    self.usage.insert(month.clone(), MonthUsage::default());
                }
                let usage = self.usage.get_mut(month).expect("inserted above");
                let digests = users
                    .iter()
                    .map(|user| user_digest(&user.user))
                    .collect::<Result<Vec<u128>, String>>()?;
                if let Err(twice) = usage.users.insert_all(&digests) {
                    return Err(format!("user {twice:032x} counted twice in {month}"));
                }
                let last = users.iter().map(|user| user.logged_in_at).max();
                self.last_counted_login = self.last_counted_login.max(last);
                usage.refused += refused.len() as u64;
                usage.repeats += repeats;
                match (bill_push_at, late) {
                    (Some(push), true) => self.adjustment_push_at = Some(Pending { at: *push, cause: id }),
                    (Some(push), false) if usage.bill_push.is_none() => {
                        usage.bill_push = Some(Pending { at: *push, cause: id })
                    }
                    (None, false) if usage.bill_push.is_some() => {}
                    (None, true) => {}
                    _ => return Err(format!("sets no bill push for month {month}, or sets it twice")),
                }
            }
            EventBody::BillIssued {
                month, edition, lines, ..
            } => {
                for line in lines {
                    let usage = self
                        .usage
                        .get_mut(&line.month)
                        .ok_or_else(|| format!("no usage in {}", line.month))?;
                    usage.billed_mau = Some(usage.users.len() as u64);
                    usage.billed_edition.get_or_insert_with(|| edition.clone());
                }
                if let Some(usage) = self.usage.get_mut(month) {
                    usage.billed_mau = Some(usage.users.len() as u64);
                    usage.billed_edition.get_or_insert_with(|| edition.clone());
                }
                self.adjustment_push_at = None;
            }
            _ => {}
        }
        self.status = self.derive_status();
        Ok(())
    }

    pub fn is_usable(&self) -> bool {
        self.reclaimed_at.is_none() && self.holds.is_empty()
    }

    /// Whether the app was usable at `t`, by its history of unusable periods.
    pub fn usable_at(&self, t: Instant) -> bool {
        self.reclaimed_at.is_none()
            && !self
                .unusable_periods
                .iter()
                .any(|(from, to)| *from <= t && to.is_none_or(|to| t < to))
    }

    pub(crate) fn derive_status(&self) -> AppStatus {
        if self.reclaimed_at.is_some() {
            AppStatus::Reclaimed
        } else if !self.holds.is_empty() {
            AppStatus::Suspended
        } else if self.expired.is_some() {
            AppStatus::Grace
        } else if self.plan.is_some() {
            AppStatus::Active
        } else {
            AppStatus::Trial
        }
    }

    /// The earliest pending bill push: an unbilled month's, or a pending adjustment's.
    pub fn next_bill_push(&self) -> Option<&Pending> {
        self.usage
            .values()
            .filter(|m| m.billed_mau.is_none())
            .filter_map(|m| m.bill_push.as_ref())
            .chain(self.adjustment_push_at.as_ref())
            .min_by_key(|p| p.at)
    }

    /// The deadlines this app's state implies. Recomputed after each of its events, so
    /// the deadline index can never disagree with the app.
    pub(crate) fn deadlines(&self) -> Vec<Deadline> {
        self.deadline_parts(BillPush::Find).into_deadlines(self.app)
    }

    /// Whether `event`, folded into this app, can move its bill push: only counts and bills
    /// touch the months and the pending adjustment that [`AppView::next_bill_push`] reads.
    pub(crate) fn moves_bill_push(event: &EventBody) -> bool {
        matches!(event, EventBody::MauCounted { .. } | EventBody::BillIssued { .. })
    }

    /// [`AppView::deadlines`] as plain values, one slot per kind, without allocating: what
    /// replay compares before and after each of the app's events (most change none).
    /// `BillPush::Skip` leaves the bill push slot empty: finding it walks every month of
    /// usage, and an event that cannot move it ([`AppView::moves_bill_push`]) need not.
    pub(crate) fn deadline_parts(&self, bill_push: BillPush) -> DeadlineParts {
        let mut parts = DeadlineParts::default();
        if bill_push == BillPush::Find {
            if let Some(bill) = self.next_bill_push() {
                parts.0[DeadlineParts::BILL_PUSH] = Some((bill.at, DeadlineKind::BillPush, bill.cause));
            }
        }
        if self.reclaimed_at.is_some() {
            return parts;
        }
        parts.0[DeadlineParts::PLAN] = match (&self.plan, &self.expired) {
            (Some(plan), None) => Some((plan.valid_until, DeadlineKind::Expiry, plan.cause)),
            (Some(_), Some(expired)) if !self.holds.contains_key(&HoldKind::Expiry) => {
                Some((expired.grace_ends_at, DeadlineKind::Suspension, expired.cause))
            }
            _ => None,
        };
        parts.0[DeadlineParts::REMINDER] = self
            .next_reminder
            .as_ref()
            .map(|r| (r.at, DeadlineKind::Reminder, r.cause));
        parts.0[DeadlineParts::RECLAMATION] = self
            .reclamation
            .as_ref()
            .map(|r| (r.at, DeadlineKind::Reclamation, r.cause));
        parts
    }
}

/// Whether [`AppView::deadline_parts`] finds the bill push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BillPush {
    Find,
    Skip,
}

/// An app's deadlines as (at, kind, cause), one slot each: its bill push, its plan's expiry
/// or suspension, its next reminder, its reclamation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeadlineParts(pub(crate) [Option<(Instant, DeadlineKind, Uuid)>; 4]);

impl DeadlineParts {
    pub(crate) const BILL_PUSH: usize = 0;
    const PLAN: usize = 1;
    const REMINDER: usize = 2;
    const RECLAMATION: usize = 3;

    pub(crate) fn into_deadlines(self, app: AppId) -> Vec<Deadline> {
        self.0
            .into_iter()
            .flatten()
            .map(|part| Self::deadline(part, app))
            .collect()
    }

    pub(crate) fn deadline((at, kind, cause): (Instant, DeadlineKind, Uuid), app: AppId) -> Deadline {
        Deadline {
            at,
            kind,
            stream: StreamId::app(app),
            subject: Subject::App(app),
            cause,
        }
    }
}
