//! The connect request (query parameters), the node's identity, and the close codes.
//!
//! The original server reads the four parameters with `URLSearchParams.get` (the first occurrence
//! of a name wins, `+` is a space, percent escapes are decoded) and rejects a connection when any
//! is missing or empty. It never checks that `max_concurrency` is a number; nodelink does, with
//! the same close code, so a typo fails at connect time instead of starving the node of tasks.

use std::fmt;

/// Query parameter names, in the order nodelink writes them (the seed's order).
const TOKEN: &str = "token";
const MODEL: &str = "model";
const MAX_CONCURRENCY: &str = "max_concurrency";
const NAME: &str = "name";

/// The longest close reason a WebSocket close frame can carry (125 bytes minus the 2-byte code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// How much of a peer's bad value an error message repeats.
const CLIP_VALUE_CHARS: usize = 32;

/// The query parameters of the connect request.
///
/// `Debug` redacts the token: the token is a credential and must never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectParams {
    /// The shared node token; its validity is the server's decision (close 4002).
    pub token: String,
    /// The model this node serves; tasks are routed by model.
    pub model: String,
    /// How many tasks the node runs at once; at least 1.
    pub max_concurrency: u32,
    /// The node's name, unique per model.
    pub name: String,
}

impl fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectParams")
            .field("token", &"<redacted>")
            .field("model", &self.model)
            .field("max_concurrency", &self.max_concurrency)
            .field("name", &self.name)
            .finish()
    }
}

impl ConnectParams {
    /// The query string, form-urlencoded (`+` for spaces), without the leading `?`:
    /// `token=..&model=..&max_concurrency=..&name=..`.
    pub fn to_query(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair(TOKEN, &self.token)
            .append_pair(MODEL, &self.model)
            .append_pair(MAX_CONCURRENCY, &self.max_concurrency.to_string())
            .append_pair(NAME, &self.name)
            .finish()
    }

    /// The URL to dial: `base` (for example `ws://host:8120/ws`) with the query appended, after
    /// `&` when `base` already has a query.
    pub fn connect_url(&self, base: &str) -> String {
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}{}", self.to_query())
    }

    /// Parses a query string (without the `?`). Unknown parameters are ignored; for a repeated
    /// parameter the first occurrence wins, as in the original server.
    pub fn from_query(query: &str) -> Result<ConnectParams, ConnectError> {
        let mut token = None;
        let mut model = None;
        let mut max_concurrency = None;
        let mut name = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                TOKEN => &mut token,
                MODEL => &mut model,
                MAX_CONCURRENCY => &mut max_concurrency,
                NAME => &mut name,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }

        let mut missing = Vec::new();
        for (parameter, value) in [
            (TOKEN, &token),
            (MODEL, &model),
            (MAX_CONCURRENCY, &max_concurrency),
            (NAME, &name),
        ] {
            if value.as_deref().is_none_or(str::is_empty) {
                missing.push(parameter);
            }
        }
        let (Some(token), Some(model), Some(max_concurrency), Some(name), true) =
            (token, model, max_concurrency, name, missing.is_empty())
        else {
            return Err(ConnectError::MissingParameters { names: missing });
        };

        Ok(ConnectParams {
            max_concurrency: parse_max_concurrency(&max_concurrency)?,
            token,
            model,
            name,
        })
    }

    /// Parses the query of a request target such as `/ws?token=..`: everything after the first
    /// `?` (no `?` means no parameters, hence a 4001 error).
    pub fn from_request_target(target: &str) -> Result<ConnectParams, ConnectError> {
        let query = target.split_once('?').map_or("", |(_, query)| query);
        ConnectParams::from_query(query)
    }

    /// The identity the server registers this node under.
    pub fn identity(&self) -> NodeIdentity {
        NodeIdentity {
            model: self.model.clone(),
            name: self.name.clone(),
        }
    }
}

/// `max_concurrency` is ASCII digits only (leading zeros allowed), a value from 1 to `u32::MAX`.
fn parse_max_concurrency(value: &str) -> Result<u32, ConnectError> {
    let invalid = || ConnectError::InvalidMaxConcurrency {
        value: clip(value, CLIP_VALUE_CHARS),
    };
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match value.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(invalid()),
    }
}

/// The first `max_chars` characters of `s`, with `…` when something was cut.
fn clip(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// Who a node is: a model and a name. A second connection with the same identity replaces the
/// first.
///
/// The original server keys nodes by the string `model + "-" + name`, so model `a-b` with name
/// `c` and model `a` with name `b-c` collide there; nodelink compares the pair and does not.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeIdentity {
    pub model: String,
    pub name: String,
}

impl fmt::Display for NodeIdentity {
    /// `model-name`, as the original server's logs show a node.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.model, self.name)
    }
}

/// The close codes of the dialect, with the reason texts the original server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 4000 "Bye": the connection was replaced by a newer one with the same identity, or the
    /// server closes it normally (also after a peer error).
    Bye,
    /// 4001: a parameter is missing, empty or invalid.
    InvalidParameters,
    /// 4002: the token is not accepted.
    InvalidToken,
    /// 4003: a frame arrived on a connection that was already replaced.
    ReplacedConnection,
}

impl CloseCode {
    /// The numeric code of the close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Bye => 4000,
            CloseCode::InvalidParameters => 4001,
            CloseCode::InvalidToken => 4002,
            CloseCode::ReplacedConnection => 4003,
        }
    }

    /// The reason text the original server sends with this code.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Bye => "Bye",
            CloseCode::InvalidParameters => "Missing token, model, max_concurrency, or name",
            CloseCode::InvalidToken => "Invalid token",
            CloseCode::ReplacedConnection => "Invalid connection",
        }
    }

    /// The close code for a numeric code, if it is one of the dialect's.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        match code {
            4000 => Some(CloseCode::Bye),
            4001 => Some(CloseCode::InvalidParameters),
            4002 => Some(CloseCode::InvalidToken),
            4003 => Some(CloseCode::ReplacedConnection),
            _ => None,
        }
    }
}

/// Why a server refuses a connection. Each maps to the close code to send.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Parameters absent or empty, in the order token, model, max_concurrency, name.
    #[error("connect request: missing or empty query parameter(s): {}", names.join(", "))]
    MissingParameters { names: Vec<&'static str> },
    /// `max_concurrency` is not a positive integer (`value` is clipped to 32 characters).
    #[error("connect request: query parameter `max_concurrency` must be an integer from 1 to 4294967295, got {value:?}")]
    InvalidMaxConcurrency { value: String },
    /// The server does not accept the token (decided by the server, never by this codec).
    #[error("connect request: invalid token")]
    InvalidToken,
}

impl ConnectError {
    /// The close code to send.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ConnectError::MissingParameters { .. } | ConnectError::InvalidMaxConcurrency { .. } => {
                CloseCode::InvalidParameters
            }
            ConnectError::InvalidToken => CloseCode::InvalidToken,
        }
    }

    /// The close reason to send: this error's message, cut on a character boundary to fit a
    /// close frame ([`MAX_CLOSE_REASON_BYTES`]). Never contains the token.
    pub fn close_reason(&self) -> String {
        let mut reason = self.to_string();
        if reason.len() > MAX_CLOSE_REASON_BYTES {
            let mut end = MAX_CLOSE_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        reason
    }
}
