//! The MessagePack hub protocol: each message is one MessagePack array, sent after a VarInt
//! length prefix (see [`super::framing`]).
//!
//! ```text
//! [1, Headers, InvocationId|nil, Target, [Arguments], [StreamIds]]   Invocation
//! [2, Headers, InvocationId, Item]                                   StreamItem
//! [3, Headers, InvocationId, ResultKind, Result?]                    Completion (1 error, 2 void, 3 value)
//! [4, Headers, InvocationId, Target, [Arguments], [StreamIds]]       StreamInvocation
//! [5, Headers, InvocationId]                                         CancelInvocation
//! [6]                                                                Ping
//! [7, Error|nil, AllowReconnect?]                                    Close
//! [8, SequenceId]                                                    Ack
//! [9, SequenceId]                                                    Sequence
//! ```
//!
//! Arguments, stream items and results are never decoded here: the decoder delimits each value
//! with a bounds-checked skip ([`read`]) and keeps its exact bytes in a [`Payload`], so the
//! contract layer decodes them straight into typed DTOs, and re-encoding reproduces them byte
//! for byte. The envelope is written with the smallest MessagePack formats, as the .NET and JS
//! peers write it, so our bytes match theirs.
//!
//! What the decoder accepts follows the .NET server (`MessagePackHubProtocolWorker`): trailing
//! array elements are ignored (forward compatibility), an Invocation may omit StreamIds (older
//! clients send 5 elements), an empty Invocation id means "no id", and every other envelope string
//! (ids, targets, stream ids, header keys and values) must be non-empty.

mod read;
mod write;

pub use read::MAX_PAYLOAD_DEPTH;

use read::{Head, Malformed, Reader};

use super::framing::{write_varint, MAX_VARINT_LENGTH};
use super::{CompletionOutcome, DecodeError, Headers, HubMessage, HubProtocol, Invocation};
use super::{Payload, PayloadError};

/// The Completion ResultKind values.
const RESULT_ERROR: i128 = 1;
const RESULT_VOID: i128 = 2;
const RESULT_VALUE: i128 = 3;

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends the VarInt length prefix and the body of `message`. Payloads held as JSON are
/// transcoded (Payload::transcode); that is the only failure, apart from a message too large for
/// the protocol's 2 GiB length limit. On failure `out` is left as it was.
pub fn encode(message: &HubMessage, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    let start = out.len();
    encode_body(message, out)?;
    let body_len = out.len() - start;
    let Some(len) = u32::try_from(body_len)
        .ok()
        .filter(|&len| len <= MAX_VARINT_LENGTH)
    else {
        out.truncate(start);
        return Err(PayloadError(format!(
            "a message of {body_len} bytes exceeds the MessagePack hub protocol limit of \
             {MAX_VARINT_LENGTH} bytes"
        )));
    };
    let mut prefix = Vec::with_capacity(5);
    write_varint(len, &mut prefix);
    // The length is only known once the body is written; shifting it once is cheaper than
    // encoding twice.
    out.splice(start..start, prefix);
    Ok(())
}

