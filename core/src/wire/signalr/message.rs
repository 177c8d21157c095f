//! The nine hub message types, independent of their encoding.
//!
//! Arguments, stream items and completion results are kept as an opaque [`Payload`] in the
//! encoding they arrived in (or will leave in): the hub layer never builds a generic value tree,
//! and the contract layer decodes each argument straight into its typed DTO. A payload can be
//! transcoded to the other encoding when a message must cross protocols.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use super::HubProtocol;

/// Message headers: string keys and string values, carried by every message but Ping.
/// A `BTreeMap` so that encoding is deterministic.
pub type Headers = BTreeMap<String, String>;

/// One hub message. `StreamInvocation` reuses [`Invocation`]; its `invocation_id` is always `Some`
/// after decoding (a missing id is a decode error).
#[derive(Clone, Debug, PartialEq)]
pub enum HubMessage {
    /// Type 1: call `target` with `arguments`; without `invocation_id` it is fire-and-forget and
    /// the callee must not reply.
    Invocation(Invocation),
    /// Type 2: one item of a stream.
    StreamItem {
        headers: Headers,
        invocation_id: String,
        item: Payload,
    },
    /// Type 3: the end of an invocation, with a result, an error, or neither (void).
    Completion {
        headers: Headers,
        invocation_id: String,
        outcome: CompletionOutcome,
    },
    /// Type 4: call a streaming method.
    StreamInvocation(Invocation),
    /// Type 5: ask the callee to cancel an invocation.
    CancelInvocation {
        headers: Headers,
        invocation_id: String,
    },
    /// Type 6: keep-alive, no payload.
    Ping,
    /// Type 7: the sender is closing the connection. `allow_reconnect` keeps whether the field was
    /// present so that re-encoding reproduces the same bytes; see [`HubMessage::allows_reconnect`].
    Close {
        error: Option<String>,
        allow_reconnect: Option<bool>,
    },
    /// Type 8: stateful reconnect, the highest sequence id received.
    Ack { sequence_id: u64 },
    /// Type 9: stateful reconnect, the sequence id of the next trackable message.
    Sequence { sequence_id: u64 },
}

impl HubMessage {
    /// The numeric `type` of this message on the wire.
    pub fn message_type(&self) -> u8 {
        match self {
            HubMessage::Invocation(_) => 1,
            HubMessage::StreamItem { .. } => 2,
            HubMessage::Completion { .. } => 3,
            HubMessage::StreamInvocation(_) => 4,
            HubMessage::CancelInvocation { .. } => 5,
            HubMessage::Ping => 6,
            HubMessage::Close { .. } => 7,
            HubMessage::Ack { .. } => 8,
            HubMessage::Sequence { .. } => 9,
        }
    }

    /// Whether a Close message lets the client reconnect automatically (absent means no).
    pub fn allows_reconnect(&self) -> bool {
        matches!(
            self,
            HubMessage::Close {
                allow_reconnect: Some(true),
                ..
            }
        )
    }

    /// Whether stateful reconnect assigns this message a sequence id (types 1 to 5).
    pub fn is_trackable(&self) -> bool {
        (1..=5).contains(&self.message_type())
    }
}

/// An Invocation or StreamInvocation.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Invocation {
    pub headers: Headers,
    /// `None` = non-blocking (fire-and-forget).
    pub invocation_id: Option<String>,
    pub target: String,
    pub arguments: Vec<Payload>,
    pub stream_ids: Vec<String>,
}

/// How an invocation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum CompletionOutcome {
    /// No result (a void method, or the end of a stream).
    Void,
    /// The method's return value.
    Result(Payload),
    /// The invocation failed with this message.
    Error(String),
}

/// One argument, stream item or result, kept in its wire encoding.
///
/// Equality compares the encoded bytes: two payloads are equal when they would be written
/// identically.
#[derive(Clone, PartialEq)]
pub struct Payload(Repr);

#[derive(Clone)]
enum Repr {
    /// Exactly the JSON text of the value (no surrounding whitespace).
    Json(Box<RawValue>),
    /// Exactly one MessagePack value.
    MsgPack(Box<[u8]>),
}

impl PartialEq for Repr {
    fn eq(&self, other: &Repr) -> bool {
        match (self, other) {
            (Repr::Json(a), Repr::Json(b)) => a.get() == b.get(),
            (Repr::MsgPack(a), Repr::MsgPack(b)) => a == b,
            _ => false,
        }
    }
}

/// A payload could not be encoded, decoded or transcoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

impl Payload {
    /// Encodes a value in the given protocol. Structs become maps with their field names as keys
    /// in both encodings (what the .NET contractless MessagePack resolver does).
    pub fn encode<T: Serialize + ?Sized>(
        protocol: HubProtocol,
        value: &T,
    ) -> Result<Payload, PayloadError> {
        match protocol {
            HubProtocol::Json => serde_json::value::to_raw_value(value)
                .map(|raw| Payload(Repr::Json(raw)))
                .map_err(|e| PayloadError(format!("cannot encode as JSON: {e}"))),
            HubProtocol::MessagePack => rmp_serde::to_vec_named(value)
                .map(|bytes| Payload(Repr::MsgPack(bytes.into_boxed_slice())))
                .map_err(|e| PayloadError(format!("cannot encode as MessagePack: {e}"))),
        }
    }

    /// Wraps JSON text that the caller has already validated as exactly one JSON value.
    pub fn from_raw_json(raw: Box<RawValue>) -> Payload {
        Payload(Repr::Json(raw))
    }

    /// Wraps the bytes of exactly one MessagePack value (the caller has delimited it).
    pub fn from_raw_msgpack(bytes: Vec<u8>) -> Payload {
        Payload(Repr::MsgPack(bytes.into_boxed_slice()))
    }

    /// The encoding this payload is held in.
    pub fn protocol(&self) -> HubProtocol {
        match &self.0 {
            Repr::Json(_) => HubProtocol::Json,
            Repr::MsgPack(_) => HubProtocol::MessagePack,
        }
    }

    /// The JSON text, when held as JSON.
    pub fn as_json(&self) -> Option<&str> {
        match &self.0 {
            Repr::Json(raw) => Some(raw.get()),
            Repr::MsgPack(_) => None,
        }
    }

    /// The MessagePack bytes, when held as MessagePack.
    pub fn as_msgpack(&self) -> Option<&[u8]> {
        match &self.0 {
            Repr::Json(_) => None,
            Repr::MsgPack(bytes) => Some(bytes),
        }
    }

    /// Decodes the payload into a typed value. Unknown fields are ignored; the error names the
    /// field and what was expected, as serde reports it.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        match &self.0 {
            Repr::Json(raw) => {
                serde_json::from_str(raw.get()).map_err(|e| PayloadError(e.to_string()))
            }
            Repr::MsgPack(bytes) => {
                rmp_serde::from_slice(bytes).map_err(|e| PayloadError(e.to_string()))
            }
        }
    }

    /// The same value in the given encoding. MessagePack `bin` values become arrays of numbers in
    /// JSON, and extension values are refused: the node contract uses neither.
    pub fn transcode(&self, protocol: HubProtocol) -> Result<Payload, PayloadError> {
        if self.protocol() == protocol {
            return Ok(self.clone());
        }
        let value: serde_json::Value = self.decode()?;
        Payload::encode(protocol, &value)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Json(raw) => write!(f, "Json({})", raw.get()),
            Repr::MsgPack(bytes) => {
                write!(f, "MsgPack(")?;
                for (i, b) in bytes.iter().enumerate() {
                    if i > 0 {
                        write!(f, " ")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                write!(f, ")")
            }
        }
    }
}
