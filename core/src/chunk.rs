//! Splitting a command result under the per-field cap, and reassembling it.
//!
//! # Theory of operation
//! A gateway truncates any single field of a message at [`DEFAULT_FIELD_CAP`] bytes of JSON (seed
//! 002: "Large results are truncated at 1 MB per field"), and some gateways accept far less (ASP.NET
//! Core SignalR's default receive limit is 32 KB). A node therefore sends a big result as several
//! `CommandResult` messages, *parts*, that share the `commandId` and carry `partIndex` (from 0) and
//! `isLast`. A result that fits is sent unchanged as ONE message without `partIndex`/`isLast`, which
//! is all a plain Sophon gateway knows.
//!
//! Only strings are cut. Part 0 carries the whole *skeleton* of `result` and `error` (every key,
//! number, bool, null, array element and `error.code`) with every string shortened to a prefix,
//! possibly empty. Parts 1.. carry the continuations of strings, mirroring the structure only along
//! the paths that lead to them: objects keep only those keys, arrays keep their length up to the
//! last index with something to add and hold `null` where an element adds nothing. A receiver
//! appends every string of part N (N >= 1) to the string at the same JSON path in part 0, in
//! `partIndex` order. String content is handed out greedily in document order (serialization order),
//! so the string contents of all parts, read in order, are the document's string contents cut into
//! consecutive runs.
//!
//! The guarantee: in every part, every top-level field (notably `result` and `error`) JSON-encodes
//! to at most the cap. Costs are measured with serde_json's escaping (`"` and `\` take 2 bytes,
//! `\b \t \n \f \r` 2, other control characters 6 as `\u00XX`, everything else its UTF-8 length),
//! and a string is only ever cut between two UTF-8 characters.
//!
//! The two fields are packed independently: part N carries the N-th run of `result` and the N-th
//! run of `error`, so a part may carry up to two capped fields. `error` in parts >= 1 repeats
//! `code` (the DTO requires it) and carries `message` (its next slice, or `""`) and the mirror of
//! `details`; `retryAfterMs`, `durationMs` and `protocolVersion` travel in part 0 only, `ok` is
//! repeated unchanged in every part.
//!
//! [`split`] costs one pass over the tree plus one copy of every string; it never re-serializes
//! the tree per slice. [`Reassembler`] (in `reassemble.rs`) buffers parts by index (HTTP polling
//! may reorder them), enforces [`ReassemblyLimits`], and merges them in one pass with amortized
//! O(1) appends. The normative rule is section "Chunked results" of docs/protocol.md.

use std::io;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::wire::dto::{CommandError, CommandResultDto, ErrorCode};

mod reassemble;

pub use reassemble::{Reassembler, ReassemblyLimits};

/// The per-field cap of the contract: 1,048,576 bytes of one field's JSON-encoded value.
pub const DEFAULT_FIELD_CAP: usize = 1_048_576;

/// The smallest cap [`split`] accepts: every scalar top-level field (the longest is a `u64`
/// `durationMs`, 20 bytes) must fit in one part whatever the cap.
pub const MIN_FIELD_CAP: usize = 32;

