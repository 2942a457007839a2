//! The envelope: what the log stores around each event body, its canonical bytes and
//! the hash chain over them.
//!
//! The stored bytes are the canonical JSON of [`Envelope`] (fields in declaration order,
//! no whitespace). They are hashed as stored and never re-encoded: an old event read
//! through an upcaster keeps its original bytes and hash. No wall-clock field is inside.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::EventBody;
use crate::ids::{Actor, Key, StreamId};
use crate::time::Instant;

/// Schema of the event bodies written by this build. Raise it, and add an upcaster to
/// [`UPCASTERS`], whenever a body's shape changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Upcasters from schema `n` to `n + 1`, applied in order on read. None yet: schema 1 is
/// the first one this ledger ever wrote.
pub const UPCASTERS: &[Upcaster] = &[];

/// Turns the JSON of an event (`{"type":…,"data":…}`) at schema `from` into schema `from + 1`.
pub struct Upcaster {
    pub from: u32,
    pub upcast: fn(&mut serde_json::Value),
}

/// Namespace of derived event ids (UUID v5 over the input key and the event's index).
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c65_6467_6572_2d63_6861_742d_6c65_6467);

/// A SHA-256 link of the hash chain.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The `prev` of event 1.
    pub const GENESIS: Hash = Hash([0; 32]);

    pub fn of(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }

    pub fn parse(text: &str) -> Result<Hash, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|e| format!("hash {text:?} is not 64 hexadecimal digits: {e}"))?;
        Ok(Hash(out))
    }

    /// The 64 lowercase hexadecimal digits, written into `out` (no allocation: every
    /// sealed event serializes one).
    fn hex<'a>(&self, out: &'a mut [u8; 64]) -> &'a str {
        hex::encode_to_slice(self.0, out).expect("64 digits for 32 bytes");
        std::str::from_utf8(out).expect("hexadecimal digits are ASCII")
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex(&mut [0; 64]))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.hex(&mut [0; 64]))
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The id of the `index`-th event decided for the input (or deadline) with this key.
/// Derived, never random: the same input always yields the same ids.
pub fn event_id(key: &Key, index: usize) -> Uuid {
    // The name is "{key}#{index}", built without the formatting machinery (one per event).
    let mut name = Vec::with_capacity(key.as_str().len() + 21);
    name.extend_from_slice(key.as_str().as_bytes());
    name.push(b'#');
    name.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

/// What decided an event. Inputs' own records have neither rule nor cause.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decision {
    /// The rule id, e.g. `expiry.grace`: the rulebook's own `&'static str` when decided,
    /// owned when read back (no allocation an event when sealing).
    pub rule: Cow<'static, str>,
    /// The rulebook id and version, e.g. `intl-2025@1`: shared by every event a batch
    /// decides.
    pub rulebook: Arc<str>,
}

/// An event decided but not yet in the log: everything but its position in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub id: Uuid,
    pub stream: StreamId,
    pub version: u64,
    pub occurred_at: Instant,
    pub actor: Actor,
    pub key: Key,
    /// The event this one follows from: the `input.recorded` of its input, or the event
    /// that set the deadline that fired.
    pub cause: Option<Uuid>,
    pub decision: Option<Decision>,
    pub body: EventBody,
}

/// One event as stored. Field order is the canonical byte order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Envelope {
    /// Global position, gapless from 1.
    pub seq: u64,
    /// Hash of the stored bytes of event `seq - 1` ([`Hash::GENESIS`] for event 1).
    pub prev: Hash,
    pub id: Uuid,
    pub stream: StreamId,
    /// Position in its stream, gapless from 1.
    pub version: u64,
    pub occurred_at: Instant,
    pub actor: Actor,
    pub key: Key,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    pub schema: u32,
    pub event: EventBody,
}

/// An event with its canonical bytes and its link of the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedEvent {
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
    pub hash: Hash,
}

/// Puts a decided event at position `seq` after the event whose hash is `prev`.
pub fn seal(seq: u64, prev: Hash, new: NewEvent) -> SealedEvent {
    assert!(seq >= 1, "positions start at 1");
    assert!(new.version >= 1, "stream versions start at 1");
    let envelope = Envelope {
        seq,
        prev,
        id: new.id,
        stream: new.stream,
        version: new.version,
        occurred_at: new.occurred_at,
        actor: new.actor,
        key: new.key,
        cause: new.cause,
        decision: new.decision,
        schema: SCHEMA_VERSION,
        event: new.body,
    };
    // Serialized into a buffer kept by the thread, then copied at its exact size: one
    // allocation an event, where `to_vec` grows its vector three or four times.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
    }
    let bytes = SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        serde_json::to_writer(&mut *scratch, &envelope).expect("envelopes always serialize");
        scratch.clone()
    });
    let hash = Hash::of(&bytes);
    SealedEvent { envelope, bytes, hash }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct DecodeError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredEnvelope<'a> {
    seq: u64,
    prev: Hash,
    id: Uuid,
    stream: StreamId,
    version: u64,
    occurred_at: Instant,
    actor: Actor,
    key: Key,
    #[serde(default)]
    cause: Option<Uuid>,
    #[serde(default)]
    decision: Option<Decision>,
    schema: u32,
    #[serde(borrow)]
    event: &'a RawValue,
}

