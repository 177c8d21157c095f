//! One-pass decoding of a JSON hub record (see the parent module for the rules).
//!
//! The pass never fails on a member's *type*: each known member is captured as a [`Token`] or a
//! [`Slot`] that remembers "wrong kind of value", because whether that matters, and which message
//! to name in the error, is only known once `type` has been read, and `type` may come last. The
//! pass fails only on malformed JSON, which serde_json reports with its position.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::payload_of;
use crate::wire::signalr::{
    CompletionOutcome, DecodeError, Headers, HubMessage, Invocation, Payload,
};

/// Decodes one record: the bytes BEFORE its 0x1E terminator (the terminator is not included).
pub fn decode_record(record: &[u8]) -> Result<HubMessage, DecodeError> {
    // Validating UTF-8 once up front is cheap and lets serde_json borrow strings without
    // re-checking them; it also catches invalid bytes inside skipped members.
    let text = std::str::from_utf8(record).map_err(|_| DecodeError::NotUtf8 {
        what: "JSON hub record",
    })?;
    if text.bytes().find(|b| !is_json_whitespace(*b)) != Some(b'{') {
        return Err(not_an_object(text));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let members = (&mut de).deserialize_map(RecordVisitor).map_err(syntax)?;
    // Trailing whitespace is fine, anything else after the object is not.
    de.end().map_err(syntax)?;
    members.into_message()
}

fn is_json_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// The record does not start with `{`: valid JSON of another kind, or not JSON at all.
fn not_an_object(text: &str) -> DecodeError {
    match serde_json::from_str::<IgnoredAny>(text) {
        Ok(_) => DecodeError::WrongType {
            message: "hub",
            field: "<record>",
            expected: "a JSON object",
        },
        Err(error) => syntax(error),
    }
}

fn syntax(error: serde_json::Error) -> DecodeError {
    DecodeError::Syntax {
        encoding: "JSON",
        detail: error.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The pass: members captured shallowly.

/// A scalar member as it appeared, without judging it yet.
enum Token<'de> {
    Null,
    Bool(bool),
    Unsigned(u64),
    Negative(i64),
    Float,
    Str(Cow<'de, str>),
    /// An array or an object (already skipped).
    Compound,
}

/// A structured member (`headers`, `streamIds`, `arguments`): its value, `null`, or the wrong
/// kind of value (already skipped).
enum Slot<T> {
    Null,
    Value(T),
    Wrong,
}

/// Every member the nine message types use; `None` = absent.
#[derive(Default)]
struct Members<'de> {
    message_type: Option<Token<'de>>,
    headers: Option<Slot<Headers>>,
    invocation_id: Option<Token<'de>>,
    target: Option<Token<'de>>,
    arguments: Option<Slot<Vec<Payload>>>,
    stream_ids: Option<Slot<Vec<String>>>,
    item: Option<&'de RawValue>,
    result: Option<&'de RawValue>,
    error: Option<Token<'de>>,
    allow_reconnect: Option<Token<'de>>,
    sequence_id: Option<Token<'de>>,
}

enum Key {
    Type,
    Headers,
    InvocationId,
    Target,
    Arguments,
    StreamIds,
    Item,
    Result,
    Error,
    AllowReconnect,
    SequenceId,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
        Ok(match name {
            "type" => Key::Type,
            "headers" => Key::Headers,
            "invocationId" => Key::InvocationId,
            "target" => Key::Target,
            "arguments" => Key::Arguments,
            "streamIds" => Key::StreamIds,
            "item" => Key::Item,
            "result" => Key::Result,
            "error" => Key::Error,
            "allowReconnect" => Key::AllowReconnect,
            "sequenceId" => Key::SequenceId,
            _ => Key::Other,
        })
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a hub message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
        let mut m = Members::default();
        // A repeated member overwrites the earlier one: last wins.
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => m.message_type = Some(map.next_value()?),
                Key::Headers => m.headers = Some(map.next_value_seed(HeadersSeed)?),
                Key::InvocationId => m.invocation_id = Some(map.next_value()?),
                Key::Target => m.target = Some(map.next_value()?),
                Key::Arguments => m.arguments = Some(map.next_value_seed(ArgumentsSeed)?),
                Key::StreamIds => m.stream_ids = Some(map.next_value_seed(StreamIdsSeed)?),
                Key::Item => m.item = Some(map.next_value()?),
                Key::Result => m.result = Some(map.next_value()?),
                Key::Error => m.error = Some(map.next_value()?),
                Key::AllowReconnect => m.allow_reconnect = Some(map.next_value()?),
                Key::SequenceId => m.sequence_id = Some(map.next_value()?),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(m)
    }
}

impl<'de> Deserialize<'de> for Token<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Token<'de>, D::Error> {
        deserializer.deserialize_any(TokenVisitor)
    }
}