/// Appends the body only (no length prefix). On failure `out` is left as it was.
pub fn encode_body(message: &HubMessage, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    let start = out.len();
    let written = write_message(message, out);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

fn write_message(message: &HubMessage, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    let message_type = u64::from(message.message_type());
    match message {
        HubMessage::Invocation(invocation) | HubMessage::StreamInvocation(invocation) => {
            write::array_len(6, out)?;
            write::uint(message_type, out);
            write_headers(&invocation.headers, out)?;
            // .NET writes nil for an absent or empty id, and reads both back as "no id".
            match invocation.invocation_id.as_deref() {
                Some(id) if !id.is_empty() => write::str(id, out)?,
                _ => write::nil(out),
            }
            write::str(&invocation.target, out)?;
            write::array_len(invocation.arguments.len(), out)?;
            for argument in &invocation.arguments {
                write_payload(argument, out)?;
            }
            write::array_len(invocation.stream_ids.len(), out)?;
            for id in &invocation.stream_ids {
                write::str(id, out)?;
            }
        }
        HubMessage::StreamItem {
            headers,
            invocation_id,
            item,
        } => {
            write::array_len(4, out)?;
            write::uint(message_type, out);
            write_headers(headers, out)?;
            write::str(invocation_id, out)?;
            write_payload(item, out)?;
        }
        HubMessage::Completion {
            headers,
            invocation_id,
            outcome,
        } => {
            let len = if matches!(outcome, CompletionOutcome::Void) {
                4
            } else {
                5
            };
            write::array_len(len, out)?;
            write::uint(message_type, out);
            write_headers(headers, out)?;
            write::str(invocation_id, out)?;
            match outcome {
                CompletionOutcome::Error(error) => {
                    write::uint(RESULT_ERROR as u64, out);
                    write::str(error, out)?;
                }
                CompletionOutcome::Void => write::uint(RESULT_VOID as u64, out),
                CompletionOutcome::Result(result) => {
                    write::uint(RESULT_VALUE as u64, out);
                    write_payload(result, out)?;
                }
            }
        }
        HubMessage::CancelInvocation {
            headers,
            invocation_id,
        } => {
            write::array_len(3, out)?;
            write::uint(message_type, out);
            write_headers(headers, out)?;
            write::str(invocation_id, out)?;
        }
        HubMessage::Ping => {
            write::array_len(1, out)?;
            write::uint(message_type, out);
        }
        HubMessage::Close {
            error,
            allow_reconnect,
        } => {
            // Two elements without AllowReconnect (as the JS client writes), three with it (as
            // .NET always writes), so that a decoded Close re-encodes to the same bytes.
            write::array_len(if allow_reconnect.is_some() { 3 } else { 2 }, out)?;
            write::uint(message_type, out);
            match error {
                Some(error) => write::str(error, out)?,
                None => write::nil(out),
            }
            if let Some(allow) = allow_reconnect {
                write::bool(*allow, out);
            }
        }
        HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => {
            write::array_len(2, out)?;
            write::uint(message_type, out);
            write::uint(*sequence_id, out);
        }
    }
    Ok(())
}

fn write_headers(headers: &Headers, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    write::map_len(headers.len(), out)?;
    for (key, value) in headers {
        write::str(key, out)?;
        write::str(value, out)?;
    }
    Ok(())
}

/// Copies a MessagePack payload verbatim; a JSON payload is transcoded first.
fn write_payload(payload: &Payload, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    if let Some(bytes) = payload.as_msgpack() {
        out.extend_from_slice(bytes);
        return Ok(());
    }
    let transcoded = payload.transcode(HubProtocol::MessagePack)?;
    match transcoded.as_msgpack() {
        Some(bytes) => {
            out.extend_from_slice(bytes);
            Ok(())
        }
        None => Err(PayloadError(
            "transcoding to MessagePack yielded another encoding".to_owned(),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes one message body (the bytes after the length prefix, exactly the announced length).
pub fn decode_body(body: &[u8]) -> Result<HubMessage, DecodeError> {
    let mut reader = Reader::new(body);
    let start = reader.pos();
    let count = match reader.head().map_err(|e| syntax("hub", "body", &e))? {
        Head::Array(count) => count,
        _ => {
            return Err(DecodeError::WrongType {
                message: "hub",
                field: "body",
                expected: "a MessagePack array",
            })
        }
    };
    reader
        .check_count(count, start, 1)
        .map_err(|e| syntax("hub", "body", &e))?;
    let mut fields = Fields {
        reader,
        message: "hub",
        left: count,
    };
    let message_type = fields.int("type", "an integer")?;
    let message = match message_type {
        1 => HubMessage::Invocation(fields.invocation("Invocation", false)?),
        2 => fields.stream_item()?,
        3 => fields.completion()?,
        4 => HubMessage::StreamInvocation(fields.invocation("StreamInvocation", true)?),
        5 => fields.cancel_invocation()?,
        6 => HubMessage::Ping,
        7 => fields.close()?,
        8 => HubMessage::Ack {
            sequence_id: fields.named("Ack").sequence_id()?,
        },
        9 => HubMessage::Sequence {
            sequence_id: fields.named("Sequence").sequence_id()?,
        },
        other => {
            // Still delimit the rest, so that garbage is reported as garbage.
            fields.finish()?;
            let message_type =
                i64::try_from(other).unwrap_or(if other < 0 { i64::MIN } else { i64::MAX });
            return Err(DecodeError::UnknownMessageType { message_type });
        }
    };
    fields.finish()?;
    Ok(message)
}

/// The elements of the message array, read in order. `left` counts the elements not yet read,
/// so a missing one is reported by name instead of as a read past the array.
struct Fields<'a> {
    reader: Reader<'a>,
    message: &'static str,
    left: usize,
}

impl<'a> Fields<'a> {
    fn named(&mut self, message: &'static str) -> &mut Fields<'a> {
        self.message = message;
        self
    }

    /// Reads the head of the next element, or reports it missing.
    fn head(&mut self, field: &'static str) -> Result<Head, DecodeError> {
        if self.left == 0 {
            return Err(DecodeError::MissingField {
                message: self.message,
                field,
            });
        }
        self.left -= 1;
        self.reader
            .head()
            .map_err(|e| syntax(self.message, field, &e))
    }

    fn int(&mut self, field: &'static str, expected: &'static str) -> Result<i128, DecodeError> {
        match self.head(field)? {
            Head::Int(value) => Ok(value),
            _ => Err(self.wrong(field, expected)),
        }
    }

    fn wrong(&self, field: &'static str, expected: &'static str) -> DecodeError {
        DecodeError::WrongType {
            message: self.message,
            field,
            expected,
        }
    }

    /// The bytes of a str whose head has been read, as UTF-8.
    fn str_body(&mut self, len: usize, field: &'static str) -> Result<&'a str, DecodeError> {
        let start = self.reader.pos();
        let bytes = self
            .reader
            .take(len, start)
            .map_err(|e| syntax(self.message, field, &e))?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidValue {
            message: self.message,
            field,
            detail: "the string is not valid UTF-8".to_owned(),
        })
    }

    /// A str that must not be empty (ids, targets, header keys and values, as .NET requires).
    fn non_empty_str_body(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<String, DecodeError> {
        let text = self.str_body(len, field)?;
        if text.is_empty() {
            return Err(DecodeError::InvalidValue {
                message: self.message,
                field,
                detail: "must not be an empty string".to_owned(),
            });
        }
        Ok(text.to_owned())
    }

    fn headers(&mut self) -> Result<Headers, DecodeError> {
        const FIELD: &str = "headers";
        const EXPECTED: &str = "a map of strings to strings";
        let start = self.reader.pos();
        let Head::Map(count) = self.head(FIELD)? else {
            return Err(self.wrong(FIELD, EXPECTED));
        };
        self.reader
            .check_count(count, start, 2)
            .map_err(|e| syntax(self.message, FIELD, &e))?;
        let mut headers = Headers::new();
        for _ in 0..count {
            let mut pair = [String::new(), String::new()];
            for text in &mut pair {
                let head = self
                    .reader
                    .head()
                    .map_err(|e| syntax(self.message, FIELD, &e))?;
                let Head::Str(len) = head else {
                    return Err(self.wrong(FIELD, EXPECTED));
                };
                *text = self.non_empty_str_body(len, FIELD)?;
            }
            let [key, value] = pair;
            // A repeated key: the last one wins (.NET refuses the message; nothing depends on it).
            headers.insert(key, value);
        }
        Ok(headers)
    }

    /// A required invocation id: a non-empty string.
    fn invocation_id(&mut self) -> Result<String, DecodeError> {
        const FIELD: &str = "invocationId";
        match self.head(FIELD)? {
            Head::Str(len) => self.non_empty_str_body(len, FIELD),
            Head::Nil => Err(DecodeError::MissingField {
                message: self.message,
                field: FIELD,
            }),
            _ => Err(self.wrong(FIELD, "a string")),
        }
    }

    /// One payload value, kept as its exact bytes.
    fn payload(&mut self, field: &'static str) -> Result<Payload, DecodeError> {
        if self.left == 0 {
            return Err(DecodeError::MissingField {
                message: self.message,
                field,
            });
        }
        self.left -= 1;
        self.payload_element(field)
    }

    /// A payload inside a container: no element count to decrement.
    fn payload_element(&mut self, field: &'static str) -> Result<Payload, DecodeError> {
        let bytes = self
            .reader
            .value()
            .map_err(|e| syntax(self.message, field, &e))?;
        Ok(Payload::from_raw_msgpack(bytes.to_vec()))
    }

    /// The elements of an array that the caller reads one by one; returns the count.
    fn array(&mut self, field: &'static str, expected: &'static str) -> Result<usize, DecodeError> {
        let start = self.reader.pos();
        let Head::Array(count) = self.head(field)? else {
            return Err(self.wrong(field, expected));
        };
        self.reader
            .check_count(count, start, 1)
            .map_err(|e| syntax(self.message, field, &e))?;
        Ok(count)
    }

    /// An Invocation, or a StreamInvocation (`id_required`).
    fn invocation(
        &mut self,
        message: &'static str,
        id_required: bool,
    ) -> Result<Invocation, DecodeError> {
        self.message = message;
        let headers = self.headers()?;
        let invocation_id = if id_required {
            Some(self.invocation_id()?)
        } else {
            // Optional: nil or "" both mean fire-and-forget (.NET normalizes "" to no id).
            match self.head("invocationId")? {
                Head::Nil => None,
                Head::Str(len) => {
                    Some(self.str_body(len, "invocationId")?).filter(|id| !id.is_empty())
                }
                _ => return Err(self.wrong("invocationId", "a string or nil")),
            }
            .map(str::to_owned)
        };
        let target = match self.head("target")? {
            Head::Str(len) => self.non_empty_str_body(len, "target")?,
            _ => return Err(self.wrong("target", "a string")),
        };
        let count = self.array("arguments", "an array")?;
        let mut arguments = Vec::with_capacity(count);
        for _ in 0..count {
            arguments.push(self.payload_element("arguments")?);
        }
        // Older clients send five elements: no StreamIds.
        let mut stream_ids = Vec::new();
        if self.left > 0 {
            const EXPECTED: &str = "an array of strings";
            let count = self.array("streamIds", EXPECTED)?;
            stream_ids.reserve(count);
            for _ in 0..count {
                let head = self
                    .reader
                    .head()
                    .map_err(|e| syntax(self.message, "streamIds", &e))?;
                let Head::Str(len) = head else {
                    return Err(self.wrong("streamIds", EXPECTED));
                };
                stream_ids.push(self.non_empty_str_body(len, "streamIds")?);
            }
        }
        Ok(Invocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        })
    }

    fn stream_item(&mut self) -> Result<HubMessage, DecodeError> {
        self.message = "StreamItem";
        Ok(HubMessage::StreamItem {
            headers: self.headers()?,
            invocation_id: self.invocation_id()?,
            item: self.payload("item")?,
        })
    }

    fn completion(&mut self) -> Result<HubMessage, DecodeError> {
        self.message = "Completion";
        let headers = self.headers()?;
        let invocation_id = self.invocation_id()?;
        let outcome = match self.int("resultKind", "an integer")? {
            RESULT_ERROR => match self.head("error")? {
                Head::Str(len) => CompletionOutcome::Error(self.str_body(len, "error")?.to_owned()),
                _ => return Err(self.wrong("error", "a string")),
            },
            RESULT_VOID => CompletionOutcome::Void,
            RESULT_VALUE => CompletionOutcome::Result(self.payload("result")?),
            other => {
                return Err(DecodeError::InvalidValue {
                    message: self.message,
                    field: "resultKind",
                    detail: format!("{other} is not 1 (error), 2 (void) or 3 (result)"),
                })
            }
        };
        Ok(HubMessage::Completion {
            headers,
            invocation_id,
            outcome,
        })
    }

    fn cancel_invocation(&mut self) -> Result<HubMessage, DecodeError> {
        self.message = "CancelInvocation";
        Ok(HubMessage::CancelInvocation {
            headers: self.headers()?,
            invocation_id: self.invocation_id()?,
        })
    }

    fn close(&mut self) -> Result<HubMessage, DecodeError> {
        self.message = "Close";
        let error = match self.head("error")? {
            Head::Nil => None,
            // An empty error is still an error (as .NET reads it).
            Head::Str(len) => Some(self.str_body(len, "error")?.to_owned()),
            _ => return Err(self.wrong("error", "a string or nil")),
        };
        let allow_reconnect = if self.left > 0 {
            match self.head("allowReconnect")? {
                Head::Bool(allow) => Some(allow),
                _ => return Err(self.wrong("allowReconnect", "a boolean")),
            }
        } else {
            None
        };
        Ok(HubMessage::Close {
            error,
            allow_reconnect,
        })
    }

    fn sequence_id(&mut self) -> Result<u64, DecodeError> {
        let value = self.int("sequenceId", "a non-negative integer")?;
        u64::try_from(value).map_err(|_| DecodeError::InvalidValue {
            message: self.message,
            field: "sequenceId",
            detail: format!("{value} is negative"),
        })
    }

    /// Skips the elements a newer peer may have appended, then requires the body to end with
    /// the array.
    fn finish(mut self) -> Result<(), DecodeError> {
        while self.left > 0 {
            self.left -= 1;
            self.reader
                .value()
                .map_err(|e| syntax(self.message, "(extra element)", &e))?;
        }
        let trailing = self.reader.remaining();
        if trailing > 0 {
            return Err(DecodeError::Syntax {
                encoding: "MessagePack",
                detail: format!(
                    "{} message: {trailing} bytes after the end of the message array at byte {}",
                    self.message,
                    self.reader.pos()
                ),
            });
        }
        Ok(())
    }
}

/// Maps a byte-level error to the hub error that names the message and field it was found in.
fn syntax(message: &'static str, field: &'static str, malformed: &Malformed) -> DecodeError {
    match malformed {
        Malformed::TooDeep { .. } => DecodeError::InvalidValue {
            message,
            field,
            detail: malformed.describe(),
        },
        _ => DecodeError::Syntax {
            encoding: "MessagePack",
            detail: format!(
                "{message} message, field `{field}`: {}",
                malformed.describe()
            ),
        },
    }
}
