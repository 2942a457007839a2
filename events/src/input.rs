//! Inputs: what a fixture line, a CLI command or (later) an HTTP request asks of the
//! ledger, with its business time, its actor and the caller's idempotency key.
//! An input is not an event; it is run through the rules (`decide`), and both the
//! input (`input.recorded`) and its outcome are appended.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{AccountId, Actor, AppId, Key, StreamId};
use crate::money::Amount;
use crate::time::Instant;

/// The kinds of money an account holds (rules.md §1): cash, income transfer, gift credit,
/// and vouchers (applied at purchase, never refunded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoneyKind {
    Cash,
    IncomeTransfer,
    Gift,
    Voucher,
}

impl MoneyKind {
    pub const ALL: [MoneyKind; 4] = [
        MoneyKind::Cash,
        MoneyKind::IncomeTransfer,
        MoneyKind::Gift,
        MoneyKind::Voucher,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            MoneyKind::Cash => "cash",
            MoneyKind::IncomeTransfer => "income_transfer",
            MoneyKind::Gift => "gift",
            MoneyKind::Voucher => "voucher",
        }
    }
}

/// An edition's id as the rulebook names it (`standard`, `pro`, `pro_plus`, …).
/// Editions differ by era, so the set is data in the rulebook, not an enum here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EditionId(pub String);

impl std::fmt::Display for EditionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A support adjustment's direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Credit,
    Debit,
}

/// Where reminders for an account go: the account creator's email and phone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub email: String,
    pub sms: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    OpenAccount {
        account: AccountId,
        creator: Contact,
    },
    AddFunds {
        account: AccountId,
        kind: MoneyKind,
        amount: Amount,
    },
    CreateApp {
        account: AccountId,
        app: AppId,
        name: String,
    },
    BuyEdition {
        app: AppId,
        edition: EditionId,
        months: u32,
        /// Enterprise only: the monthly price of the customer's contract.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contract_monthly_price: Option<Amount>,
    },
    SetAutoRenew {
        app: AppId,
        on: bool,
    },
    /// One SDK login of a user. `at` is when the ledger receives it; `logged_in_at` when
    /// the user logged in (default: `at`), which may fall in a month already billed.
    /// The user id is replaced by its per-app keyed digest before the input is recorded.
    Login {
        app: AppId,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logged_in_at: Option<Instant>,
    },
    /// A chunk of a bulk login file (CSV or JSON Lines), recorded without its rows: they
    /// are identified by the file's name, the chunk's line range and the SHA-256 of its
    /// bytes, so an auditor can re-run the decisions from the same file.
    LoginBatch {
        source: String,
        first_line: u64,
        last_line: u64,
        rows: u64,
        sha256: String,
    },
    /// Refund the app's current plan (intl-2025: the five-day rule).
    RefundEdition {
        app: AppId,
    },
    /// A support credit or debit, with its reason. Never an edit: an event.
    AdjustBalance {
        account: AccountId,
        kind: MoneyKind,
        direction: Direction,
        amount: Amount,
        reason: String,
    },
    /// Support suspends an app for content violation: no refund, no reactivation.
    FlagViolation {
        app: AppId,
        reason: String,
    },
    /// Let business time pass to `at`: every deadline up to it fires.
    AdvanceClock {},
}

impl Command {
    pub fn type_name(&self) -> &'static str {
        match self {
            Command::OpenAccount { .. } => "open_account",
            Command::AddFunds { .. } => "add_funds",
            Command::CreateApp { .. } => "create_app",
            Command::BuyEdition { .. } => "buy_edition",
            Command::SetAutoRenew { .. } => "set_auto_renew",
            Command::Login { .. } => "login",
            Command::LoginBatch { .. } => "login_batch",
            Command::RefundEdition { .. } => "refund_edition",
            Command::AdjustBalance { .. } => "adjust_balance",
            Command::FlagViolation { .. } => "flag_violation",
            Command::AdvanceClock {} => "advance_clock",
        }
    }

    /// The stream where the outcome of this command, refusal included, is told.
    pub fn primary_stream(&self) -> StreamId {
        match self {
            Command::OpenAccount { account, .. }
            | Command::AddFunds { account, .. }
            | Command::CreateApp { account, .. }
            | Command::AdjustBalance { account, .. } => StreamId::account(account),
            Command::BuyEdition { app, .. }
            | Command::SetAutoRenew { app, .. }
            | Command::Login { app, .. }
            | Command::RefundEdition { app }
            | Command::FlagViolation { app, .. } => StreamId::app(*app),
            Command::LoginBatch { .. } => StreamId::named(StreamId::INPUTS),
            Command::AdvanceClock {} => StreamId::named(StreamId::CLOCK),
        }
    }
}

/// Key prefixes the ledger derives for its own commits (deadlines, rulebook adoption).
pub const RESERVED_KEY_PREFIXES: [&str; 2] = ["deadline/", "ledger/"];

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Input {
    pub key: Key,
    pub at: Instant,
    pub actor: Actor,
    #[serde(flatten)]
    pub command: Command,
}

impl Input {
    /// SHA-256 of the input's canonical JSON: what "the same payload" means for a repeated key.
    pub fn digest(&self) -> [u8; 32] {
        let bytes = serde_json::to_vec(self).expect("inputs always serialize");
        Sha256::digest(bytes).into()
    }
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Input, D::Error> {
        use serde::de::Error;
        // Envelope fields first, then the command with unknown fields denied: a typo
        // such as "amout" is refused instead of silently defaulted.
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut take = |name: &'static str| map.remove(name).ok_or_else(|| D::Error::missing_field(name));
        let key = Key::deserialize(take("key")?).map_err(|e| D::Error::custom(format!("key: {e}")))?;
        if let Some(prefix) = RESERVED_KEY_PREFIXES.iter().find(|p| key.as_str().starts_with(*p)) {
            return Err(D::Error::custom(format!(
                "key {key}: keys starting with {prefix:?} are the ledger's own"
            )));
        }
        let at = Instant::deserialize(take("at")?).map_err(|e| D::Error::custom(format!("at: {e}")))?;
        let actor = Actor::deserialize(take("actor")?).map_err(|e| D::Error::custom(format!("actor: {e}")))?;
        if !map.contains_key("type") {
            return Err(D::Error::missing_field("type"));
        }
        let command = Command::deserialize(serde_json::Value::Object(map)).map_err(D::Error::custom)?;
        Ok(Input {
            key,
            at,
            actor,
            command,
        })
    }
}
