//! Node side: whole characters out of a byte stream, and text cut into frames.
//!
//! A backend (llama.cpp, vLLM) streams bytes, and a token may end in the middle of a multibyte
//! character. The server decodes each result frame on its own, so a node must only ever send
//! whole characters: [`Utf8Cutter`] holds back an incomplete trailing sequence until the next
//! feed completes it, and [`split_text`] cuts a long text into pieces of at most N bytes on
//! character boundaries.
//!
//! Invalid bytes become U+FFFD, one per maximal invalid subpart, exactly as
//! `String::from_utf8_lossy` (and WHATWG's decoder, and the original server's
//! `Buffer.toString("utf8")`) would decode the whole stream: feeding the stream in any chunks
//! gives the same text as decoding it at once. A model that emits a stray byte should not kill
//! its task; [`Utf8Cutter::replacements`] lets the node report it.

use std::str;

/// The longest UTF-8 sequence; the cutter carries at most one byte fewer.
const MAX_CHAR_BYTES: usize = 4;

/// The smallest piece size [`split_text`] accepts: any character must fit in one piece.
pub const MIN_PIECE_BYTES: usize = MAX_CHAR_BYTES;

/// Turns arbitrary byte chunks into text made of whole characters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Utf8Cutter {
    /// The start of a character that the last feed ended in: a valid prefix, 1 to 3 bytes.
    carry: [u8; MAX_CHAR_BYTES],
    carry_len: usize,
    replacements: u64,
}

impl Utf8Cutter {
    /// A cutter with nothing carried.
    pub fn new() -> Utf8Cutter {
        Utf8Cutter::default()
    }

    /// Appends to `out` every character that `bytes` completes, and carries an incomplete
    /// trailing sequence (at most 3 bytes) to the next feed.
    pub fn feed(&mut self, bytes: &[u8], out: &mut String) {
        let mut rest = bytes;
        if self.carry_len > 0 {
            rest = self.complete_carry(rest, out);
            if self.carry_len > 0 {
                // Still incomplete: `rest` was used up.
                return;
            }
        }
        loop {
            match str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    return;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by `valid_up_to`'s contract.
                    out.push_str(str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(len) => {
                            self.replace(out);
                            rest = &after[len..];
                        }
                        None => {
                            // An incomplete sequence at the end: at most 3 bytes.
                            self.carry[..after.len()].copy_from_slice(after);
                            self.carry_len = after.len();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Tries to complete the carried sequence with the first bytes of `bytes`; returns what is
    /// left of `bytes`. Leaves `carry_len > 0` only when `bytes` ran out first.
    fn complete_carry<'b>(&mut self, bytes: &'b [u8], out: &mut String) -> &'b [u8] {
        let held = self.carry_len;
        let take = (MAX_CHAR_BYTES - held).min(bytes.len());
        let mut buf = self.carry;
        buf[held..held + take].copy_from_slice(&bytes[..take]);
        let candidate = &buf[..held + take];
        let consumed = match str::from_utf8(candidate) {
            // `take` may reach into the following characters: all of them are whole here.
            Ok(text) => {
                out.push_str(text);
                take
            }
            Err(e) if e.valid_up_to() > 0 => {
                // The carried character completed; what follows it is decoded by the caller.
                out.push_str(str::from_utf8(&candidate[..e.valid_up_to()]).unwrap_or_default());
                e.valid_up_to() - held
            }
            Err(e) => match e.error_len() {
                Some(len) => {
                    // The carried prefix was not continued: it is one invalid subpart.
                    self.replace(out);
                    len.saturating_sub(held)
                }
                None => {
                    // Still a valid prefix, and `bytes` is exhausted (else `take` would
                    // have completed or broken it).
                    self.carry = buf;
                    self.carry_len = held + take;
                    return &bytes[take..];
                }
            },
        };
        self.carry_len = 0;
        &bytes[consumed..]
    }

    fn replace(&mut self, out: &mut String) {
        out.push(char::REPLACEMENT_CHARACTER);
        self.replacements += 1;
    }

    /// Ends the stream: an incomplete sequence still carried becomes one U+FFFD. The cutter is
    /// then empty and may be reused.
    pub fn finish(&mut self, out: &mut String) {
        if self.carry_len > 0 {
            self.carry_len = 0;
            self.replace(out);
        }
    }

    /// How many bytes are carried, waiting for the rest of their character.
    pub fn pending(&self) -> usize {
        self.carry_len
    }

    /// How many U+FFFD this cutter has produced for invalid input so far.
    pub fn replacements(&self) -> u64 {
        self.replacements
    }
}

/// `max_bytes` is below [`MIN_PIECE_BYTES`], so a 4-byte character could not fit a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot split text into pieces of {max_bytes} bytes: the minimum is 4 (the longest UTF-8 character)")]
pub struct SplitError {
    pub max_bytes: usize,
}

/// Cuts `text` into non-empty pieces of at most `max_bytes` bytes each, on character boundaries,
/// each as long as possible. An empty text yields no piece.
pub fn split_text(text: &str, max_bytes: usize) -> Result<TextPieces<'_>, SplitError> {
    if max_bytes < MIN_PIECE_BYTES {
        return Err(SplitError { max_bytes });
    }
    Ok(TextPieces {
        rest: text,
        max_bytes,
    })
}

/// The pieces of [`split_text`].
#[derive(Clone, Debug)]
pub struct TextPieces<'a> {
    rest: &'a str,
    max_bytes: usize,
}

impl<'a> Iterator for TextPieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let mut end = self.max_bytes.min(self.rest.len());
        // Terminates at 1 at the latest: `max_bytes >= 4` holds the longest character.
        while !self.rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(piece)
    }
}
