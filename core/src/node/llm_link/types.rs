//! The link's configuration, outputs, events and errors.

use std::fmt;
use std::time::Duration;

use crate::wire::llm::{CloseCode, ConnectParams, ServerFrameError, Task, TaskState};

/// The largest result frame a node sends (section 8.6: a node SHOULD NOT send frames longer than
/// 65,536 bytes).
pub const MAX_RESULT_FRAME: usize = 65_536;

/// The largest `max_frame_text`: a result frame is the 4-byte id plus this much text.
pub const MAX_FRAME_TEXT: usize = MAX_RESULT_FRAME - crate::wire::llm::TASK_ID_LEN;

/// The default text budget of one result frame: 16 KiB.
pub const DEFAULT_FRAME_TEXT: usize = 16 * 1024;

/// The default time a WebSocket may take to open (TCP, TLS and the HTTP upgrade).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The code of every close the node starts (the original Python node closes with the
/// `websockets` default, 1000).
pub const NORMAL_CLOSURE: u16 = 1000;

/// The least a node should wait before dialing again after 4001 or 4002: the same parameters fail
/// the same way, so a rejected node must not loop fast (the original nodes wait 10 s or 30 s).
pub const REJECTED_RETRY_FLOOR: Duration = Duration::from_secs(30);

/// What the link needs to know. [`LlmConfig::new`] fills in the defaults.
#[derive(Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// `ws://host:port/ws` or `wss://...`; the query parameters are appended to it.
    pub server_url: String,
    /// Token, model, max_concurrency and name (the query parameters).
    pub params: ConnectParams,
    /// The empty-text heartbeat period: 10 s ([`crate::wire::llm::HEARTBEAT_INTERVAL`]).
    pub heartbeat_interval: Duration,
    /// Bytes of text per result frame, from 4 to [`MAX_FRAME_TEXT`]: 16 KiB by default.
    pub max_frame_text: usize,
    /// How long the WebSocket may take to open before the attempt is given up: 15 s.
    pub connect_timeout: Duration,
    /// End the connection when nothing at all has arrived from the server for this long. `None`
    /// (the default): the dialect has no server heartbeat, so silence is normal. When set, the
    /// link also sends a WebSocket Ping with every heartbeat, so any server's WebSocket layer
    /// gives it a Pong to count; it should be at least two heartbeat intervals.
    pub peer_timeout: Option<Duration>,
}

impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `params` redacts the token itself.
        f.debug_struct("LlmConfig")
            .field("server_url", &self.server_url)
            .field("params", &self.params)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("max_frame_text", &self.max_frame_text)
            .field("connect_timeout", &self.connect_timeout)
            .field("peer_timeout", &self.peer_timeout)
            .finish()
    }
}

impl LlmConfig {
    /// A configuration with the defaults: heartbeat every 10 s, 16 KiB of text per frame, 15 s
    /// to connect, no peer timeout.
    pub fn new(server_url: impl Into<String>, params: ConnectParams) -> LlmConfig {
        LlmConfig {
            server_url: server_url.into(),
            params,
            heartbeat_interval: crate::wire::llm::HEARTBEAT_INTERVAL,
            max_frame_text: DEFAULT_FRAME_TEXT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            peer_timeout: None,
        }
    }

    /// Checks what the server or the wire would refuse later, and what would make a timer spin.
    pub fn validate(&self) -> Result<(), LlmConfigError> {
        let url = self.server_url.as_str();
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("wss://"));
        if rest.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
            return Err(LlmConfigError::ServerUrl {
                url: url.to_owned(),
            });
        }
        for (name, value) in [
            ("token", &self.params.token),
            ("model", &self.params.model),
            ("name", &self.params.name),
        ] {
            if value.is_empty() {
                return Err(LlmConfigError::EmptyParameter { name });
            }
        }
        if self.params.max_concurrency == 0 {
            return Err(LlmConfigError::ZeroMaxConcurrency);
        }
        if !(crate::wire::llm::MIN_PIECE_BYTES..=MAX_FRAME_TEXT).contains(&self.max_frame_text) {
            return Err(LlmConfigError::FrameText {
                value: self.max_frame_text,
            });
        }
        for (name, value) in [
            ("heartbeat_interval", Some(self.heartbeat_interval)),
            ("connect_timeout", Some(self.connect_timeout)),
            ("peer_timeout", self.peer_timeout),
        ] {
            if value == Some(Duration::ZERO) {
                return Err(LlmConfigError::ZeroDuration { name });
            }
        }
        Ok(())
    }
}

