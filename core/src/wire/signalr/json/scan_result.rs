//! Decoding a `CommandResult` invocation in one pass of its own: the gateway's hottest record
//! after the heartbeat.
//!
//! serde's general path (the typed fast path included) spends most of a result's decoding on the
//! envelope and the member names, not on the values. [`decode_command_result`] matches the
//! envelope exactly as nodes write it (`{"type":1,"invocationId":"…","target":"CommandResult",
//! "arguments":[…]}`, no whitespace) and reads the argument's members itself; only `result`, an
//! arbitrary JSON value, is decoded by serde_json (from its own text, so the `Value` is the one the
//! general path builds).
//!
//! It is strictly conservative, like [`super::scan_heartbeat`]: it answers `Some` only for
//! records that the general path ([`super::decode_record`], then the contract's
//! `from_invocation`) decodes as the same `CommandResult`, and `None` for anything else or
//! anything unusual (another envelope or member order, whitespace in the envelope, an escape in a
//! string, an `error` object, a repeated or missing member, a number with a sign, a fraction, an
//! exponent or 20 digits, a deeply nested `result`). The caller then takes the general path.

use serde_json::Value;

use super::scan::{Number, Scanner};
use super::typed::TypedCall;
use crate::wire::dto::CommandResultDto;

/// The envelope up to the invocation id's text.
const HEAD: &[u8] = b"{\"type\":1,\"invocationId\":\"";
/// The envelope from the invocation id's closing quote to the argument.
const MIDDLE: &[u8] = b",\"target\":\"CommandResult\",\"arguments\":[";

/// A `result` with more brackets than this (its nesting is at most that) goes to the general
/// path, far below serde_json's recursion limit wherever the value sits in the record.
const MAX_BRACKETS: usize = 64;

/// The argument's members, as nodes write them (serde's order), each with its `:`.
const MEMBERS: [(&[u8], Member); 8] = [
    (b"\"commandId\":", Member::CommandId),
    (b"\"ok\":", Member::Ok),
    (b"\"result\":", Member::Result),
    (b"\"error\":", Member::Error),
    (b"\"durationMs\":", Member::DurationMs),
    (b"\"partIndex\":", Member::PartIndex),
    (b"\"isLast\":", Member::IsLast),
    (b"\"protocolVersion\":", Member::ProtocolVersion),
];

/// A `CommandResultDto` member, or another one (skipped).
#[derive(Clone, Copy)]
enum Member {
    CommandId,
    Ok,
    Result,
    Error,
    DurationMs,
    PartIndex,
    IsLast,
    ProtocolVersion,
    Other,
}

/// Decodes `record` (without its 0x1E) as a `CommandResult` invocation written the way nodes
/// write it, or answers `None`: then use the general path.
pub fn decode_command_result(record: &[u8]) -> Option<TypedCall<CommandResultDto>> {
    if !record.starts_with(HEAD) {
        return None;
    }
    // The general path rejects invalid UTF-8 anywhere, skipped members included; so must this.
    let text = std::str::from_utf8(record).ok()?;
    decode_command_result_text(text)
}

/// [`decode_command_result`] of a record already known as text (no UTF-8 check to repeat).
pub fn decode_command_result_text(text: &str) -> Option<TypedCall<CommandResultDto>> {
    let record = text.as_bytes();
    if !record.starts_with(HEAD) {
        return None;
    }
    let mut s = Scanner {
        bytes: record,
        at: HEAD.len() - 1,
        last: 0,
    };
    let invocation_id = string(&mut s, text)?;
    if !s.bytes[s.at..].starts_with(MIDDLE) {
        return None;
    }
    s.at += MIDDLE.len();
    s.ws();
    let result = argument(&mut s, text)?;
    s.ws();
    if &s.bytes[s.at..] != b"]}" {
        return None;
    }
    Some(TypedCall {
        invocation_id: Some(invocation_id.to_owned()),
        call: result,
    })
}

