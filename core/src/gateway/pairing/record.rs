//! The pairing book's durable records, its answers, its events and its errors.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::gateway::auth::hex32;
use crate::gateway::HttpReply;
use crate::scope::ScopeError;
use crate::wire::rest::{PairResponse, RestErrorBody, RestErrorCode};

/// One pairing as the store holds it, keyed by `(nodeId, secretSha256)`. Never holds a pairing
/// secret or a token secret: only their SHA-256.
///
/// Stored as JSON, for example
/// `{"nodeId":"gpu-node-1","secretSha256":"<64 hex>","code":"ABC-123","name":"rack 3",
/// "requestedAtUnixMs":1767225600000,"expiresAtUnixMs":1767226500000,"stage":"waiting"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingRecord {
    pub node_id: String,
    /// SHA-256 of the pairing secret, lowercase hex in the store.
    #[serde(with = "hex32")]
    pub secret_sha256: [u8; 32],
    /// The code shown to the operator (`ABC-123`).
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// When the gateway first saw the secret (Unix milliseconds).
    pub requested_at_unix_ms: u64,
    /// When the secret expires: `requestedAtUnixMs` + 15 minutes.
    pub expires_at_unix_ms: u64,
    #[serde(flatten)]
    pub stage: PairingStage,
}

/// Where a pairing stands, durably.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "stage",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum PairingStage {
    /// Waiting for an operator.
    Waiting,
    /// Approved; the token is minted when the node next asks.
    Approved {
        scopes: Vec<String>,
        approved_at_unix_ms: u64,
    },
    /// A token was minted and answered; its hash is the node record's.
    Delivered {
        #[serde(with = "hex32")]
        token_sha256: [u8; 32],
        delivered_at_unix_ms: u64,
    },
    /// An operator refused the node.
    Rejected {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        rejected_at_unix_ms: u64,
    },
    /// The secret expired (or the pairing was used up); remembered until `forgetAtUnixMs` so
    /// that a late repeat is answered `expired`.
    Expired { forget_at_unix_ms: u64 },
}

impl PairingStage {
    /// Waiting or approved: the pairing holds its nodeId and its code.
    pub fn is_open(&self) -> bool {
        matches!(self, PairingStage::Waiting | PairingStage::Approved { .. })
    }
}

/// A durable change of the pairing book, for the shell's store: upsert or delete the record with
/// this `(nodeId, secretSha256)`. The surviving records, replayed into `PairingBook::restore`,
/// rebuild the book.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum PairingPersist {
    Put(PairingRecord),
    Delete {
        node_id: String,
        #[serde(with = "hex32")]
        secret_sha256: [u8; 32],
    },
}

/// The answer to `POST /api/nodes/me/pair` (docs/protocol.md section 7.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairReply {
    /// 200 with the pairing's status.
    Answer(PairResponse),
    /// 400, 403, 409 or 429 with an error body (section 7.7).
    Refused(RestErrorBody),
}

impl PairReply {
    pub fn status(&self) -> u16 {
        match self {
            PairReply::Answer(_) => 200,
            PairReply::Refused(body) => body.error.http_status().unwrap_or(400),
        }
    }

    /// The HTTP answer the shell writes (a 429's `Retry-After` header, in seconds rounded up,
    /// comes from the body's `retryAfterMs`).
    pub fn to_http(&self) -> HttpReply {
        match self {
            PairReply::Answer(response) => HttpReply::json(200, response),
            PairReply::Refused(body) => HttpReply::json(self.status(), body),
        }
    }

    pub(crate) fn refused(code: RestErrorCode, message: impl Into<String>) -> PairReply {
        PairReply::Refused(RestErrorBody::new(code, message))
    }

    pub(crate) fn rate_limited(message: &str, retry_after: Duration) -> PairReply {
        let mut body = RestErrorBody::new(RestErrorCode::RateLimited, message);
        body.retry_after_ms = Some(crate::gateway::auth::ceil_ms(retry_after).max(1));
        PairReply::Refused(body)
    }
}

/// A pairing an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingPairing {
    pub code: String,
    pub node_id: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub requested_at_unix_ms: u64,
    /// How long ago it was requested.
    pub age: Duration,
    /// How long until it expires.
    pub expires_in: Duration,
    /// `Some` once approved (the node has not asked since): the scopes it will get.
    pub approved_scopes: Option<Vec<String>>,
}

/// What the pairing book reports, for operators and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairingEvent {
    /// A node asks to pair: show the code to an operator.
    Requested {
        code: String,
        node_id: String,
        name: Option<String>,
        platform: Option<String>,
    },
    /// A token went out and the node book now holds its hash. `reissued`: a new token replaced
    /// one delivered before a restart (the node's first answer was lost).
    Delivered { node_id: String, reissued: bool },
    /// A pairing ended without a token (no decision, or no poll after approval, in 15 minutes).
    Expired { code: String, node_id: String },
}

/// Caller misuse or refusals of the operator API.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    /// No open pairing has this code (never issued, expired, rejected or delivered).
    #[error("no open pairing has code `{code}`")]
    UnknownCode { code: String },
    /// The pairing was approved already.
    #[error("pairing `{code}` is already approved")]
    AlreadyApproved { code: String },
    /// Another token of this nodeId is approved in the node book: revoke it first.
    #[error("node `{node_id}` is already paired; revoke it before approving a new pairing")]
    AlreadyPaired { node_id: String },
    #[error("invalid scopes: {0}")]
    InvalidScopes(ScopeError),
}