struct TokenVisitor;

impl<'de> Visitor<'de> for TokenVisitor {
    type Value = Token<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Token<'de>, E> {
        Ok(Token::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Token<'de>, E> {
        Ok(Token::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Token<'de>, E> {
        Ok(match u64::try_from(v) {
            Ok(v) => Token::Unsigned(v),
            Err(_) => Token::Negative(v),
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Token<'de>, E> {
        Ok(Token::Unsigned(v))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Token<'de>, E> {
        Ok(Token::Float)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Token<'de>, E> {
        Ok(Token::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Token<'de>, E> {
        Ok(Token::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Token<'de>, E> {
        Ok(Token::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Token<'de>, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Token::Compound)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Token<'de>, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Token::Compound)
    }
}

/// The scalar visits of a [`Slot`] visitor: `null` is [`Slot::Null`], any other scalar is the
/// wrong kind.
macro_rules! scalars_are_wrong {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Slot::Null)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Slot::Wrong)
        }
    };
}

/// `headers`: an object whose values are strings.
struct HeadersSeed;

impl<'de> DeserializeSeed<'de> for HeadersSeed {
    type Value = Slot<Headers>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for HeadersSeed {
    type Value = Slot<Headers>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of strings")
    }

    scalars_are_wrong!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Slot::Wrong)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut headers = Headers::new();
        let mut wrong = false;
        while let Some(key) = map.next_key::<String>()? {
            match map.next_value::<Token<'de>>()? {
                Token::Str(value) => {
                    headers.insert(key, value.into_owned());
                }
                _ => wrong = true,
            }
        }
        Ok(if wrong {
            Slot::Wrong
        } else {
            Slot::Value(headers)
        })
    }
}

/// `streamIds`: an array of strings.
struct StreamIdsSeed;

impl<'de> DeserializeSeed<'de> for StreamIdsSeed {
    type Value = Slot<Vec<String>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StreamIdsSeed {
    type Value = Slot<Vec<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }

    scalars_are_wrong!();

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Slot::Wrong)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut ids = Vec::new();
        let mut wrong = false;
        while let Some(token) = seq.next_element::<Token<'de>>()? {
            match token {
                Token::Str(id) => ids.push(id.into_owned()),
                _ => wrong = true,
            }
        }
        Ok(if wrong { Slot::Wrong } else { Slot::Value(ids) })
    }
}

/// `arguments`: an array of any values, each kept as its raw text.
struct ArgumentsSeed;

impl<'de> DeserializeSeed<'de> for ArgumentsSeed {
    type Value = Slot<Vec<Payload>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ArgumentsSeed {
    type Value = Slot<Vec<Payload>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    scalars_are_wrong!();

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Slot::Wrong)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut arguments = Vec::new();
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            arguments.push(payload_of(raw));
        }
        Ok(Slot::Value(arguments))
    }
}

// ---------------------------------------------------------------------------------------------
// Validation, once the type is known.

const STRING: &str = "a string";

impl Members<'_> {
    fn into_message(self) -> Result<HubMessage, DecodeError> {
        let message_type = message_type(self.message_type)?;
        let message = message_name(message_type);
        Ok(match message_type {
            1 | 4 => {
                let headers = headers(self.headers, message)?;
                let invocation_id = optional_string(self.invocation_id, message, "invocationId")?;
                if message_type == 4 && invocation_id.is_none() {
                    return Err(DecodeError::MissingField {
                        message,
                        field: "invocationId",
                    });
                }
                let invocation = Invocation {
                    headers,
                    invocation_id,
                    target: required_string(self.target, message, "target")?,
                    arguments: arguments(self.arguments, message)?,
                    stream_ids: stream_ids(self.stream_ids, message)?,
                };
                if message_type == 1 {
                    HubMessage::Invocation(invocation)
                } else {
                    HubMessage::StreamInvocation(invocation)
                }
            }
            2 => HubMessage::StreamItem {
                headers: headers(self.headers, message)?,
                invocation_id: required_string(self.invocation_id, message, "invocationId")?,
                item: self.item.map(payload_of).ok_or(DecodeError::MissingField {
                    message,
                    field: "item",
                })?,
            },
            3 => {
                let headers = headers(self.headers, message)?;
                let invocation_id = required_string(self.invocation_id, message, "invocationId")?;
                let error = optional_string(self.error, message, "error")?;
                let outcome = match (error, self.result) {
                    (Some(_), Some(_)) => return Err(DecodeError::ResultAndError),
                    (Some(error), None) => CompletionOutcome::Error(error),
                    (None, Some(result)) => CompletionOutcome::Result(payload_of(result)),
                    (None, None) => CompletionOutcome::Void,
                };
                HubMessage::Completion {
                    headers,
                    invocation_id,
                    outcome,
                }
            }
            5 => HubMessage::CancelInvocation {
                headers: headers(self.headers, message)?,
                invocation_id: required_string(self.invocation_id, message, "invocationId")?,
            },
            6 => HubMessage::Ping,
            7 => HubMessage::Close {
                error: optional_string(self.error, message, "error")?,
                allow_reconnect: optional_bool(self.allow_reconnect, message, "allowReconnect")?,
            },
            8 => HubMessage::Ack {
                sequence_id: sequence_id(self.sequence_id, message)?,
            },
            _ => HubMessage::Sequence {
                sequence_id: sequence_id(self.sequence_id, message)?,
            },
        })
    }
}

