//! A rulebook: one era's rules as a value. Every parameter *and every shape* (exact hours
//! vs calendar days, T→T vs T→T−1) is data here, so another era is another JSON file,
//! not another code path. Each top-level key is a rule id; each rule says `why`,
//! quoting its seed or naming the rules.md §9 default it takes.

use std::path::Path;

use chrono::{Days, Duration, FixedOffset, Months, NaiveTime, TimeZone};
use serde::Deserialize;

use chat_ledger_events::{Amount, Currency, EditionId, Instant, MoneyKind};

/// The rulebook of the current international site (seed 000).
pub const INTL_2025: &str = include_str!("rulebooks/intl-2025.json");

/// Rule ids. One concept, one name: the same strings key the rulebook JSON, appear in
/// events' `decision.rule`, in refusals and in docs.
pub mod rule {
    pub const RULEBOOK_ADOPT: &str = "ledger.rulebook";
    pub const ACCOUNT_OPEN: &str = "account.open";
    pub const FUNDS_ADD: &str = "funds.add";
    pub const APP_CREATE: &str = "app.create";
    pub const APP_LIMIT: &str = "app.limit";
    pub const EDITION_CATALOG: &str = "edition.catalog";
    pub const PLAN_VALIDITY: &str = "plan.validity";
    pub const PLAN_PURCHASE: &str = "plan.purchase";
    pub const PLAN_RENEWAL: &str = "plan.renewal";
    pub const PLAN_REACTIVATION: &str = "plan.reactivation";
    pub const EDITION_CHANGE: &str = "edition.change";
    pub const PAYMENT_ORDER: &str = "payment.order";
    pub const PAYMENT_BALANCE: &str = "payment.balance";
    pub const AUTO_RENEW_SWITCH: &str = "auto_renew.switch";
    pub const APP_RECLAIMED: &str = "app.reclaimed";
    pub const PLAN_EXPIRY: &str = "plan.expiry";
    pub const EXPIRY_GRACE: &str = "expiry.grace";
    pub const APP_RECLAMATION: &str = "app.reclamation";
    pub const CLOCK_ADVANCE: &str = "clock.advance";
    pub const OFFER_NEWCOMER: &str = "offer.newcomer";
    pub const EDITION_UPGRADE: &str = "edition.upgrade";
    pub const EDITION_DOWNGRADE: &str = "edition.downgrade";
    pub const AUTO_RENEWAL: &str = "auto_renew.renewal";
    pub const REMINDER_EXPIRY: &str = "reminder.expiry";
    pub const REMINDER_ARREARS: &str = "reminder.arrears";
    pub const LOGIN_SUSPENDED: &str = "login.suspended";
    pub const MAU_COUNT: &str = "mau.count";
    pub const MAU_OVERAGE: &str = "mau.overage";
    pub const BILL_PUSH: &str = "bill.push";
    pub const BILL_PRORATION: &str = "bill.proration";
    pub const BILL_PAYMENT: &str = "bill.payment";
    pub const ARREARS_GRACE: &str = "arrears.grace";
    pub const ARREARS_CLEARED: &str = "arrears.cleared";
    pub const REFUND_FIVE_DAY: &str = "refund.five_day";
    pub const REFUND_SPLIT: &str = "refund.split";
    pub const ADJUSTMENT: &str = "balance.adjustment";
    pub const VIOLATION: &str = "violation.hold";
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rulebook {
    pub id: String,
    pub version: u32,
    pub seed: String,
    pub site: String,
    pub currency: Currency,
    #[serde(deserialize_with = "zone")]
    pub zone: FixedOffset,
    pub zone_why: String,
    #[serde(rename = "app.limit")]
    pub app_limit: AppLimit,
    #[serde(rename = "edition.catalog")]
    pub catalog: Catalog,
    #[serde(rename = "plan.validity")]
    pub validity: Validity,
    #[serde(rename = "expiry.grace")]
    pub grace: Grace,
    #[serde(rename = "app.reclamation")]
    pub reclamation: Reclamation,
    #[serde(rename = "payment.order")]
    pub payment_order: PaymentOrder,
    #[serde(rename = "offer.newcomer")]
    pub newcomer: Option<NewcomerOffer>,
    #[serde(rename = "edition.upgrade")]
    pub upgrade: Upgrade,
    #[serde(rename = "mau.overage")]
    pub mau_overage: MauOverage,
    #[serde(rename = "bill.push")]
    pub bill_push: BillPush,
    #[serde(rename = "bill.proration")]
    pub proration: Proration,
    #[serde(rename = "bill.payment")]
    pub bill_payment: BillPayment,
    #[serde(rename = "arrears.grace")]
    pub arrears_grace: Grace,
    #[serde(rename = "reminder.expiry")]
    pub reminders: Reminders,
    #[serde(rename = "refund.five_day")]
    pub refund: FiveDayRefund,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewcomerOffer {
    pub edition: EditionId,
    pub months: u32,
    pub once_per_account: bool,
    /// Editions whose purchase by the account, on any app, ends its eligibility.
    pub not_after: Vec<EditionId>,
    pub why: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case", deny_unknown_fields)]
pub enum Upgrade {
    /// Pay (new − old monthly price) × months for the remaining share of the validity, to the second.
    ProRataSeconds { why: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MauOverage {
    /// Per user beyond the edition's free MAU, per month.
    pub unit_price: UnitPrice,
    pub why: String,
}

/// A unit price as written in a rulebook: any number of decimal places.
#[derive(Clone, Copy, Debug)]
pub struct UnitPrice(pub rust_decimal::Decimal);

impl<'de> Deserialize<'de> for UnitPrice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UnitPrice, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map(UnitPrice)
            .map_err(|e| serde::de::Error::custom(format!("price {text:?}: {e}")))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillPush {
    /// Bills for month M are pushed at 00:00 local on this day of month M + 1.
    pub day_of_month: u32,
    pub why: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case", deny_unknown_fields)]
pub enum Proration {
    /// Postpaid fees × usable seconds of the month / seconds of the month.
    UsableSeconds { why: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillPayment {
    pub order: Vec<MoneyKind>,
    /// The kind driven below zero by what the balance cannot cover.
    pub shortfall: MoneyKind,
    pub why: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reminders {
    /// Reminders on each of this many days up to and including the expiry day.
    pub days_before: u32,
    /// And on each of this many days after it.
    pub days_after: u32,
    pub why: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiveDayRefund {
    /// Refunds are possible up to this long after the purchase instant, the edge included.
    pub window_hours: u32,
    /// Only a plan with no MAU since its purchase is refunded.
    pub unused_only: bool,
    pub why: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppLimit {
    pub max_apps_per_account: u32,
    pub why: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub free_edition: EditionId,
    pub editions: Vec<EditionRule>,
    pub why: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditionRule {
    pub edition: EditionId,
    pub name: String,
    /// `None`: sold at a contract price given with the purchase (Enterprise).
    pub monthly_price: Option<Amount>,
    pub free_mau: u32,
    pub purchasable: bool,
    /// Orders editions: buying a higher rank while a plan runs is an upgrade, a lower one a downgrade.
    pub rank: u32,
    /// Whether MAU beyond `free_mau` is billed (`mau.overage`).
    pub mau_overage: bool,
    /// MAU beyond this is refused, not billed (Trial).
    pub mau_cap: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidityShape {
    /// T → T of the month after (000): bought 03-01 10:00, valid until 04-01 10:00.
    SameDayNextMonth,
    /// T → T−1 of the month after, same time of day (001/002): 03-09 10:10:52 → 04-08 10:10:52.
    DayBeforeNextMonth,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    pub shape: ValidityShape,
    pub months_min: u32,
    pub months_max: u32,
    pub why: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case", deny_unknown_fields)]
pub enum Grace {
    /// Suspended exactly `hours` after the expiry instant.
    ExactHours { hours: u32, why: String },
    /// Suspended at 00:00 local on the day after the last grace day; the expiry day
    /// itself counts as day 1 of the `days` or not.
    CalendarDays {
        days: u32,
        expiry_day_counts: bool,
        why: String,
    },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reclamation {
    /// At 00:00 local on (the day the app became unusable + `days`): that day is day 1.
    MidnightAfterDays { days: u32, why: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentOrder {
    pub order: Vec<MoneyKind>,
    pub why: String,
}

fn zone<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FixedOffset, D::Error> {
    let text = String::deserialize(d)?;
    text.parse::<FixedOffset>()
        .map_err(|_| serde::de::Error::custom(format!("zone {text:?} is not an offset like +08:00")))
}

impl Rulebook {
    pub fn intl_2025() -> Rulebook {
        Rulebook::parse(INTL_2025, "intl-2025.json").expect("the bundled rulebook is valid")
    }

    pub fn parse(text: &str, origin: &str) -> Result<Rulebook, String> {
        let book: Rulebook = serde_json::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        book.check().map_err(|e| format!("{origin}: {e}"))?;
        Ok(book)
    }

    pub fn load(path: &Path) -> Result<Rulebook, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Rulebook::parse(&text, &path.display().to_string())
    }

    fn check(&self) -> Result<(), String> {
        let mut kinds = self.payment_order.order.clone();
        kinds.sort();
        kinds.dedup();
        if kinds.len() != MoneyKind::ALL.len() || self.payment_order.order.len() != MoneyKind::ALL.len() {
            return Err("payment.order must name each money kind exactly once".into());
        }
        if self.edition(&self.catalog.free_edition).is_none() {
            return Err(format!(
                "edition.catalog: free edition {} is not in the catalog",
                self.catalog.free_edition
            ));
        }
        if self.validity.months_min == 0 || self.validity.months_min > self.validity.months_max {
            return Err("plan.validity: months_min must be ≥ 1 and ≤ months_max".into());
        }
        Ok(())
    }

    /// `id@version`, as events record it.
    pub fn label(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    pub fn edition(&self, edition: &EditionId) -> Option<&EditionRule> {
        self.catalog.editions.iter().find(|e| &e.edition == edition)
    }

    fn local_midnight(&self, date: chrono::NaiveDate) -> Instant {
        let local = self
            .zone
            .from_local_datetime(&date.and_time(NaiveTime::MIN))
            .single()
            .expect("fixed offsets are unambiguous");
        Instant::from_utc(local.to_utc())
    }

    /// Rule `plan.validity`: when a plan of `months` starting at `start` ends. Month ends
    /// clamp (Jan 31 + 1 → Feb 28) and months count from the start, not one by one.
    pub fn validity_end(&self, start: Instant, months: u32) -> Instant {
        let local = start.in_zone(self.zone);
        let end = local
            .checked_add_months(Months::new(months))
            .expect("within chrono's range");
        let end = match self.validity.shape {
            ValidityShape::SameDayNextMonth => end,
            ValidityShape::DayBeforeNextMonth => end - Duration::days(1),
        };
        Instant::from_utc(end.to_utc())
    }

    /// Rule `expiry.grace`: when an app whose plan expired at `expired_at` is suspended.
    pub fn grace_end(&self, expired_at: Instant) -> Instant {
        self.after_grace(&self.grace, expired_at)
    }

    /// Rule `arrears.grace`: when an account still in arrears after a push at `pushed_at` is suspended.
    pub fn arrears_suspend_at(&self, pushed_at: Instant) -> Instant {
        self.after_grace(&self.arrears_grace, pushed_at)
    }

    fn after_grace(&self, grace: &Grace, expired_at: Instant) -> Instant {
        match grace {
            Grace::ExactHours { hours, .. } => Instant::from_utc(expired_at.utc() + Duration::hours(i64::from(*hours))),
            Grace::CalendarDays {
                days,
                expiry_day_counts,
                ..
            } => {
                let expiry_day = expired_at.in_zone(self.zone).date_naive();
                let after = if *expiry_day_counts { *days } else { days + 1 };
                self.local_midnight(expiry_day + Days::new(u64::from(after)))
            }
        }
    }

    /// The local natural month of an instant, as `YYYY-MM`.
    pub fn month_of(&self, t: Instant) -> String {
        t.in_zone(self.zone).format("%Y-%m").to_string()
    }

    /// The first and one-past-last instants of a local natural month `YYYY-MM`.
    pub fn month_bounds(&self, month: &str) -> (Instant, Instant) {
        let first = chrono::NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").expect("months are YYYY-MM");
        let next = first.checked_add_months(Months::new(1)).expect("within chrono's range");
        (self.local_midnight(first), self.local_midnight(next))
    }

    /// Rule `bill.push`: when the bill of the month holding `t` is pushed.
    pub fn bill_push_at(&self, t: Instant) -> Instant {
        let (_, next_month) = self.month_bounds(&self.month_of(t));
        let day = next_month.in_zone(self.zone).date_naive();
        self.local_midnight(day + Days::new(u64::from(self.bill_push.day_of_month - 1)))
    }

    /// Rule `reminder.expiry`: the reminders of a plan valid until `valid_until`, at 00:00
    /// local on each of `days_before` days up to the expiry day and `days_after` days after.
    pub fn reminder_schedule(&self, valid_until: Instant) -> Vec<Instant> {
        let expiry_day = valid_until.in_zone(self.zone).date_naive();
        let first = expiry_day - Days::new(u64::from(self.reminders.days_before.saturating_sub(1)));
        let count = self.reminders.days_before + self.reminders.days_after;
        (0..count)
            .map(|i| self.local_midnight(first + Days::new(u64::from(i))))
            .collect()
    }

    /// The first reminder of the series for `valid_until` strictly after `after`.
    pub fn next_reminder(&self, valid_until: Instant, after: Instant) -> Option<Instant> {
        self.reminder_schedule(valid_until).into_iter().find(|t| *t > after)
    }

    /// Rule `app.reclamation`: when an app unusable since `since` is reclaimed.
    pub fn reclamation_at(&self, since: Instant) -> Instant {
        match &self.reclamation {
            Reclamation::MidnightAfterDays { days, .. } => {
                let day = since.in_zone(self.zone).date_naive();
                self.local_midnight(day + Days::new(u64::from(*days)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Instant {
        Instant::parse(text).unwrap()
    }

    #[test]
    fn intl_2025_validity_is_t_to_t_with_month_end_clamped() {
        let book = Rulebook::intl_2025();
        assert_eq!(
            book.validity_end(t("2023-03-01T10:00:00+08:00"), 1),
            t("2023-04-01T10:00:00+08:00")
        );
        assert_eq!(
            book.validity_end(t("2025-01-31T09:00:00+08:00"), 1),
            t("2025-02-28T09:00:00+08:00")
        );
        assert_eq!(
            book.validity_end(t("2025-01-31T09:00:00+08:00"), 3),
            t("2025-04-30T09:00:00+08:00")
        );
        // Local midnight is 16:00 UTC the day before: months are counted in the rulebook's zone.
        assert_eq!(
            book.validity_end(t("2025-01-31T00:30:00+08:00"), 1),
            t("2025-02-28T00:30:00+08:00")
        );
    }

    #[test]
    fn intl_2025_grace_is_24_hours_and_reclamation_is_midnight_day_91() {
        let book = Rulebook::intl_2025();
        assert_eq!(
            book.grace_end(t("2025-04-01T10:00:00+08:00")),
            t("2025-04-02T10:00:00+08:00")
        );
        assert_eq!(
            book.reclamation_at(t("2025-04-02T10:00:00+08:00")),
            t("2025-07-01T00:00:00+08:00")
        );
        assert_eq!(
            book.reclamation_at(t("2025-04-02T23:59:59+08:00")),
            t("2025-07-01T00:00:00+08:00")
        );
    }

    #[test]
    fn shapes_are_data() {
        let text = INTL_2025
            .replace(
                r#""shape": "same_day_next_month""#,
                r#""shape": "day_before_next_month""#,
            )
            .replace(
                r#""shape": "exact_hours",
    "hours": 24,"#,
                r#""shape": "calendar_days",
    "days": 7,
    "expiry_day_counts": false,"#,
            );
        let book = Rulebook::parse(&text, "variant").unwrap();
        assert_eq!(
            book.validity_end(t("2019-03-09T10:10:52+08:00"), 1),
            t("2019-04-08T10:10:52+08:00")
        );
        // Expired on the 8th: days 9..15 are the 7 grace days, suspended at 00:00 on the 16th.
        assert_eq!(
            book.grace_end(t("2019-04-08T10:10:52+08:00")),
            t("2019-04-16T00:00:00+08:00")
        );
    }

    #[test]
    fn a_bad_rulebook_is_refused_with_its_origin() {
        let mut value: serde_json::Value = serde_json::from_str(INTL_2025).unwrap();
        value["payment.order"]["order"] = serde_json::json!(["gift", "gift", "cash", "voucher"]);
        let err = Rulebook::parse(&value.to_string(), "x.json").unwrap_err();
        assert!(err.starts_with("x.json: payment.order"), "{err}");
    }
}
