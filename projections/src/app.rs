use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use chat_ledger_events::{AccountId, AppId, EditionId, HoldKind, Instant, Money, StreamId};

use crate::deadline::{Deadline, DeadlineKind};

/// What an app's holds, plan and history add up to. Derived, never stored.
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
    pub order: String,
    pub edition: EditionId,
    pub monthly_price: Money,
    pub valid_from: Instant,
    pub valid_until: Instant,
    /// The `edition.purchased` event that set the validity.
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
    pub grace_ends_at: Instant,
    /// The `plan.expired` event.
    pub cause: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclamationView {
    pub at: Instant,
    /// The `hold.placed` event that made the app unusable.
    pub cause: Uuid,
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
    /// The current (or last) paid plan; stays after expiry so support can see what lapsed.
    pub plan: Option<PlanView>,
    /// Set while the plan is expired and not renewed.
    pub expired: Option<ExpiredView>,
    pub holds: BTreeMap<HoldKind, HoldView>,
    /// When the app last became unusable; cleared when it is usable again.
    pub unusable_since: Option<Instant>,
    pub reclamation: Option<ReclamationView>,
    pub reclaimed_at: Option<Instant>,
    /// Orders bought for this app so far (order ids are `<SDKAppID>-<n>`).
    pub orders: u32,
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
            reclamation: None,
            reclaimed_at: None,
            orders: 0,
        }
    }

    pub fn is_usable(&self) -> bool {
        self.reclaimed_at.is_none() && self.holds.is_empty()
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

    /// The deadlines this app's state implies. Recomputed after each of its events, so
    /// the deadline index can never disagree with the app.
    pub(crate) fn deadlines(&self) -> Vec<Deadline> {
        let mut out = Vec::new();
        if self.reclaimed_at.is_some() {
            return out;
        }
        let stream = StreamId::app(self.app);
        match (&self.plan, &self.expired) {
            (Some(plan), None) => out.push(Deadline {
                at: plan.valid_until,
                kind: DeadlineKind::Expiry,
                stream: stream.clone(),
                app: self.app,
                cause: plan.cause,
            }),
            (Some(_), Some(expired)) if !self.holds.contains_key(&HoldKind::Expiry) => out.push(Deadline {
                at: expired.grace_ends_at,
                kind: DeadlineKind::Suspension,
                stream: stream.clone(),
                app: self.app,
                cause: expired.cause,
            }),
            _ => {}
        }
        if let Some(reclamation) = &self.reclamation {
            out.push(Deadline {
                at: reclamation.at,
                kind: DeadlineKind::Reclamation,
                stream,
                app: self.app,
                cause: reclamation.cause,
            });
        }
        out
    }
}
