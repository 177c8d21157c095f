//! The seeded random number generator: command ids, reconnect jitter, pairing codes, secrets.
//!
//! # Theory of operation
//! Core never asks the OS for randomness (design rule 2): the caller passes a 32-byte seed to
//! [`Rng::from_seed`] and every random value of a machine comes from that one ChaCha20 stream. A
//! shell seeds from the OS (`getrandom`) in production; a test passes a fixed seed and gets the
//! same ids, secrets and jitter on every run, so transcripts are byte-identical.
//!
//! ChaCha20 is a cryptographically secure generator, so the same stream can mint token secrets
//! and connection tokens: with an OS seed, nobody who sees some outputs can predict the others.
//! `rand_chacha` is built without `std`, which keeps `getrandom` out of core's dependency tree
//! (`cargo tree -p nodelink-core -e normal` shows none).
//!
//! Every method consumes part of the stream, so a value depends on the seed AND on every draw
//! made before it: the same seed with the same sequence of calls yields the same values. `Rng` is
//! deliberately not `Clone`: two copies would hand out the same secrets twice. Use [`Rng::fork`]
//! to derive an independent stream (one per simulated peer, say).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_chacha::rand_core::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;

/// The letters of a pairing code: A-Z without `I` and `O`, which a person reading the code off a
/// screen confuses with `1` and `0`. 24 letters, so a code has 24^3 * 10^3 = 13,824,000 values.
pub const PAIRING_CODE_LETTERS: &[u8; 24] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";

/// The digits of a pairing code: all ten. They sit after the dash, where no letter can appear, so
/// `0` and `1` are unambiguous there.
pub const PAIRING_CODE_DIGITS: &[u8; 10] = b"0123456789";

/// The deterministic ChaCha20 stream every random value of a machine comes from.
pub struct Rng {
    inner: ChaCha20Rng,
}

impl fmt::Debug for Rng {
    // The state would reveal every future secret: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rng { .. }")
    }
}

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            inner: ChaCha20Rng::from_seed(seed),
        }
    }

    /// A new, independent generator seeded from 32 bytes of this one. Deterministic like every
    /// other draw: the same parent state forks the same child.
    pub fn fork(&mut self) -> Self {
        let mut seed = [0u8; 32];
        self.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// The next 32 uniformly random bits.
    pub fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }

    /// The next 64 uniformly random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Fills `dst` with random bytes.
    pub fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.inner.fill_bytes(dst);
    }

    /// A uniformly random integer in `[0, n)`, without modulo bias (Lemire's widening-multiply
    /// method: a 64x64->128 multiply, and a rejection only in the rare biased zone). An empty range
    /// (`n == 0`) yields 0 so callers need no special case.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        // The low half of `m` says where in its bucket the draw landed; the first
        // `2^64 mod n` positions of every bucket are the surplus that would bias small results.
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// A uniformly random integer in `[0, max]` (both ends included).
    pub fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.below(n),
            None => self.next_u64(),
        }
    }

    /// A uniformly random duration in `[0, max]` at nanosecond resolution: reconnect jitter. A
    /// `max` above `u64::MAX` nanoseconds (584 years) is treated as that.
    pub fn jitter(&mut self, max: Duration) -> Duration {
        let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.up_to(max_nanos))
    }

    /// A random version-4 UUID, lowercase and hyphenated (`8-4-4-4-12` hex digits): command ids.
    /// 122 random bits; the version nibble is `4` and the variant bits are `10` (RFC 9562).
    pub fn uuid_v4(&mut self) -> String {
        uuid_text(self.uuid_v4_value())
    }

    /// The value of the next [`uuid_v4`](Self::uuid_v4) (its 32 hex digits read as one
    /// big-endian number), drawn the same way: for a caller that keys ids by value and would
    /// otherwise parse the text back. [`uuid_text`] writes it.
    pub fn uuid_v4_value(&mut self) -> u128 {
        let mut b = [0u8; 16];
        self.fill_bytes(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        u128::from_be_bytes(b)
    }

    /// A pairing code in the seed's `ABC-123` form: three letters of [`PAIRING_CODE_LETTERS`], a
    /// dash, three digits. It is for a person comparing two screens, not a secret: 13.8 million
    /// values only make an accidental match between two pending nodes unlikely.
    pub fn pairing_code(&mut self) -> String {
        let mut out = String::with_capacity(7);
        for _ in 0..3 {
            out.push(self.pick(PAIRING_CODE_LETTERS));
        }
        out.push('-');
        for _ in 0..3 {
            out.push(self.pick(PAIRING_CODE_DIGITS));
        }
        out
    }

    /// `bytes` random bytes as lowercase hex (`2 * bytes` characters): token secrets, pairing
    /// secrets, connection tokens. 32 bytes (256 bits) is the usual size for a secret.
    pub fn secret(&mut self, bytes: usize) -> String {
        let raw = self.bytes(bytes);
        let mut out = String::with_capacity(2 * raw.len());
        for byte in &raw {
            push_hex(&mut out, *byte);
        }
        out
    }

    /// `bytes` random bytes as base64url without padding (`ceil(4 * bytes / 3)` characters of
    /// `A-Z a-z 0-9 - _`): the shape of SignalR connection ids and connection tokens.
    pub fn token_urlsafe(&mut self, bytes: usize) -> String {
        URL_SAFE_NO_PAD.encode(self.bytes(bytes))
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut raw = vec![0u8; len];
        self.fill_bytes(&mut raw);
        raw
    }

    fn pick(&mut self, alphabet: &[u8]) -> char {
        // `below(len) < len`, so the index is in bounds; alphabets here are a few dozen long.
        let i = self.below(alphabet.len() as u64) as usize;
        char::from(alphabet[i])
    }
}

/// A UUID's value as text: 32 lowercase hex digits, hyphenated `8-4-4-4-12`.
pub fn uuid_text(value: u128) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each of the 16 bytes' two digits go: the hyphens sit at 8, 13, 18 and 23.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = [b'-'; 36];
    for (byte, at) in value.to_be_bytes().into_iter().zip(AT) {
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0x0f)];
    }
    // Only ASCII hex digits and hyphens were written: always UTF-8.
    String::from(std::str::from_utf8(&out).unwrap_or_default())
}

fn push_hex(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0x0f)]));
}
