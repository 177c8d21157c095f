//! The node book: who a node is, whether it may connect, and the limits on guessing.
//!
//! # Theory of operation
//! Every node the gateway knows has a [`NodeRecord`]: its nodeId, the SHA-256 of its token secret
//! (never the secret), its state ([`NodeState::Approved`] or [`NodeState::Revoked`] with the
//! reason it is told), its granted scopes, and what it said about itself when it paired.
//!
//! [`NodeBook::authenticate`] takes a token `{nodeId}.{secret}` as the node presented it (query
//! parameter or Bearer header) and the source address the shell saw, and answers the nodeId or an
//! [`AuthError`] that says, in words a node can show and as a REST error body (docs/protocol.md
//! section 7.7), why not. The secret is hashed and compared with `subtle`'s constant-time
//! equality, and it is hashed before the nodeId is looked up, so that the work does not depend
//! on the secret. A wrong secret for a revoked node is a wrong secret: only the holder of the
//! token learns the revocation reason.
//!
//! Failed attempts are counted twice, per source address and per nodeId, each in a token bucket
//! ([`RateLimit`], by default 10 failures per minute, refilled one every 6 s):
//! - **per source**: malformed tokens, unknown nodes and wrong secrets count. Once a source has
//!   spent its bucket, *every* attempt from it is refused with [`AuthError::RateLimited`] until
//!   the bucket refills, a correct token included: an address that guesses is cut off.
//! - **per nodeId**: only wrong secrets count (an unknown nodeId creates no key, so this table is
//!   bounded by the nodes). While the bucket is spent, a wrong secret for that node is answered
//!   [`AuthError::RateLimited`] instead of [`AuthError::BadSecret`], but the correct token still
//!   authenticates: nobody can lock a node out by sending bad tokens in its name. (Secrets are
//!   256 random bits; guessing is not what this limit stops. It tells misconfigured clients to
//!   back off and keeps sources honest, see the source rule.)
//! - A refused attempt does not count again, and a revoked node presenting its own token does not
//!   count at all (it is told `revoked`, which a node obeys).
//!
//! Both tables forget a key once its bucket is full again (a deadline queue: `poll_timeout`,
//! `handle_timeout`) and hold at most `max_tracked_*` keys, evicting the key closest to being
//! forgotten. Limits are not durable: a restart forgets them.
//!
//! Every durable change (a node inserted, revoked, its scopes or token changed) is queued as an
//! [`AuthPersist`] drained with [`NodeBook::poll_persist`]; [`NodeBook::restore`] rebuilds the
//! book from those records at start-up.

mod limiter;
mod record;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::gateway::dispatch::FnvHasher;
use crate::gateway::{HttpReply, Source};
use crate::scope::{ScopeError, ScopeSet};
use crate::wire::rest::{validate_node_id, NodeToken, RestErrorBody, RestErrorCode, TokenError};

pub use limiter::RateLimit;
pub(crate) use limiter::{ceil_ms, Limiter};
pub(crate) use record::hex32;
pub use record::{hash_secret, AuthPersist, NodeRecord, NodeState, UnixClock};

/// Limits of the node book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// Failed attempts a source address may make (malformed, unknown node, wrong secret).
    pub failures_per_source: RateLimit,
    /// Wrong secrets a nodeId may receive.
    pub failures_per_node: RateLimit,
    /// How many source addresses the limiter tracks at most.
    pub max_tracked_sources: usize,
    /// How many nodeIds the limiter tracks at most.
    pub max_tracked_nodes: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            failures_per_source: RateLimit::new(10, Duration::from_secs(60)),
            failures_per_node: RateLimit::new(10, Duration::from_secs(60)),
            max_tracked_sources: 65_536,
            max_tracked_nodes: 65_536,
        }
    }
}

