//! The pairing client: `POST /api/nodes/me/pair` every 3 s until the gateway approves, rejects or
//! expires the pairing (docs/protocol.md section 7.3).
//!
//! # Theory of operation
//! A node that has no token chooses a fresh pairing secret ([`PairingClient::generate_secret`])
//! and builds a [`PairingClient`]. The client repeats one request, the same bytes every time,
//! on a fixed 3-second grid anchored at the first request, which goes out at once:
//!
//! - **One request at a time.** [`PairingClient::poll_request`] hands out the request when it is
//!   due and none is in flight; [`PairingClient::handle_response`] answers it. The next request
//!   is due at the first grid instant `first + k * 3 s` that is at or after both the answer and
//!   3 s after the previous request went out, so a slow answer or a late wake-up skips grid points
//!   instead of bunching requests (the heartbeat rule, design rule 7: no drift, no catch-up), and
//!   two requests are never less than 3 s apart.
//! - **Failures keep the cadence.** A transport error, a 5xx, an unexpected status or a body that
//!   does not decode is a [`PairingEvent::RequestFailed`] and the grid goes on. A 429 moves the
//!   next request to `retryAfterMs` after the answer when that is later than the next grid point,
//!   and the grid restarts from there.
//! - **Events.** [`PairingEvent::Code`] whenever the pairing code is first seen or changes; then
//!   exactly one terminal event: [`PairingEvent::Approved`], [`PairingEvent::Rejected`],
//!   [`PairingEvent::Expired`] (the gateway said so, or 15 minutes passed since [`PairingClient::new`]:
//!   a fresh attempt needs a new secret) or [`PairingEvent::Refused`] (400 or 409: retrying the
//!   same request cannot succeed, section 7.7). After it the client makes no request and arms no
//!   timer; the answer to a request still in flight is taken and ignored, and so is an answer
//!   read at or after the 15 minutes.
//!
//! The normative text is docs/node-parts/pairing.md (merged into docs/protocol.md section 7.3).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::node::http::{HttpCall, HttpError, HttpResult, Method};
use crate::rng::Rng;
use crate::time::{duration_from_nanos, saturating_add};
use crate::wire::rest::{
    validate_node_id, NodeToken, PairRequest, PairResponse, RestError, RestErrorBody, TokenError,
    PAIRING_POLL_INTERVAL, PAIRING_SECRET_LIFETIME, PAIR_PATH,
};

/// The prefix of a generated pairing secret (the seed's `s_a1b2c3...`).
pub const PAIRING_SECRET_PREFIX: &str = "s_";

/// Random bytes in a generated pairing secret: 256 bits, 64 hex digits after the prefix.
pub const PAIRING_SECRET_BYTES: usize = 32;

/// Why a request got no usable answer. Shared by the pairing and the polling clients.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestFailure {
    /// No HTTP answer: refused, reset, DNS, TLS, or the shell's own timeout.
    #[error("{0}")]
    Transport(HttpError),
    /// An HTTP status the request does not succeed with. `error` is the error body of a 4xx
    /// answer when it decodes (section 7.7); a 5xx body is never read.
    #[error("HTTP {status}{}", error_suffix(.error))]
    Status {
        status: u16,
        error: Option<RestErrorBody>,
    },
    /// A success status whose body is not what the endpoint answers.
    #[error("HTTP {status} with an invalid body: {error}")]
    InvalidBody { status: u16, error: RestError },
}

fn error_suffix(error: &Option<RestErrorBody>) -> String {
    match error {
        Some(body) if body.message.is_empty() => format!(" {}", body.error),
        Some(body) => format!(" {}: {}", body.error, body.message),
        None => String::new(),
    }
}

impl RequestFailure {
    /// A failure from an HTTP status, with the error body decoded for 4xx answers (when it can
    /// be: an undecodable error body is not a failure of its own).
    pub fn from_status(status: u16, body: &[u8]) -> RequestFailure {
        let error = if (400..500).contains(&status) {
            RestErrorBody::from_json(body).ok()
        } else {
            None
        };
        RequestFailure::Status { status, error }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            RequestFailure::Transport(_) => None,
            RequestFailure::Status { status, .. } | RequestFailure::InvalidBody { status, .. } => {
                Some(*status)
            }
        }
    }

    /// `retryAfterMs` of a 429 answer's error body, as a duration.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RequestFailure::Status {
                status: 429,
                error: Some(body),
            } => body.retry_after_ms.map(Duration::from_millis),
            _ => None,
        }
    }
}

/// Caller misuse of a REST client (never caused by what a gateway sends).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    /// The nodeId cannot become the first part of a node token (section 7.2).
    #[error("invalid nodeId: {0}")]
    InvalidNodeId(TokenError),
    /// A pairing secret cannot be empty.
    #[error("the pairing secret is empty")]
    EmptySecret,
    /// `handle_response` was called with no request in flight.
    #[error("no pairing request is in flight")]
    NoRequestInFlight,
}

/// What the node shows its operator with the pairing request (nodelink extensions, section 7.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairingInfo {
    /// Free text, e.g. `rack 3, slot 2`.
    pub name: Option<String>,
    /// e.g. `linux`.
    pub platform: Option<String>,
}

