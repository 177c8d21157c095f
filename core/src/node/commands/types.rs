//! The command table's public types: what the host registers, the limits, and what comes out.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::scope::ScopeError;
use crate::wire::contract::SUPPORTED_PROTOCOL_VERSIONS;
use crate::wire::dto::{self, CommandProgressDto, CommandResultDto, ErrorCode, OriginatedBy};

/// An executor's schema hook: `Err(message)` makes the command `invalid_params` with that message.
pub type ParamsValidator = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// What an executor returns: the `result` value, or the error to send.
pub type Outcome = Result<Value, dto::CommandError>;

/// One registered executor, as the core sees it.
#[derive(Clone)]
pub struct CommandSpec {
    /// The command's name on the wire, e.g. `"system.info"`.
    pub name: String,
    /// The scope a command needs; `None`: always allowed.
    pub required_scope: Option<String>,
    /// Commands with the same key run one at a time, in arrival order.
    pub serialization_key: Option<String>,
    /// The executor's schema hook, run on `params` (`{}` when absent) before admission.
    pub validate: Option<ParamsValidator>,
}

impl fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandSpec")
            .field("name", &self.name)
            .field("required_scope", &self.required_scope)
            .field("serialization_key", &self.serialization_key)
            .field("validate", &self.validate.as_ref().map(|_| "<hook>"))
            .finish()
    }
}

impl CommandSpec {
    /// A command with no scope, no serialization key and no params hook.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            required_scope: None,
            serialization_key: None,
            validate: None,
        }
    }

    /// Requires `scope` (a concrete scope, checked by [`CommandTable::new`](super::CommandTable::new)).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.required_scope = Some(scope.into());
        self
    }

    /// Runs the command one at a time with every other command of the same `key`.
    pub fn serialized_by(mut self, key: impl Into<String>) -> Self {
        self.serialization_key = Some(key.into());
        self
    }

    /// Validates `params` with `hook` before the command is admitted.
    pub fn validated_by(
        mut self,
        hook: impl Fn(&Value) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validate = Some(Arc::new(hook));
        self
    }
}

/// The table's limits and policies; see the module docs for what each one does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLimits {
    /// Commands executing or waiting in a serialization group at once; one more is `busy`.
    pub slots: usize,
    /// The `retryAfterMs` sent with `busy`.
    pub busy_retry_after: Duration,
    /// The timeout when `timeoutMs` is absent (30 s, [`dto::DEFAULT_COMMAND_TIMEOUT_MS`]).
    pub default_timeout: Duration,
    /// The largest timeout applied; a larger `timeoutMs` is clamped to it.
    pub max_timeout: Duration,
    /// How many finished commands are remembered for redelivery (oldest forgotten first).
    pub remembered_results: usize,
    /// How long a finished command is remembered, from the instant it finished.
    pub remember_for: Duration,
    /// The smallest gap between two `CommandProgress` of one command.
    pub progress_interval: Duration,
    /// The `protocolVersion`s a command may carry; any other is `invalid_params` (docs/protocol.md
    /// 5.8). Absent `protocolVersion` is always accepted.
    pub protocol_versions: Vec<String>,
}

impl Default for CommandLimits {
    fn default() -> Self {
        Self {
            slots: 4,
            busy_retry_after: Duration::from_secs(5),
            default_timeout: Duration::from_millis(dto::DEFAULT_COMMAND_TIMEOUT_MS),
            max_timeout: Duration::from_secs(24 * 3600),
            remembered_results: 1024,
            remember_for: Duration::from_secs(600),
            progress_interval: Duration::from_secs(1),
            protocol_versions: SUPPORTED_PROTOCOL_VERSIONS
                .iter()
                .map(|v| (*v).to_owned())
                .collect(),
        }
    }
}

/// A progress report from an executor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Fraction done, 0.0 to 1.0 (clamped; NaN is refused).
    pub progress: f64,
    pub step: Option<u32>,
    pub step_count: Option<u32>,
    pub eta: Option<Duration>,
    pub message: Option<String>,
}

impl Progress {
    /// Progress `fraction` with nothing else.
    pub fn fraction(fraction: f64) -> Self {
        Self {
            progress: fraction,
            ..Self::default()
        }
    }
}

/// A command handed to the executor.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecuteRequest {
    pub command_id: String,
    pub command: String,
    /// `{}` when the ExecuteCommand had no `params`.
    pub params: Value,
    /// When the table answers `timeout` and cancels it: arrival + timeout.
    pub deadline: Instant,
    pub originated_by: Option<OriginatedBy>,
}

