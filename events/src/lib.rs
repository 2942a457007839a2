//! The ledger's vocabulary: inputs, events, the envelope with its canonical bytes and
//! hash chain, money and time. Pure data and pure functions; no IO.

pub mod envelope;
pub mod event;
pub mod ids;
pub mod input;
pub mod money;
pub mod time;

pub use envelope::{
    decode, event_id, seal, Decision, DecodeError, Envelope, Hash, NewEvent, SealedEvent, SCHEMA_VERSION,
};
pub use event::{EventBody, HoldKind, PaymentSplit, PurchasePurpose};
pub use ids::{AccountId, Actor, AppId, Key, StreamId};
pub use input::{Command, Contact, EditionId, Input, MoneyKind};
pub use money::{round_cents, Amount, Currency, Money};
pub use time::Instant;
