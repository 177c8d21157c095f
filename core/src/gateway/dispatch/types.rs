//! The dispatcher's public types: configuration, requests, statuses, outputs, events, errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::records::{CommandRecord, DispatchRecord};
use crate::chunk::{ChunkError, ReassemblyLimits};
use crate::gateway::ConnId;
use crate::wire::contract::{ExecuteCommandRef, GatewayCall};
use crate::wire::dto::{
    self, CommandProgressDto, CommandResultDto, ErrorCode, ExecuteCommandDto, OriginatedBy,
};
use crate::wire::signalr::PayloadError;

/// The dispatcher's limits and policies. `Default` gives the values of docs/protocol.md.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchConfig {
    /// A node is offline this long after its last heartbeat (90 s, seed 002).
    pub offline_after: Duration,
    /// Commands dispatched to a node at once when it advertises no `slots` (or `slots: 0`).
    pub default_slots: u32,
    /// Commands waiting (queued or awaiting approval) per node; one more is
    /// [`DispatchError::QueueFull`].
    pub max_queued_per_node: usize,
    /// The timeout of a request that names none (30 s, the contract's default).
    pub default_timeout: Duration,
    /// The largest timeout a request may name; a larger one is [`DispatchError::InvalidTimeout`].
    pub max_timeout: Duration,
    /// How long after its deadline a dispatched command waits for the node's own answer before
    /// the gateway answers `timeout` itself (the node times out too, a little later: its clock
    /// starts when the command arrives).
    pub result_grace: Duration,
    /// How long a command whose cancellation was sent to its node waits for the node's answer
    /// before it ends `cancelled` anyway (never later than its deadline plus `result_grace`).
    pub cancel_wait: Duration,
    /// The pause after a `busy` answer that carries no `retryAfterMs`.
    pub busy_retry_default: Duration,
    /// A polling node holds its leased commands while it polls; when it has not polled for this
    /// long, they go back to the head of its queue.
    pub lease_for: Duration,
    /// Limits on one command's chunked result (docs/protocol.md 6.3).
    pub reassembly: ReassemblyLimits,
    /// How long a finished command's outcome is kept for [`status`](super::Dispatcher::status)
    /// and for recognizing repeated results.
    pub finished_memory: Duration,
    /// The most finished outcomes kept; beyond it the oldest is forgotten first.
    pub finished_max: usize,
    /// How often an online node's last-seen instant is persisted (besides every change between
    /// online and offline).
    pub persist_seen_every: Duration,
    /// Whether [`DispatchOutput::Status`] is emitted (for callers that watch commands).
    pub emit_status: bool,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            offline_after: Duration::from_secs(90),
            default_slots: 4,
            max_queued_per_node: 1000,
            default_timeout: Duration::from_millis(dto::DEFAULT_COMMAND_TIMEOUT_MS),
            max_timeout: Duration::from_secs(24 * 3600),
            result_grace: Duration::from_secs(2),
            cancel_wait: Duration::from_secs(10),
            busy_retry_default: Duration::from_secs(1),
            lease_for: Duration::from_secs(30),
            reassembly: ReassemblyLimits::default(),
            finished_memory: Duration::from_secs(600),
            finished_max: 100_000,
            persist_seen_every: Duration::from_secs(300),
            emit_status: true,
        }
    }
}

/// How a node takes commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A ready hub connection: commands are pushed as [`DispatchOutput::Execute`] on `conn`.
    /// `protocol_version` is the connection's negotiated version (docs/protocol.md 5.8), put in
    /// every `ExecuteCommand` (shared, not copied); `None` leaves the field out.
    Hub {
        conn: ConnId,
        protocol_version: Option<Arc<str>>,
    },
    /// HTTP polling: commands are handed out by [`lease`](super::Dispatcher::lease).
    Poll,
}

/// What the application asks a node to run.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchRequest {
    pub node: String,
    pub command: String,
    /// Absent: the executor sees `{}`.
    pub params: Option<Value>,
    /// Absent: [`DispatchConfig::default_timeout`]. The deadline is the instant of
    /// [`dispatch`](super::Dispatcher::dispatch) plus this.
    pub timeout: Option<Duration>,
    pub originated_by: Option<OriginatedBy>,
    /// A critical command waits for [`approve`](super::Dispatcher::approve) before it is queued.
    pub critical: bool,
    /// Checked against the node's effective scopes at once, and again whenever they narrow.
    pub required_scope: Option<String>,
}