/// A configuration the link refuses ([`LlmConfig::validate`]).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LlmConfigError {
    #[error("server_url must be ws://host[:port]/path or wss://..., got {url:?}")]
    ServerUrl { url: String },
    #[error("connect parameter `{name}` is empty; the server would close with 4001")]
    EmptyParameter { name: &'static str },
    #[error("max_concurrency is 0; the server would close with 4001")]
    ZeroMaxConcurrency,
    #[error("max_frame_text must be from 4 to 65532 bytes, got {value}")]
    FrameText { value: usize },
    #[error("{name} must be longer than zero")]
    ZeroDuration { name: &'static str },
}

/// A method called in a state where it means nothing (caller misuse, never the peer's doing).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LlmUsageError {
    /// `connect` while a connection is opening or open: `close` it first.
    #[error("connect called while the link is {state:?}; close it first")]
    AlreadyConnected { state: LlmState },
}

/// Where the link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LlmState {
    /// No WebSocket: before the first `connect`, and after every end.
    Idle,
    /// `OpenWebSocket` was asked for; waiting for `handle_ws_opened` or `handle_ws_failed`.
    Connecting,
    /// The WebSocket is open: tasks arrive, results and heartbeats go out.
    Open,
}

pub use crate::node::WsFrame;

/// What the link asks of its shell, or tells the node machine. `Debug` hides the token in
/// `OpenWebSocket`'s URL.
#[derive(Clone, PartialEq)]
pub enum LlmOutput {
    /// Open a WebSocket to `url` (it carries the token: never log it) and report the outcome
    /// with `handle_ws_opened` or `handle_ws_failed`. A shell holds at most one link socket.
    OpenWebSocket { url: String },
    /// Write this frame on the open WebSocket.
    Send(WsFrame),
    /// Close the WebSocket with this code and reason, or abort the attempt if it is still
    /// opening. The link has already ended it: report nothing more about that socket.
    Close { code: u16, reason: String },
    /// Something the node machine acts on.
    Event(LlmEvent),
}

impl fmt::Debug for LlmOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LlmOutput::OpenWebSocket { url } => f
                .debug_struct("OpenWebSocket")
                .field("url", &redact_token(url))
                .finish(),
            LlmOutput::Send(frame) => f.debug_tuple("Send").field(frame).finish(),
            LlmOutput::Close { code, reason } => f
                .debug_struct("Close")
                .field("code", code)
                .field("reason", reason)
                .finish(),
            LlmOutput::Event(event) => f.debug_tuple("Event").field(event).finish(),
        }
    }
}

