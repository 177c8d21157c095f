//! A bounds-checked cursor over one MessagePack message body.
//!
//! Only what the hub layer needs: read a value's head (marker plus length or integer), take the
//! bytes of a string, and skip one complete value without building anything, so that arguments,
//! stream items and results can be kept as the exact byte slices they arrived as.
//!
//! Nothing here trusts a declared length: every length is checked against the bytes that remain
//! before it is used, so a body announcing a 4 GiB string costs nothing (no allocation, no loop).

/// How many arrays and maps may nest in one argument, stream item or result (a payload that is
/// itself an array counts as one level). Deeper values
/// are refused: they are not needed by any contract and they would make the typed decoders that
/// run later (serde) recurse without bound.
pub const MAX_PAYLOAD_DEPTH: usize = 128;

/// What a value's marker announces. Lengths are in elements (array), entries (map) or bytes
/// (str, bin, ext: for ext the type byte is counted in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    Nil,
    Bool(bool),
    /// Any integer format; `i128` holds every u64 and i64 exactly.
    Int(i128),
    /// float32 or float64, with the number of bytes that follow the marker.
    Float(usize),
    Str(usize),
    Bin(usize),
    Ext(usize),
    Array(usize),
    Map(usize),
}

/// Why the bytes are not (complete) MessagePack. `offset` is the position in the body where the
/// offending value starts, for the human reading the error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// The body ends before the value does.
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// 0xC1, the one marker MessagePack never uses.
    ReservedMarker { offset: usize },
    /// An array or map declares more elements than there are bytes left (each takes at least one).
    CountBeyondInput {
        offset: usize,
        count: usize,
        available: usize,
    },
    /// Arrays and maps nested deeper than [`MAX_PAYLOAD_DEPTH`].
    TooDeep { offset: usize },
}

impl Malformed {
    /// A sentence a human can act on; the caller adds which message and field it was in.
    pub(crate) fn describe(&self) -> String {
        match self {
            Malformed::Truncated {
                offset,
                needed,
                available,
            } => format!(
                "the value at byte {offset} needs {needed} more bytes but only {available} remain"
            ),
            Malformed::ReservedMarker { offset } => {
                format!("byte {offset} is 0xc1, a marker MessagePack never uses")
            }
            Malformed::CountBeyondInput {
                offset,
                count,
                available,
            } => format!(
                "the array or map at byte {offset} declares {count} elements but only \
                 {available} bytes remain"
            ),
            Malformed::TooDeep { offset } => format!(
                "the value at byte {offset} nests arrays and maps deeper than \
                 {MAX_PAYLOAD_DEPTH} levels"
            ),
        }
    }
}

