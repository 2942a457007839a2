//! The event vocabulary: what happened, in business terms. Every variant is documented
//! with an example in docs/events.md.

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, AppId};
use crate::input::{Contact, EditionId, Input, MoneyKind};
use crate::money::{Currency, KindAmounts, Money, Price};
use crate::time::Instant;

/// Why an app is unusable. An app's status is derived from the *set* of its holds,
/// several at once (Kill Bill's blocking states), so new causes add a variant, not a rework.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// The plan expired and was not renewed within the grace period.
    Expiry,
    /// The account stayed in arrears past the arrears grace after a bill push.
    Arrears,
    /// The plan was refunded.
    Refund,
    /// Content violation or another breach: never lifted.
    Violation,
}

impl HoldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Expiry => "expiry",
            HoldKind::Arrears => "arrears",
            HoldKind::Refund => "refund",
            HoldKind::Violation => "violation",
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
    /// Renewed by the ledger at expiry because auto-renew was on and the balance sufficed.
    AutoRenewal,
    /// Purchase of a suspended (expired or refunded) app: starts at the purchase instant
    /// and lifts the expiry and refund holds.
    Reactivation,
}

/// What an auto-renewal attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewalOutcome {
    Renewed,
    InsufficientFunds,
    /// The plan cannot be renewed as such (a once-only offer).
    NotRenewable,
}

/// What a reminder is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "about", rename_all = "snake_case")]
pub enum Reminder {
    /// The plan ends at `valid_until`: renew.
    ExpiryUpcoming { app: AppId, valid_until: Instant },
    /// The plan ended at `valid_until`: renew before the app is suspended.
    Expired { app: AppId, valid_until: Instant },
    /// A pushed bill left the balance negative: top up before `suspend_at`.
    Arrears { balance: Money, suspend_at: Instant },
}

/// One user counted (or refused) in a month's MAU, and the login that did it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CountedUser {
    /// The user id's per-app keyed digest (HMAC-SHA-256, 128 bits, hex).
    pub user: String,
    pub logged_in_at: Instant,
    /// The input key of a single login, or `<source>:<line>` of a bulk file.
    pub login: String,
}