/// The `type`, 1 to 9; any other integer is an unknown (ignorable) type.
fn message_type(token: Option<Token<'_>>) -> Result<u8, DecodeError> {
    match token {
        None | Some(Token::Null) => Err(DecodeError::MissingField {
            message: "hub",
            field: "type",
        }),
        Some(Token::Unsigned(value)) => match u8::try_from(value) {
            Ok(known @ 1..=9) => Ok(known),
            _ => match i64::try_from(value) {
                Ok(message_type) => Err(DecodeError::UnknownMessageType { message_type }),
                Err(_) => Err(DecodeError::InvalidValue {
                    message: "hub",
                    field: "type",
                    detail: format!("{value} is out of range"),
                }),
            },
        },
        Some(Token::Negative(message_type)) => {
            Err(DecodeError::UnknownMessageType { message_type })
        }
        Some(_) => Err(DecodeError::WrongType {
            message: "hub",
            field: "type",
            expected: "an integer",
        }),
    }
}

fn message_name(message_type: u8) -> &'static str {
    match message_type {
        1 => "Invocation",
        2 => "StreamItem",
        3 => "Completion",
        4 => "StreamInvocation",
        5 => "CancelInvocation",
        6 => "Ping",
        7 => "Close",
        8 => "Ack",
        _ => "Sequence",
    }
}

fn optional_string(
    token: Option<Token<'_>>,
    message: &'static str,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    match token {
        None | Some(Token::Null) => Ok(None),
        Some(Token::Str(value)) => Ok(Some(value.into_owned())),
        Some(_) => Err(DecodeError::WrongType {
            message,
            field,
            expected: STRING,
        }),
    }
}

fn required_string(
    token: Option<Token<'_>>,
    message: &'static str,
    field: &'static str,
) -> Result<String, DecodeError> {
    optional_string(token, message, field)?.ok_or(DecodeError::MissingField { message, field })
}

fn optional_bool(
    token: Option<Token<'_>>,
    message: &'static str,
    field: &'static str,
) -> Result<Option<bool>, DecodeError> {
    match token {
        None | Some(Token::Null) => Ok(None),
        Some(Token::Bool(value)) => Ok(Some(value)),
        Some(_) => Err(DecodeError::WrongType {
            message,
            field,
            expected: "true or false",
        }),
    }
}

fn sequence_id(token: Option<Token<'_>>, message: &'static str) -> Result<u64, DecodeError> {
    match token {
        None | Some(Token::Null) => Err(DecodeError::MissingField {
            message,
            field: "sequenceId",
        }),
        Some(Token::Unsigned(value)) => Ok(value),
        Some(_) => Err(DecodeError::WrongType {
            message,
            field: "sequenceId",
            expected: "a non-negative integer",
        }),
    }
}

fn headers(slot: Option<Slot<Headers>>, message: &'static str) -> Result<Headers, DecodeError> {
    match slot {
        None | Some(Slot::Null) => Ok(Headers::new()),
        Some(Slot::Value(headers)) => Ok(headers),
        Some(Slot::Wrong) => Err(DecodeError::WrongType {
            message,
            field: "headers",
            expected: "an object whose values are strings",
        }),
    }
}

fn arguments(
    slot: Option<Slot<Vec<Payload>>>,
    message: &'static str,
) -> Result<Vec<Payload>, DecodeError> {
    match slot {
        None | Some(Slot::Null) => Err(DecodeError::MissingField {
            message,
            field: "arguments",
        }),
        Some(Slot::Value(arguments)) => Ok(arguments),
        Some(Slot::Wrong) => Err(DecodeError::WrongType {
            message,
            field: "arguments",
            expected: "an array",
        }),
    }
}

fn stream_ids(
    slot: Option<Slot<Vec<String>>>,
    message: &'static str,
) -> Result<Vec<String>, DecodeError> {
    match slot {
        None | Some(Slot::Null) => Ok(Vec::new()),
        Some(Slot::Value(ids)) => Ok(ids),
        Some(Slot::Wrong) => Err(DecodeError::WrongType {
            message,
            field: "streamIds",
            expected: "an array of strings",
        }),
    }
}
