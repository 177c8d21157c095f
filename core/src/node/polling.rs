//! The HTTP polling fallback of a paired node: `GET /api/nodes/me/commands`, `POST` results and
//! the REST heartbeat (docs/protocol.md sections 7.4 to 7.7).
//!
//! # Theory of operation
//! A node whose WebSocket is blocked talks to its gateway with one HTTP request at a time.
//! [`PollingClient::poll_request`] hands out the next request when none is in flight, in this
//! priority:
//! 1. the queued heartbeat ([`PollingClient::queue_heartbeat`]; only the latest is kept), so a
//!    heartbeat never waits behind a queue of result parts (design rule 6);
//! 2. the poll, when due. Polls follow a fixed grid `first + k * interval` anchored at the first
//!    poll, which goes out at once. After an answer the next poll is the first grid instant at or
//!    after both the answer and the previous poll's slot plus `interval`: no drift, no catch-up
//!    burst, and a poll delayed by a heartbeat or a result post in flight does not push the
//!    next one a whole interval later;
//! 3. the queued result parts ([`PollingClient::queue_result`]), oldest first, one `POST` per
//!    part; a part leaves the queue only when the gateway accepts it (2xx) or refuses it for good.
//!
//! **Failures.** A transport error, a 5xx, a 408, a 429, any status outside 2xx to 5xx, and a
//! poll answer whose body does not decode are retryable: the request stays (a heartbeat unless a
//! newer one was queued meanwhile, the poll, the result part at the head of the queue) and
//! NOTHING is sent before `retry_at = answer + delay`, where after `n` consecutive failures
//! `delay = min(interval * 2^(n-1), max(interval, 30 s))`, and at least `retryAfterMs` after a
//! 429. No jitter: a poller's failures happen at its own instants, so equal delays keep nodes as
//! spread out as they were. Any other HTTP answer resets `n`.
//!
//! **Refusals** (a 4xx other than 401, 403, 408 and 429) drop the request: a result part becomes
//! [`PollingEvent::ResultRefused`] (section 7.5: never posted again), a heartbeat or a poll a
//! [`PollingEvent::RequestFailed`] with no `retry_at` (the next poll keeps its slot).
//!
//! **The end.** 401 ([`PollingEvent::Unauthorized`]), 403 with code `revoked`
//! ([`PollingEvent::Revoked`]) and any other 403 ([`PollingEvent::Forbidden`]) end polling for
//! good, as does [`PollingClient::stop`] when the node goes back to its WebSocket. After either
//! nothing is sent and no timer is armed; results not yet accepted stay available to
//! [`PollingClient::take_queued_results`]. The answer to a request still in flight at `stop` is
//! taken: a result part accepted then is still reported ([`PollingEvent::ResultAccepted`]), any
//! other answer changes nothing.
//!
//! Every input carries `now`, and the client remembers the latest: `poll_request` is called while
//! draining after an input (the run-loop contract), so that instant is when a request goes out.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::pairing::grid_at_or_after;
pub use super::pairing::RequestFailure;
use crate::node::http::{HttpCall, HttpResult, Method};
use crate::time::{duration_from_nanos, saturating_add};
use crate::wire::dto::{CommandResultDto, HeartbeatDto};
use crate::wire::rest::{
    command_result_path, CommandResultBody, NodeToken, PolledCommands, RestErrorBody,
    RestErrorCode, COMMANDS_PATH, HEARTBEAT_PATH,
};

mod events;

pub use events::{PollingError, PollingEvent, PollingState, RequestKind};

/// The longest delay between retries, unless the poll interval is longer.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// A result part waiting for a 2xx, with its path and body built once.
#[derive(Clone)]
struct QueuedResult {
    dto: CommandResultDto,
    path: String,
    body: Vec<u8>,
}

enum InFlight {
    Heartbeat(HeartbeatDto),
    Poll {
        slot: Instant,
    },
    /// `None` once [`PollingClient::take_queued_results`] took it back.
    Result(Option<QueuedResult>),
}

/// The HTTP polling client; see the module docs.
pub struct PollingClient {
    token: NodeToken,
    interval: Duration,
    state: PollingState,
    /// The latest instant of any input: when a request handed out now goes out.
    now: Instant,
    /// The grid slot of the next poll (due once `now` reaches it).
    next_poll: Instant,
    /// Nothing is sent before this instant (after a retryable failure).
    retry_at: Option<Instant>,
    failures: u32,
    heartbeat: Option<HeartbeatDto>,
    results: VecDeque<QueuedResult>,
    in_flight: Option<InFlight>,
    events: VecDeque<PollingEvent>,
}

