//! The pairing book: the gateway side of `POST /api/nodes/me/pair` (docs/protocol.md section
//! 7.3), the operator's approvals and rejections, and token minting.
//!
//! # Theory of operation
//! A pairing is identified by `(nodeId, SHA-256 of its pairing secret)`; the secret itself is
//! never kept. It goes through stages ([`PairingStage`]):
//!
//! ```text
//! waiting --approve--> approved --next poll--> delivered --+
//!    |                    |                                  +--15 min after the request--> expired --forgotten-->
//!    +------reject--------+------------------> rejected ---+
//!    +--15 min, no token-------------------------------------> expired
//! ```
//!
//! - **Open** pairings (waiting, approved) hold their nodeId: another secret for it is refused
//!   403 `forbidden` until they end, and their code is unique among open pairings. There are at
//!   most `max_open`; one more is refused 429 until the oldest expires.
//! - **The token is minted at the node's first poll after approval**, not at the approval: the
//!   token secret (256 bits from the rng, base64url) exists in the clear only while the answer is
//!   built, the node book gets a [`NodeRecord`] with its hash at that moment, and nothing secret
//!   is ever at rest. An approval that no poll collects within the secret's 15 minutes lapses
//!   without creating any record.
//! - **Repeats are idempotent** (section 7.3): the same `pending` code, the same `approved` body
//!   (the delivered token is held *wrapped* with a key only the pairing secret gives, see
//!   [`mint`]), `rejected` with its reason, `expired`. A token is only ever answered to the
//!   pairing secret it was minted for, and only while the node book still holds its hash: once
//!   the node is revoked (or paired anew) a repeat gets `expired`. After a restart the wrapped
//!   token is gone; a repeat of a delivered pairing then gets a freshly minted token that
//!   replaces the first one in the node book (the node only repeats when it lost the answer).
//! - **Expiry**: 15 minutes after the gateway first saw the secret, every pairing becomes
//!   `expired`, is remembered as such for `remember_expired` (a late repeat is answered
//!   `expired`, not taken for a new pairing) and is then forgotten. Rejected and delivered
//!   pairings are kept until their expiry too. At most `max_settled` ended pairings are kept;
//!   beyond, the one closest to being forgotten goes first.
//! - **Limits**: repeats of one pairing at most once per `min_repeat_interval` (1 s; a node polls
//!   every 3 s), else 429. Requests that are not repeats (new pairings, and refusals: 400, 403,
//!   409) count against their source address, by default 20 per minute, else 429. Repeats never
//!   count against the source, so many nodes behind one address can pair at once.
//! - **Persistence**: each change of stage is a [`PairingPersist`] (an upsert or a delete of the
//!   record); [`PairingBook::restore`] rebuilds open and ended pairings, their codes and their
//!   deadlines (from Unix times, through [`UnixClock`]). Repeat throttles and source limits are
//!   not durable.

mod mint;
mod record;
mod repeat;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::gateway::auth::{hash_secret, Limiter, NodeBook, RateLimit, UnixClock};
use crate::gateway::Source;
use crate::rng::Rng;
use crate::scope::ScopeSet;
use crate::time::{saturating_add, DeadlineQueue};
use crate::wire::rest::{
    validate_node_id, PairRequest, PairResponse, RestErrorCode, PAIRING_SECRET_LIFETIME,
};

pub use mint::{MAX_INFO_CHARS, TOKEN_SECRET_BYTES};
pub use record::{
    PairReply, PairingError, PairingEvent, PairingPersist, PairingRecord, PairingStage,
    PendingPairing,
};

/// Settings of the pairing book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairingConfig {
    /// The `gatewayUrl` of an `approved` answer.
    pub gateway_url: String,
    /// How long a pairing secret lives after the gateway first sees it (15 minutes).
    pub lifetime: Duration,
    /// How long an expired pairing is remembered before it is forgotten.
    pub remember_expired: Duration,
    /// The shortest interval between two requests of one pairing.
    pub min_repeat_interval: Duration,
    /// The most open (waiting or approved) pairings at once.
    pub max_open: usize,
    /// The most ended (delivered, rejected, expired) pairings remembered at once.
    pub max_settled: usize,
    /// Requests that are not repeats, per source address.
    pub new_per_source: RateLimit,
    /// How many source addresses the limiter tracks at most.
    pub max_tracked_sources: usize,
}

