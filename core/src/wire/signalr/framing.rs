//! Record framing for both hub encodings.
//!
//! TODO(issue 3, helper A): the incremental `RecordDecoder`.

use super::DecodeError;

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
