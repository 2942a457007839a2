//! The event vocabulary: what happened, in business terms. Every variant is documented
//! with an example in docs/events.md.

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, AppId};
use crate::input::{Contact, EditionId, Input, MoneyKind};
use crate::money::{Currency, Money};
use crate::time::Instant;

/// Why an app is unusable. An app's status is derived from the *set* of its holds,
/// several at once (Kill Bill's blocking states), so new causes add a variant, not a rework.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// The plan expired and was not renewed within the grace period.
    Expiry,
}

impl HoldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Expiry => "expiry",
        }
    }
}

/// Why an edition was bought, as the rules classified the purchase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurchasePurpose {
    /// First paid plan of an app on the free edition.
    New,
    /// Same edition again while the plan is valid or in grace: starts at the old expiry.
    Renewal,
    /// Purchase of a suspended app: starts at the purchase instant and lifts the expiry hold.
    Reactivation,
}

/// How the money of one charge was taken, kind by kind (rule `payment.order`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PaymentSplit {
    pub gift: Money,
    pub income_transfer: Money,
    pub cash: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventBody {
    /// The ledger adopted a rulebook: every later decision names it.
    #[serde(rename = "rulebook.adopted")]
    RulebookAdopted {
        rulebook: String,
        seed: String,
        zone: String,
        currency: Currency,
    },

    /// An accepted input, verbatim, so an auditor or a later rulebook can re-run the decisions.
    #[serde(rename = "input.recorded")]
    InputRecorded { input: Input },

    /// The rules refused a command: no money moved, no state changed, but support sees the attempt.
    #[serde(rename = "command.rejected")]
    CommandRejected { command: String, reason: String },

    #[serde(rename = "clock.advanced")]
    ClockAdvanced { to: Instant },

    #[serde(rename = "account.opened")]
    AccountOpened { account: AccountId, creator: Contact },

    #[serde(rename = "funds.added")]
    FundsAdded {
        account: AccountId,
        kind: MoneyKind,
        amount: Money,
    },

    /// Money taken from an account's balance for an order.
    #[serde(rename = "account.charged")]
    AccountCharged {
        account: AccountId,
        order: String,
        amount: Money,
        split: PaymentSplit,
    },

    #[serde(rename = "app.created")]
    AppCreated {
        app: AppId,
        account: AccountId,
        name: String,
        edition: EditionId,
    },

    #[serde(rename = "edition.purchased")]
    EditionPurchased {
        app: AppId,
        order: String,
        edition: EditionId,
        months: u32,
        monthly_price: Money,
        amount: Money,
        purpose: PurchasePurpose,
        valid_from: Instant,
        valid_until: Instant,
    },

    #[serde(rename = "auto_renew.switched")]
    AutoRenewSwitched { app: AppId, on: bool },

    /// The plan's validity ended; the app stays usable until `grace_ends_at`.
    #[serde(rename = "plan.expired")]
    PlanExpired {
        app: AppId,
        valid_until: Instant,
        grace_ends_at: Instant,
    },

    /// A hold was put on the app. `reclamation_at` is set when this hold made a usable app
    /// unusable: the instant its resources will be reclaimed unless it is usable again.
    #[serde(rename = "hold.placed")]
    HoldPlaced {
        app: AppId,
        hold: HoldKind,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reclamation_at: Option<Instant>,
    },

    #[serde(rename = "hold.lifted")]
    HoldLifted { app: AppId, hold: HoldKind },

    /// The app's resources were reclaimed for good.
    #[serde(rename = "app.reclaimed")]
    AppReclaimed { app: AppId, unusable_since: Instant },
}

impl EventBody {
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::RulebookAdopted { .. } => "rulebook.adopted",
            EventBody::InputRecorded { .. } => "input.recorded",
            EventBody::CommandRejected { .. } => "command.rejected",
            EventBody::ClockAdvanced { .. } => "clock.advanced",
            EventBody::AccountOpened { .. } => "account.opened",
            EventBody::FundsAdded { .. } => "funds.added",
            EventBody::AccountCharged { .. } => "account.charged",
            EventBody::AppCreated { .. } => "app.created",
            EventBody::EditionPurchased { .. } => "edition.purchased",
            EventBody::AutoRenewSwitched { .. } => "auto_renew.switched",
            EventBody::PlanExpired { .. } => "plan.expired",
            EventBody::HoldPlaced { .. } => "hold.placed",
            EventBody::HoldLifted { .. } => "hold.lifted",
            EventBody::AppReclaimed { .. } => "app.reclaimed",
        }
    }
}
