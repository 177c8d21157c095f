//! Scopes: what a node is allowed to do, and sets of them with wildcard patterns.
//!
//! # Theory of operation
//! A *scope* is a dotted name such as `screen.capture`, `gpu.kernel` or `system.execute`:
//! one or more non-empty *segments* of lowercase ASCII letters, digits, `_` and `-`, joined by
//! `.`, at most [`MAX_SCOPE_LEN`] bytes in all. Nothing else is accepted (no uppercase, no
//! spaces, no leading/trailing/double dots), so two spellings never name the same scope.
//!
//! An *entry* of a scope set is a scope or a *pattern*:
//! - `*` covers every scope;
//! - `p.*` (a scope followed by `.*`) covers every scope that starts with `p.`: `screen.*` covers
//!   `screen.capture` and `screen.a.b`, but NOT `screen` itself. A pattern stands for "the scopes
//!   under p", like a shell glob; to grant `p` as well, list both `p` and `p.*`. A `*` anywhere
//!   else (`scr*`, `a.*.b`) is rejected.
//!
//! The sets entries cover are either nested or disjoint (`a.*` contains `a.b.*` and `a.b`; `a`,
//! `a.*` and `ab.*` are pairwise disjoint). That makes the intersection of two sets exact with
//! entries alone: `{g in A | B covers g} ∪ {l in B | A covers l}`, where "covers" means that one
//! entry of the other set contains the whole entry. This is how a node combines the scopes a
//! gateway grants with the ones its operator allows locally.
//!
//! A [`ScopeSet`] is kept minimal (no entry is covered by another entry) in a `BTreeSet`, so its
//! iteration order, [`ScopeSet::to_vec`], and equality do not depend on insertion order.
//!
//! Parsing: [`ScopeSet::parse`] rejects a list with any invalid entry (configuration: the operator
//! should fix it); [`ScopeSet::parse_lenient`] skips invalid entries and reports them (a peer's
//! `RefreshScopes`: dropping an entry only narrows what is allowed, and the rest still applies).

use std::collections::BTreeSet;
use std::fmt;

/// The longest scope or pattern, in bytes.
pub const MAX_SCOPE_LEN: usize = 128;

/// How much of an offending entry an error repeats (entries come from peers).
const CLIP: usize = 64;

/// Why a string is not a valid scope or scope pattern. Each variant names the entry (clipped to
/// 64 characters).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The entry is the empty string.
    #[error("invalid scope \"\": a scope needs at least one segment")]
    Empty,
    /// The entry is longer than [`MAX_SCOPE_LEN`] bytes.
    #[error("invalid scope {entry:?}: {len} bytes, the maximum is {max}")]
    TooLong {
        entry: String,
        len: usize,
        max: usize,
    },
    /// The entry contains a character outside `a-z 0-9 _ - .` (and `*` where patterns allow it).
    #[error("invalid scope {entry:?}: character {found:?} at byte {position} is not allowed (allowed: a-z, 0-9, '_', '-', and '.' between segments)")]
    InvalidChar {
        entry: String,
        found: char,
        position: usize,
    },
    /// The entry has an empty segment: a leading, trailing or doubled `.`.
    #[error("invalid scope {entry:?}: empty segment at byte {position} (a leading, trailing or doubled '.')")]
    EmptySegment { entry: String, position: usize },
    /// A `*` that is not the whole entry nor a whole last segment after a dot.
    #[error(
        "invalid scope {entry:?}: '*' may only be the whole entry or the last segment (\"a.*\")"
    )]
    MisplacedWildcard { entry: String },
    /// A pattern was given where a concrete scope is required.
    #[error("invalid scope {entry:?}: a concrete scope is required here, not a pattern")]
    PatternNotAllowed { entry: String },
}

fn clip(entry: &str) -> String {
    entry.chars().take(CLIP).collect()
}

/// Checks that `scope` is a concrete scope (no pattern).
pub fn validate_scope(scope: &str) -> Result<(), ScopeError> {
    if scope.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::TooLong {
            entry: clip(scope),
            len: scope.len(),
            max: MAX_SCOPE_LEN,
        });
    }
    check_segments(scope, scope)
}

/// Checks the characters and segments of `scope`, naming `entry` (which starts with `scope`) in
/// errors.
fn check_segments(scope: &str, entry: &str) -> Result<(), ScopeError> {
    if scope.is_empty() {
        return Err(ScopeError::Empty);
    }
    let mut segment_start = 0;
    for (position, found) in scope.char_indices() {
        match found {
            'a'..='z' | '0'..='9' | '_' | '-' => {}
            '.' => {
                if position == segment_start {
                    return Err(ScopeError::EmptySegment {
                        entry: clip(entry),
                        position,
                    });
                }
                segment_start = position + 1;
            }
            '*' => {
                return Err(ScopeError::PatternNotAllowed { entry: clip(entry) });
            }
            _ => {
                return Err(ScopeError::InvalidChar {
                    entry: clip(entry),
                    found,
                    position,
                })
            }
        }
    }
    if segment_start == scope.len() {
        return Err(ScopeError::EmptySegment {
            entry: clip(entry),
            position: scope.len(),
        });
    }
    Ok(())
}

/// One entry of a [`ScopeSet`]: a scope, `p.*`, or `*`. Ordered by its text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeEntry(String);