/// Why a result could not be split or a part could not be reassembled.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// `split` was called with a cap below [`MIN_FIELD_CAP`].
    #[error("cannot split CommandResult: field cap {cap} is below the minimum of {min} bytes")]
    CapBelowMinimum { cap: usize, min: usize },
    /// A part would need `needed` bytes in one field that cannot be cut (the skeleton of `result`
    /// or `error`, the path to a string in a later part, `commandId`, `protocolVersion`).
    #[error("cannot split CommandResult: field {field} needs at least {needed} bytes in one part but the field cap is {cap}")]
    CapTooSmall {
        field: &'static str,
        needed: usize,
        cap: usize,
    },
    /// `split` was given a result that already carries `partIndex` or `isLast`.
    #[error("cannot split CommandResult: it already carries partIndex/isLast (it is a part)")]
    AlreadyChunked,
    /// `split` would need more parts than `partIndex` (a u32) can number.
    #[error("cannot split CommandResult: it would need more than 2^32 parts")]
    PartCountOverflow,
    /// A part's `commandId` is not the one this reassembler collects (`found` is clipped).
    #[error("CommandResult part: commandId {found:?} does not match the command being reassembled, expected {expected:?}")]
    CommandIdMismatch { expected: String, found: String },
    /// A part lacks `partIndex` although it has `isLast` or earlier parts were received.
    #[error("CommandResult part: partIndex is missing, expected one (isLast is present or parts of this result were already received)")]
    MissingPartIndex,
    /// A second part with this `partIndex` differs from the first one.
    #[error("CommandResult part {part_index}: partIndex {part_index} was already received with different content")]
    DuplicatePart { part_index: u32 },
    /// A part says `isLast: true` but another index was already the last.
    #[error("CommandResult part {part_index}: isLast is true but part {last_index} was already marked last")]
    SecondLast { last_index: u32, part_index: u32 },
    /// A part's index lies beyond the index of the part marked `isLast`.
    #[error(
        "CommandResult part {part_index}: partIndex is beyond the last part's index {last_index}"
    )]
    BeyondLast { part_index: u32, last_index: u32 },
    /// A part's index is at or above [`ReassemblyLimits::max_parts`].
    #[error("CommandResult part {part_index}: partIndex exceeds the limit of {max_parts} parts")]
    TooManyParts { part_index: u32, max_parts: u32 },
    /// The buffered parts' `result` and `error` exceed [`ReassemblyLimits::max_total_bytes`].
    #[error("CommandResult parts: result and error exceed the limit of {max_total_bytes} bytes in total")]
    TooManyBytes { max_total_bytes: usize },
    /// A later part's `ok` differs from part 0's.
    #[error("CommandResult part {part_index}: ok differs from part 0's, expected the same value")]
    OkMismatch { part_index: u32 },
    /// A later part's `error.code` differs from part 0's.
    #[error(
        "CommandResult part {part_index}: error.code differs from part 0's, expected the same code"
    )]
    ErrorCodeMismatch { part_index: u32 },
    /// A later part names a path (a JSON pointer, clipped) that part 0 does not have.
    #[error("CommandResult part {part_index}: {path} does not exist in part 0")]
    UnknownPath { part_index: u32, path: String },
    /// A later part has a string where part 0 has something else.
    #[error("CommandResult part {part_index}: {path} is a string but part 0 has no string there")]
    NotAString { part_index: u32, path: String },
    /// A later part has a number or bool, or an object/array where part 0 has another kind.
    #[error("CommandResult part {part_index}: {path} must be null, a string, or an object/array matching part 0")]
    ShapeMismatch { part_index: u32, path: String },
    /// An earlier part failed; this reassembler accepts nothing more.
    #[error("CommandResult part: reassembly of this command already failed, no further parts are accepted")]
    AlreadyFailed,
    /// The result is already complete; this reassembler accepts nothing more.
    #[error("CommandResult part: the result of this command is already complete")]
    AlreadyComplete,
}

