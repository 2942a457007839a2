//! chat-ledger: an event-sourced subscription ledger for the billing of a cloud Chat
//! service. See docs/ARCHITECTURE.md for the map.

pub mod commit;
pub mod describe;
pub mod explain;
pub mod import;
pub mod ledger;
pub mod logins;
pub mod replay;
pub mod rulebook;
pub mod rules;
pub mod store;
pub mod story;
pub mod verify;
