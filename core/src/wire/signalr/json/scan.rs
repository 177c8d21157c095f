//! Recognizing a `Heartbeat` invocation without decoding it: the gateway's hottest record.
//!
//! A gateway needs almost nothing from a heartbeat at once (the dispatcher reads
//! `capabilities.slots`), yet decoding the whole `HeartbeatDto` (strings, the command list, the
//! GPUs) is most of what a heartbeat costs. [`scan_heartbeat`] checks the record's shape and
//! hands back where the argument and its `capabilities` lie, so that the caller can keep the
//! argument as text and decode `capabilities` only when it changed.
//!
//! It is strictly conservative: it answers `Some` only for records that the general path
//! ([`super::decode_record`], then the contract's `from_invocation`) certainly decodes as a
//! Heartbeat, and `None` for anything else or anything unusual (an escape in a string, a number
//! with an exponent or many digits, a repeated or missing member, `headers`, `invocationId`,
//! `arguments` before `target`, deep nesting). The caller then takes the general path, which
//! decides and reports precisely. What it does NOT check is the content of a `capabilities`
//! object beyond its JSON syntax: the caller decodes it (or knows it equal to text it decoded).

use super::scan_usual::usual;

/// Where the parts of a recognized Heartbeat invocation lie in its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatScan<'a> {
    /// The argument's JSON text (the `HeartbeatDto` object, exactly as received).
    pub argument: &'a str,
    /// The `capabilities` object's JSON text, unchecked beyond its syntax; `None` when the
    /// member is absent or `null`.
    pub capabilities: Option<&'a str>,
}

/// Recognizes `record` (without its 0x1E) as a fire-and-forget Heartbeat invocation whose
/// argument is a valid `HeartbeatDto` apart from the content of `capabilities`; `None` sends the
/// caller to the general path.
pub fn scan_heartbeat(record: &[u8]) -> Option<HeartbeatScan<'_>> {
    scan_heartbeat_with(record, None)
}

/// [`scan_heartbeat`] for a caller that knows the `capabilities` a node sent last: when the
/// record's `capabilities` starts with `known` (the complete text of an object, which JSON's
/// grammar delimits by itself), it is taken as that object without scanning it again.
pub fn scan_heartbeat_with<'a>(
    record: &'a [u8],
    known: Option<&[u8]>,
) -> Option<HeartbeatScan<'a>> {
    match usual(record, known) {
        // Checked once a Heartbeat is certain (other records leave cheaply): the general path
        // rejects invalid UTF-8 anywhere, and so would the flexible scan.
        Some(usual) => usual
            .scan(std::str::from_utf8(record).ok()?)
            .map(|(scan, _)| scan),
        None => flexible(record, known),
    }
}

/// [`scan_heartbeat_with`] for the records nodes write (serde's member order, no whitespace)
/// known to be text (a WebSocket Text frame): no UTF-8 check, and `None` for any other
/// spelling, even a valid Heartbeat (give those to [`scan_heartbeat_with`], which decides).
/// Whenever it answers, the answer is [`scan_heartbeat_with`]'s.
pub fn scan_usual_heartbeat<'a>(
    record: &'a str,
    known: Option<&[u8]>,
) -> Option<HeartbeatScan<'a>> {
    usual_heartbeat(record, known).map(|(scan, _)| scan)
}

/// [`scan_usual_heartbeat`], and whether its `capabilities` are `known` (then the caller need
/// not compare them again).
#[inline]
pub(crate) fn usual_heartbeat<'a>(
    record: &'a str,
    known: Option<&[u8]>,
) -> Option<(HeartbeatScan<'a>, bool)> {
    usual(record.as_bytes(), known)?.scan(record)
}

