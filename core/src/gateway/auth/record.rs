//! What the node book keeps durably: one [`NodeRecord`] per node, as the store holds it, and the
//! wall-clock conversion the durable timestamps need.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::saturating_add;

/// SHA-256 of a token secret (the part after the first `.` of `{nodeId}.{secret}`), over its
/// UTF-8 bytes. The gateway stores only this (seed 002).
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A node the gateway knows: its identity, the hash of its token secret, whether it may connect,
/// and the scopes it was granted. Never holds a plaintext secret.
///
/// Stored as JSON, for example:
/// `{"nodeId":"gpu-node-1","secretSha256":"<64 hex digits>","state":{"status":"approved"},
/// "scopes":["screen.capture"],"name":"rack 3","platform":"linux","pairedAtUnixMs":1767225600000}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub node_id: String,
    /// SHA-256 of the token secret, lowercase hex in the store.
    #[serde(with = "hex32")]
    pub secret_sha256: [u8; 32],
    pub state: NodeState,
    /// The granted scopes (scope entries, patterns allowed), minimal and sorted.
    pub scopes: Vec<String>,
    /// What the node called itself when it paired (free text, for operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// When the token was delivered (Unix milliseconds).
    pub paired_at_unix_ms: u64,
}

/// Whether a node may connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "status",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum NodeState {
    /// Its token authenticates.
    Approved,
    /// Its token is refused from now on (403 `revoked`); pairing again replaces the record.
    Revoked {
        /// What the node is told (the argument of `RevokeAccess`); may be empty.
        reason: String,
        /// When it was revoked (Unix milliseconds); absent in records imported without it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_unix_ms: Option<u64>,
    },
}

impl NodeRecord {
    pub fn is_approved(&self) -> bool {
        self.state == NodeState::Approved
    }
}

/// A durable change of the node book, for the shell's store. The store keeps the latest record
/// per `nodeId` (an upsert); replaying the records in order into `NodeBook::restore` rebuilds the
/// book.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AuthPersist {
    /// Insert or replace this node's record.
    Node(NodeRecord),
}

/// Maps the machine's `Instant`s to Unix time for durable timestamps. Wall-clock time comes in
/// once (design rule 1) and is derived from `Instant` offsets afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixClock {
    origin: Instant,
    unix_at_origin: Duration,
}

impl UnixClock {
    /// `unix_now` is the Unix time (since 1970-01-01 UTC) at the instant `now`.
    pub fn new(now: Instant, unix_now: Duration) -> UnixClock {
        UnixClock {
            origin: now,
            unix_at_origin: unix_now,
        }
    }

    /// The Unix time of `at` in milliseconds (0 before 1970, `u64::MAX` past year 584 million).
    pub fn unix_ms(&self, at: Instant) -> u64 {
        let unix = match at.checked_duration_since(self.origin) {
            Some(after) => self.unix_at_origin.saturating_add(after),
            None => self
                .unix_at_origin
                .saturating_sub(self.origin.duration_since(at)),
        };
        u64::try_from(unix.as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant at which the Unix time `unix_ms` comes (or came): a durable deadline read back
    /// from the store. One before the clock's range is the earliest instant it can tell.
    pub fn instant(&self, unix_ms: u64) -> Instant {
        let unix = Duration::from_millis(unix_ms);
        match unix.checked_sub(self.unix_at_origin) {
            Some(after) => saturating_add(self.origin, after),
            None => {
                let before = self.unix_at_origin - unix;
                self.origin.checked_sub(before).unwrap_or(self.origin)
            }
        }
    }
}

/// Serde for a `[u8; 32]` as 64 lowercase hex digits.
pub(crate) mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&to_hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }

    pub fn to_hex(bytes: &[u8; 32]) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in bytes {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        out
    }

    pub fn from_hex(text: &str) -> Option<[u8; 32]> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let pair = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(out)
    }
}
