//! The node token `{nodeId}.{secret}`: what a node presents on every authenticated request.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest nodeId accepted, in bytes.
pub const MAX_NODE_ID_LEN: usize = 128;

/// Why a node token or nodeId is not acceptable. Messages never contain the secret.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is the empty string.
    #[error("node token is empty (expected {{nodeId}}.{{secret}})")]
    Empty,
    /// No `.` separates the nodeId from the secret.
    #[error("node token has no `.` between nodeId and secret (expected {{nodeId}}.{{secret}})")]
    MissingDot,
    /// Nothing before the first `.`.
    #[error("nodeId is empty")]
    EmptyNodeId,
    /// Nothing after the first `.`.
    #[error("node token has an empty secret after the `.`")]
    EmptySecret,
    /// The nodeId is longer than [`MAX_NODE_ID_LEN`].
    #[error("nodeId is {len} bytes long; at most {max} are allowed")]
    NodeIdTooLong { len: usize, max: usize },
    /// The nodeId has a character outside `A-Z a-z 0-9 - _`.
    #[error("nodeId contains {found:?} at byte {at}; only A-Z, a-z, 0-9, `-` and `_` are allowed")]
    InvalidNodeIdChar { at: usize, found: char },
    /// The secret has a byte outside printable ASCII (0x21 to 0x7E). The byte is not shown.
    #[error(
        "node token secret has a character outside printable ASCII at byte {at} of the secret"
    )]
    InvalidSecretChar { at: usize },
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("Authorization header is not of the form `Bearer <node-token>`")]
    NotBearer,
}

/// Checks a nodeId: 1 to [`MAX_NODE_ID_LEN`] bytes of `A-Z a-z 0-9 - _`. That set needs no
/// escaping in a URL, a header or a log line, and contains no `.`, so the first `.` of a token
/// always ends the nodeId.
pub fn validate_node_id(node_id: &str) -> Result<(), TokenError> {
    if node_id.is_empty() {
        return Err(TokenError::EmptyNodeId);
    }
    if node_id.len() > MAX_NODE_ID_LEN {
        return Err(TokenError::NodeIdTooLong {
            len: node_id.len(),
            max: MAX_NODE_ID_LEN,
        });
    }
    match node_id
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some((at, found)) => Err(TokenError::InvalidNodeIdChar { at, found }),
        None => Ok(()),
    }
}

/// A node token `{nodeId}.{secret}` (seed 002). The gateway stores only the SHA-256 of the
/// secret.
///
/// `Display` writes the whole token, secret included, because that is what goes on the wire:
/// never log it. `Debug` redacts the secret, so a token inside any `Debug` output is safe.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeToken {
    node_id: String,
    secret: String,
}

impl NodeToken {
    /// Builds a token from its parts, with the same checks as [`NodeToken::parse`].
    pub fn new(node_id: &str, secret: &str) -> Result<NodeToken, TokenError> {
        validate_node_id(node_id)?;
        if secret.is_empty() {
            return Err(TokenError::EmptySecret);
        }
        if let Some(at) = secret.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
            return Err(TokenError::InvalidSecretChar { at });
        }
        Ok(NodeToken {
            node_id: node_id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// Parses `{nodeId}.{secret}`, splitting at the first `.` (the secret may contain dots).
    pub fn parse(token: &str) -> Result<NodeToken, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let (node_id, secret) = token.split_once('.').ok_or(TokenError::MissingDot)?;
        NodeToken::new(node_id, secret)
    }

    /// Parses an `Authorization` header value `Bearer <token>` (scheme case-insensitive).
    pub fn from_bearer(header: &str) -> Result<NodeToken, TokenError> {
        let (scheme, token) = header.trim().split_once(' ').ok_or(TokenError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::NotBearer);
        }
        NodeToken::parse(token.trim_start())
    }

    /// The `Authorization` header value: `Bearer {nodeId}.{secret}`.
    pub fn bearer(&self) -> String {
        format!("Bearer {self}")
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Display for NodeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node_id, self.secret)
    }
}

impl fmt::Debug for NodeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeToken")
            .field("node_id", &self.node_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl FromStr for NodeToken {
    type Err = TokenError;

    fn from_str(token: &str) -> Result<NodeToken, TokenError> {
        NodeToken::parse(token)
    }
}

impl Serialize for NodeToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let token = String::deserialize(deserializer)?;
        NodeToken::parse(&token).map_err(serde::de::Error::custom)
    }
}