/// Splits `result` so that every top-level field of every part JSON-encodes to at most
/// `field_cap` bytes. A result that already fits comes back unchanged as the only element (no
/// `partIndex`/`isLast`); otherwise the parts carry `partIndex` 0.. and `isLast` (true on the last).
pub fn split(
    result: &CommandResultDto,
    field_cap: usize,
) -> Result<Vec<CommandResultDto>, ChunkError> {
    let cap = field_cap;
    if cap < MIN_FIELD_CAP {
        return Err(ChunkError::CapBelowMinimum {
            cap,
            min: MIN_FIELD_CAP,
        });
    }
    if result.part_index.is_some() || result.is_last.is_some() {
        return Err(ChunkError::AlreadyChunked);
    }
    check_whole("commandId", escaped_len(&result.command_id) + 2, cap)?;
    if let Some(version) = &result.protocol_version {
        check_whole("protocolVersion", escaped_len(version) + 2, cap)?;
    }
    let fits = |len: Option<usize>| len.is_none_or(|len| len <= cap);
    if fits(result.result.as_ref().map(encoded_len)) && fits(result.error.as_ref().map(encoded_len))
    {
        return Ok(vec![result.clone()]);
    }

    let (result0, result_rest) = match &result.result {
        Some(value) => {
            let mut packer = Packer::new("result", cap, skeleton_len(value), None)?;
            let first = walk(value, &mut Vec::new(), &mut packer)?;
            (Some(first), packer.mirrors)
        }
        None => (None, Vec::new()),
    };
    let (error0, error_rest) = match &result.error {
        Some(error) => {
            let (first, mirrors) = split_error(error, cap)?;
            (Some(first), mirrors)
        }
        None => (None, Vec::new()),
    };

    let count = 1 + result_rest.len().max(error_rest.len());
    let last = u32::try_from(count - 1).map_err(|_| ChunkError::PartCountOverflow)?;
    let mut parts = Vec::with_capacity(count);
    parts.push(CommandResultDto {
        result: result0,
        error: error0,
        part_index: Some(0),
        is_last: Some(last == 0),
        ..envelope(result)
    });
    let error_code = result.error.as_ref().map(|error| &error.code);
    let mut result_rest = result_rest.into_iter();
    let mut error_rest = error_rest.into_iter();
    for index in 1..=last {
        let error = (error_rest.next())
            .zip(error_code)
            .map(|(mirror, code)| later_error(code.clone(), mirror));
        parts.push(CommandResultDto {
            command_id: result.command_id.clone(),
            ok: result.ok,
            result: result_rest.next(),
            error,
            duration_ms: None,
            part_index: Some(index),
            is_last: Some(index == last),
            protocol_version: None,
        });
    }
    Ok(parts)
}

/// `result` without its (possibly huge) `result` and `error` fields.
fn envelope(result: &CommandResultDto) -> CommandResultDto {
    CommandResultDto {
        command_id: result.command_id.clone(),
        ok: result.ok,
        result: None,
        error: None,
        duration_ms: result.duration_ms,
        part_index: result.part_index,
        is_last: result.is_last,
        protocol_version: result.protocol_version.clone(),
    }
}

fn check_whole(field: &'static str, needed: usize, cap: usize) -> Result<(), ChunkError> {
    if needed > cap {
        return Err(ChunkError::CapTooSmall { field, needed, cap });
    }
    Ok(())
}

/// Packs `error`: `message` is its first string (path `/message`), then the strings of `details`.
fn split_error(error: &CommandError, cap: usize) -> Result<(CommandError, Vec<Value>), ChunkError> {
    // `{"code":C,"message":""}`, also what a later part needs before its first slice.
    let stub = CommandError {
        code: error.code.clone(),
        message: String::new(),
        details: None,
        retry_after_ms: None,
    };
    let open = encoded_len(&stub);
    let mut skeleton = open;
    if let Some(retry) = error.retry_after_ms {
        skeleton += ",\"retryAfterMs\":".len() + encoded_len(&retry);
    }
    if let Some(details) = &error.details {
        skeleton += ",\"details\":".len() + skeleton_len(details);
    }
    let mut packer = Packer::new("error", cap, skeleton, Some(open))?;
    let mut path = vec![Step::Key("message")];
    let message = packer.leaf(&path, &error.message)?.to_owned();
    let details = match &error.details {
        Some(details) => {
            path[0] = Step::Key("details");
            Some(walk(details, &mut path, &mut packer)?)
        }
        None => None,
    };
    let first = CommandError {
        code: error.code.clone(),
        message,
        details,
        retry_after_ms: error.retry_after_ms,
    };
    Ok((first, packer.mirrors))
}

/// A later part's `error` from its mirror `{"message"?: .., "details"?: ..}`.
fn later_error(code: ErrorCode, mirror: Value) -> CommandError {
    let (message, details) = match mirror {
        Value::Object(mut map) => {
            let message = match map.remove("message") {
                Some(Value::String(message)) => message,
                _ => String::new(),
            };
            (message, map.remove("details"))
        }
        _ => (String::new(), None),
    };
    CommandError {
        code,
        message,
        details,
        retry_after_ms: None,
    }
}

