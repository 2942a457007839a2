//! Pure folds from events to read models: the state of every app (edition, status,
//! holds, validity, reclamation), account balances and the pending deadlines.
//! No IO and no rules: every instant a projection shows was decided by the rules and
//! written into an event, so replay needs no rulebook.

mod app;
mod deadline;
mod ledger;

pub use app::{AppStatus, AppView, HoldView, PlanView};
pub use deadline::{Deadline, DeadlineKind};
pub use ledger::{AccountView, Balances, LedgerView, ProjectionError, RulebookView, PROJECTION_VERSION};
