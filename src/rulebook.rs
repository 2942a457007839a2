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
        match &self.grace {
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
        let err = Rulebook::parse(&INTL_2025.replace("\"cash\"]", "\"gift\"]"), "x.json").unwrap_err();
        assert!(err.starts_with("x.json: payment.order"), "{err}");
    }
}
