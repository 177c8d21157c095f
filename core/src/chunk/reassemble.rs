//! [`Reassembler`]: collects the parts of one command's result, in any order, within limits.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{encoded_len, ChunkError};
use crate::wire::dto::CommandResultDto;

/// Bounds on what a [`Reassembler`] buffers for one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Parts accepted per command: `partIndex` must be below this. Default 4096.
    pub max_parts: u32,
    /// Sum over buffered parts of the JSON-encoded lengths of their `result` and `error`.
    /// Default 64 MiB.
    pub max_total_bytes: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_parts: 4096,
            max_total_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Where a [`Reassembler`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Collecting,
    Complete,
    Failed,
}

/// Collects the parts of one command's result (in any order) and yields the whole result.
///
/// An unchunked result (no `partIndex`, no `isLast`) pushed first passes straight through. After
/// the complete result was returned, or after any error, the reassembler refuses every further
/// part ([`ChunkError::AlreadyComplete`], [`ChunkError::AlreadyFailed`]) and holds no buffers:
/// its owner drops it. A part identical to one already buffered (a retried POST) is ignored.
#[derive(Clone, Debug)]
pub struct Reassembler {
    command_id: String,
    limits: ReassemblyLimits,
    parts: BTreeMap<u32, CommandResultDto>,
    last_index: Option<u32>,
    total_bytes: usize,
    state: State,
}

impl Reassembler {
    /// A reassembler for the result of `command_id`.
    pub fn new(command_id: impl Into<String>, limits: ReassemblyLimits) -> Self {
        Reassembler {
            command_id: command_id.into(),
            limits,
            parts: BTreeMap::new(),
            last_index: None,
            total_bytes: 0,
            state: State::Collecting,
        }
    }

    /// The command whose parts this reassembler accepts.
    pub fn command_id(&self) -> &str {
        &self.command_id
    }

    /// The limits it enforces.
    pub fn limits(&self) -> ReassemblyLimits {
        self.limits
    }

    /// How many distinct parts are buffered.
    pub fn buffered_parts(&self) -> usize {
        self.parts.len()
    }

    /// The bytes counted against [`ReassemblyLimits::max_total_bytes`] so far.
    pub fn buffered_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Adds one part. Returns `Some(result)` (without `partIndex`/`isLast`) once parts 0 to the
    /// one marked `isLast` are all present, `None` while parts are missing. Any error poisons the
    /// reassembler (see the type's docs).
    pub fn push(&mut self, part: CommandResultDto) -> Result<Option<CommandResultDto>, ChunkError> {
        match self.state {
            State::Complete => return Err(ChunkError::AlreadyComplete),
            State::Failed => return Err(ChunkError::AlreadyFailed),
            State::Collecting => {}
        }
        let outcome = self.accept(part);
        match &outcome {
            Err(_) => self.finish(State::Failed),
            Ok(Some(_)) => self.finish(State::Complete),
            Ok(None) => {}
        }
        outcome
    }

    fn finish(&mut self, state: State) {
        self.state = state;
        self.parts = BTreeMap::new();
    }

