//! The LLM gateway's configuration, inputs, outputs, events and errors.

use std::fmt;
use std::time::{Duration, Instant};

use crate::gateway::auth::{AuthError, NodeBook};
use crate::gateway::{ConnId, Source};
use crate::wire::llm::{ChatMessage, ConnectError, NodeIdentity, HEARTBEAT_INTERVAL};

pub use crate::node::WsFrame;

/// How long a task waits for a node with a free slot before it fails (the original server's 30 s).
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a task may take from submission to its finished frame (the original server's 300 s).
pub const DEFAULT_FINISH_TIMEOUT: Duration = Duration::from_secs(300);

/// `max_new_tokens` of a task whose request has none (the original server's default).
pub const DEFAULT_MAX_NEW_TOKENS: u32 = 50;

/// The largest task id: ids stay below 2^31, where the seed's `Int32BE` and the original
/// server's `readUInt32BE` agree.
pub const MAX_TASK_ID: u32 = i32::MAX as u32;

/// A task as the gateway numbers it: the `id` of its task frame and of its result frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u32);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a user asks of a model (the body of `POST /api/chat`, already parsed by the shell).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// The system prompt; absent: sent as `""` (the original Python node needs the field).
    pub system: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// Absent: [`LlmGatewayConfig::default_max_new_tokens`].
    pub max_new_tokens: Option<u32>,
    /// Absent or not finite: 0 (greedy), the original server's default.
    pub temperature: Option<f64>,
}

/// What the gateway needs to know. [`LlmGatewayConfig::default`] has the original server's
/// timings and no shared token.
#[derive(Clone, PartialEq)]
pub struct LlmGatewayConfig {
    /// The shared node token of the original server, accepted from any node (compared in
    /// constant time). `None`: only per-node tokens are accepted.
    pub shared_token: Option<String>,
    /// How often nodes send the empty-text heartbeat: 10 s.
    pub heartbeat_interval: Duration,
    /// A node silent (no frame of any kind) for this many heartbeat intervals is dropped: 3.
    pub silent_intervals: u32,
    /// How long a task waits in the queue for a node: 30 s.
    pub queue_timeout: Duration,
    /// How long a task may take from submission to its end: 300 s; `None`: no limit.
    pub finish_timeout: Option<Duration>,
    /// `max_new_tokens` of a request without one: 50.
    pub default_max_new_tokens: u32,
}

impl Default for LlmGatewayConfig {
    fn default() -> Self {
        LlmGatewayConfig {
            shared_token: None,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            silent_intervals: crate::wire::llm::SILENT_INTERVALS,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            finish_timeout: Some(DEFAULT_FINISH_TIMEOUT),
            default_max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
        }
    }
}

impl fmt::Debug for LlmGatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmGatewayConfig")
            .field(
                "shared_token",
                &self.shared_token.as_ref().map(|_| "<redacted>"),
            )
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("silent_intervals", &self.silent_intervals)
            .field("queue_timeout", &self.queue_timeout)
            .field("finish_timeout", &self.finish_timeout)
            .field("default_max_new_tokens", &self.default_max_new_tokens)
            .finish()
    }
}

impl LlmGatewayConfig {
    /// How long a node may stay silent: `heartbeat_interval * silent_intervals` (30 s).
    pub fn silence_limit(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(self.silent_intervals)
    }

    /// Refuses what would make a timer spin or accept every token.
    pub fn validate(&self) -> Result<(), LlmConfigError> {
        if self.shared_token.as_deref() == Some("") {
            return Err(LlmConfigError::EmptySharedToken);
        }
        if self.silent_intervals == 0 {
            return Err(LlmConfigError::Zero {
                name: "silent_intervals",
            });
        }
        for (name, value) in [
            ("heartbeat_interval", Some(self.heartbeat_interval)),
            ("queue_timeout", Some(self.queue_timeout)),
            ("finish_timeout", self.finish_timeout),
        ] {
            if value == Some(Duration::ZERO) {
                return Err(LlmConfigError::Zero { name });
            }
        }
        Ok(())
    }
}

/// A configuration [`super::LlmGateway::new`] refuses.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LlmConfigError {
    #[error("shared_token is empty; leave it unset to accept per-node tokens only")]
    EmptySharedToken,
    #[error("{name} must be greater than zero")]
    Zero { name: &'static str },
}

/// Caller misuse (never the peer's doing).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LlmUsageError {
    /// `handle_connect` with a `ConnId` that is already a live connection.
    #[error("connection {0:?} is already open")]
    ConnInUse(ConnId),
    /// Every task id below 2^31 is in use.
    #[error("no free task id")]
    NoFreeTaskId,
}