impl fmt::Debug for ScopeEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ScopeEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ScopeEntry {
    /// Parses a scope or a pattern (`*`, `p.*`).
    pub fn parse(entry: &str) -> Result<Self, ScopeError> {
        if entry.len() > MAX_SCOPE_LEN {
            return Err(ScopeError::TooLong {
                entry: clip(entry),
                len: entry.len(),
                max: MAX_SCOPE_LEN,
            });
        }
        if entry == "*" {
            return Ok(Self(entry.to_owned()));
        }
        let scope = entry.strip_suffix(".*").unwrap_or(entry);
        match check_segments(scope, entry) {
            Ok(()) => Ok(Self(entry.to_owned())),
            Err(ScopeError::PatternNotAllowed { entry }) => {
                Err(ScopeError::MisplacedWildcard { entry })
            }
            // `.*`: a pattern without its scope.
            Err(ScopeError::Empty) if !entry.is_empty() => Err(ScopeError::EmptySegment {
                entry: clip(entry),
                position: 0,
            }),
            Err(e) => Err(e),
        }
    }

    /// The entry as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `*` or `p.*`.
    pub fn is_pattern(&self) -> bool {
        self.0.ends_with('*')
    }

    /// For a pattern, the prefix every covered scope starts with (`""` for `*`, `"p."` for
    /// `p.*`); `None` for a concrete scope.
    fn prefix(&self) -> Option<&str> {
        self.0.strip_suffix('*')
    }

    /// Whether this entry covers the concrete `scope`. A string that is not a valid scope (a
    /// pattern included) is never covered.
    pub fn allows(&self, scope: &str) -> bool {
        if validate_scope(scope).is_err() {
            return false;
        }
        self.covers_valid(scope)
    }

    fn covers_valid(&self, scope: &str) -> bool {
        match self.prefix() {
            Some(prefix) => scope.starts_with(prefix) && scope.len() > prefix.len(),
            None => self.0 == scope,
        }
    }

    /// Whether every scope `other` covers is covered by this entry.
    pub fn covers(&self, other: &ScopeEntry) -> bool {
        match (self.prefix(), other.prefix()) {
            (Some(mine), Some(theirs)) => theirs.starts_with(mine),
            (Some(_), None) => self.covers_valid(&other.0),
            (None, _) => self == other,
        }
    }
}

/// A minimal, deterministic set of scope entries; see the module docs.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet {
    entries: BTreeSet<ScopeEntry>,
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(&self.entries).finish()
    }
}

impl ScopeSet {
    /// The empty set: allows nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// `{*}`: allows everything.
    pub fn all() -> Self {
        let mut set = Self::new();
        set.entries.insert(ScopeEntry("*".to_owned()));
        set
    }

    /// Parses every entry; the first invalid one fails the whole list.
    pub fn parse<I, S>(entries: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = Self::new();
        for entry in entries {
            set.insert(ScopeEntry::parse(entry.as_ref())?);
        }
        Ok(set)
    }

    /// Parses every entry, skipping the invalid ones and returning their errors in input order.
    pub fn parse_lenient<I, S>(entries: I) -> (Self, Vec<ScopeError>)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = Self::new();
        let mut errors = Vec::new();
        for entry in entries {
            match ScopeEntry::parse(entry.as_ref()) {
                Ok(entry) => set.insert(entry),
                Err(e) => errors.push(e),
            }
        }
        (set, errors)
    }

    /// Adds `entry` unless an entry already covers it, dropping the entries it covers.
    pub fn insert(&mut self, entry: ScopeEntry) {
        if self.covers(&entry) {
            return;
        }
        if let Some(prefix) = entry.prefix() {
            self.entries.retain(|e| !e.0.starts_with(prefix));
        }
        self.entries.insert(entry);
    }

    /// Whether the concrete `scope` is allowed. A string that is not a valid scope never is.
    pub fn allows(&self, scope: &str) -> bool {
        if validate_scope(scope).is_err() {
            return false;
        }
        self.covers_text(scope, false)
    }

    /// Whether one entry of this set covers `entry`.
    pub fn covers(&self, entry: &ScopeEntry) -> bool {
        match entry.0.strip_suffix(".*") {
            Some(scope) => self.covers_text(scope, true),
            None if entry.0 == "*" => self.entries.contains(entry),
            None => self.covers_text(&entry.0, false),
        }
    }

    /// Whether `*`, a pattern for an ancestor of `scope`, or (`scope` or `scope.*` for a
    /// pattern) is in the set. Costs one lookup per segment.
    fn covers_text(&self, scope: &str, is_pattern: bool) -> bool {
        let has = |text: &str| self.entries.contains(&ScopeEntry(text.to_owned()));
        let has_pattern = |base: &str| {
            let mut pattern = String::with_capacity(base.len() + 2);
            pattern.push_str(base);
            pattern.push_str(".*");
            self.entries.contains(&ScopeEntry(pattern))
        };
        if self.entries.contains(&ScopeEntry("*".to_owned())) {
            return true;
        }
        let own = if is_pattern {
            has_pattern(scope)
        } else {
            has(scope)
        };
        own || scope
            .match_indices('.')
            .any(|(dot, _)| has_pattern(&scope[..dot]))
    }

    /// The scopes both sets allow, as a minimal set: `a.intersect(b).allows(s)` exactly when
    /// `a.allows(s) && b.allows(s)`.
    pub fn intersect(&self, other: &ScopeSet) -> ScopeSet {
        let mut out = ScopeSet::new();
        for entry in &self.entries {
            if other.covers(entry) {
                out.insert(entry.clone());
            }
        }
        for entry in &other.entries {
            if self.covers(entry) {
                out.insert(entry.clone());
            }
        }
        out
    }

    /// The entries in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(ScopeEntry::as_str)
    }

    /// The entries as strings, sorted: the shape of the wire's `scopes` arrays.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }

    /// How many entries the (minimal) set has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set allows nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