impl PairingConfig {
    /// The defaults, with the URL nodes are told to connect to.
    pub fn new(gateway_url: impl Into<String>) -> PairingConfig {
        PairingConfig {
            gateway_url: gateway_url.into(),
            lifetime: PAIRING_SECRET_LIFETIME,
            remember_expired: PAIRING_SECRET_LIFETIME,
            min_repeat_interval: Duration::from_secs(1),
            max_open: 1024,
            max_settled: 8192,
            new_per_source: RateLimit::new(20, Duration::from_secs(60)),
            max_tracked_sources: 65_536,
        }
    }
}

type SettledKey = (String, [u8; 32]);

/// One pairing in memory: its durable record and what only this process knows.
#[derive(Clone)]
struct Entry {
    record: PairingRecord,
    expires_at: Instant,
    last_request: Option<Instant>,
    /// A delivered token secret, wrapped with the pairing secret ([`mint`]).
    wrapped: Option<[u8; 32]>,
}

/// The pairing book; see the module docs.
pub struct PairingBook {
    config: PairingConfig,
    clock: UnixClock,
    open: BTreeMap<String, Entry>,
    codes: BTreeMap<String, String>,
    open_deadlines: DeadlineQueue<String>,
    settled: BTreeMap<SettledKey, Entry>,
    settled_deadlines: DeadlineQueue<SettledKey>,
    sources: Limiter<Source>,
    persist: VecDeque<PairingPersist>,
    events: VecDeque<PairingEvent>,
}