/// The argument: a `CommandResultDto` object with `commandId` and `ok`, each member once.
fn argument(s: &mut Scanner<'_>, text: &str) -> Option<CommandResultDto> {
    let mut command_id: Option<&str> = None;
    let mut ok: Option<bool> = None;
    let mut result: Option<Option<Value>> = None;
    let mut duration_ms: Option<Option<u64>> = None;
    let mut part_index: Option<Option<u32>> = None;
    let mut is_last: Option<Option<bool>> = None;
    let mut protocol_version: Option<Option<&str>> = None;
    let mut error: Option<()> = None;
    s.expect(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        return None;
    }
    let mut next = 0;
    loop {
        let member = match MEMBERS[next..]
            .iter()
            .position(|(literal, _)| s.bytes[s.at..].starts_with(literal))
        {
            // A name spelled as nodes write it, with its `:` (no escape: exactly that name).
            Some(skipped) => {
                let (literal, member) = MEMBERS[next + skipped];
                s.at += literal.len();
                next += skipped + 1;
                member
            }
            None => {
                let key = s.string()?;
                s.ws();
                s.expect(b':')?;
                MEMBERS
                    .iter()
                    .find(|(literal, _)| &literal[1..literal.len() - 2] == key)
                    .map_or(Member::Other, |(_, member)| *member)
            }
        };
        s.ws();
        // A member seen twice: serde refuses it, so must the general path.
        match member {
            Member::CommandId => once(&mut command_id, string(s, text)?)?,
            Member::Ok => once(&mut ok, boolean(s)?)?,
            Member::Result => once(&mut result, value(s, text)?)?,
            // Failures are rare: the general path decodes their `error` object.
            Member::Error => once(&mut error, s.literal(b"null")?)?,
            Member::DurationMs => once(&mut duration_ms, nullable(s, unsigned)?)?,
            Member::PartIndex => once(
                &mut part_index,
                nullable(s, |s| u32::try_from(unsigned(s)?).ok())?,
            )?,
            Member::IsLast => once(&mut is_last, nullable(s, boolean)?)?,
            Member::ProtocolVersion => {
                once(&mut protocol_version, nullable(s, |s| string(s, text))?)?
            }
            Member::Other => s.skip_value(1)?,
        }
        s.ws();
        match s.next()? {
            b',' => s.ws(),
            b'}' => break,
            _ => return None,
        }
    }
    Some(CommandResultDto {
        command_id: command_id?.to_owned(),
        ok: ok?,
        result: result.flatten(),
        error: None,
        duration_ms: duration_ms.flatten(),
        part_index: part_index.flatten(),
        is_last: is_last.flatten(),
        protocol_version: protocol_version.flatten().map(str::to_owned),
    })
}

/// Sets `slot` to `value` unless it was set already (`None`: a repeated member).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// `null` as `None`, anything else read by `read`.
fn nullable<'a, T>(
    s: &mut Scanner<'a>,
    read: impl FnOnce(&mut Scanner<'a>) -> Option<T>,
) -> Option<Option<T>> {
    if s.peek()? == b'n' {
        s.literal(b"null")?;
        return Some(None);
    }
    read(s).map(Some)
}

fn boolean(s: &mut Scanner<'_>) -> Option<bool> {
    match s.peek()? {
        b't' => s.literal(b"true").map(|()| true),
        b'f' => s.literal(b"false").map(|()| false),
        _ => None,
    }
}

/// Digits only (at most 19: they always fit).
fn unsigned(s: &mut Scanner<'_>) -> Option<u64> {
    if s.number()? != Number::Integer {
        return None;
    }
    Some(
        s.last_token()
            .iter()
            .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0')),
    )
}

/// Any JSON value, decoded by serde_json from its own text; `null` is `None` (as serde decodes
/// an `Option<Value>`).
fn value(s: &mut Scanner<'_>, text: &str) -> Option<Option<Value>> {
    let rest = text.get(s.at..)?;
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
    let value = stream.next()?.ok()?;
    let len = stream.byte_offset();
    let raw = &s.bytes[s.at..s.at + len];
    // Nesting is at most the number of brackets (strings included): conservative.
    if len > MAX_BRACKETS && raw.iter().filter(|b| matches!(b, b'[' | b'{')).count() > MAX_BRACKETS
    {
        return None;
    }
    s.at += len;
    Some(match value {
        Value::Null => None,
        value => Some(value),
    })
}

/// A string without escapes: its content, from the record's text (checked UTF-8 already).
fn string<'a>(s: &mut Scanner<'_>, text: &'a str) -> Option<&'a str> {
    let len = s.string()?.len();
    // The scanner stands after the closing quote.
    text.get(s.at - 1 - len..s.at - 1)
}