/// Why the executor is told to stop.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CancelReason {
    /// The command's deadline passed; the table answered `timeout`.
    Timeout,
    /// The gateway's `CancelCommand`; the table answered `cancelled`.
    Cancelled,
    /// [`CommandTable::shutdown`](super::CommandTable::shutdown) or
    /// [`CommandTable::abort_all`](super::CommandTable::abort_all).
    Shutdown,
}

/// What the table wants done, drained with [`CommandTable::poll_action`](super::CommandTable::poll_action).
#[derive(Clone, Debug, PartialEq)]
pub enum CommandAction {
    /// Hand the command to its executor.
    Execute(ExecuteRequest),
    /// Stop the executor of `command_id`; a later finish of it is dropped.
    Cancel {
        command_id: String,
        reason: CancelReason,
    },
    /// A terminal result to send, whole (the Node chunks it). Shared with the table's memory of
    /// finished commands, which resends it on redelivery.
    Result(Arc<CommandResultDto>),
    /// A progress report to send.
    Progress(CommandProgressDto),
    /// Something for the host's log; nothing to send.
    Event(CommandEvent),
}

/// Where a known command stands; what a redelivery would meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandState {
    /// Waiting behind another command of its serialization group.
    Queued,
    /// Handed to its executor, not answered yet.
    Executing,
    /// Answered; the result is remembered (a redelivery resends it).
    Finished,
    /// Answered by the table (timeout, cancel, shutdown) while its executor may still run, and
    /// the result is no longer remembered: a redelivery is ignored.
    Abandoned,
}

/// Something the host may log. None of these is sent.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandEvent {
    /// An ExecuteCommand that cannot be answered (an empty `commandId`).
    InvalidCommand { reason: String },
    /// A redelivered ExecuteCommand for a command that is queued, executing or abandoned.
    DuplicateIgnored {
        command_id: String,
        state: CommandState,
    },
    /// A redelivered ExecuteCommand for a finished command: its stored result was emitted again.
    ResultResent { command_id: String },
    /// An executor finished a command the table had already answered (timeout, cancel,
    /// shutdown): the outcome was dropped.
    LateFinishDropped { command_id: String },
    /// An executor finished a command that it had finished before: ignored.
    RepeatedFinishIgnored { command_id: String },
    /// A CancelCommand for a command that is not queued or executing.
    CancelIgnored {
        command_id: String,
        state: Option<CommandState>,
    },
    /// An ExecuteCommand after shutdown: not answered.
    ReceivedAfterShutdown { command_id: String },
}

/// What [`CommandTable::finish`](super::CommandTable::finish) did with an outcome.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The result was emitted.
    Answered,
    /// The table had already answered the command (timeout, cancel, shutdown): dropped.
    Late,
    /// The command had already been finished by its executor: ignored.
    Repeated,
}

/// Caller misuse of the command table (never caused by what a peer sends).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandUsageError {
    /// `finish` or `progress` for an id the table does not know: never received, or forgotten
    /// (finished and evicted from memory, and not abandoned).
    #[error("command {command_id:?} is not known to the command table")]
    UnknownCommand { command_id: String },
    /// `finish` or `progress` for a command still queued: it was never handed to an executor.
    #[error("command {command_id:?} is queued and was never handed to an executor")]
    NotStarted { command_id: String },
    /// A progress fraction that is NaN.
    #[error("progress of command {command_id:?} is NaN")]
    ProgressNotANumber { command_id: String },
    /// Two specs with the same name.
    #[error("command {name:?} is registered twice")]
    DuplicateCommand { name: String },
    /// A spec with an empty name.
    #[error("a command name is empty")]
    EmptyCommandName,
    /// A spec whose `required_scope` is not a concrete scope.
    #[error("command {name:?} requires an invalid scope: {error}")]
    InvalidScope { name: String, error: ScopeError },
    /// `slots` is 0: every command would be `busy`.
    #[error("a command table needs at least one slot")]
    ZeroSlots,
}

/// A failed result, with the code and message.
pub(super) fn error_result(
    command_id: &str,
    code: ErrorCode,
    message: String,
    duration: Duration,
    protocol_version: Option<String>,
) -> CommandResultDto {
    CommandResultDto {
        command_id: command_id.to_owned(),
        ok: false,
        result: None,
        error: Some(dto::CommandError {
            code,
            message,
            details: None,
            retry_after_ms: None,
        }),
        duration_ms: Some(millis(duration)),
        part_index: None,
        is_last: None,
        protocol_version,
    }
}

/// Whole milliseconds, saturating.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// At most `max` characters of peer-supplied text, for messages.
pub(super) fn clip(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}