/// A line of a bill.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BillLine {
    pub item: String,
    pub month: String,
    pub quantity: u64,
    pub unit_price: Price,
    pub rule: String,
    /// `quantity × unit_price × usable share`, rounded by `money.round`.
    pub amount: Money,
    /// The share of the month the app was usable, when below one (`bill.proration`):
    /// `usable_seconds / month_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usable_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month_seconds: Option<u64>,
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

    /// An accepted input, verbatim (user ids replaced by their digests), so an auditor or a
    /// later rulebook can re-run the decisions.
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

    /// A support credit (positive) or debit (negative), with its reason.
    #[serde(rename = "balance.adjusted")]
    BalanceAdjusted {
        account: AccountId,
        kind: MoneyKind,
        amount: Money,
        reason: String,
    },

    /// Money taken from an account's balance for an order.
    #[serde(rename = "account.charged")]
    AccountCharged {
        account: AccountId,
        order: String,
        amount: Money,
        split: KindAmounts,
    },

    /// Money returned to an account's balance for refunded orders (vouchers excepted).
    #[serde(rename = "account.refunded")]
    AccountRefunded {
        account: AccountId,
        orders: Vec<String>,
        amount: Money,
        split: KindAmounts,
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
        /// The first expiry reminder of this plan (`reminder.expiry`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_reminder_at: Option<Instant>,
    },

    /// A higher edition for the rest of the plan's validity, the difference paid pro rata
    /// to the second (`edition.upgrade`). Validity is unchanged.
    #[serde(rename = "edition.upgraded")]
    EditionUpgraded {
        app: AppId,
        order: String,
        from: EditionId,
        to: EditionId,
        /// The new edition's monthly price: what the plan renews at from now on.
        monthly_price: Money,
        amount: Money,
        remaining_seconds: u64,
        period_seconds: u64,
        valid_until: Instant,
    },

    /// The plan's orders refunded; the plan ends now (`refund.five_day`).
    #[serde(rename = "edition.refunded")]
    EditionRefunded {
        app: AppId,
        orders: Vec<String>,
        refund: Money,
        days_used: u32,
        days_total: u32,
    },

    #[serde(rename = "auto_renew.switched")]
    AutoRenewSwitched { app: AppId, on: bool },

    /// At expiry, with auto-renew on: whether the ledger renewed, and why not.
    #[serde(rename = "auto_renew.attempted")]
    AutoRenewAttempted {
        app: AppId,
        outcome: RenewalOutcome,
        price: Money,
        available: Money,
    },

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

    /// The app's resources were reclaimed for good; its user-digest key is destroyed.
    #[serde(rename = "app.reclaimed")]
    AppReclaimed { app: AppId, unusable_since: Instant },

    /// An email and SMS to the account's creator.
    #[serde(rename = "reminder.sent")]
    ReminderSent {
        account: AccountId,
        to: Contact,
        reminder: Reminder,
        /// The next reminder of the same series, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_at: Option<Instant>,
    },

    /// Users counted once in the app's MAU of `month` (local natural month), packed many
    /// to an event; `refused` were over the free edition's limit; `repeats` logins of users
    /// already counted. `bill_push_at` is set by the first count of a month: when its bill
    /// goes out. `late` is set when `month` was already billed: the users are billed as an
    /// adjustment on the app's next bill.
    #[serde(rename = "mau.counted")]
    MauCounted {
        app: AppId,
        month: String,
        users: Vec<CountedUser>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        refused: Vec<CountedUser>,
        repeats: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bill_push_at: Option<Instant>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        late: bool,
    },

    /// A postpaid bill, pushed.
    #[serde(rename = "bill.issued")]
    BillIssued {
        account: AccountId,
        app: AppId,
        bill: String,
        month: String,
        edition: EditionId,
        lines: Vec<BillLine>,
        total: Money,
    },

    /// A pushed bill charged to the balance; `balance_after` below zero is arrears.
    #[serde(rename = "bill.charged")]
    BillCharged {
        account: AccountId,
        bill: String,
        amount: Money,
        split: KindAmounts,
        balance_after: Money,
    },

    /// The balance is negative after a bill push: the account's apps are held at `suspend_at`
    /// unless it is topped up to zero or above before.
    #[serde(rename = "arrears.started")]
    ArrearsStarted {
        account: AccountId,
        balance: Money,
        suspend_at: Instant,
    },

    /// Still in arrears when the arrears grace ended: every app of the account is held.
    #[serde(rename = "account.suspended")]
    AccountSuspended { account: AccountId },

    /// The balance is back to zero or above: arrears holds are lifted.
    #[serde(rename = "arrears.cleared")]
    ArrearsCleared { account: AccountId, balance: Money },
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
            EventBody::BalanceAdjusted { .. } => "balance.adjusted",
            EventBody::AccountCharged { .. } => "account.charged",
            EventBody::AccountRefunded { .. } => "account.refunded",
            EventBody::AppCreated { .. } => "app.created",
            EventBody::EditionPurchased { .. } => "edition.purchased",
            EventBody::EditionUpgraded { .. } => "edition.upgraded",
            EventBody::EditionRefunded { .. } => "edition.refunded",
            EventBody::AutoRenewSwitched { .. } => "auto_renew.switched",
            EventBody::AutoRenewAttempted { .. } => "auto_renew.attempted",
            EventBody::PlanExpired { .. } => "plan.expired",
            EventBody::HoldPlaced { .. } => "hold.placed",
            EventBody::HoldLifted { .. } => "hold.lifted",
            EventBody::AppReclaimed { .. } => "app.reclaimed",
            EventBody::ReminderSent { .. } => "reminder.sent",
            EventBody::MauCounted { .. } => "mau.counted",
            EventBody::BillIssued { .. } => "bill.issued",
            EventBody::BillCharged { .. } => "bill.charged",
            EventBody::ArrearsStarted { .. } => "arrears.started",
            EventBody::AccountSuspended { .. } => "account.suspended",
            EventBody::ArrearsCleared { .. } => "arrears.cleared",
        }
    }
}