/// Any spelling of a Heartbeat record (whitespace, member order, unknown members): the scan for
/// what the template in [`usual`] does not match.
fn flexible<'a>(record: &'a [u8], known: Option<&[u8]>) -> Option<HeartbeatScan<'a>> {
    let mut s = Scanner {
        bytes: record,
        at: 0,
        last: 0,
    };
    let (mut seen_type, mut seen_target) = (false, false);
    let mut scan = None;
    // The envelope as nodes write it, matched at once (then the members as below).
    const ENVELOPE: &[u8] = b"{\"type\":1,\"target\":\"Heartbeat\",";
    // An invocation with an id (a CommandResult, a Hello) is never one: leave at once.
    const WITH_ID: &[u8] = b"{\"type\":1,\"invocationId\":";
    if record.starts_with(WITH_ID) {
        return None;
    }
    if record.starts_with(ENVELOPE) {
        (seen_type, seen_target) = (true, true);
        s.at = ENVELOPE.len();
    } else {
        s.ws();
        s.expect(b'{')?;
    }
    s.ws();
    if s.peek()? != b'}' {
        loop {
            let key = s.string()?;
            s.ws();
            s.expect(b':')?;
            s.ws();
            match key {
                b"type" if !seen_type => {
                    // Exactly the integer 1 (an Invocation).
                    if s.number()? != Number::Integer || s.last_token() != b"1" {
                        return None;
                    }
                    seen_type = true;
                }
                b"target" if !seen_target => {
                    if !s.string()?.eq_ignore_ascii_case(b"Heartbeat") {
                        return None;
                    }
                    seen_target = true;
                }
                b"arguments" if seen_target && scan.is_none() => {
                    // Checked once a Heartbeat is certain (other records leave cheaply): the
                    // general path rejects invalid UTF-8 anywhere, skipped members included.
                    let text = std::str::from_utf8(record).ok()?;
                    s.expect(b'[')?;
                    s.ws();
                    scan = Some(s.heartbeat(text, known)?);
                    s.ws();
                    s.expect(b']')?;
                }
                // Members that change what the record means, or repeated ones.
                b"type" | b"target" | b"arguments" | b"invocationId" | b"headers"
                | b"streamIds" => return None,
                _ => s.skip_value(0)?,
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    } else {
        s.at += 1;
    }
    s.ws();
    if s.at != s.bytes.len() || !seen_type {
        return None;
    }
    scan
}

/// What kind of number a token was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Number {
    /// Digits only: fits a `u64` (at most 19 digits, no sign).
    Integer,
    /// Any other number this scanner accepts (a sign or a fraction; no exponent, at most 20
    /// digits): a finite `f64`.
    Decimal,
}

/// The deepest nesting skipped; deeper values go to the general path.
const MAX_DEPTH: usize = 16;

/// At most this many digits in a number (a `u64` has up to 20; 19 always fit).
const MAX_DIGITS: usize = 19;

pub(super) struct Scanner<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) at: usize,
    /// The start of the last number token, for `last_token`.
    pub(super) last: usize,
}

