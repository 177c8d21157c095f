//! Record framing for both hub encodings.
//!
//! A WebSocket message may carry several records, and a peer may split one record across
//! messages: [`RecordDecoder`] buffers whatever arrives and hands out whole records. JSON records
//! (and the handshake, in both protocols) end with 0x1E; MessagePack messages start with their
//! VarInt length. Encoders never split a record: each encoder call appends whole records, and a
//! shell sends what it appended as one WebSocket message (the official JS client cannot parse a
//! split record).

use std::ops::Range;

use super::{json, msgpack, DecodeError, HubMessage, HubProtocol, RECORD_SEPARATOR};

/// The default limit on one record's length (JSON: the bytes before 0x1E; MessagePack: the
/// announced body length). The largest legal node-contract message is a result part with two
/// capped fields (`result` and `error`, 1 MiB of JSON each, see section 6 of the protocol) plus
/// its envelope; in MessagePack a JSON-capped field can take up to 2.25 times its JSON size (a
/// float such as `1.5,` is 4 bytes of JSON and 9 of MessagePack). 5 MiB covers both.
pub const DEFAULT_MAX_RECORD_LEN: usize = 5 * 1024 * 1024;

/// Buffers the payloads of incoming WebSocket messages and yields whole records.
///
/// It starts in the handshake phase, where records end with 0x1E whatever the hub protocol; after
/// the handshake record, call [`RecordDecoder::set_protocol`]. Bytes that followed the handshake
/// in the same message stay buffered and are decoded with the new protocol.
///
/// Errors: a record longer than the limit, or a MessagePack length prefix that is not a VarInt,
/// is fatal ([`DecodeError::is_fatal`]): the stream can no longer be delimited, the decoder drops
/// its buffer and returns the same error from then on, and the connection must be closed. Any
/// other error from [`RecordDecoder::next_message`] concerns one record, which is consumed: the
/// next call goes on with the record after it.
#[derive(Debug)]
pub struct RecordDecoder {
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` already handed out.
    consumed: usize,
    /// 0x1E-delimited phases: how many bytes after `consumed` were searched without finding a
    /// separator, so that a record arriving in many pieces is scanned once, not once per piece.
    searched: usize,
    /// `None` during the handshake.
    protocol: Option<HubProtocol>,
    max_record_len: usize,
    failed: Option<DecodeError>,
}

impl RecordDecoder {
    /// A decoder in the handshake phase that refuses records longer than `max_record_len`.
    pub fn new(max_record_len: usize) -> RecordDecoder {
        RecordDecoder {
            buffer: Vec::new(),
            consumed: 0,
            searched: 0,
            protocol: None,
            max_record_len,
            failed: None,
        }
    }

    /// Ends the handshake phase: from now on records are delimited and decoded as `protocol`.
    pub fn set_protocol(&mut self, protocol: HubProtocol) {
        self.protocol = Some(protocol);
        self.searched = 0;
    }

    /// The protocol records are decoded with; `None` during the handshake.
    pub fn protocol(&self) -> Option<HubProtocol> {
        self.protocol
    }

    /// Appends the payload of one WebSocket message. Records returned earlier are released.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received but not yet handed out as records.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// The next whole record, without its 0x1E (JSON, handshake) or its length prefix
    /// (MessagePack); `Ok(None)` when more bytes are needed.
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, DecodeError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.find_record() {
            Ok(Some(range)) => Ok(Some(&self.buffer[range])),
            Ok(None) => Ok(None),
            Err(error) => {
                self.failed = Some(error.clone());
                self.buffer = Vec::new();
                self.consumed = 0;
                Err(error)
            }
        }
    }

    /// The next whole record decoded as a hub message in the current protocol (JSON during the
    /// handshake phase); `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<HubMessage>, DecodeError> {
        let protocol = self.protocol;
        match self.next_record()? {
            None => Ok(None),
            Some(record) => match protocol {
                None | Some(HubProtocol::Json) => json::decode_record(record).map(Some),
                Some(HubProtocol::MessagePack) => msgpack::decode_body(record).map(Some),
            },
        }
    }

    /// Locates the next record and marks it consumed.
    fn find_record(&mut self) -> Result<Option<Range<usize>>, DecodeError> {
        let pending = &self.buffer[self.consumed..];
        match self.protocol {
            None | Some(HubProtocol::Json) => {
                let found = memchr::memchr(RECORD_SEPARATOR, &pending[self.searched..])
                    .map(|i| self.searched + i);
                let Some(len) = found else {
                    self.searched = pending.len();
                    if pending.len() > self.max_record_len {
                        return Err(self.too_large(pending.len()));
                    }
                    return Ok(None);
                };
                if len > self.max_record_len {
                    return Err(self.too_large(len));
                }
                let start = self.consumed;
                self.consumed += len + 1;
                self.searched = 0;
                Ok(Some(start..start + len))
            }
            Some(HubProtocol::MessagePack) => {
                let Some((len, prefix_len)) = read_varint(pending)? else {
                    return Ok(None);
                };
                // A u32 always fits a usize on the 32- and 64-bit targets nodelink supports.
                let len = len as usize;
                if len > self.max_record_len {
                    return Err(self.too_large(len));
                }
                if pending.len() < prefix_len + len {
                    return Ok(None);
                }
                let start = self.consumed + prefix_len;
                self.consumed = start + len;
                Ok(Some(start..start + len))
            }
        }
    }

    fn too_large(&self, size: usize) -> DecodeError {
        DecodeError::RecordTooLarge {
            size,
            limit: self.max_record_len,
        }
    }
}

/// The largest body a MessagePack length prefix may announce (the spec's 2 GB bound).
pub const MAX_VARINT_LENGTH: u32 = 0x7fff_ffff;

/// Appends the VarInt length prefix of the MessagePack encoding: 7 bits a byte, least significant
/// group first, the high bit set on every byte but the last (1 to 5 bytes).
pub fn write_varint(mut value: u32, out: &mut Vec<u8>) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Reads a VarInt length prefix from the start of `bytes`.
///
/// `Ok(None)`: more bytes are needed. `Ok(Some((value, prefix_len)))`: the length and how many
/// bytes the prefix took. An error when the prefix runs past 5 bytes or exceeds
/// [`MAX_VARINT_LENGTH`]: the stream cannot be delimited any more.
pub fn read_varint(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if i == 5 {
            break;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if value > u64::from(MAX_VARINT_LENGTH) {
                return Err(DecodeError::InvalidLengthPrefix {
                    detail: format!("length {value} exceeds {MAX_VARINT_LENGTH}"),
                });
            }
            // The bound check above makes the narrowing exact.
            return Ok(Some((value as u32, i + 1)));
        }
    }
    if bytes.len() >= 5 {
        return Err(DecodeError::InvalidLengthPrefix {
            detail: "more than 5 bytes without a terminating byte".to_string(),
        });
    }
    Ok(None)
}
