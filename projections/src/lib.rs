//! Pure folds from events to read models: the state of every app (edition, status,
//! holds, validity, reclamation), account balances and the pending deadlines.
//! No IO and no rules: every instant a projection shows was decided by the rules and
//! written into an event, so replay needs no rulebook.

mod app;
mod deadline;
mod digests;
mod ledger;

pub use app::{AppStatus, AppView, ExpiredView, HoldView, MonthUsage, Pending, PlanView};
pub use deadline::{Deadline, DeadlineKind, Subject};
pub use digests::{DigestHashSet, DigestHasher, Prefetch, UserDigests, PREFETCH_AHEAD};
pub use ledger::{
    user_digest, whole_list, AccountView, ArrearsView, BillStatus, BillView, LedgerView, OrderView, ProjectionError,
    RulebookView, Settled, SettledList, StoryList, PROJECTION_VERSION,
};