impl fmt::Debug for PollingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollingClient")
            .field("token", &self.token) // NodeToken's Debug redacts the secret
            .field("interval", &self.interval)
            .field("state", &self.state)
            .field("next_poll", &self.next_poll)
            .field("retry_at", &self.retry_at)
            .field("failures", &self.failures)
            .field("queued_results", &self.results.len())
            .field("in_flight", &self.in_flight.is_some())
            .finish_non_exhaustive()
    }
}

/// What one HTTP answer means, whatever the request.
enum Answer {
    Success(Vec<u8>, u16),
    Retry(RequestFailure),
    Refused(u16, Option<RestErrorBody>),
    Unauthorized(Option<RestErrorBody>),
    Forbidden(Option<RestErrorBody>),
    Revoked(String),
}

fn classify(result: HttpResult) -> Answer {
    let response = match result {
        Ok(response) => response,
        Err(error) => return Answer::Retry(RequestFailure::Transport(error)),
    };
    let status = response.status;
    if (200..300).contains(&status) {
        return Answer::Success(response.body, status);
    }
    let error = if (400..500).contains(&status) {
        RestErrorBody::from_json(&response.body).ok()
    } else {
        None
    };
    match status {
        401 => Answer::Unauthorized(error),
        403 => match error {
            Some(body) if body.error == RestErrorCode::Revoked => Answer::Revoked(body.message),
            error => Answer::Forbidden(error),
        },
        // 408 and 429 ask for a retry; every other 4xx refuses the request for good.
        400..=499 if !matches!(status, 408 | 429) => Answer::Refused(status, error),
        _ => Answer::Retry(RequestFailure::Status { status, error }),
    }
}

impl PollingClient {
    /// A client whose first poll is due at once. `poll_interval` is usually
    /// [`DEFAULT_POLL_INTERVAL`](crate::wire::rest::DEFAULT_POLL_INTERVAL); zero is refused.
    pub fn new(
        now: Instant,
        token: NodeToken,
        poll_interval: Duration,
    ) -> Result<PollingClient, PollingError> {
        if poll_interval.is_zero() {
            return Err(PollingError::ZeroInterval);
        }
        Ok(PollingClient {
            token,
            interval: poll_interval,
            state: PollingState::Polling,
            now,
            next_poll: now,
            retry_at: None,
            failures: 0,
            heartbeat: None,
            results: VecDeque::new(),
            in_flight: None,
            events: VecDeque::new(),
        })
    }

    // --- A: getters ---------------------------------------------------------------------------

    pub fn state(&self) -> PollingState {
        self.state
    }

    pub fn token(&self) -> &NodeToken {
        &self.token
    }

    pub fn poll_interval(&self) -> Duration {
        self.interval
    }

    /// The slot of the next poll (it may be past while another request is in flight).
    pub fn next_poll_at(&self) -> Instant {
        self.next_poll
    }