/// Reads stored bytes back into an envelope, upcasting old schemas. The bytes are not
/// re-encoded: hash them, not the result.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    decode_with(bytes, UPCASTERS)
}

pub fn decode_with(bytes: &[u8], upcasters: &[Upcaster]) -> Result<Envelope, DecodeError> {
    let stored: StoredEnvelope =
        serde_json::from_slice(bytes).map_err(|e| DecodeError(format!("not an event envelope: {e}")))?;
    if stored.schema > SCHEMA_VERSION {
        return Err(DecodeError(format!(
            "event schema {} is newer than this build's {SCHEMA_VERSION}: upgrade chat-ledger",
            stored.schema
        )));
    }
    let event: EventBody = if stored.schema == SCHEMA_VERSION {
        serde_json::from_str(stored.event.get())
    } else {
        let mut value: serde_json::Value =
            serde_json::from_str(stored.event.get()).map_err(|e| DecodeError(format!("event body: {e}")))?;
        for schema in stored.schema..SCHEMA_VERSION {
            let step = upcasters
                .iter()
                .find(|u| u.from == schema)
                .ok_or_else(|| DecodeError(format!("no upcaster from event schema {schema}")))?;
            (step.upcast)(&mut value);
        }
        serde_json::from_value(value)
    }
    .map_err(|e| DecodeError(format!("event body: {e}")))?;
    Ok(Envelope {
        seq: stored.seq,
        prev: stored.prev,
        id: stored.id,
        stream: stored.stream,
        version: stored.version,
        occurred_at: stored.occurred_at,
        actor: stored.actor,
        key: stored.key,
        cause: stored.cause,
        decision: stored.decision,
        schema: stored.schema,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventBody;
    use crate::ids::AppId;

    fn sample(key: &str) -> NewEvent {
        let key = Key::new(key).unwrap();
        NewEvent {
            id: event_id(&key, 0),
            stream: StreamId::app(AppId(1400000001)),
            version: 1,
            occurred_at: Instant::parse("2025-03-01T10:00:00+08:00").unwrap(),
            actor: Actor::Customer,
            key,
            cause: None,
            decision: Some(Decision {
                rule: "auto_renew.switch".into(),
                rulebook: "intl-2025@1".into(),
            }),
            body: EventBody::AutoRenewSwitched {
                app: AppId(1400000001),
                on: true,
            },
        }
    }

    #[test]
    fn sealed_bytes_decode_to_the_same_envelope_and_ids_are_derived() {
        let sealed = seal(1, Hash::GENESIS, sample("k1"));
        assert_eq!(decode(&sealed.bytes).unwrap(), sealed.envelope);
        assert_eq!(sealed.hash, Hash::of(&sealed.bytes));
        assert_eq!(
            seal(1, Hash::GENESIS, sample("k1")).bytes,
            sealed.bytes,
            "sealing is deterministic"
        );
        assert_ne!(
            event_id(&Key::new("k1").unwrap(), 0),
            event_id(&Key::new("k1").unwrap(), 1)
        );
        let text = String::from_utf8(sealed.bytes).unwrap();
        assert!(text.starts_with(r#"{"seq":1,"prev":"0000"#), "{text}");
        assert!(
            text.contains(r#""occurred_at":"2025-03-01T02:00:00Z""#),
            "stored in UTC: {text}"
        );
    }

    #[test]
    fn old_schemas_are_upcast_on_read_without_touching_the_bytes() {
        // A hypothetical schema 0 that called the flag "enabled".
        fn rename_enabled(v: &mut serde_json::Value) {
            let data = v["data"].as_object_mut().unwrap();
            let on = data.remove("enabled").unwrap();
            data.insert("on".into(), on);
        }
        let sealed = seal(1, Hash::GENESIS, sample("k1"));
        let old = String::from_utf8(sealed.bytes.clone())
            .unwrap()
            .replace(r#""on":true"#, r#""enabled":true"#)
            .replace(r#""schema":1"#, r#""schema":0"#);
        assert!(decode(old.as_bytes()).is_err(), "no production upcaster from 0 exists");
        let upcasters = [Upcaster {
            from: 0,
            upcast: rename_enabled,
        }];
        let read = decode_with(old.as_bytes(), &upcasters).unwrap();
        assert_eq!(read.event, sealed.envelope.event);
        assert_eq!(read.schema, 0, "the envelope still says what was stored");
    }

    #[test]
    fn newer_schemas_are_refused_with_advice() {
        let sealed = seal(1, Hash::GENESIS, sample("k1"));
        let newer = String::from_utf8(sealed.bytes)
            .unwrap()
            .replace(r#""schema":1"#, r#""schema":9"#);
        let err = decode(newer.as_bytes()).unwrap_err();
        assert!(err.0.contains("upgrade chat-ledger"), "{err}");
    }
}
