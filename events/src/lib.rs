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
pub use event::{BillLine, CountedUser, EventBody, HoldKind, PurchasePurpose, Reminder, RenewalOutcome};
pub use ids::{AccountId, Actor, AppId, Key, StreamId};
pub use input::{Command, Contact, Direction, EditionId, Input, MoneyKind};
pub use money::{round_cents, Amount, Currency, KindAmounts, Money, Price};
pub use time::Instant;
