//! Money: a `rust_decimal` amount at a fixed scale of two places, with its currency.
//!
//! Serialized as one string, `"399.00 USD"`, so an amount can never travel without
//! its currency and the stored bytes never depend on a float formatter.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every stored amount has exactly this many decimal places.
pub const MONEY_SCALE: u32 = 2;

/// Rule `money.round`: half away from zero, to the cent (rules.md §9).
/// `Decimal::round_dp` rounds half to even (7.545 → 7.54); the seeds' money does not.
pub fn round_cents(amount: Decimal) -> Decimal {
    let mut rounded = amount.round_dp_with_strategy(MONEY_SCALE, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(MONEY_SCALE);
    rounded
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    Usd,
    Cny,
}

impl Currency {
    pub fn as_str(self) -> &'static str {
        match self {
            Currency::Usd => "USD",
            Currency::Cny => "CNY",
        }
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "USD" => Ok(Currency::Usd),
            "CNY" => Ok(Currency::Cny),
            other => Err(format!("unknown currency {other:?} (expected USD or CNY)")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Panics if `amount` has more than two decimal places: callers round first, by a named rule.
    pub fn new(amount: Decimal, currency: Currency) -> Money {
        assert!(
            amount.scale() <= MONEY_SCALE,
            "unrounded money {amount}: round by a named rule first"
        );
        let mut amount = amount;
        amount.rescale(MONEY_SCALE);
        Money { amount, currency }
    }

    pub fn zero(currency: Currency) -> Money {
        Money::new(Decimal::ZERO, currency)
    }

    pub fn amount(self) -> Decimal {
        self.amount
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn is_negative(self) -> bool {
        self.amount.is_sign_negative() && !self.amount.is_zero()
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        (self.currency == other.currency).then(|| Money::new(self.amount + other.amount, self.currency))
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        (self.currency == other.currency).then(|| Money::new(self.amount - other.amount, self.currency))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency.as_str())
    }
}

/// Parses a non-negative decimal amount with at most two places, as written in inputs
/// (`"500"`, `"500.5"`, `"500.50"`). Rejects signs other than none, exponents and fractions of a cent.
pub fn parse_amount(text: &str) -> Result<Decimal, String> {
    let well_formed = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.chars().filter(|&c| c == '.').count() <= 1
        && !text.starts_with('.')
        && !text.ends_with('.');
    if text.starts_with('-') {
        return Err(format!(
            "amount {text:?} is negative; amounts are written as positive decimals"
        ));
    }
    if !well_formed {
        return Err(format!("amount {text:?} is not a decimal number like \"500.00\""));
    }
    let value = Decimal::from_str(text).map_err(|e| format!("amount {text:?} is not a decimal number: {e}"))?;
    if value.scale() > MONEY_SCALE {
        return Err(format!(
            "amount {text:?} has fractions of a cent; at most {MONEY_SCALE} decimal places"
        ));
    }
    Ok(value)
}

impl FromStr for Money {
    type Err = String;
    fn from_str(s: &str) -> Result<Money, String> {
        let (amount, currency) = s
            .split_once(' ')
            .ok_or_else(|| format!("money {s:?} must be written as \"<amount> <currency>\""))?;
        let (negative, digits) = match amount.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, amount),
        };
        let value = parse_amount(digits)?;
        Ok(Money::new(if negative { -value } else { value }, currency.parse()?))
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A positive amount as written in an input: a decimal string in the rulebook's currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Amount(pub Decimal);

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Amount, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal amount written as a string, like \"500.00\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Amount, E> {
                parse_amount(v).map(Amount).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Amount, E> {
                Err(E::custom(format!(
                    "amount {v} is a JSON number; write it as a string (\"{v}\") so no float rounding can touch it"
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Amount, E> {
                Err(E::custom(format!(
                    "amount {v} is a JSON number; write it as a string (\"{v}.00\")"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Amount, E> {
                Err(E::custom(format!(
                    "amount {v} is negative and a JSON number; amounts are positive decimal strings"
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_away_from_zero_not_to_even() {
        let d = Decimal::from_str("7.545").unwrap();
        assert_eq!(d.round_dp(2).to_string(), "7.54", "the trap this rule exists for");
        assert_eq!(round_cents(d).to_string(), "7.55");
        assert_eq!(round_cents(Decimal::from_str("-7.545").unwrap()).to_string(), "-7.55");
        assert_eq!(round_cents(Decimal::from(3)).to_string(), "3.00");
    }

    #[test]
    fn money_round_trips_as_one_string_at_fixed_scale() {
        let m = Money::new(Decimal::from(399), Currency::Usd);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"399.00 USD\"");
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        let neg: Money = "-1.50 USD".parse().unwrap();
        assert!(neg.is_negative());
        assert_eq!(neg.to_string(), "-1.50 USD");
    }

    #[test]
    fn input_amounts_are_strict() {
        assert!(parse_amount("500").is_ok());
        assert!(parse_amount("500.25").is_ok());
        for bad in ["-5", "5.001", "1e3", "abc", "", "5.", ".5", "1.2.3", " 5"] {
            assert!(parse_amount(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(serde_json::from_str::<Amount>("500.0").is_err());
    }
}

/// A unit price: like [`Money`] but at any scale (0.015 USD per MAU), because it is
/// multiplied before it is rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Price {
    pub amount: Decimal,
    pub currency: Currency,
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount.normalize(), self.currency.as_str())
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Price, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let (amount, currency) = text
            .split_once(' ')
            .ok_or_else(|| serde::de::Error::custom(format!("price {text:?} must be \"<amount> <currency>\"")))?;
        Ok(Price {
            amount: Decimal::from_str(amount).map_err(serde::de::Error::custom)?,
            currency: currency.parse().map_err(serde::de::Error::custom)?,
        })
    }
}

/// Amounts by money kind: an account's balances, how a charge was taken, how a refund
/// was returned. One shape for all three, so they can be added and compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KindAmounts {
    pub cash: Money,
    pub income_transfer: Money,
    pub gift: Money,
    pub voucher: Money,
}

impl KindAmounts {
    pub fn zero(currency: Currency) -> KindAmounts {
        let zero = Money::zero(currency);
        KindAmounts {
            cash: zero,
            income_transfer: zero,
            gift: zero,
            voucher: zero,
        }
    }

    pub fn get(&self, kind: crate::MoneyKind) -> Money {
        use crate::MoneyKind::*;
        match kind {
            Cash => self.cash,
            IncomeTransfer => self.income_transfer,
            Gift => self.gift,
            Voucher => self.voucher,
        }
    }

    pub fn get_mut(&mut self, kind: crate::MoneyKind) -> &mut Money {
        use crate::MoneyKind::*;
        match kind {
            Cash => &mut self.cash,
            IncomeTransfer => &mut self.income_transfer,
            Gift => &mut self.gift,
            Voucher => &mut self.voucher,
        }
    }

    /// The sum over every kind.
    pub fn total(&self) -> Money {
        crate::MoneyKind::ALL
            .iter()
            .fold(Money::zero(self.cash.currency()), |sum, &k| {
                sum.checked_add(self.get(k)).expect("one currency")
            })
    }

    /// Adds `other` kind by kind; `None` on a currency mismatch.
    pub fn checked_add(&self, other: &KindAmounts) -> Option<KindAmounts> {
        let mut out = *self;
        for kind in crate::MoneyKind::ALL {
            *out.get_mut(kind) = self.get(kind).checked_add(other.get(kind))?;
        }
        Some(out)
    }

    pub fn checked_sub(&self, other: &KindAmounts) -> Option<KindAmounts> {
        let mut out = *self;
        for kind in crate::MoneyKind::ALL {
            *out.get_mut(kind) = self.get(kind).checked_sub(other.get(kind))?;
        }
        Some(out)
    }
}
