//! Business time. Stored in UTC with second precision; shown in the rulebook's zone.

use std::fmt;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant of business time. Never read from a wall clock inside the rules: it comes
/// from an input or from a deadline stored in an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(DateTime<Utc>);

impl Instant {
    pub fn from_utc(t: DateTime<Utc>) -> Instant {
        Instant(t)
    }
    pub fn utc(self) -> DateTime<Utc> {
        self.0
    }
    pub fn in_zone(self, zone: FixedOffset) -> DateTime<FixedOffset> {
        self.0.with_timezone(&zone)
    }
    /// `2025-04-02 10:00 +08:00`: how support and the CLI show an instant.
    pub fn display_in(self, zone: FixedOffset) -> String {
        self.in_zone(zone).format("%Y-%m-%d %H:%M:%S %:z").to_string()
    }
    /// Parses RFC 3339 with an explicit offset, e.g. `2025-07-02T00:00:00+08:00`.
    pub fn parse(text: &str) -> Result<Instant, String> {
        let t = DateTime::parse_from_rfc3339(text).map_err(|e| {
            format!("timestamp {text:?} is not RFC 3339 with an offset (like 2025-07-02T00:00:00+08:00): {e}")
        })?;
        if t.timestamp_subsec_nanos() != 0 {
            return Err(format!(
                "timestamp {text:?} has fractions of a second; the ledger keeps whole seconds"
            ));
        }
        Ok(Instant(t.with_timezone(&Utc)))
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

impl Serialize for Instant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Instant::parse(&text).map_err(serde::de::Error::custom)
    }
}