impl fmt::Debug for PairingBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingBook")
            .field("open", &self.open.len())
            .field("settled", &self.settled.len())
            .field("tracked_sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

impl PairingBook {
    pub fn new(config: PairingConfig, clock: UnixClock) -> PairingBook {
        let sources = Limiter::new(config.new_per_source, config.max_tracked_sources);
        PairingBook {
            config,
            clock,
            open: BTreeMap::new(),
            codes: BTreeMap::new(),
            open_deadlines: DeadlineQueue::new(),
            settled: BTreeMap::new(),
            settled_deadlines: DeadlineQueue::new(),
            sources,
            persist: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // --- A: getters ---------------------------------------------------------------------------

    /// Open (waiting or approved) pairings, oldest first, then by code.
    pub fn list_pending(&self, now: Instant) -> Vec<PendingPairing> {
        let mut list: Vec<PendingPairing> = self
            .open
            .values()
            .filter(|entry| entry.expires_at > now)
            .map(|entry| self.view(entry, now))
            .collect();
        list.sort_by(|a, b| {
            (a.requested_at_unix_ms, &a.code).cmp(&(b.requested_at_unix_ms, &b.code))
        });
        list
    }

    /// The open pairing with this code (as an operator typed it: case and spaces do not matter).
    pub fn pending(&self, now: Instant, code: &str) -> Option<PendingPairing> {
        let node_id = self.codes.get(&mint::normalize_code(code))?;
        let entry = self.open.get(node_id)?;
        (entry.expires_at > now).then(|| self.view(entry, now))
    }

    /// How many pairings are open, and how many ended ones are remembered.
    pub fn counts(&self) -> (usize, usize) {
        (self.open.len(), self.settled.len())
    }

    fn view(&self, entry: &Entry, now: Instant) -> PendingPairing {
        let r = &entry.record;
        PendingPairing {
            code: r.code.clone(),
            node_id: r.node_id.clone(),
            name: r.name.clone(),
            platform: r.platform.clone(),
            requested_at_unix_ms: r.requested_at_unix_ms,
            age: Duration::from_millis(
                self.clock
                    .unix_ms(now)
                    .saturating_sub(r.requested_at_unix_ms),
            ),
            expires_in: entry.expires_at.saturating_duration_since(now),
            approved_scopes: match &r.stage {
                PairingStage::Approved { scopes, .. } => Some(scopes.clone()),
                _ => None,
            },
        }
    }

    // --- B: inputs ----------------------------------------------------------------------------

    /// `POST /api/nodes/me/pair` with a body that may not decode: 400 `invalid_request` then.
    pub fn pair_body(
        &mut self,
        now: Instant,
        body: &[u8],
        source: &Source,
        book: &mut NodeBook,
        rng: &mut Rng,
    ) -> PairReply {
        match PairRequest::from_json(body) {
            Ok(request) => self.pair(now, &request, source, book, rng),
            Err(e) => {
                self.expire(now);
                self.count_new(now, source).err().unwrap_or_else(|| {
                    PairReply::refused(RestErrorCode::InvalidRequest, e.to_string())
                })
            }
        }
    }

    /// `POST /api/nodes/me/pair`; see the module docs. Never panics, whatever the request.
    pub fn pair(
        &mut self,
        now: Instant,
        request: &PairRequest,
        source: &Source,
        book: &mut NodeBook,
        rng: &mut Rng,
    ) -> PairReply {
        self.expire(now);
        let node_id = request.node_id.as_str();
        let secret = request.pairing_secret.as_str();
        let invalid = match validate_node_id(node_id) {
            Err(e) => Some(format!("pair request body is invalid: field `nodeId`: {e}")),
            Ok(()) if secret.is_empty() => {
                Some("pair request body is invalid: field `pairingSecret` is empty".to_owned())
            }
            Ok(()) => None,
        };
        if let Some(message) = invalid {
            return self
                .count_new(now, source)
                .err()
                .unwrap_or_else(|| PairReply::refused(RestErrorCode::InvalidRequest, message));
        }
        let presented = hash_secret(secret);
        if let Some(entry) = self.open.get(node_id) {
            if bool::from(entry.record.secret_sha256.ct_eq(&presented)) {
                return self.repeat_open(now, node_id, secret, book, rng);
            }
        }
        let key = (node_id.to_owned(), presented);
        if self.settled.contains_key(&key) {
            return self.repeat_settled(now, key, secret, book, rng);
        }
        if let Err(reply) = self.count_new(now, source) {
            return reply;
        }
        if book.is_approved(node_id) {
            return PairReply::refused(RestErrorCode::Conflict, "nodeId is already paired");
        }
        if self.open.contains_key(node_id) {
            return PairReply::refused(
                RestErrorCode::Forbidden,
                "nodeId has an open pairing with another secret",
            );
        }
        if self.open.len() >= self.config.max_open {
            let retry = self
                .open_deadlines
                .next_deadline()
                .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
            return PairReply::rate_limited("too many pairings wait for approval", retry);
        }
        self.open_new(now, request, presented, rng)
    }

    /// Expires pairings whose time has come. Early or spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
    }

    // --- C: operator actions ------------------------------------------------------------------

    /// Approves the open pairing with `code`, granting `scopes` (patterns allowed; stored minimal
    /// and sorted). The token is minted when the node next asks.
    pub fn approve(
        &mut self,
        now: Instant,
        code: &str,
        scopes: &[String],
        book: &NodeBook,
    ) -> Result<PendingPairing, PairingError> {
        self.expire(now);
        let code = mint::normalize_code(code);
        let node_id = self
            .codes
            .get(&code)
            .cloned()
            .ok_or_else(|| PairingError::UnknownCode { code: code.clone() })?;
        let scopes = ScopeSet::parse(scopes)
            .map_err(PairingError::InvalidScopes)?
            .to_vec();
        if book.is_approved(&node_id) {
            return Err(PairingError::AlreadyPaired { node_id });
        }
        let at = self.clock.unix_ms(now);
        let entry = self
            .open
            .get_mut(&node_id)
            .expect("every code maps to an open pairing");
        if !matches!(entry.record.stage, PairingStage::Waiting) {
            return Err(PairingError::AlreadyApproved { code });
        }
        entry.record.stage = PairingStage::Approved {
            scopes,
            approved_at_unix_ms: at,
        };
        self.persist
            .push_back(PairingPersist::Put(entry.record.clone()));
        let entry = &self.open[&node_id];
        Ok(self.view(entry, now))
    }

    /// Rejects the open pairing with `code` (waiting, or approved and not yet collected); the
    /// node's repeats get `rejected` with `reason` until its secret expires.
    pub fn reject(
        &mut self,
        now: Instant,
        code: &str,
        reason: Option<String>,
    ) -> Result<PendingPairing, PairingError> {
        self.expire(now);
        let code = mint::normalize_code(code);
        let node_id = self
            .codes
            .get(&code)
            .cloned()
            .ok_or(PairingError::UnknownCode { code })?;
        let mut entry = self
            .take_open(&node_id)
            .expect("every code maps to an open pairing");
        let view = self.view(&entry, now);
        entry.record.stage = PairingStage::Rejected {
            reason,
            rejected_at_unix_ms: self.clock.unix_ms(now),
        };
        let deadline = entry.expires_at;
        self.settle(entry, deadline);
        Ok(view)
    }

    /// Rebuilds the book from the store's records (in the order they were written; for one key,
    /// one nodeId's open pairing, or one code, the last record wins; a record whose nodeId breaks
    /// section 7.2 is skipped). Deadlines that passed
    /// while the gateway was down are due at once (`poll_timeout` returns them). Queues nothing to persist.
    pub fn restore(&mut self, records: impl IntoIterator<Item = PairingRecord>) {
        self.open.clear();
        self.codes.clear();
        self.open_deadlines.clear();
        self.settled.clear();
        self.settled_deadlines.clear();
        self.persist.clear();
        self.events.clear();
        for record in records {
            if validate_node_id(&record.node_id).is_err() {
                // Not written by this book (its nodeIds are checked on request): a token could
                // not be minted for it.
                continue;
            }
            let key = (record.node_id.clone(), record.secret_sha256);
            if self.settled.remove(&key).is_some() {
                self.settled_deadlines.remove(&key);
            }
            let expires_at = self.clock.instant(record.expires_at_unix_ms);
            let entry = Entry {
                record,
                expires_at,
                last_request: None,
                wrapped: None,
            };
            if entry.record.stage.is_open() {
                self.take_open(&key.0);
                if let Some(other) = self.codes.get(&entry.record.code).cloned() {
                    self.take_open(&other);
                }
                self.insert_open(entry);
                continue;
            }
            if self
                .open
                .get(&key.0)
                .is_some_and(|open| open.record.secret_sha256 == key.1)
            {
                self.take_open(&key.0);
            }
            let deadline = match entry.record.stage {
                PairingStage::Expired { forget_at_unix_ms } => {
                    self.clock.instant(forget_at_unix_ms)
                }
                _ => expires_at,
            };
            self.settled_deadlines.insert(key.clone(), deadline);
            self.settled.insert(key, entry);
        }
    }

    // --- D: outputs ---------------------------------------------------------------------------

    /// The next durable change for the store.
    #[must_use]
    pub fn poll_persist(&mut self) -> Option<PairingPersist> {
        self.persist.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<PairingEvent> {
        self.events.pop_front()
    }

    /// The next expiry, forgetting, or source-limit refill.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.open_deadlines.next_deadline(),
            self.settled_deadlines.next_deadline(),
            self.sources.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // --- internals ----------------------------------------------------------------------------

    /// Spends one of the source's requests that are not repeats, or the 429 that refuses it.
    fn count_new(&mut self, now: Instant, source: &Source) -> Result<(), PairReply> {
        if let Some(retry) = self.sources.retry_after(source, now) {
            return Err(PairReply::rate_limited(
                "too many pairing requests from this address",
                retry,
            ));
        }
        self.sources.record(source, now);
        Ok(())
    }

    fn open_new(
        &mut self,
        now: Instant,
        request: &PairRequest,
        secret_sha256: [u8; 32],
        rng: &mut Rng,
    ) -> PairReply {
        let code = loop {
            // 13.8 million codes for at most `max_open` open pairings: a retry is rare.
            let code = rng.pairing_code();
            if !self.codes.contains_key(&code) {
                break code;
            }
        };
        let expires_at = saturating_add(now, self.config.lifetime);
        let record = PairingRecord {
            node_id: request.node_id.clone(),
            secret_sha256,
            code: code.clone(),
            name: mint::clean_info(request.name.as_deref()),
            platform: mint::clean_info(request.platform.as_deref()),
            requested_at_unix_ms: self.clock.unix_ms(now),
            expires_at_unix_ms: self.clock.unix_ms(expires_at),
            stage: PairingStage::Waiting,
        };
        self.events.push_back(PairingEvent::Requested {
            code: code.clone(),
            node_id: record.node_id.clone(),
            name: record.name.clone(),
            platform: record.platform.clone(),
        });
        self.persist.push_back(PairingPersist::Put(record.clone()));
        self.insert_open(Entry {
            record,
            expires_at,
            last_request: Some(now),
            wrapped: None,
        });
        PairReply::Answer(PairResponse::Pending { pairing_code: code })
    }

    fn expire(&mut self, now: Instant) {
        self.sources.expire(now);
        while let Some(node_id) = self.open_deadlines.pop_expired(now) {
            if let Some(entry) = self.open.remove(&node_id) {
                self.codes.remove(&entry.record.code);
                self.events.push_back(PairingEvent::Expired {
                    code: entry.record.code.clone(),
                    node_id,
                });
                self.expire_entry(entry);
            }
        }
        while let Some(key) = self.settled_deadlines.pop_expired(now) {
            let Some(entry) = self.settled.remove(&key) else {
                continue;
            };
            if matches!(entry.record.stage, PairingStage::Expired { .. }) {
                self.persist.push_back(PairingPersist::Delete {
                    node_id: key.0,
                    secret_sha256: key.1,
                });
            } else {
                self.expire_entry(entry);
            }
        }
    }

    /// Makes a pairing `expired`, remembered until `remember_expired` after its secret's expiry.
    fn expire_entry(&mut self, mut entry: Entry) {
        let forget_at = saturating_add(entry.expires_at, self.config.remember_expired);
        entry.record.stage = PairingStage::Expired {
            forget_at_unix_ms: self.clock.unix_ms(forget_at),
        };
        entry.wrapped = None;
        self.settle(entry, forget_at);
    }

    /// Stores an ended pairing until `deadline` and persists it, evicting the ended pairing
    /// closest to its deadline when `max_settled` are kept.
    fn settle(&mut self, entry: Entry, deadline: Instant) {
        let key = (entry.record.node_id.clone(), entry.record.secret_sha256);
        if !self.settled.contains_key(&key) && self.settled.len() >= self.config.max_settled {
            if let Some((_, oldest)) = self.settled_deadlines.peek() {
                let oldest = oldest.clone();
                self.settled_deadlines.remove(&oldest);
                self.settled.remove(&oldest);
                self.persist.push_back(PairingPersist::Delete {
                    node_id: oldest.0,
                    secret_sha256: oldest.1,
                });
            }
        }
        if self.config.max_settled == 0 {
            self.persist.push_back(PairingPersist::Delete {
                node_id: key.0,
                secret_sha256: key.1,
            });
            return;
        }
        self.persist
            .push_back(PairingPersist::Put(entry.record.clone()));
        self.settled_deadlines.insert(key.clone(), deadline);
        self.settled.insert(key, entry);
    }

    fn insert_open(&mut self, entry: Entry) {
        let node_id = entry.record.node_id.clone();
        self.codes
            .insert(entry.record.code.clone(), node_id.clone());
        self.open_deadlines
            .insert(node_id.clone(), entry.expires_at);
        self.open.insert(node_id, entry);
    }

    fn take_open(&mut self, node_id: &str) -> Option<Entry> {
        let entry = self.open.remove(node_id)?;
        self.codes.remove(&entry.record.code);
        self.open_deadlines.remove(&node_id.to_owned());
        Some(entry)
    }
}