    fn accept(&mut self, part: CommandResultDto) -> Result<Option<CommandResultDto>, ChunkError> {
        if part.command_id != self.command_id {
            return Err(ChunkError::CommandIdMismatch {
                expected: self.command_id.clone(),
                found: clip(&part.command_id),
            });
        }
        let Some(index) = part.part_index else {
            if part.is_last.is_some() || !self.parts.is_empty() {
                return Err(ChunkError::MissingPartIndex);
            }
            return Ok(Some(part));
        };
        if index >= self.limits.max_parts {
            return Err(ChunkError::TooManyParts {
                part_index: index,
                max_parts: self.limits.max_parts,
            });
        }
        if let Some(earlier) = self.parts.get(&index) {
            if *earlier == part {
                return Ok(None);
            }
            return Err(ChunkError::DuplicatePart { part_index: index });
        }
        let is_last = part.is_last == Some(true);
        match self.last_index {
            Some(last_index) if is_last => {
                return Err(ChunkError::SecondLast {
                    last_index,
                    part_index: index,
                });
            }
            Some(last_index) if index > last_index => {
                return Err(ChunkError::BeyondLast {
                    part_index: index,
                    last_index,
                });
            }
            None if is_last => {
                if let Some((&beyond, _)) = self.parts.range(index..).next() {
                    return Err(ChunkError::BeyondLast {
                        part_index: beyond,
                        last_index: index,
                    });
                }
            }
            _ => {}
        }
        let bytes = part.result.as_ref().map_or(0, encoded_len)
            + part.error.as_ref().map_or(0, encoded_len);
        self.total_bytes = self.total_bytes.saturating_add(bytes);
        if self.total_bytes > self.limits.max_total_bytes {
            return Err(ChunkError::TooManyBytes {
                max_total_bytes: self.limits.max_total_bytes,
            });
        }
        if is_last {
            self.last_index = Some(index);
        }
        self.parts.insert(index, part);
        match self.last_index {
            Some(last) if self.parts.len() as u64 == u64::from(last) + 1 => {
                assemble(std::mem::take(&mut self.parts)).map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// Merges a complete, gap-free set of parts 0..=last into one result.
fn assemble(parts: BTreeMap<u32, CommandResultDto>) -> Result<CommandResultDto, ChunkError> {
    let mut parts = parts.into_iter();
    let (_, mut whole) = parts.next().expect("a complete set of parts holds part 0");
    whole.part_index = None;
    whole.is_last = None;
    let mut path = Vec::new();
    for (index, part) in parts {
        if part.ok != whole.ok {
            return Err(ChunkError::OkMismatch { part_index: index });
        }
        if let Some(value) = part.result {
            path.clear();
            path.push(Seg::Key("result".to_owned()));
            match &mut whole.result {
                Some(base) => merge(base, value, &mut path, index)?,
                None if value.is_null() => {}
                None => return Err(unknown(index, &path)),
            }
        }
        if let Some(error) = part.error {
            path.clear();
            path.push(Seg::Key("error".to_owned()));
            let Some(base) = &mut whole.error else {
                return Err(unknown(index, &path));
            };
            if error.code != base.code {
                return Err(ChunkError::ErrorCodeMismatch { part_index: index });
            }
            base.message.push_str(&error.message);
            if let Some(details) = error.details {
                path.push(Seg::Key("details".to_owned()));
                match &mut base.details {
                    Some(base) => merge(base, details, &mut path, index)?,
                    None if details.is_null() => {}
                    None => return Err(unknown(index, &path)),
                }
            }
        }
    }
    Ok(whole)
}

/// One segment of the JSON pointer reported in errors.
enum Seg {
    Key(String),
    Index(usize),
}

/// Appends the strings of a later part's mirror to `base` (part 0's value at the same path).
fn merge(base: &mut Value, part: Value, path: &mut Vec<Seg>, index: u32) -> Result<(), ChunkError> {
    match (base, part) {
        (_, Value::Null) => Ok(()),
        (Value::String(base), Value::String(more)) => {
            base.push_str(&more);
            Ok(())
        }
        (_, Value::String(_)) => Err(ChunkError::NotAString {
            part_index: index,
            path: pointer(path),
        }),
        (Value::Object(base), Value::Object(more)) => {
            for (key, value) in more {
                let found = base.get_mut(&key);
                path.push(Seg::Key(key));
                let Some(base) = found else {
                    return Err(unknown(index, path));
                };
                merge(base, value, path, index)?;
                path.pop();
            }
            Ok(())
        }
        (Value::Array(base), Value::Array(more)) => {
            if more.len() > base.len() {
                path.push(Seg::Index(base.len()));
                return Err(unknown(index, path));
            }
            for (at, (base, value)) in base.iter_mut().zip(more).enumerate() {
                if value.is_null() {
                    continue;
                }
                path.push(Seg::Index(at));
                merge(base, value, path, index)?;
                path.pop();
            }
            Ok(())
        }
        _ => Err(ChunkError::ShapeMismatch {
            part_index: index,
            path: pointer(path),
        }),
    }
}

fn unknown(index: u32, path: &[Seg]) -> ChunkError {
    ChunkError::UnknownPath {
        part_index: index,
        path: pointer(path),
    }
}

/// The JSON pointer (RFC 6901) of `path`, clipped.
fn pointer(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        out.push('/');
        match seg {
            Seg::Key(key) => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Seg::Index(index) => out.push_str(&index.to_string()),
        }
        if out.len() > CLIP {
            break;
        }
    }
    clip(&out)
}

/// The most bytes of peer-chosen text an error carries.
const CLIP: usize = 256;

/// `text` cut to at most [`CLIP`] bytes on a character boundary, with `…` when cut.
fn clip(text: &str) -> String {
    if text.len() <= CLIP {
        return text.to_owned();
    }
    let mut end = CLIP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
