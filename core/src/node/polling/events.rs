//! The polling client's public types: its events, states and usage errors.

use std::time::Instant;

use super::RequestFailure;
use crate::wire::dto::ExecuteCommandDto;
use crate::wire::rest::{RejectedCommand, RestError, RestErrorBody};

/// Caller misuse of the polling client (never caused by what a gateway sends).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PollingError {
    /// A zero poll interval would poll without pause.
    #[error("the poll interval must be longer than zero")]
    ZeroInterval,
    /// `handle_response` was called with no request in flight.
    #[error("no polling request is in flight")]
    NoRequestInFlight,
    /// Something was queued after [`PollingClient::stop`](super::PollingClient::stop).
    #[error("the polling client is stopped")]
    Stopped,
    /// Something was queued after the gateway ended polling (401 or 403).
    #[error("polling has ended: the gateway refused the node token")]
    Ended,
    /// The commandId cannot form the result path (empty, `.` or `..`).
    #[error("the result cannot be posted: {0}")]
    UnpostableCommandId(RestError),
}

/// Where polling stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollingState {
    Polling,
    /// [`PollingClient::stop`](super::PollingClient::stop) was called.
    Stopped,
    /// Terminal: 401, the token is unknown.
    Unauthorized,
    /// Terminal: 403 other than `revoked`.
    Forbidden,
    /// Terminal: 403 `revoked`.
    Revoked,
}

impl PollingState {
    /// Whether no request will ever be made again.
    pub fn is_finished(self) -> bool {
        self != PollingState::Polling
    }
}

/// Which request an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Heartbeat,
    Poll,
    Result {
        command_id: String,
        part_index: Option<u32>,
    },
}

/// What the polling client reports.
#[derive(Clone, Debug, PartialEq)]
pub enum PollingEvent {
    /// A poll answer: run `commands` (the same command comes back until its result is accepted:
    /// ignore those already known), answer `rejected` ones with `invalid_params` when they have
    /// an id, and apply `scopes` when present (section 7.4).
    Commands {
        commands: Vec<ExecuteCommandDto>,
        rejected: Vec<RejectedCommand>,
        scopes: Option<Vec<String>>,
    },
    HeartbeatAccepted,
    /// 2xx: the gateway recorded the result (part): it may be forgotten.
    ResultAccepted {
        command_id: String,
        part_index: Option<u32>,
    },
    /// A 4xx refusal (400, 404, 409, ...): the result (part) is dropped and never posted again.
    ResultRefused {
        command_id: String,
        part_index: Option<u32>,
        status: u16,
        error: Option<RestErrorBody>,
    },
    /// One request failed. `retry_at`: when it goes again; `None`: it was dropped (for a poll:
    /// the next poll keeps its slot).
    RequestFailed {
        request: RequestKind,
        failure: RequestFailure,
        retry_at: Option<Instant>,
    },
    /// Terminal: 401, the gateway does not know the token. Pair again.
    Unauthorized {
        error: Option<RestErrorBody>,
    },
    /// Terminal: 403 other than `revoked`: the node is not allowed.
    Forbidden {
        error: Option<RestErrorBody>,
    },
    /// Terminal: 403 `revoked`, the REST form of `RevokeAccess`: discard the token, never retry
    /// without pairing again. `reason` is the error body's message.
    Revoked {
        reason: String,
    },
}