/// Why a token is refused. `Display` is the text a node can show (it never contains the secret);
/// [`AuthError::to_body`] is the REST error body of section 7.7.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not `{nodeId}.{secret}` (section 7.2). 401 `unauthorized`.
    #[error("malformed node token: {0}")]
    Malformed(TokenError),
    /// No node has this nodeId. 401 `unauthorized`.
    #[error("unknown node token")]
    UnknownNode { node_id: String },
    /// The nodeId is known but the secret is not its secret. 401 `unauthorized`.
    #[error("wrong node token secret")]
    BadSecret { node_id: String },
    /// The node's access was revoked (section 5.6). 403 `revoked`.
    #[error("access revoked{}", reason_suffix(.reason))]
    Revoked { node_id: String, reason: String },
    /// Too many failed attempts from this source, or wrong secrets for this node. 429
    /// `rate_limited` with `retryAfterMs`.
    #[error("too many failed authentication attempts")]
    RateLimited { retry_after: Duration },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl AuthError {
    /// The HTTP status: 401, 403 or 429.
    pub fn http_status(&self) -> u16 {
        self.code().http_status().unwrap_or(401)
    }

    /// The REST error code (section 7.7).
    pub fn code(&self) -> RestErrorCode {
        match self {
            AuthError::Malformed(_)
            | AuthError::UnknownNode { .. }
            | AuthError::BadSecret { .. } => RestErrorCode::Unauthorized,
            AuthError::Revoked { .. } => RestErrorCode::Revoked,
            AuthError::RateLimited { .. } => RestErrorCode::RateLimited,
        }
    }

    /// The REST error body: the code, `Display` as the message, and `retryAfterMs` (rounded up)
    /// when rate limited.
    pub fn to_body(&self) -> RestErrorBody {
        let mut body = RestErrorBody::new(self.code(), self.message());
        if let AuthError::RateLimited { retry_after } = self {
            body.retry_after_ms = Some(ceil_ms(*retry_after));
        }
        body
    }

    /// The whole REST answer.
    pub fn to_reply(&self) -> HttpReply {
        HttpReply::json(self.http_status(), &self.to_body())
    }

    /// The text of a negotiate refusal `{"error":"..."}` (section 2.2): the status's reason
    /// phrase, then the message, e.g. `Unauthorized: unknown node token`.
    pub fn negotiate_error(&self) -> String {
        let phrase = match self.http_status() {
            403 => "Forbidden",
            429 => "Too Many Requests",
            _ => "Unauthorized",
        };
        format!("{phrase}: {}", self.message())
    }

    /// The message a node can show: `Display` (a rate limit's delay travels in `retryAfterMs`).
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The nodeId the token named, when it could be read.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            AuthError::UnknownNode { node_id }
            | AuthError::BadSecret { node_id }
            | AuthError::Revoked { node_id, .. } => Some(node_id),
            AuthError::Malformed(_) | AuthError::RateLimited { .. } => None,
        }
    }
}

/// Caller misuse of the node book's operator API.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("invalid nodeId: {0}")]
    InvalidNodeId(TokenError),
    #[error("invalid scopes: {0}")]
    InvalidScopes(ScopeError),
    #[error("no node `{node_id}`")]
    UnknownNode { node_id: String },
    #[error("node `{node_id}` is revoked")]
    Revoked { node_id: String },
}

/// The node book; see the module docs.
pub struct NodeBook {
    clock: UnixClock,
    nodes: BTreeMap<String, NodeRecord>,
    /// The ids of approved nodes in `nodes`: `is_approved` (every dispatch asks) without a
    /// walk of the ordered map. Never iterated.
    approved: HashSet<String, BuildHasherDefault<FnvHasher>>,
    sources: Limiter<Source>,
    node_failures: Limiter<String>,
    persist: VecDeque<AuthPersist>,
}

impl fmt::Debug for NodeBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBook")
            .field("nodes", &self.nodes.len())
            .field("tracked_sources", &self.sources.len())
            .field("tracked_nodes", &self.node_failures.len())
            .field("persist", &self.persist.len())
            .finish()
    }
}

impl NodeBook {
    pub fn new(config: AuthConfig, clock: UnixClock) -> NodeBook {
        NodeBook {
            clock,
            nodes: BTreeMap::new(),
            approved: HashSet::default(),
            sources: Limiter::new(config.failures_per_source, config.max_tracked_sources),
            node_failures: Limiter::new(config.failures_per_node, config.max_tracked_nodes),
            persist: VecDeque::new(),
        }
    }

    // --- A: getters ---------------------------------------------------------------------------

    pub fn get(&self, node_id: &str) -> Option<&NodeRecord> {
        self.nodes.get(node_id)
    }

    /// Every node, sorted by nodeId.
    pub fn list(&self) -> impl Iterator<Item = &NodeRecord> + '_ {
        self.nodes.values()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `node_id` is known and approved.
    pub fn is_approved(&self, node_id: &str) -> bool {
        self.approved.contains(node_id)
    }

    /// How many source addresses and nodeIds the limiter tracks now.
    pub fn tracked_keys(&self) -> (usize, usize) {
        (self.sources.len(), self.node_failures.len())
    }

    pub fn clock(&self) -> UnixClock {
        self.clock
    }

    // --- B: inputs ----------------------------------------------------------------------------

    /// Checks a token `{nodeId}.{secret}` presented from `source`; see the module docs.
    pub fn authenticate(
        &mut self,
        now: Instant,
        token: &str,
        source: &Source,
    ) -> Result<String, AuthError> {
        self.check(now, NodeToken::parse(token), source)
    }

    /// [`authenticate`](Self::authenticate) for an `Authorization` header value
    /// (`Bearer <token>`, scheme case-insensitive). Another scheme is a malformed token.
    pub fn authenticate_bearer(
        &mut self,
        now: Instant,
        header: &str,
        source: &Source,
    ) -> Result<String, AuthError> {
        self.check(now, NodeToken::from_bearer(header), source)
    }