impl<'a> Scanner<'a> {
    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    pub(super) fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    pub(super) fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    pub(super) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// A string without escapes or control characters; its content.
    #[inline(always)]
    pub(super) fn string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        self.rest_of_string()
    }

    /// [`Scanner::string`] after its opening quote.
    #[inline(always)]
    pub(super) fn rest_of_string(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        let end = start + string_end(&self.bytes[start..])?;
        self.at = end + 1;
        Some(&self.bytes[start..end])
    }

    /// A number token; its kind. `last_token` gives its text.
    pub(super) fn number(&mut self) -> Option<Number> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let int_start = self.at;
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut digits = self.at - int_start;
        let mut fraction = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            let frac_start = self.at;
            self.digits();
            if self.at == frac_start {
                return None;
            }
            digits += self.at - frac_start;
            fraction = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) || digits > MAX_DIGITS {
            return None;
        }
        self.last = start;
        Some(if negative || fraction {
            Number::Decimal
        } else {
            Number::Integer
        })
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    /// The text of the number just read.
    pub(super) fn last_token(&self) -> &'a [u8] {
        &self.bytes[self.last..self.at]
    }

    /// Any JSON value, checked for syntax only (conservatively, see the module docs).
    pub(super) fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' if depth >= MAX_DEPTH => None,
            b'{' => {
                self.at += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.at += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(drop),
        }
    }

    /// `word` here, passed over; otherwise nothing moves.
    #[inline(always)]
    pub(super) fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// The heartbeat argument: an object with every required `HeartbeatDto` member once, each
    /// of its type; `capabilities` null or an object.
    fn heartbeat(&mut self, text: &'a str, known: Option<&[u8]>) -> Option<HeartbeatScan<'a>> {
        // nodeId, status, uptime, platform, version, cpuPercent, memoryMb, capabilities.
        const REQUIRED: u8 = 0b0111_1111;
        let start = self.at;
        let mut seen = 0u8;
        let mut capabilities = None;
        self.expect(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            return None;
        }
        // The members in the order nodes write them, each with its `:`: a name spelled so is
        // matched at once (the literal has no escape, so the name is exactly that one).
        const MEMBERS: [(&[u8], u8, Field); 8] = [
            (b"\"nodeId\":", 0, Field::Text),
            (b"\"status\":", 1, Field::Text),
            (b"\"uptime\":", 2, Field::Unsigned),
            (b"\"platform\":", 3, Field::Text),
            (b"\"version\":", 4, Field::Text),
            (b"\"cpuPercent\":", 5, Field::Float),
            (b"\"memoryMb\":", 6, Field::Unsigned),
            (b"\"capabilities\":", 7, Field::Capabilities),
        ];
        let mut next = 0;
        loop {
            let (bit, kind) = match MEMBERS.get(next) {
                Some((literal, bit, kind)) if self.bytes[self.at..].starts_with(literal) => {
                    self.at += literal.len();
                    next += 1;
                    (*bit, *kind)
                }
                _ => {
                    let key = self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    match key {
                        b"nodeId" => (0, Field::Text),
                        b"status" => (1, Field::Text),
                        b"uptime" => (2, Field::Unsigned),
                        b"platform" => (3, Field::Text),
                        b"version" => (4, Field::Text),
                        b"cpuPercent" => (5, Field::Float),
                        b"memoryMb" => (6, Field::Unsigned),
                        b"capabilities" => (7, Field::Capabilities),
                        _ => (8, Field::Other),
                    }
                }
            };
            self.ws();
            if bit < 8 {
                if seen & (1 << bit) != 0 {
                    // serde refuses a repeated member.
                    return None;
                }
                seen |= 1 << bit;
            }
            match kind {
                Field::Text => {
                    self.string()?;
                }
                Field::Unsigned => {
                    if self.number()? != Number::Integer {
                        return None;
                    }
                }
                Field::Float => {
                    self.number()?;
                }
                Field::Capabilities => match self.peek()? {
                    b'n' => self.literal(b"null")?,
                    b'{' => {
                        let from = self.at;
                        match known {
                            Some(known)
                                if known.first() == Some(&b'{')
                                    && self.bytes[from..].starts_with(known) =>
                            {
                                self.at += known.len();
                            }
                            _ => self.skip_value(1)?,
                        }
                        capabilities = Some(text.get(from..self.at)?);
                    }
                    _ => return None,
                },
                Field::Other => self.skip_value(1)?,
            }
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => break,
                _ => return None,
            }
        }
        (seen & REQUIRED == REQUIRED).then(|| HeartbeatScan {
            argument: &text[start..self.at],
            capabilities,
        })
    }
}

/// What a `HeartbeatDto` member must hold.
#[derive(Clone, Copy)]
enum Field {
    Text,
    Unsigned,
    Float,
    Capabilities,
    Other,
}

/// Where the string whose content starts `bytes` ends (its closing quote), if it has no escape
/// and no control character (below 0x20, which JSON strings must escape). Eight bytes at a
/// time (see [`special_bytes`]).
#[inline]
fn string_end(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let flagged = special_bytes(chunk);
        if flagged != 0 {
            let end = at + (flagged.trailing_zeros() / 8) as usize;
            return (bytes[end] == b'"').then_some(end);
        }
        at += 8;
    }
    for (end, byte) in bytes.iter().enumerate().skip(at) {
        match byte {
            b'"' => return Some(end),
            b'\\' | 0..=0x1f => return None,
            _ => {}
        }
    }
    None
}

/// The bytes of `chunk` (8 bytes of a string) that end a string or are not allowed in one (`"`,
/// `\\`, below 0x20), as a mask with the high bit of each such byte set. Only the lowest
/// flagged byte is exact (a borrow only flags bytes above it): that is the one that counts.
#[inline(always)]
pub(super) fn special_bytes(chunk: &[u8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut word = [0; 8];
    word.copy_from_slice(chunk);
    let word = u64::from_le_bytes(word);
    (word.wrapping_sub(ONES * 0x20) & !word & HIGHS)
        | zero_byte(word ^ (ONES * u64::from(b'"')))
        | zero_byte(word ^ (ONES * u64::from(b'\\')))
}