    /// While backing off after a failure: the instant before which nothing is sent.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at.filter(|at| *at > self.now)
    }

    /// Retryable failures since the last other answer.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Result parts not yet accepted or refused, the one in flight included.
    pub fn queued_results(&self) -> usize {
        let in_flight = matches!(self.in_flight, Some(InFlight::Result(Some(_))));
        self.results.len() + usize::from(in_flight)
    }

    pub fn has_queued_heartbeat(&self) -> bool {
        self.heartbeat.is_some()
    }

    /// Whether a request was handed out and not answered yet.
    pub fn is_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    // --- B: inputs ----------------------------------------------------------------------------

    /// The answer to the request in flight. `Err` only when none is in flight (caller misuse).
    pub fn handle_response(
        &mut self,
        now: Instant,
        result: HttpResult,
    ) -> Result<(), PollingError> {
        let in_flight = self
            .in_flight
            .take()
            .ok_or(PollingError::NoRequestInFlight)?;
        self.observe(now);
        if self.state.is_finished() {
            // Stopped meanwhile: only a result part's fate matters. Accepted, the node hears it;
            // otherwise it goes back to the queue for `take_queued_results`.
            if let InFlight::Result(Some(q)) = in_flight {
                match result {
                    Ok(response) if (200..300).contains(&response.status) => {
                        self.events.push_back(PollingEvent::ResultAccepted {
                            command_id: q.dto.command_id,
                            part_index: q.dto.part_index,
                        });
                    }
                    _ => self.results.push_front(q),
                }
            }
            return Ok(());
        }
        let request = match &in_flight {
            InFlight::Heartbeat(_) => RequestKind::Heartbeat,
            InFlight::Poll { .. } => RequestKind::Poll,
            InFlight::Result(Some(q)) => RequestKind::Result {
                command_id: q.dto.command_id.clone(),
                part_index: q.dto.part_index,
            },
            // Taken back by the node, which owns it now; a 401 or 403 shows again on the next
            // request.
            InFlight::Result(None) => return Ok(()),
        };
        let mut answer = classify(result);
        if let (InFlight::Poll { .. }, Answer::Success(body, status)) = (&in_flight, &answer) {
            // A poll answer must decode; a heartbeat's or result's 2xx body is never read.
            match PolledCommands::from_json(body) {
                Ok(polled) => self.events.push_back(PollingEvent::Commands {
                    commands: polled.commands,
                    rejected: polled.rejected,
                    scopes: polled.scopes,
                }),
                Err(error) => {
                    answer = Answer::Retry(RequestFailure::InvalidBody {
                        status: *status,
                        error,
                    })
                }
            }
        }
        match answer {
            Answer::Retry(failure) => {
                let retry_at = self.back_off(now, failure.retry_after());
                match in_flight {
                    InFlight::Heartbeat(dto) => {
                        // Only the latest heartbeat is kept: a newer one replaces this one.
                        self.heartbeat.get_or_insert(dto);
                    }
                    InFlight::Poll { .. } => {} // `next_poll` has not moved: it is still due
                    InFlight::Result(q) => self.requeue(q),
                }
                self.events.push_back(PollingEvent::RequestFailed {
                    request,
                    failure,
                    retry_at: Some(retry_at),
                });
            }
            Answer::Unauthorized(error) => {
                self.finish(in_flight, PollingState::Unauthorized);
                self.events.push_back(PollingEvent::Unauthorized { error });
            }
            Answer::Forbidden(error) => {
                self.finish(in_flight, PollingState::Forbidden);
                self.events.push_back(PollingEvent::Forbidden { error });
            }
            Answer::Revoked(reason) => {
                self.finish(in_flight, PollingState::Revoked);
                self.events.push_back(PollingEvent::Revoked { reason });
            }
            Answer::Success(..) | Answer::Refused(..) => {
                self.failures = 0;
                self.retry_at = None;
                self.answered(now, in_flight, request, answer);
            }
        }
        Ok(())
    }

    /// Opens the retry gate once its instant is reached. Early or spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
    }

    // --- C: mutators for the node -------------------------------------------------------------

    /// Queues a heartbeat for `POST /api/nodes/me/heartbeat`, replacing one not yet sent.
    pub fn queue_heartbeat(&mut self, now: Instant, dto: HeartbeatDto) -> Result<(), PollingError> {
        self.check_open()?;
        self.observe(now);
        self.heartbeat = Some(dto);
        Ok(())
    }

    /// Queues one result (part) for `POST /api/nodes/me/commands/{id}/result`, after those
    /// already queued. The node has already chunked it (section 6).
    pub fn queue_result(
        &mut self,
        now: Instant,
        dto: CommandResultDto,
    ) -> Result<(), PollingError> {
        self.check_open()?;
        let path =
            command_result_path(&dto.command_id).map_err(PollingError::UnpostableCommandId)?;
        self.observe(now);
        let (_, body) = CommandResultBody::from_dto(dto.clone());
        let body = serde_json::to_vec(&body)
            .expect("a CommandResultBody is JSON values and strings, which always serialize");
        self.results.push_back(QueuedResult { dto, path, body });
        Ok(())
    }

    /// The node goes back to its WebSocket: no more requests and no timer. Idempotent; does not
    /// change a terminal state.
    pub fn stop(&mut self) {
        if self.state == PollingState::Polling {
            self.state = PollingState::Stopped;
        }
        self.heartbeat = None;
    }

    /// Every result (part) not yet accepted or refused, oldest first, the one in flight included
    /// (it may then reach the gateway twice, which answers a repeat as it answered the first,
    /// section 7.5). The client forgets them.
    pub fn take_queued_results(&mut self) -> Vec<CommandResultDto> {
        let mut taken = Vec::with_capacity(self.queued_results());
        if let Some(InFlight::Result(q)) = &mut self.in_flight {
            taken.extend(q.take().map(|q| q.dto));
        }
        taken.extend(self.results.drain(..).map(|q| q.dto));
        taken
    }

    // --- D: outputs ---------------------------------------------------------------------------

    /// The next request, when none is in flight and one may go out now.
    #[must_use]
    pub fn poll_request(&mut self) -> Option<HttpCall> {
        if self.state.is_finished() || self.in_flight.is_some() || self.retry_at().is_some() {
            return None;
        }
        self.retry_at = None;
        let (in_flight, path, body) = if let Some(dto) = self.heartbeat.take() {
            let body = serde_json::to_vec(&dto)
                .expect("a HeartbeatDto is numbers and strings, which always serialize");
            (
                InFlight::Heartbeat(dto),
                HEARTBEAT_PATH.to_owned(),
                Some(body),
            )
        } else if self.next_poll <= self.now {
            let slot = self.next_poll;
            (InFlight::Poll { slot }, COMMANDS_PATH.to_owned(), None)
        } else {
            let q = self.results.pop_front()?;
            let (path, body) = (q.path.clone(), Some(q.body.clone()));
            (InFlight::Result(Some(q)), path, body)
        };
        self.in_flight = Some(in_flight);
        let method = if body.is_some() {
            Method::Post
        } else {
            Method::Get
        };
        Some(HttpCall {
            method,
            path,
            bearer: Some(self.token.clone()),
            body,
        })
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<PollingEvent> {
        self.events.pop_front()
    }

    /// The end of a retry delay, or the next poll's slot when nothing else can go out; `None`
    /// while a request is in flight (its answer is the next input), when a request can go out
    /// now (drain `poll_request`), and once stopped or ended.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state.is_finished() || self.in_flight.is_some() {
            return None;
        }
        if let Some(at) = self.retry_at() {
            return Some(at);
        }
        let sendable =
            self.heartbeat.is_some() || self.next_poll <= self.now || !self.results.is_empty();
        (!sendable).then_some(self.next_poll)
    }

    // --- internals ----------------------------------------------------------------------------

    fn observe(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.retry_at.is_some_and(|at| at <= self.now) {
            self.retry_at = None;
        }
    }

    fn check_open(&self) -> Result<(), PollingError> {
        match self.state {
            PollingState::Polling => Ok(()),
            PollingState::Stopped => Err(PollingError::Stopped),
            _ => Err(PollingError::Ended),
        }
    }

    /// Arms the retry gate after a retryable failure and returns it.
    fn back_off(&mut self, now: Instant, retry_after: Option<Duration>) -> Instant {
        self.failures = self.failures.saturating_add(1);
        let cap = self.interval.max(MAX_RETRY_DELAY);
        let grown = 1u128
            .checked_shl(self.failures - 1)
            .and_then(|factor| self.interval.as_nanos().checked_mul(factor))
            .unwrap_or(u128::MAX);
        let mut delay = duration_from_nanos(grown).min(cap);
        if let Some(floor) = retry_after {
            delay = delay.max(floor);
        }
        let at = saturating_add(now, delay);
        self.retry_at = Some(at);
        at
    }

    /// Puts a result that was in flight back at the head of the queue.
    fn requeue(&mut self, q: Option<QueuedResult>) {
        if let Some(q) = q {
            self.results.push_front(q);
        }
    }

    /// The gateway ended polling: keep the results for `take_queued_results`, drop the rest.
    fn finish(&mut self, in_flight: InFlight, state: PollingState) {
        if let InFlight::Result(q) = in_flight {
            self.requeue(q);
        }
        self.state = state;
        self.heartbeat = None;
        self.retry_at = None;
    }

    /// A 2xx or a refusal (other 4xx) of the request that was in flight.
    fn answered(
        &mut self,
        now: Instant,
        in_flight: InFlight,
        request: RequestKind,
        answer: Answer,
    ) {
        let refusal = match answer {
            Answer::Refused(status, error) => Some((status, error)),
            _ => None,
        };
        match (in_flight, refusal) {
            (InFlight::Poll { slot, .. }, refusal) => {
                let earliest = now.max(saturating_add(slot, self.interval));
                self.next_poll = grid_at_or_after(slot, self.interval, earliest);
                if let Some((status, error)) = refusal {
                    self.events.push_back(PollingEvent::RequestFailed {
                        request,
                        failure: RequestFailure::Status { status, error },
                        retry_at: None,
                    });
                }
            }
            (InFlight::Heartbeat(_), None) => {
                self.events.push_back(PollingEvent::HeartbeatAccepted)
            }
            (InFlight::Heartbeat(_), Some((status, error))) => {
                self.events.push_back(PollingEvent::RequestFailed {
                    request,
                    failure: RequestFailure::Status { status, error },
                    retry_at: None,
                })
            }
            (InFlight::Result(None), _) => {} // handled by `handle_response`
            (InFlight::Result(Some(q)), None) => {
                self.events.push_back(PollingEvent::ResultAccepted {
                    command_id: q.dto.command_id,
                    part_index: q.dto.part_index,
                })
            }
            (InFlight::Result(Some(q)), Some((status, error))) => {
                self.events.push_back(PollingEvent::ResultRefused {
                    command_id: q.dto.command_id,
                    part_index: q.dto.part_index,
                    status,
                    error,
                })
            }
        }
    }
}