impl DispatchRequest {
    /// A request for `command` on `node` with no params, the default timeout, nothing else.
    pub fn new(node: impl Into<String>, command: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            command: command.into(),
            params: None,
            timeout: None,
            originated_by: None,
            critical: false,
            required_scope: None,
        }
    }

    pub fn params(mut self, params: Value) -> Self {
        self.params = Some(params);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn originated_by(mut self, originated_by: OriginatedBy) -> Self {
        self.originated_by = Some(originated_by);
        self
    }

    pub fn critical(mut self) -> Self {
        self.critical = true;
        self
    }

    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.required_scope = Some(scope.into());
        self
    }
}

/// How a command ended: its one terminal result.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandOutcome {
    /// The node's result, reassembled (no `partIndex`/`isLast`), or one the gateway wrote
    /// (`timeout`, `cancelled`, `approval_rejected`, `not_authorized`, `internal_error`).
    pub result: Arc<CommandResultDto>,
    pub finished_at: Instant,
    /// `true` when the gateway wrote `result` itself.
    pub synthesized: bool,
}

/// Where a command stands.
#[derive(Clone, Debug, PartialEq)]
pub enum CommandStatus {
    /// A critical command waiting for an operator.
    AwaitingApproval,
    /// Waiting in its node's queue; `position` 0 goes out next.
    Queued {
        position: usize,
    },
    /// Sent to the node (or leased to it) at `at`, no result yet.
    Dispatched {
        at: Instant,
    },
    /// The node reported progress.
    Running {
        progress: CommandProgressDto,
    },
    /// Cancellation was sent to the node; waiting for its answer.
    Cancelling {
        since: Instant,
    },
    Finished(CommandOutcome),
}

/// An `ExecuteCommand` to send, as parts shared with the command (nothing copied until it is
/// written): [`Execute::to_dto`] is the DTO, [`Execute::encode_json_record`] its JSON record.
#[derive(Clone, Debug, PartialEq)]
pub struct Execute {
    /// The command as accepted (`commandId`, `command`, `params`, `originatedBy`).
    pub record: Arc<CommandRecord>,
    /// The time left to the command's deadline, rounded up to whole milliseconds.
    pub timeout_ms: u64,
    /// The connection's negotiated version; `None` leaves the field out.
    pub protocol_version: Option<Arc<str>>,
}

impl Execute {
    /// The parts as the writer takes them.
    pub fn as_ref(&self) -> ExecuteCommandRef<'_> {
        let record = &*self.record;
        ExecuteCommandRef {
            command_id: &record.command_id,
            command: &record.command,
            params: record.params.as_ref(),
            timeout_ms: Some(self.timeout_ms),
            originated_by: record.originated_by.as_ref(),
            protocol_version: self.protocol_version.as_deref(),
        }
    }

    /// The `ExecuteCommandDto` the node receives.
    pub fn to_dto(&self) -> ExecuteCommandDto {
        self.as_ref().to_dto()
    }

    /// The call, for a hub protocol without a direct writer (MessagePack).
    pub fn to_call(&self) -> GatewayCall {
        GatewayCall::ExecuteCommand(self.to_dto())
    }

    /// Appends the JSON record of `to_call()` (the same bytes as
    /// [`GatewayCall::encode_json_record`]), written from the shared parts.
    pub fn encode_json_record(&self, out: &mut Vec<u8>) -> Result<(), PayloadError> {
        self.as_ref().encode_json_record(out)
    }
}

/// What the dispatcher wants done, drained with [`poll_output`](super::Dispatcher::poll_output).
#[derive(Clone, Debug, PartialEq)]
pub enum DispatchOutput {
    /// Invoke `ExecuteCommand` (`execute.to_call()`) on the node's hub connection `conn`.
    Execute {
        node: Arc<str>,
        conn: ConnId,
        execute: Execute,
    },
    /// Invoke `call` (`CancelCommand`) on the node's hub connection `conn`.
    Send {
        node: Arc<str>,
        conn: ConnId,
        call: Box<GatewayCall>,
    },
    /// The command's one terminal outcome. Emitted exactly once per command.
    Finished {
        command_id: Arc<str>,
        node: Arc<str>,
        outcome: CommandOutcome,
    },
    /// A command's own state changed (not emitted for the end: see `Finished`). Only with
    /// [`DispatchConfig::emit_status`].
    Status {
        command_id: Arc<str>,
        status: CommandStatus,
    },
    /// The node became online (a hub connection, or a heartbeat after it was offline).
    NodeOnline { node: String },
    /// The node went offline at `at`: its last heartbeat plus `offline_after`, or its revocation.
    NodeOffline { node: String, at: Instant },
    /// A durable change for the store (see [`DispatchRecord`]). Carry it out before acting on
    /// the outputs that follow it and before answering the call that queued it (a result's
    /// acknowledgment is sent only once its record is stored).
    Persist(DispatchRecord),
    /// Something for the log; nothing to do.
    Event(DispatchEvent),
}