/// Where a pairing stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairingState {
    /// Requests go on every 3 s.
    Pending,
    /// Terminal: [`PairingEvent::Approved`] was emitted.
    Approved,
    /// Terminal: [`PairingEvent::Rejected`] was emitted.
    Rejected,
    /// Terminal: [`PairingEvent::Expired`] was emitted.
    Expired,
    /// Terminal: [`PairingEvent::Refused`] was emitted.
    Refused,
}

impl PairingState {
    pub fn is_terminal(self) -> bool {
        self != PairingState::Pending
    }
}

/// What the pairing client reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairingEvent {
    /// The gateway sent a pairing code for the first time, or a different one: show it.
    Code(String),
    /// Terminal: store the token and connect to `gateway_url`.
    Approved {
        token: NodeToken,
        gateway_url: String,
    },
    /// Terminal: an operator refused the node.
    Rejected { reason: Option<String> },
    /// Terminal: the gateway answered `expired`, or 15 minutes passed since the client was made.
    /// Pairing again needs a new secret.
    Expired,
    /// Terminal: 400 `invalid_request` or 409 `conflict` (the nodeId is taken): the same request
    /// can never succeed.
    Refused {
        status: u16,
        error: Option<RestErrorBody>,
    },
    /// One request failed; the next goes out on the usual cadence.
    RequestFailed { failure: RequestFailure },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// The request is due at `slot` (handed out once `slot` has been reached).
    At { slot: Instant },
    /// Due since `since` (the input at which it became due; the run-loop contract has the node
    /// drain right after, so it goes out then). `slot` is the grid instant it belongs to.
    Ready { slot: Instant, since: Instant },
    /// Handed out at `sent_at`, not answered yet.
    InFlight { slot: Instant, sent_at: Instant },
    /// Terminal, nothing in flight.
    Done,
    /// Terminal, but a request is still in flight: its answer is taken and ignored.
    DoneInFlight,
}

/// The pairing client; see the module docs.
pub struct PairingClient {
    node_id: String,
    /// The request body, the same bytes on every request.
    body: Vec<u8>,
    state: PairingState,
    next: Next,
    expires_at: Instant,
    code: Option<String>,
    events: VecDeque<PairingEvent>,
}