/// `url` with the value of every `token` query parameter replaced by `<redacted>`.
pub fn redact_token(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if pair == "token" || pair.starts_with("token=") {
                "token=<redacted>"
            } else {
                pair
            }
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// What happened on the link.
#[derive(Clone, Debug, PartialEq)]
pub enum LlmEvent {
    /// The WebSocket opened. The original server accepts every upgrade and only then closes a
    /// rejected node (4001, 4002), so `Open` does not mean the node was accepted.
    Open,
    /// Run this task (command `llm.chat`); stream its text with `send_text`, end it with
    /// `finish`. Emitted once per task: the task is now active.
    Task(Task),
    /// The server stopped this active task: cancel its executor. Nothing more is sent for it.
    Stop { id: u32 },
    /// The connection is over and the link is idle again.
    Ended {
        end: LlmEnd,
        /// The tasks that were still active, ascending: cancel their executors (the server has
        /// ended them; their ids mean nothing on the next connection).
        active_tasks: Vec<u32>,
        /// How long the WebSocket had been open (`None`: it never opened). A node resets its
        /// reconnect backoff only after a connection that stayed up a while.
        open_for: Option<Duration>,
    },
    /// The server sent something the dialect does not allow; the link did what the spec
    /// prescribes (ignore it, or answer the task with its finished frame) and goes on.
    PeerMisbehaved(LlmProtocolError),
}

/// Why a connection ended.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LlmEnd {
    /// The WebSocket never opened (refused, DNS, TLS, HTTP error, or the connect timeout).
    ConnectFailed(String),
    /// 4001 (bad parameters) or 4002 (bad token): dialing again with the same parameters fails
    /// the same way; wait at least [`REJECTED_RETRY_FLOOR`] and report it prominently.
    Rejected { code: CloseCode, reason: String },
    /// 4000 `Bye` (a newer connection with this identity replaced this one, or the server closed
    /// it normally) or 4003 (a frame arrived on a replaced connection).
    Replaced { code: CloseCode, reason: String },
    /// The server or the network closed it with any other code, or without one (`None`: the
    /// socket failed or closed without a close frame).
    Closed { code: Option<u16>, reason: String },
    /// The node closed it (`close`).
    ClosedByNode,
    /// Nothing arrived from the server for `peer_timeout`; the node closed it.
    PeerSilent { after: Duration },
}

impl LlmEnd {
    /// The least delay before dialing again: [`REJECTED_RETRY_FLOOR`] after a rejection, zero
    /// otherwise (the node's backoff adds its jitter on top).
    pub fn retry_floor(&self) -> Duration {
        match self {
            LlmEnd::Rejected { .. } => REJECTED_RETRY_FLOOR,
            _ => Duration::ZERO,
        }
    }

    /// The end for a close frame's code and reason (a close without a code reads as `None`).
    pub fn from_close(code: Option<u16>, reason: String) -> LlmEnd {
        match code.and_then(CloseCode::from_code) {
            Some(code @ (CloseCode::InvalidParameters | CloseCode::InvalidToken)) => {
                LlmEnd::Rejected { code, reason }
            }
            Some(code @ (CloseCode::Bye | CloseCode::ReplacedConnection)) => {
                LlmEnd::Replaced { code, reason }
            }
            None => LlmEnd::Closed { code, reason },
        }
    }
}

/// What the server did wrong. The link reports it and goes on.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LlmProtocolError {
    /// A text frame that is neither a task nor a stop. `answered`: its `id` could be read and
    /// named no active task, so the link sent that id's finished frame (the server frees the
    /// slot and its client is not left waiting).
    #[error("undecodable text frame from the server ({error}){}", answered_note(*answered))]
    Undecodable {
        error: ServerFrameError,
        answered: bool,
    },
    /// A task whose `state` is not 0 (pending); not run. `answered` as for `Undecodable`.
    #[error("task {id} has state {state:?}, not pending; not run{}", answered_note(*answered))]
    TaskNotPending {
        id: u32,
        state: TaskState,
        answered: bool,
    },
    /// A task with the id of a task already active; ignored (the active one goes on).
    #[error("task {id} arrived while a task with that id is active; ignored")]
    DuplicateTask { id: u32 },
    /// A task beyond `max_concurrency` active tasks; refused with its finished frame.
    #[error("task {id} would exceed max_concurrency {max}; refused with its finished frame")]
    OverConcurrency { id: u32, max: u32 },
    /// A binary frame: the dialect has none from server to node; ignored.
    #[error("binary frame of {len} bytes from the server; the dialect has none; ignored")]
    BinaryFrame { len: usize },
}

fn answered_note(answered: bool) -> &'static str {
    if answered {
        "; answered with the finished frame"
    } else {
        ""
    }
}
