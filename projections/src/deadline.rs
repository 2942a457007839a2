use serde::{Deserialize, Serialize};
use uuid::Uuid;

use chat_ledger_events::{AppId, Instant, StreamId};

/// The kinds of deadline, in the order they fire when several fall on one instant
/// (rules.md §9: bill push, auto-renewal, expiry, reminders, suspension, reclamation;
/// then by stream id). Variant order *is* that order: `Ord` is derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineKind {
    /// The plan's validity ends.
    Expiry,
    /// The grace period after expiry ends: the app is suspended.
    Suspension,
    /// The app has been unusable long enough: its resources are reclaimed.
    Reclamation,
}

impl DeadlineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineKind::Expiry => "expiry",
            DeadlineKind::Suspension => "suspension",
            DeadlineKind::Reclamation => "reclamation",
        }
    }
}

/// A pending time-driven decision. Field order is firing order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Deadline {
    pub at: Instant,
    pub kind: DeadlineKind,
    pub stream: StreamId,
    pub app: AppId,
    /// The event that set this deadline: the cause of whatever fires.
    pub cause: Uuid,
}
