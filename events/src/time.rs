//! Business time. Stored in UTC with second precision; shown in the rulebook's zone.

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, Timelike, Utc};
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

impl Instant {
    /// `2025-07-01T16:00:00Z`, written with no formatting machinery (every serialized
    /// instant comes through here); `None` for a year outside 0–9999 or a fraction of a
    /// second, which chrono writes.
    fn utc_text(&self) -> Option<[u8; 20]> {
        let (date, time) = (self.0.date_naive(), self.0.time());
        if !(0..=9999).contains(&date.year()) || time.nanosecond() != 0 {
            return None;
        }
        let mut text = *b"0000-00-00T00:00:00Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, date.year() as u32);
        put(5, 2, date.month());
        put(8, 2, date.day());
        put(11, 2, time.hour());
        put(14, 2, time.minute());
        put(17, 2, time.second());
        Some(text)
    }
}

impl fmt::Display for Instant {
    /// RFC 3339 in UTC, whole seconds: `2025-07-01T16:00:00Z`, exactly what
    /// `to_rfc3339_opts(SecondsFormat::Secs, true)` writes, without its allocation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.utc_text() {
            Some(text) => f.write_str(std::str::from_utf8(&text).expect("ASCII digits")),
            None => f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, true)),
        }
    }
}

impl Serialize for Instant {
    /// As [`Display`](fmt::Display) writes it: a string handed over whole rather than
    /// through the formatter (`collect_str`).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.utc_text() {
            Some(text) => s.serialize_str(std::str::from_utf8(&text).expect("ASCII digits")),
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Instant::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_chrono_rfc3339_in_utc() {
        let mut t = DateTime::parse_from_rfc3339("0001-01-01T00:00:00+00:00")
            .unwrap()
            .timestamp();
        let end = DateTime::parse_from_rfc3339("9999-12-31T23:59:59+00:00")
            .unwrap()
            .timestamp();
        let mut step = 1i64;
        while t <= end {
            let utc = DateTime::from_timestamp(t, 0).unwrap();
            let text = utc.to_rfc3339_opts(SecondsFormat::Secs, true);
            assert_eq!(Instant(utc).to_string(), text, "at {t}");
            assert_eq!(
                serde_json::to_string(&Instant(utc)).unwrap(),
                format!("\"{text}\""),
                "at {t}"
            );
            t += step;
            step = step * 7 / 5 + 977;
            if step > 40_000_000 {
                step = 1;
            }
        }
        for text in [
            "2025-07-02T00:00:00+08:00",
            "2024-02-29T23:59:59-05:00",
            "1970-01-01T00:00:00Z",
        ] {
            let i = Instant::parse(text).unwrap();
            assert_eq!(i.to_string(), i.utc().to_rfc3339_opts(SecondsFormat::Secs, true));
        }
    }
}