/// Checks a per-node token (`{nodeId}.{secret}`, from pairing) and answers the nodeId. The
/// gateway borrows one for each connect request; [`NodeBook`] is one.
pub trait NodeTokenCheck {
    fn check_node_token(
        &mut self,
        now: Instant,
        token: &str,
        source: &Source,
    ) -> Result<String, AuthError>;
}

impl NodeTokenCheck for NodeBook {
    fn check_node_token(
        &mut self,
        now: Instant,
        token: &str,
        source: &Source,
    ) -> Result<String, AuthError> {
        self.authenticate(now, token, source)
    }
}

/// A verifier that knows no node: only the shared token is accepted.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNodeTokens;

impl NodeTokenCheck for NoNodeTokens {
    fn check_node_token(
        &mut self,
        _now: Instant,
        token: &str,
        _source: &Source,
    ) -> Result<String, AuthError> {
        Err(AuthError::UnknownNode {
            node_id: token.split_once('.').map_or("", |(id, _)| id).to_owned(),
        })
    }
}

/// Which credential a node connected with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// The configured shared token.
    Shared,
    /// A per-node token of this nodeId.
    Node(String),
}

/// What the gateway asks of its shell, or tells it.
#[derive(Clone, Debug, PartialEq)]
pub enum LlmGatewayOutput {
    /// Write this frame on the node's WebSocket.
    Send { conn: ConnId, frame: WsFrame },
    /// Close the node's WebSocket with this code and reason. The gateway has forgotten the
    /// connection: what the shell still reports about it is ignored.
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
    },
    /// News for the user of a task (the HTTP stream). Exactly one terminal update per task.
    Task { task: TaskId, update: TaskUpdate },
    /// Something worth a log line.
    Event(LlmGatewayEvent),
}

/// What happened to a task, for its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskUpdate {
    /// More text: whole characters, never empty (`{"o":..}`).
    Text(String),
    /// Terminal: the node finished the task (`{"done":true}`).
    Done,
    /// Terminal: the task failed (`{"err":..}` with the error's `Display`).
    Failed(TaskError),
    /// Terminal: the caller stopped it ([`super::LlmGateway::stop`]).
    Stopped,
}

impl TaskUpdate {
    /// Whether this is the task's last update.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, TaskUpdate::Text(_))
    }
}

/// Why a task failed. `Display` is the text users see in `{"err":..}`.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// No node took it within the queue timeout (the original server's text).
    #[error("timeout waiting for node")]
    QueueTimeout,
    /// Not finished within the finish timeout (the original server's text); the node was told to
    /// stop.
    #[error("timeout waiting for finish")]
    FinishTimeout,
    /// Its node's connection ended after text had reached the user, or after the task had
    /// already been dispatched again once.
    #[error("node disconnected")]
    NodeLost,
    /// The node sent text that is not UTF-8 (or ended inside a character); the node was told to
    /// stop unless it had finished.
    #[error("node sent invalid UTF-8")]
    InvalidUtf8,
}

/// Why a connect request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 4001: a parameter is missing or invalid.
    Parameters(ConnectError),
    /// 4002: neither the shared token nor a node token; `auth` is the node book's answer.
    Token(AuthError),
}

/// Why a node's connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GoneBecause {
    /// A newer connection with the same identity replaced it (closed with 4000).
    Replaced { by: ConnId },
    /// Nothing arrived for the silence limit (closed with 4000).
    Silent { after: Duration },
    /// The socket closed or failed (reported by the shell).
    Closed,
}

/// What a node sent that the dialect does not allow. The gateway goes on.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeFrameError {
    #[error("binary frame of {len} bytes is shorter than the 4-byte task id; ignored")]
    TooShort { len: usize },
    #[error("text frame of {len} bytes is not the empty heartbeat; ignored")]
    UnexpectedText { len: usize },
    #[error("data for task {id}, which this connection does not run; answered with a stop")]
    UnknownTask { id: u32 },
    #[error("task {id}: text is not valid UTF-8; the task failed")]
    InvalidUtf8 { id: u32 },
}

/// Log-worthy news. Never contains a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LlmGatewayEvent {
    /// A node connected and may receive tasks.
    NodeAccepted {
        conn: ConnId,
        identity: NodeIdentity,
        max_concurrency: u32,
        credential: Credential,
    },
    /// A connect request was refused and closed (4001 or 4002).
    NodeRefused { conn: ConnId, refusal: Refusal },
    /// A node's connection ended; its tasks were queued again or failed.
    NodeGone {
        conn: ConnId,
        identity: NodeIdentity,
        because: GoneBecause,
        requeued: Vec<TaskId>,
        failed: Vec<TaskId>,
    },
    /// A task went to a node.
    TaskDispatched { task: TaskId, conn: ConnId },
    /// A node sent something wrong.
    PeerMisbehaved { conn: ConnId, error: NodeFrameError },
}
