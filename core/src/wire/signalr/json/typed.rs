//! The one-pass fast path for invocations whose argument type is known from their target.
//!
//! [`super::decode_record`] keeps arguments as raw JSON, so a receiver that wants a typed DTO
//! reads the argument twice: once to find where it ends, once into the DTO. For the messages that
//! dominate traffic (heartbeats, results, commands) [`decode_invocation`] decodes the argument
//! straight into its type while the record is read, which is possible whenever `target` precedes
//! `arguments` (nodelink and the .NET peers write them in that order).
//!
//! It is strictly a fast path: it answers `None` for anything outside its narrow shape (another
//! message type, headers or stream ids, `arguments` before `target`, a repeated member, a target
//! without a fast path, or any error at all), and the caller then takes the general path, which
//! reports errors precisely. When it answers `Some`, the result is exactly what the general path
//! followed by the contract's `from_invocation` would give (a property test holds it to that).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A set of hub methods whose single argument decodes straight into `Self`.
pub trait TypedInvocation: Sized {
    /// Whether `target` (as received, any case) has a fast path.
    fn has_fast_path(target: &str) -> bool;

    /// Decodes the argument of `target` from `deserializer`; only called when
    /// [`TypedInvocation::has_fast_path`] said yes.
    fn decode_argument<'de, D: Deserializer<'de>>(
        target: &str,
        deserializer: D,
    ) -> Result<Self, D::Error>;
}

/// An Invocation decoded in one pass: its id (`None` = fire-and-forget) and its typed call.
#[derive(Clone, Debug, PartialEq)]
pub struct TypedCall<C> {
    pub invocation_id: Option<String>,
    pub call: C,
}

/// Decodes `record` (without its 0x1E) as an Invocation of one of `C`'s fast-path methods, or
/// answers `None`: then use [`super::decode_record`].
pub fn decode_invocation<C: TypedInvocation>(record: &[u8]) -> Option<TypedCall<C>> {
    // The general path rejects invalid UTF-8 anywhere, skipped members included; so must this.
    let text = std::str::from_utf8(record).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let call = (&mut de)
        .deserialize_map(RecordVisitor::<C>(PhantomData))
        .ok()?;
    de.end().ok()?;
    Some(call)
}

/// Any way out of the fast path: the general path will say what, if anything, is wrong.
fn leave<E: de::Error>() -> E {
    E::custom("outside the typed fast path")
}

enum Key {
    Type,
    InvocationId,
    Target,
    Arguments,
    /// Members that change what an Invocation means (`headers`, `streamIds`).
    Unsupported,
    /// Members an Invocation ignores, known or not.
    Ignored,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(match name {
                    "type" => Key::Type,
                    "invocationId" => Key::InvocationId,
                    "target" => Key::Target,
                    "arguments" => Key::Arguments,
                    "headers" | "streamIds" => Key::Unsupported,
                    _ => Key::Ignored,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct RecordVisitor<C>(PhantomData<C>);

impl<'de, C: TypedInvocation> Visitor<'de> for RecordVisitor<C> {
    type Value = TypedCall<C>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an Invocation record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TypedCall<C>, A::Error> {
        let mut message_type: Option<u64> = None;
        let mut invocation_id: Option<Option<String>> = None;
        let mut target: Option<&'de str> = None;
        let mut call: Option<C> = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                // A repeated member would make "last wins" of the general path disagree with an
                // argument already decoded for the first target: leave.
                Key::Type if message_type.is_none() => message_type = Some(map.next_value()?),
                Key::InvocationId if invocation_id.is_none() => {
                    invocation_id = Some(map.next_value()?)
                }
                Key::Target if target.is_none() => {
                    // An escaped target cannot be borrowed and fails here: leave.
                    let name: &'de str = map.next_value()?;
                    if !C::has_fast_path(name) {
                        return Err(leave());
                    }
                    target = Some(name);
                }
                Key::Arguments if call.is_none() => {
                    let target = target.ok_or_else(leave)?;
                    call = Some(map.next_value_seed(ArgumentsSeed::<C> {
                        target,
                        marker: PhantomData,
                    })?);
                }
                Key::Ignored => {
                    map.next_value::<IgnoredAny>()?;
                }
                _ => return Err(leave()),
            }
        }
        match (message_type, call) {
            (Some(1), Some(call)) => Ok(TypedCall {
                invocation_id: invocation_id.flatten(),
                call,
            }),
            _ => Err(leave()),
        }
    }
}

/// `arguments`: exactly one element, decoded as `target`'s argument.
struct ArgumentsSeed<'t, C> {
    target: &'t str,
    marker: PhantomData<C>,
}

impl<'de, C: TypedInvocation> DeserializeSeed<'de> for ArgumentsSeed<'_, C> {
    type Value = C;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<C, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, C: TypedInvocation> Visitor<'de> for ArgumentsSeed<'_, C> {
    type Value = C;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of one argument")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<C, A::Error> {
        let call = seq
            .next_element_seed(ArgumentSeed::<C> {
                target: self.target,
                marker: PhantomData,
            })?
            .ok_or_else(leave)?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(leave());
        }
        Ok(call)
    }
}

struct ArgumentSeed<'t, C> {
    target: &'t str,
    marker: PhantomData<C>,
}

impl<'de, C: TypedInvocation> DeserializeSeed<'de> for ArgumentSeed<'_, C> {
    type Value = C;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<C, D::Error> {
        C::decode_argument(self.target, deserializer)
    }
}