/// One step of a JSON path: an object key or an array index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Hands out the string content of one field (`result` or `error`) to parts, greedily in document
/// order, and builds the mirrors of parts 1...
struct Packer<'a> {
    field: &'static str,
    cap: usize,
    /// The part being filled: 0 is the skeleton part, `n >= 1` is `mirrors[n - 1]`.
    part: usize,
    /// Bytes of the field already committed in the current part.
    used: usize,
    /// Whether the current later part holds a slice yet (`prev` is its path).
    has_prev: bool,
    prev: Vec<Step<'a>>,
    /// For `error`: the cost of `{"code":C,"message":""}` that a later part pays before its first
    /// slice, after which `/message` counts as present (its quotes already paid).
    open: Option<usize>,
    mirrors: Vec<Value>,
}

const MESSAGE_PATH: [Step<'static>; 1] = [Step::Key("message")];

impl<'a> Packer<'a> {
    /// Fails when the skeleton alone (part 0 with every string empty) exceeds the cap.
    fn new(
        field: &'static str,
        cap: usize,
        skeleton: usize,
        open: Option<usize>,
    ) -> Result<Self, ChunkError> {
        check_whole(field, skeleton, cap)?;
        Ok(Packer {
            field,
            cap,
            part: 0,
            used: skeleton,
            has_prev: false,
            prev: Vec::new(),
            open,
            mirrors: Vec::new(),
        })
    }

    /// Places the string `s` found at `path`; returns its part-0 slice (a prefix, maybe empty).
    fn leaf(&mut self, path: &[Step<'a>], s: &'a str) -> Result<&'a str, ChunkError> {
        let mut pos = 0;
        let mut first = "";
        if self.part == 0 {
            let (end, cost) = fit(s, 0, self.cap - self.used);
            self.used += cost;
            first = &s[..end];
            pos = end;
            if pos == s.len() {
                return Ok(first);
            }
            self.next_part()?;
        }
        while pos < s.len() {
            let add = self.add_cost(path);
            let need = add + char_cost(s, pos);
            if self.used + need <= self.cap {
                let (end, cost) = fit(s, pos, self.cap - self.used - add);
                let mirror = self.mirrors.last_mut().expect("a later part has a mirror");
                insert(mirror, path, &s[pos..end]);
                self.used += add + cost;
                self.has_prev = true;
                self.prev.clear();
                self.prev.extend_from_slice(path);
                pos = end;
                if pos < s.len() {
                    self.next_part()?;
                }
            } else if !self.has_prev {
                return Err(ChunkError::CapTooSmall {
                    field: self.field,
                    needed: need,
                    cap: self.cap,
                });
            } else {
                self.next_part()?;
            }
        }
        Ok(first)
    }

    fn next_part(&mut self) -> Result<(), ChunkError> {
        if self.part >= u32::MAX as usize {
            return Err(ChunkError::PartCountOverflow);
        }
        self.part += 1;
        self.used = 0;
        self.has_prev = false;
        self.mirrors.push(Value::Null);
        Ok(())
    }

    /// Bytes the current later part's mirror grows by when a slice at `path` is added, quotes
    /// included, slice content excluded.
    fn add_cost(&self, path: &[Step<'a>]) -> usize {
        if self.has_prev {
            return join_cost(&self.prev, path);
        }
        match self.open {
            Some(open) => open + join_cost(&MESSAGE_PATH, path),
            None => fresh_cost(path) + 2,
        }
    }
}

/// The cost of adding a leaf at `path` to a mirror whose last leaf is at `prev` (`prev` comes
/// earlier in document order). Equal paths: the leaf is present, its quotes paid.
fn join_cost(prev: &[Step<'_>], path: &[Step<'_>]) -> usize {
    if prev == path {
        return 0;
    }
    let common = prev.iter().zip(path).take_while(|(a, b)| a == b).count();
    debug_assert!(
        common < path.len() && common < prev.len(),
        "no leaf path prefixes another"
    );
    let entry = match (prev.get(common), path.get(common)) {
        (_, Some(Step::Key(key))) => 1 + escaped_len(key) + 3,
        (Some(Step::Index(before)), Some(Step::Index(index))) => {
            1 + 5 * index.saturating_sub(before + 1)
        }
        (_, Some(Step::Index(index))) => 1 + 5 * index,
        (_, None) => 0,
    };
    entry + fresh_cost(path.get(common + 1..).unwrap_or(&[])) + 2
}

/// The cost of the containers along `steps` when none of them exists yet: each is two brackets
/// plus its entry's prefix (`"key":`, or one `null,` per preceding array element).
fn fresh_cost(steps: &[Step<'_>]) -> usize {
    steps
        .iter()
        .map(|step| match step {
            Step::Key(key) => 2 + escaped_len(key) + 3,
            Step::Index(index) => 2 + 5 * index,
        })
        .sum()
}

/// Builds part 0's copy of `value` (strings shortened) and feeds every string to `packer`.
fn walk<'a>(
    value: &'a Value,
    path: &mut Vec<Step<'a>>,
    packer: &mut Packer<'a>,
) -> Result<Value, ChunkError> {
    Ok(match value {
        Value::String(s) => Value::String(packer.leaf(path, s)?.to_owned()),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                path.push(Step::Index(index));
                out.push(walk(item, path, packer)?);
                path.pop();
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, item) in map {
                path.push(Step::Key(key));
                let copy = walk(item, path, packer)?;
                out.insert(key.clone(), copy);
                path.pop();
            }
            Value::Object(out)
        }
        scalar => scalar.clone(),
    })
}