impl fmt::Debug for PairingClient {
    // The body holds the pairing secret: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingClient")
            .field("node_id", &self.node_id)
            .field("state", &self.state)
            .field("next", &self.next)
            .field("expires_at", &self.expires_at)
            .field("code", &self.code)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl PairingClient {
    /// A client whose first request is due at once, with `now` as the start of the secret's
    /// 15 minutes. Errors only for a nodeId that breaks section 7.2 or an empty secret.
    pub fn new(
        now: Instant,
        node_id: String,
        pairing_secret: String,
        info: PairingInfo,
    ) -> Result<PairingClient, PairingError> {
        validate_node_id(&node_id).map_err(PairingError::InvalidNodeId)?;
        if pairing_secret.is_empty() {
            return Err(PairingError::EmptySecret);
        }
        let request = PairRequest {
            node_id: node_id.clone(),
            pairing_secret,
            name: info.name,
            platform: info.platform,
        };
        let body = serde_json::to_vec(&request)
            .expect("a PairRequest is strings only, which always serialize");
        Ok(PairingClient {
            node_id,
            body,
            state: PairingState::Pending,
            next: Next::Ready {
                slot: now,
                since: now,
            },
            expires_at: saturating_add(now, PAIRING_SECRET_LIFETIME),
            code: None,
            events: VecDeque::new(),
        })
    }

    /// A fresh pairing secret: `s_` and 64 lowercase hex digits (256 bits from `rng`).
    pub fn generate_secret(rng: &mut Rng) -> String {
        format!(
            "{PAIRING_SECRET_PREFIX}{}",
            rng.secret(PAIRING_SECRET_BYTES)
        )
    }

    // --- A: getters ---------------------------------------------------------------------------

    pub fn state(&self) -> PairingState {
        self.state
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The latest pairing code the gateway sent.
    pub fn pairing_code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// When the secret's 15 minutes end (the local [`PairingEvent::Expired`]).
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Whether a request was handed out and not answered yet.
    pub fn is_in_flight(&self) -> bool {
        matches!(self.next, Next::InFlight { .. } | Next::DoneInFlight)
    }

    // --- B: inputs ----------------------------------------------------------------------------

    /// The answer to the request in flight. `Err` only when none is in flight (caller misuse).
    pub fn handle_response(
        &mut self,
        now: Instant,
        result: HttpResult,
    ) -> Result<(), PairingError> {
        // Under the run-loop contract the expiry timer fires before an answer read later, which
        // is then ignored; a shell that woke late gets the same outcome.
        self.expire_if_due(now);
        let (slot, sent_at) = match self.next {
            Next::InFlight { slot, sent_at } => (slot, sent_at),
            Next::DoneInFlight => {
                self.next = Next::Done;
                return Ok(());
            }
            Next::At { .. } | Next::Ready { .. } | Next::Done => {
                return Err(PairingError::NoRequestInFlight)
            }
        };
        let mut retry_after = None;
        let terminal = match classify(result) {
            Answer::Pair(PairResponse::Pending { pairing_code }) => {
                if self.code.as_deref() != Some(pairing_code.as_str()) {
                    self.code = Some(pairing_code.clone());
                    self.events.push_back(PairingEvent::Code(pairing_code));
                }
                None
            }
            Answer::Pair(PairResponse::Approved { token, gateway_url }) => Some((
                PairingState::Approved,
                PairingEvent::Approved { token, gateway_url },
            )),
            Answer::Pair(PairResponse::Rejected { reason }) => {
                Some((PairingState::Rejected, PairingEvent::Rejected { reason }))
            }
            Answer::Pair(PairResponse::Expired) => {
                Some((PairingState::Expired, PairingEvent::Expired))
            }
            Answer::Refused { status, error } => Some((
                PairingState::Refused,
                PairingEvent::Refused { status, error },
            )),
            Answer::Failed(failure) => {
                retry_after = failure.retry_after();
                self.events
                    .push_back(PairingEvent::RequestFailed { failure });
                None
            }
        };
        if let Some((state, event)) = terminal {
            self.next = Next::Done;
            self.state = state;
            self.events.push_back(event);
            return Ok(());
        }
        let earliest = now.max(saturating_add(sent_at, PAIRING_POLL_INTERVAL));
        let mut due = grid_at_or_after(slot, PAIRING_POLL_INTERVAL, earliest);
        if let Some(delay) = retry_after {
            due = due.max(saturating_add(now, delay));
        }
        self.next = if due <= now {
            Next::Ready {
                slot: due,
                since: now,
            }
        } else {
            Next::At { slot: due }
        };
        Ok(())
    }

    /// Makes a due request ready and expires the secret at its 15 minutes. Early or spurious
    /// calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_if_due(now);
        if let Next::At { slot } = self.next {
            if slot <= now {
                self.next = Next::Ready { slot, since: now };
            }
        }
    }

    // --- D: outputs ---------------------------------------------------------------------------

    /// The pairing request, when one is due and none is in flight.
    #[must_use]
    pub fn poll_request(&mut self) -> Option<HttpCall> {
        let Next::Ready { slot, since } = self.next else {
            return None;
        };
        self.next = Next::InFlight {
            slot,
            sent_at: since,
        };
        Some(HttpCall {
            method: Method::Post,
            path: PAIR_PATH.to_owned(),
            bearer: None,
            body: Some(self.body.clone()),
        })
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<PairingEvent> {
        self.events.pop_front()
    }

    /// The next request's slot while waiting for it, and the secret's expiry until a terminal
    /// event; `None` once terminal.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.next {
            Next::Done | Next::DoneInFlight => None,
            Next::At { slot } => Some(slot.min(self.expires_at)),
            Next::Ready { .. } | Next::InFlight { .. } => Some(self.expires_at),
        }
    }

    // --- internals ----------------------------------------------------------------------------

    fn expire_if_due(&mut self, now: Instant) {
        if self.state == PairingState::Pending && self.expires_at <= now {
            self.finish(PairingState::Expired, PairingEvent::Expired);
        }
    }

    fn finish(&mut self, state: PairingState, event: PairingEvent) {
        self.state = state;
        self.next = match self.next {
            Next::InFlight { .. } | Next::DoneInFlight => Next::DoneInFlight,
            Next::At { .. } | Next::Ready { .. } | Next::Done => Next::Done,
        };
        self.events.push_back(event);
    }
}

/// What one pairing answer means.
enum Answer {
    Pair(PairResponse),
    Refused {
        status: u16,
        error: Option<RestErrorBody>,
    },
    Failed(RequestFailure),
}

fn classify(result: HttpResult) -> Answer {
    let response = match result {
        Ok(response) => response,
        Err(error) => return Answer::Failed(RequestFailure::Transport(error)),
    };
    let status = response.status;
    if (200..300).contains(&status) {
        return match PairResponse::from_json(&response.body) {
            Ok(answer) => Answer::Pair(answer),
            Err(error) => Answer::Failed(RequestFailure::InvalidBody { status, error }),
        };
    }
    // 400 `invalid_request` and 409 `conflict` say the same request can never succeed
    // (section 7.7); the node acts on the status, whatever code the body carries.
    match RequestFailure::from_status(status, &response.body) {
        RequestFailure::Status { status, error } if matches!(status, 400 | 409) => {
            Answer::Refused { status, error }
        }
        failure => Answer::Failed(failure),
    }
}

/// The first instant `slot + k * period` (k >= 1) that is at or after `now`.
pub(crate) fn grid_at_or_after(slot: Instant, period: Duration, now: Instant) -> Instant {
    let period = period.max(Duration::from_nanos(1));
    let first = saturating_add(slot, period);
    if first >= now {
        return first;
    }
    let behind = now.duration_since(slot).as_nanos();
    let steps = behind.div_ceil(period.as_nanos());
    saturating_add(
        slot,
        duration_from_nanos(period.as_nanos().saturating_mul(steps)),
    )
}
