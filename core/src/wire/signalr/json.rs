//! The JSON hub protocol: one JSON object per message, each record terminated by 0x1E.
//!
//! # Theory of operation
//! [`encode_record`] writes straight into the caller's buffer in the member order the .NET server
//! uses (`type`, `headers` when non-empty, then the type's own members), with no whitespace and
//! strings escaped as serde_json escapes them. Payloads held as JSON are copied verbatim; only
//! MessagePack payloads are transcoded, which is the encoder's one failure.
//!
//! [`decode_record`] is on the hot path (every heartbeat crosses it), so it makes one pass over the
//! record with a serde visitor: each known member is captured shallowly (scalars as borrowed
//! tokens, `arguments`/`item`/`result` as raw JSON slices, never a `Value` tree) and unknown
//! members are skipped. Members may come in any order, `type` included, so type errors of a member
//! are recorded during the pass and reported only once the message type is known, naming the
//! message and the member. Members that the message type does not use are ignored whatever their
//! value (forward compatibility).
//!
//! Rules a reader of this decoder should know (docs/protocol.md, section 3, is normative):
//! - A member whose value is `null` counts as absent, except `item` and `result`, where `null` is
//!   the payload. (.NET rejects `"invocationId":null`; accepting it costs nothing and the official
//!   JS client never sends it.)
//! - A duplicated member: the last occurrence wins, as in the .NET reader.
//! - A payload is exactly the text of the value in the record (whitespace inside it kept), so a
//!   record in canonical member order re-encodes to the same bytes.
//!
//! [`decode_invocation`] is the one-pass fast path for the contract's hot methods: it decodes
//! the argument straight into its DTO and falls back to [`decode_record`] for anything unusual.
//! [`scan_heartbeat`] goes further for the gateway's hottest record: it only checks a Heartbeat's
//! shape and says where its argument lies, for a receiver that keeps it as text; records as nodes
//! write them are matched as one template first ([`scan_usual_heartbeat`] alone, for text).
//! [`decode_command_result`] does the same kind of one-pass reading for a `CommandResult` as
//! nodes write it, decoding only its `result` value through serde.
//!
//! Framing (splitting a byte stream at 0x1E) lives in [`super::framing`]; this module sees one
//! record at a time.

mod decode;
mod scan;
mod scan_result;
mod scan_usual;
mod typed;

use serde_json::value::RawValue;

use super::message::{CompletionOutcome, Headers, HubMessage, Invocation, Payload, PayloadError};
use super::{HubProtocol, RECORD_SEPARATOR};

pub use decode::decode_record;
pub(crate) use scan::usual_heartbeat;
pub use scan::{scan_heartbeat, scan_heartbeat_with, scan_usual_heartbeat, HeartbeatScan};
pub use scan_result::{decode_command_result, decode_command_result_text};
pub use typed::{decode_invocation, TypedCall, TypedInvocation};

/// Appends `message` as one JSON record terminated by 0x1E. Payloads held as MessagePack are
/// transcoded to JSON (Payload::transcode); that is the only failure.
///
/// On failure `out` is left as it was: a half-written record must never reach the wire.
pub fn encode_record(message: &HubMessage, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    let start = out.len();
    match write_message(message, out) {
        Ok(()) => {
            out.push(RECORD_SEPARATOR);
            Ok(())
        }
        Err(error) => {
            out.truncate(start);
            Err(error)
        }
    }
}

/// Appends the record of a fire-and-forget Invocation of `target` with one argument and no
/// headers, serializing `argument` straight into `out`: the same bytes as [`encode_record`] of
/// the Invocation whose payload is `Payload::encode(HubProtocol::Json, argument)`, without the
/// payload's own allocation and copy. On failure `out` is left as it was.
pub fn encode_invocation<T: serde::Serialize + ?Sized>(
    target: &str,
    argument: &T,
    out: &mut Vec<u8>,
) -> Result<(), PayloadError> {
    encode_invocation_with(target, out, |out| {
        serde_json::to_writer(&mut *out, argument)
            .map_err(|e| PayloadError(format!("cannot encode as JSON: {e}")))
    })
}

/// [`encode_invocation`] with the argument written by `write`, which must write exactly the
/// JSON text serde_json would (the caller's fast path for one DTO).
pub(crate) fn encode_invocation_with(
    target: &str,
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), PayloadError>,
) -> Result<(), PayloadError> {
    let start = out.len();
    out.extend_from_slice(b"{\"type\":1,\"target\":");
    write_str(target, out);
    out.extend_from_slice(b",\"arguments\":[");
    if let Err(error) = write(out) {
        out.truncate(start);
        return Err(error);
    }
    out.extend_from_slice(b"]}");
    out.push(RECORD_SEPARATOR);
    Ok(())
}