/// Which input from a node an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerInput {
    Result,
    Progress,
}

/// A node sent something the dispatcher could not use. Nothing here is sent anywhere.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DispatchEvent {
    /// No command has this id (never created, or forgotten).
    UnknownCommand {
        node: String,
        command_id: String,
        input: PeerInput,
    },
    /// The command belongs to another node.
    WrongNode {
        node: String,
        command_id: String,
        owner: String,
        input: PeerInput,
    },
    /// The command was never handed to the node (it awaits approval).
    NotDispatched {
        node: String,
        command_id: String,
        input: PeerInput,
    },
    /// The command has already ended and this is not a repeat of the result that ended it.
    AfterEnd {
        node: String,
        command_id: String,
        input: PeerInput,
    },
    /// A chunked result broke the rules of docs/protocol.md 6.3: the command ended
    /// `internal_error`.
    ResultRejected {
        node: String,
        command_id: String,
        error: ChunkError,
    },
    /// A record given to [`restore`](super::Dispatcher::restore) did not fit the state rebuilt
    /// so far and was skipped.
    RestoreSkipped { reason: String },
}

/// The answer to a node's `CommandResult` (or a REST result POST).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResultAck {
    /// Recorded (or a repeat of what was recorded): a void Completion, or 204.
    Ack,
    /// Refused for good: a Completion error with [`Refusal::message`], or the REST error of
    /// [`Refusal::http_status`]. The node discards the result.
    Refuse(Refusal),
}

/// Why a result is refused (docs/protocol.md 5.4, 7.5).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such command for this node (unknown, forgotten, another node's, or never sent).
    NotFound,
    /// The command already ended with `code` (the gateway ended it: timeout, cancel, ...).
    Ended(ErrorCode),
    /// A different result is already recorded.
    Different,
    /// The chunked result broke docs/protocol.md 6.3; the command ended `internal_error`.
    Rejected(ChunkError),
}

impl Refusal {
    /// The text of the Completion error (and of the REST error's `message`).
    pub fn message(&self) -> String {
        match self {
            Refusal::NotFound => "no such command for this node".to_owned(),
            Refusal::Ended(code) => format!("the command already ended: {code}"),
            Refusal::Different => "a different result is already recorded".to_owned(),
            Refusal::Rejected(error) => format!("the result was rejected: {error}"),
        }
    }

    /// The REST status of docs/protocol.md 7.5: 404 `not_found` or 409 `conflict`.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::NotFound => 404,
            _ => 409,
        }
    }
}

/// Why an application call was refused. Nothing a node sends is ever one of these.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// The node is not registered (never paired, or revoked).
    #[error("unknown node {node:?}")]
    UnknownNode { node: String },
    /// The node already has `limit` commands waiting.
    #[error("the queue of node {node:?} is full ({limit} commands waiting)")]
    QueueFull { node: String, limit: usize },
    /// The node's effective scopes do not allow `scope`; no command was created.
    #[error("node {node:?} does not hold scope {scope:?}")]
    NotAuthorized { node: String, scope: String },
    /// The timeout is zero or above [`DispatchConfig::max_timeout`].
    #[error("invalid timeout of {timeout:?}: it must be above zero and at most {max:?}")]
    InvalidTimeout { timeout: Duration, max: Duration },
    /// No command has this id (never created, or forgotten).
    #[error("unknown command {command_id:?}")]
    UnknownCommand { command_id: String },
    /// `approve`/`reject` of a command that is not awaiting approval.
    #[error("command {command_id:?} is not awaiting approval")]
    NotAwaitingApproval { command_id: String },
    /// The command has already ended.
    #[error("command {command_id:?} has already finished")]
    AlreadyFinished { command_id: String },
    /// `restore` after the dispatcher has started work.
    #[error("restore is only possible on a fresh dispatcher")]
    NotFresh,
}

/// What [`cancel`](super::Dispatcher::cancel) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The command ended `cancelled` at once (it was not running on a live hub connection).
    Cancelled,
    /// `CancelCommand` went to the node; the command ends when the node answers, or after
    /// [`DispatchConfig::cancel_wait`].
    Requested,
}
