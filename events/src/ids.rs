//! Identifiers. Each is validated on the way in, so a bad id is refused at the input's
//! line rather than discovered inside a projection.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest account id or idempotency key accepted, in bytes.
pub const ID_MAX_BYTES: usize = 128;

fn check_token(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > ID_MAX_BYTES {
        return Err(format!(
            "{what} must be 1 to {ID_MAX_BYTES} bytes, got {} bytes",
            text.len()
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@')))
    {
        return Err(format!(
            "{what} {text:?} contains {c:?}; use letters, digits and - _ . : / @"
        ));
    }
    Ok(())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn new(text: impl Into<String>) -> Result<Self, String> {
                let text = text.into();
                check_token($what, &text)?;
                Ok($name(text))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Maps keyed by the id can be searched by its text (ordering and equality are the
        /// text's), without building an id.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::new(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

token_id!(
    /// A cloud account (腾讯云账户): owns apps and money.
    AccountId,
    "account id"
);
token_id!(
    /// The caller's idempotency key: one input, one key, forever.
    Key,
    "key"
);

/// An app's SDKAppID, the unit every plan is bought for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(pub u64);

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A stream: the events of one account, one app, or one of the ledger's own streams.
/// Spelled `account:<id>`, `app:<SDKAppID>`, `inputs`, `clock`, `ledger`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub const INPUTS: &'static str = "inputs";
    pub const CLOCK: &'static str = "clock";
    pub const LEDGER: &'static str = "ledger";

    pub fn account(id: &AccountId) -> StreamId {
        StreamId(format!("account:{id}"))
    }
    pub fn app(id: AppId) -> StreamId {
        StreamId(format!("app:{id}"))
    }
    pub fn named(name: &'static str) -> StreamId {
        StreamId(name.to_owned())
    }
    /// Parses what a user types after `--stream`.
    pub fn parse(text: &str) -> Result<StreamId, String> {
        match text.split_once(':') {
            Some(("account", id)) => Ok(StreamId::account(&AccountId::new(id)?)),
            Some(("app", id)) => id
                .parse::<u64>()
                .map(|n| StreamId::app(AppId(n)))
                .map_err(|_| format!("stream {text:?}: an app stream is app:<SDKAppID>, a number")),
            None if [Self::INPUTS, Self::CLOCK, Self::LEDGER].contains(&text) => Ok(StreamId(text.to_owned())),
            _ => Err(format!(
                "unknown stream {text:?}: use account:<id>, app:<SDKAppID>, inputs, clock or ledger"
            )),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The app whose stream this is, if it is an app's.
    pub fn app_id(&self) -> Option<AppId> {
        self.0.strip_prefix("app:")?.parse().ok().map(AppId)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who caused an input: the customer, a named support agent, or the system itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    Customer,
    Support(String),
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Customer => f.write_str("customer"),
            Actor::Support(who) => write!(f, "support:{who}"),
            Actor::System => f.write_str("system"),
        }
    }
}

impl std::str::FromStr for Actor {
    type Err = String;
    fn from_str(s: &str) -> Result<Actor, String> {
        match s.split_once(':') {
            None if s == "customer" => Ok(Actor::Customer),
            None if s == "system" => Ok(Actor::System),
            Some(("support", who)) if !who.is_empty() => {
                check_token("support agent", who)?;
                Ok(Actor::Support(who.to_owned()))
            }
            _ => Err(format!(
                "actor {s:?} is not one of \"customer\", \"support:<name>\", \"system\""
            )),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Actor, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}