fn write_message(message: &HubMessage, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    out.extend_from_slice(b"{\"type\":");
    // Message types are 1..=9: one ASCII digit.
    out.push(b'0' + message.message_type());
    match message {
        HubMessage::Invocation(invocation) | HubMessage::StreamInvocation(invocation) => {
            write_invocation(invocation, out)?;
        }
        HubMessage::StreamItem {
            headers,
            invocation_id,
            item,
        } => {
            write_headers(headers, out);
            write_invocation_id(invocation_id, out);
            out.extend_from_slice(b",\"item\":");
            write_payload(item, out)?;
        }
        HubMessage::Completion {
            headers,
            invocation_id,
            outcome,
        } => {
            write_headers(headers, out);
            write_invocation_id(invocation_id, out);
            match outcome {
                CompletionOutcome::Void => {}
                CompletionOutcome::Result(result) => {
                    out.extend_from_slice(b",\"result\":");
                    write_payload(result, out)?;
                }
                CompletionOutcome::Error(error) => {
                    out.extend_from_slice(b",\"error\":");
                    write_str(error, out);
                }
            }
        }
        HubMessage::CancelInvocation {
            headers,
            invocation_id,
        } => {
            write_headers(headers, out);
            write_invocation_id(invocation_id, out);
        }
        HubMessage::Ping => {}
        HubMessage::Close {
            error,
            allow_reconnect,
        } => {
            if let Some(error) = error {
                out.extend_from_slice(b",\"error\":");
                write_str(error, out);
            }
            if let Some(allow) = allow_reconnect {
                out.extend_from_slice(if *allow {
                    b",\"allowReconnect\":true"
                } else {
                    b",\"allowReconnect\":false"
                });
            }
        }
        HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => {
            out.extend_from_slice(b",\"sequenceId\":");
            out.extend_from_slice(sequence_id.to_string().as_bytes());
        }
    }
    out.push(b'}');
    Ok(())
}

fn write_invocation(invocation: &Invocation, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    write_headers(&invocation.headers, out);
    if let Some(id) = &invocation.invocation_id {
        write_invocation_id(id, out);
    }
    out.extend_from_slice(b",\"target\":");
    write_str(&invocation.target, out);
    out.extend_from_slice(b",\"arguments\":[");
    for (i, argument) in invocation.arguments.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_payload(argument, out)?;
    }
    out.push(b']');
    if !invocation.stream_ids.is_empty() {
        out.extend_from_slice(b",\"streamIds\":[");
        for (i, id) in invocation.stream_ids.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(id, out);
        }
        out.push(b']');
    }
    Ok(())
}

/// `headers` only when there is one: an empty object is noise to every peer.
fn write_headers(headers: &Headers, out: &mut Vec<u8>) {
    if headers.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"headers\":{");
    for (i, (key, value)) in headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(key, out);
        out.push(b':');
        write_str(value, out);
    }
    out.push(b'}');
}

fn write_invocation_id(id: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"invocationId\":");
    write_str(id, out);
}

/// A JSON string literal with serde_json's escaping, which turns every control character
/// (0x1E included) into an escape: a record can never contain its own terminator.
pub(crate) fn write_str(value: &str, out: &mut Vec<u8>) {
    // Most strings need no escape: copied at once (serde_json escapes exactly the bytes
    // `needs_escape` looks for, so the bytes are the same).
    if !needs_escape(value.as_bytes()) {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        return;
    }
    // Serializing a `str` has no failure mode of its own and writing into a Vec cannot fail.
    serde_json::to_writer(&mut *out, value)
        .expect("writing a JSON string into a Vec<u8> cannot fail");
}

/// Whether a JSON string of these bytes needs an escape: `"`, `\` or a control character
/// (below 0x20). Eight bytes at a time.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let flagged = (word.wrapping_sub(ONES * 0x20) & !word & HIGHS)
            | zero_byte(word ^ (ONES * u64::from(b'"')))
            | zero_byte(word ^ (ONES * u64::from(b'\\')));
        if flagged != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|b| matches!(b, b'"' | b'\\' | 0..=0x1f))
}

/// The payload's JSON text, copied as is; a MessagePack payload is transcoded first.
fn write_payload(payload: &Payload, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    if let Some(text) = payload.as_json() {
        out.extend_from_slice(text.as_bytes());
        return Ok(());
    }
    let json = payload.transcode(HubProtocol::Json)?;
    let text = json
        .as_json()
        .ok_or_else(|| PayloadError("transcoding to JSON produced no JSON text".to_owned()))?;
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Wraps a raw slice of a record as an owned payload (used by the decoder).
fn payload_of(raw: &RawValue) -> Payload {
    Payload::from_raw_json(raw.to_owned())
}