/// A cursor over one message body.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// Where the next value starts.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// How many bytes are left after the cursor.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Takes the next `n` bytes; `start` is where the value they belong to began (for the error).
    pub(crate) fn take(&mut self, n: usize, start: usize) -> Result<&'a [u8], Malformed> {
        if n > self.remaining() {
            return Err(Malformed::Truncated {
                offset: start,
                needed: n,
                available: self.remaining(),
            });
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn be(&mut self, n: usize, start: usize) -> Result<u64, Malformed> {
        Ok(self
            .take(n, start)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A length read from the wire, as a `usize` (saturating on 16-bit targets: such a length is
    /// beyond any input anyway and is refused by the next bounds check).
    fn len(&mut self, n: usize, start: usize) -> Result<usize, Malformed> {
        Ok(usize::try_from(self.be(n, start)?).unwrap_or(usize::MAX))
    }

    /// Reads one marker and the length or integer bytes that follow it. The bytes of a str, bin
    /// or ext are NOT consumed; the caller takes or skips them.
    pub(crate) fn head(&mut self) -> Result<Head, Malformed> {
        let start = self.pos;
        let marker = self.take(1, start)?[0];
        let head = match marker {
            0x00..=0x7f => Head::Int(i128::from(marker)),
            0x80..=0x8f => Head::Map(usize::from(marker & 0x0f)),
            0x90..=0x9f => Head::Array(usize::from(marker & 0x0f)),
            0xa0..=0xbf => Head::Str(usize::from(marker & 0x1f)),
            0xc0 => Head::Nil,
            0xc1 => return Err(Malformed::ReservedMarker { offset: start }),
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4 => Head::Bin(self.len(1, start)?),
            0xc5 => Head::Bin(self.len(2, start)?),
            0xc6 => Head::Bin(self.len(4, start)?),
            // ext 8/16/32: the length counts the data only; the type byte comes on top.
            0xc7 => Head::Ext(self.len(1, start)?.saturating_add(1)),
            0xc8 => Head::Ext(self.len(2, start)?.saturating_add(1)),
            0xc9 => Head::Ext(self.len(4, start)?.saturating_add(1)),
            0xca => Head::Float(4),
            0xcb => Head::Float(8),
            0xcc => Head::Int(i128::from(self.be(1, start)?)),
            0xcd => Head::Int(i128::from(self.be(2, start)?)),
            0xce => Head::Int(i128::from(self.be(4, start)?)),
            0xcf => Head::Int(i128::from(self.be(8, start)?)),
            // Signed formats: sign-extend from the width read (the casts reinterpret the bits).
            0xd0 => Head::Int(i128::from(self.be(1, start)? as u8 as i8)),
            0xd1 => Head::Int(i128::from(self.be(2, start)? as u16 as i16)),
            0xd2 => Head::Int(i128::from(self.be(4, start)? as u32 as i32)),
            0xd3 => Head::Int(i128::from(self.be(8, start)? as i64)),
            // fixext 1/2/4/8/16: one type byte plus that many data bytes.
            0xd4 => Head::Ext(2),
            0xd5 => Head::Ext(3),
            0xd6 => Head::Ext(5),
            0xd7 => Head::Ext(9),
            0xd8 => Head::Ext(17),
            0xd9 => Head::Str(self.len(1, start)?),
            0xda => Head::Str(self.len(2, start)?),
            0xdb => Head::Str(self.len(4, start)?),
            0xdc => Head::Array(self.len(2, start)?),
            0xdd => Head::Array(self.len(4, start)?),
            0xde => Head::Map(self.len(2, start)?),
            0xdf => Head::Map(self.len(4, start)?),
            0xe0..=0xff => Head::Int(i128::from(marker as i8)),
        };
        Ok(head)
    }

    /// Checks that an array or map head's element count can possibly fit in what remains (every
    /// element takes at least one byte), so that no loop runs for a count the input cannot hold.
    pub(crate) fn check_count(
        &self,
        elements: usize,
        start: usize,
        per_element: usize,
    ) -> Result<(), Malformed> {
        if elements.saturating_mul(per_element) > self.remaining() {
            return Err(Malformed::CountBeyondInput {
                offset: start,
                count: elements,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    /// Skips one complete value and returns its exact bytes.
    pub(crate) fn value(&mut self) -> Result<&'a [u8], Malformed> {
        let start = self.pos;
        self.skip(1)?;
        Ok(&self.bytes[start..self.pos])
    }

    /// Skips one value that sits at nesting `depth` (1 for a payload itself).
    fn skip(&mut self, depth: usize) -> Result<(), Malformed> {
        let start = self.pos;
        match self.head()? {
            Head::Nil | Head::Bool(_) | Head::Int(_) => {}
            Head::Float(n) | Head::Str(n) | Head::Bin(n) | Head::Ext(n) => {
                self.take(n, start)?;
            }
            Head::Array(n) => self.skip_elements(n, 1, depth, start)?,
            Head::Map(n) => self.skip_elements(n, 2, depth, start)?,
        }
        Ok(())
    }

    fn skip_elements(
        &mut self,
        count: usize,
        per_element: usize,
        depth: usize,
        start: usize,
    ) -> Result<(), Malformed> {
        if depth > MAX_PAYLOAD_DEPTH {
            return Err(Malformed::TooDeep { offset: start });
        }
        self.check_count(count, start, per_element)?;
        // `check_count` bounds the product by the input length, so it cannot overflow.
        for _ in 0..count * per_element {
            self.skip(depth + 1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_of_every_integer_width() {
        let cases: &[(&[u8], i128)] = &[
            (&[0x7f], 127),
            (&[0xff], -1),
            (&[0xe0], -32),
            (&[0xcc, 0xff], 255),
            (&[0xcd, 0x01, 0x00], 256),
            (&[0xce, 0xff, 0xff, 0xff, 0xff], 4_294_967_295),
            (
                &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                u64::MAX as i128,
            ),
            (&[0xd0, 0x80], -128),
            (&[0xd1, 0x80, 0x00], -32768),
            (&[0xd2, 0x80, 0x00, 0x00, 0x00], i32::MIN as i128),
            (&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0], i64::MIN as i128),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                Reader::new(bytes).head(),
                Ok(Head::Int(*want)),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn skips_ext_and_bin_and_float_values() {
        let cases: &[&[u8]] = &[
            &[0xd4, 0x01, 0xaa],
            &[0xd8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xc7, 0x02, 0x05, 0xaa, 0xbb],
            &[0xc4, 0x02, 0xaa, 0xbb],
            &[0xca, 0, 0, 0, 0],
            &[0xcb, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0x82, 0xa1, 0x61, 0x90, 0xa1, 0x62, 0xc0],
        ];
        for bytes in cases {
            let mut reader = Reader::new(bytes);
            assert_eq!(reader.value(), Ok(*bytes));
            assert_eq!(reader.remaining(), 0);
        }
    }

    #[test]
    fn refuses_depth_beyond_the_limit() {
        let mut deep = vec![0x91; MAX_PAYLOAD_DEPTH];
        deep.push(0xc0);
        assert!(Reader::new(&deep).value().is_ok());
        let mut too_deep = vec![0x91; MAX_PAYLOAD_DEPTH + 1];
        too_deep.push(0xc0);
        assert!(matches!(
            Reader::new(&too_deep).value(),
            Err(Malformed::TooDeep { .. })
        ));
    }
}