    fn check(
        &mut self,
        now: Instant,
        token: Result<NodeToken, TokenError>,
        source: &Source,
    ) -> Result<String, AuthError> {
        self.sources.expire(now);
        self.node_failures.expire(now);
        if let Some(retry_after) = self.sources.retry_after(source, now) {
            return Err(AuthError::RateLimited { retry_after });
        }
        let token = match token {
            Ok(token) => token,
            Err(e) => {
                self.sources.record(source, now);
                return Err(AuthError::Malformed(e));
            }
        };
        let presented = hash_secret(token.secret());
        let node_id = token.node_id();
        let Some(record) = self.nodes.get(node_id) else {
            self.sources.record(source, now);
            return Err(AuthError::UnknownNode {
                node_id: node_id.to_owned(),
            });
        };
        if !bool::from(record.secret_sha256.ct_eq(&presented)) {
            self.sources.record(source, now);
            let key = node_id.to_owned();
            if let Some(retry_after) = self.node_failures.retry_after(&key, now) {
                return Err(AuthError::RateLimited { retry_after });
            }
            self.node_failures.record(&key, now);
            return Err(AuthError::BadSecret { node_id: key });
        }
        match &record.state {
            NodeState::Approved => Ok(record.node_id.clone()),
            NodeState::Revoked { reason, .. } => Err(AuthError::Revoked {
                node_id: record.node_id.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// Forgets the limiter keys whose buckets are full again. Early or spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sources.expire(now);
        self.node_failures.expire(now);
    }

    // --- C: operator actions ------------------------------------------------------------------

    /// Inserts or replaces a node's record (an import, or a pairing's token). The nodeId must
    /// follow section 7.2 and the scopes must parse; they are stored minimal and sorted.
    pub fn insert(&mut self, mut record: NodeRecord) -> Result<(), BookError> {
        validate_node_id(&record.node_id).map_err(BookError::InvalidNodeId)?;
        record.scopes = normalize_scopes(&record.scopes)?;
        self.put(record);
        Ok(())
    }

    /// Revokes a node: its token is refused with 403 `revoked` and `reason` from now on. The
    /// caller sends `RevokeAccess(reason)` and a Close to a connected node (section 5.6).
    pub fn revoke(
        &mut self,
        now: Instant,
        node_id: &str,
        reason: impl Into<String>,
    ) -> Result<&NodeRecord, BookError> {
        let record = self.approved(node_id)?;
        let mut record = record.clone();
        record.state = NodeState::Revoked {
            reason: reason.into(),
            at_unix_ms: Some(self.clock.unix_ms(now)),
        };
        self.put(record);
        Ok(self.nodes.get(node_id).expect("put just stored it"))
    }

    /// Replaces an approved node's granted scopes; returns them as stored (minimal, sorted). The
    /// caller sends `RefreshScopes` to a connected node.
    pub fn set_scopes(
        &mut self,
        node_id: &str,
        scopes: &[String],
    ) -> Result<Vec<String>, BookError> {
        let scopes = normalize_scopes(scopes)?;
        let mut record = self.approved(node_id)?.clone();
        record.scopes = scopes.clone();
        self.put(record);
        Ok(scopes)
    }

    /// Rebuilds the book from the store (the records of [`AuthPersist::Node`], in any order of
    /// nodes; for one nodeId the last record wins). Queues nothing to persist.
    pub fn restore(&mut self, records: impl IntoIterator<Item = NodeRecord>) {
        self.nodes.clear();
        self.persist.clear();
        for record in records {
            self.nodes.insert(record.node_id.clone(), record);
        }
        self.approved = self
            .nodes
            .values()
            .filter(|r| r.is_approved())
            .map(|r| r.node_id.clone())
            .collect();
    }

    /// Stores a record and queues it for the store; no checks (the pairing book's tokens).
    pub(crate) fn put(&mut self, record: NodeRecord) {
        self.persist.push_back(AuthPersist::Node(record.clone()));
        if record.is_approved() {
            self.approved.insert(record.node_id.clone());
        } else {
            self.approved.remove(&record.node_id);
        }
        self.nodes.insert(record.node_id.clone(), record);
    }

    fn approved(&self, node_id: &str) -> Result<&NodeRecord, BookError> {
        let record = self
            .nodes
            .get(node_id)
            .ok_or_else(|| BookError::UnknownNode {
                node_id: node_id.to_owned(),
            })?;
        if !record.is_approved() {
            return Err(BookError::Revoked {
                node_id: node_id.to_owned(),
            });
        }
        Ok(record)
    }

    // --- D: outputs ---------------------------------------------------------------------------

    /// The next durable change for the store.
    #[must_use]
    pub fn poll_persist(&mut self) -> Option<AuthPersist> {
        self.persist.pop_front()
    }

    /// When a limiter key is next forgotten.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.sources.next_deadline(),
            self.node_failures.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Scopes as stored: parsed (patterns allowed), minimal and sorted.
pub(crate) fn normalize_scopes(scopes: &[String]) -> Result<Vec<String>, BookError> {
    ScopeSet::parse(scopes)
        .map(|set| set.to_vec())
        .map_err(BookError::InvalidScopes)
}