/// Sets the string at `path` in a mirror, creating containers (and `null` padding) on the way.
fn insert(root: &mut Value, path: &[Step<'_>], slice: &str) {
    let mut current = root;
    for step in path {
        match *step {
            Step::Key(key) => {
                if !current.is_object() {
                    *current = Value::Object(Map::new());
                }
                let map = current.as_object_mut().expect("just made an object");
                if !map.contains_key(key) {
                    map.insert(key.to_owned(), Value::Null);
                }
                current = map.get_mut(key).expect("just inserted");
            }
            Step::Index(index) => {
                if !current.is_array() {
                    *current = Value::Array(Vec::new());
                }
                let items = current.as_array_mut().expect("just made an array");
                if items.len() <= index {
                    items.resize(index + 1, Value::Null);
                }
                current = &mut items[index];
            }
        }
    }
    *current = Value::String(slice.to_owned());
}

/// The JSON-escaped length of one byte of UTF-8 text, as serde_json writes it.
fn byte_cost(byte: u8) -> usize {
    match byte {
        b'"' | b'\\' | 0x08 | 0x09 | 0x0a | 0x0c | 0x0d => 2,
        0x00..=0x1f => 6,
        _ => 1,
    }
}

/// The JSON-escaped length of `s`, quotes excluded.
fn escaped_len(s: &str) -> usize {
    s.bytes().map(byte_cost).sum()
}

/// The escaped cost of the character starting at byte `pos` of `s`.
fn char_cost(s: &str, pos: usize) -> usize {
    match s.as_bytes().get(pos) {
        Some(&byte) if byte < 0x80 => byte_cost(byte),
        _ => s[pos..].chars().next().map_or(0, char::len_utf8),
    }
}

/// The longest run of `s` from `pos` whose escaped cost is at most `budget`, ending on a
/// character boundary: returns (end, cost).
fn fit(s: &str, pos: usize, budget: usize) -> (usize, usize) {
    let bytes = s.as_bytes();
    let mut end = pos;
    let mut cost = 0;
    while let Some(&byte) = bytes.get(end) {
        let next = byte_cost(byte);
        if cost + next > budget {
            break;
        }
        cost += next;
        end += 1;
    }
    // Bytes of a multibyte character cost 1 each: backing off to its start refunds 1 per byte.
    while !s.is_char_boundary(end) {
        end -= 1;
        cost -= 1;
    }
    (end, cost)
}

/// The JSON-encoded length of `value` with every string emptied to `""`.
fn skeleton_len(value: &Value) -> usize {
    match value {
        Value::String(_) => 2,
        Value::Array(items) => {
            2 + items.len().saturating_sub(1) + items.iter().map(skeleton_len).sum::<usize>()
        }
        Value::Object(map) => {
            2 + map.len().saturating_sub(1)
                + map
                    .iter()
                    .map(|(key, item)| escaped_len(key) + 3 + skeleton_len(item))
                    .sum::<usize>()
        }
        scalar => encoded_len(scalar),
    }
}

/// An `io::Write` that only counts.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The JSON-encoded length of `value`, without building the text.
fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value)
        .expect("a JSON value or DTO (string keys only) serializes to a counter without error");
    counter.0
}
