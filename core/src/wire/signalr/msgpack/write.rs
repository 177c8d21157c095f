//! The few MessagePack writers the hub envelope needs, each choosing the smallest format as the
//! official peers do (MessagePack-CSharp on .NET, `@msgpack/msgpack` in the JS client): fixint
//! before uint8 before uint16 ..., fixstr before str8 before str16 ..., fixarray before array16.
//! Written by hand so that the exact bytes are visible here and cannot change with a dependency.

use crate::wire::signalr::PayloadError;

pub(crate) fn nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub(crate) fn bool(value: bool, out: &mut Vec<u8>) {
    out.push(if value { 0xc3 } else { 0xc2 });
}

/// A non-negative integer: positive fixint, uint8, uint16, uint32 or uint64.
pub(crate) fn uint(value: u64, out: &mut Vec<u8>) {
    if value <= 0x7f {
        out.push(value as u8);
    } else if value <= u64::from(u8::MAX) {
        out.extend_from_slice(&[0xcc, value as u8]);
    } else if value <= u64::from(u16::MAX) {
        out.push(0xcd);
        out.extend_from_slice(&(value as u16).to_be_bytes());
    } else if value <= u64::from(u32::MAX) {
        out.push(0xce);
        out.extend_from_slice(&(value as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// A UTF-8 string: fixstr (up to 31 bytes), str8, str16 or str32.
pub(crate) fn str(value: &str, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    let len = value.len();
    if len <= 31 {
        out.push(0xa0 | len as u8);
    } else if len <= usize::from(u8::MAX) {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else if len <= usize::from(u16::MAX) {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&len32(len, "a string")?.to_be_bytes());
    }
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

/// An array header: fixarray (up to 15 elements), array16 or array32.
pub(crate) fn array_len(len: usize, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    container_len(len, 0x90, 0xdc, "an array", out)
}

/// A map header: fixmap (up to 15 entries), map16 or map32.
pub(crate) fn map_len(len: usize, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    container_len(len, 0x80, 0xde, "a map", out)
}

fn container_len(
    len: usize,
    fix: u8,
    marker16: u8,
    what: &str,
    out: &mut Vec<u8>,
) -> Result<(), PayloadError> {
    if len <= 15 {
        out.push(fix | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(marker16);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        // The 32-bit form's marker follows the 16-bit one (0xdc/0xdd, 0xde/0xdf).
        out.push(marker16 + 1);
        out.extend_from_slice(&len32(len, what)?.to_be_bytes());
    }
    Ok(())
}

/// MessagePack lengths are 32-bit; anything longer cannot be written at all.
fn len32(len: usize, what: &str) -> Result<u32, PayloadError> {
    u32::try_from(len).map_err(|_| {
        PayloadError(format!(
            "{what} of length {len} exceeds the MessagePack limit of {}",
            u32::MAX
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn integers_take_the_smallest_format() {
        assert_eq!(written(|o| uint(0, o)), [0x00]);
        assert_eq!(written(|o| uint(127, o)), [0x7f]);
        assert_eq!(written(|o| uint(128, o)), [0xcc, 0x80]);
        assert_eq!(written(|o| uint(256, o)), [0xcd, 0x01, 0x00]);
        assert_eq!(written(|o| uint(65536, o)), [0xce, 0, 1, 0, 0]);
        assert_eq!(
            written(|o| uint(1 << 32, o)),
            [0xcf, 0, 0, 0, 1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn strings_and_containers_take_the_smallest_format() {
        let s31 = "a".repeat(31);
        let s32 = "a".repeat(32);
        let s256 = "a".repeat(256);
        let s65536 = "a".repeat(65536);
        assert_eq!(written(|o| str(&s31, o).unwrap())[0], 0xbf);
        assert_eq!(written(|o| str(&s32, o).unwrap())[..2], [0xd9, 32]);
        assert_eq!(written(|o| str(&s256, o).unwrap())[..3], [0xda, 1, 0]);
        assert_eq!(
            written(|o| str(&s65536, o).unwrap())[..5],
            [0xdb, 0, 1, 0, 0]
        );
        assert_eq!(written(|o| array_len(15, o).unwrap()), [0x9f]);
        assert_eq!(written(|o| array_len(16, o).unwrap()), [0xdc, 0, 16]);
        assert_eq!(
            written(|o| array_len(65536, o).unwrap()),
            [0xdd, 0, 1, 0, 0]
        );
        assert_eq!(written(|o| map_len(0, o).unwrap()), [0x80]);
        assert_eq!(written(|o| map_len(16, o).unwrap()), [0xde, 0, 16]);
        assert_eq!(written(|o| map_len(65536, o).unwrap()), [0xdf, 0, 1, 0, 0]);
    }
}
