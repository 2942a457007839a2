use serde::{Deserialize, Serialize};
use uuid::Uuid;

use chat_ledger_events::{AccountId, AppId, Instant, StreamId};

/// The kinds of deadline, in the order they fire when several fall on one instant
/// (rules.md §9: bill push, auto-renewal, expiry, reminders, suspension, reclamation;
/// then by stream id). Variant order *is* that order: `Ord` is derived from it.
/// Auto-renewal is decided inside the expiry deadline, before anything expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineKind {
    /// A month's postpaid bill (and pending adjustments) is pushed and charged.
    BillPush,
    /// The plan's validity ends (auto-renewal is attempted first).
    Expiry,
    /// An expiry reminder is due.
    Reminder,
    /// The grace period after expiry ends: the app is suspended.
    Suspension,
    /// The arrears grace after a bill push ends: every app of the account is held.
    ArrearsSuspension,
    /// The app has been unusable long enough: its resources are reclaimed.
    Reclamation,
}

impl DeadlineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineKind::BillPush => "bill_push",
            DeadlineKind::Expiry => "expiry",
            DeadlineKind::Reminder => "reminder",
            DeadlineKind::Suspension => "suspension",
            DeadlineKind::ArrearsSuspension => "arrears_suspension",
            DeadlineKind::Reclamation => "reclamation",
        }
    }
}

/// What a deadline is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    App(AppId),
    Account(AccountId),
}

/// A pending time-driven decision. Field order is firing order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Deadline {
    pub at: Instant,
    pub kind: DeadlineKind,
    pub stream: StreamId,
    pub subject: Subject,
    /// The event that set this deadline: the cause of whatever fires.
    pub cause: Uuid,
}
