use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use chat_ledger_events::{AccountId, AppId, EditionId, HoldKind, Instant, Money, StreamId};

use crate::deadline::{Deadline, DeadlineKind, Subject};
use crate::digests::UserDigests;

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
    /// Serialized as an ascending array.
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
        }
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
        let mut out = Vec::new();
        let stream = StreamId::app(self.app);
        let mut push = |at: Instant, kind: DeadlineKind, cause: Uuid| {
            out.push(Deadline {
                at,
                kind,
                stream: stream.clone(),
                subject: Subject::App(self.app),
                cause,
            })
        };
        if let Some(bill) = self.next_bill_push() {
            push(bill.at, DeadlineKind::BillPush, bill.cause);
        }
        if self.reclaimed_at.is_some() {
            return out;
        }
        match (&self.plan, &self.expired) {
            (Some(plan), None) => push(plan.valid_until, DeadlineKind::Expiry, plan.cause),
            (Some(_), Some(expired)) if !self.holds.contains_key(&HoldKind::Expiry) => {
                push(expired.grace_ends_at, DeadlineKind::Suspension, expired.cause)
            }
            _ => {}
        }
        if let Some(reminder) = &self.next_reminder {
            push(reminder.at, DeadlineKind::Reminder, reminder.cause);
        }
        if let Some(reclamation) = &self.reclamation {
            push(reclamation.at, DeadlineKind::Reclamation, reclamation.cause);
        }
        out
    }
}
