//! What a node is told at start-up, and the inputs and outputs of the node machine.

use std::time::Duration;

use crate::backoff;
use crate::scope::ScopeSet;
use crate::wire::dto::GpuInfo;
use crate::wire::llm::ConnectParams;
use crate::wire::rest::NodeToken;
use crate::wire::signalr::HubProtocol;

use super::commands::{CancelReason, CommandEvent, CommandLimits, CommandSpec, ExecuteRequest};
use super::http::{HttpCall, HttpResult};

/// Which link a node keeps to its gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// The node contract over SignalR at `{gateway_url}/hubs/node`, or over HTTP polling.
    Hub {
        protocol: HubProtocol,
        transport: Transport,
    },
    /// The LLM node dialect: one WebSocket to `server_url` (`ws(s)://host/ws`), authenticated by
    /// the query parameters. Tasks run as the command [`LLM_COMMAND`].
    Llm {
        server_url: String,
        params: ConnectParams,
    },
}

/// The command an LLM task is run as; register an executor under this name.
pub const LLM_COMMAND: &str = "llm.chat";

/// How a hub node reaches its gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket, falling back to HTTP polling after repeated failures, and trying the WebSocket
    /// again from time to time while polling.
    Auto,
    WebSocket,
    Polling,
}

/// Who the node is when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Holds a token from an earlier pairing.
    Paired(NodeToken),
    /// Must pair first. `node_id`: the id to ask for (one is generated when `None`).
    Unpaired { node_id: Option<String> },
}

/// Everything a node machine needs at start-up. [`NodeConfig::new`] fills in the protocol's
/// defaults; every timer and limit can be changed (tests and the demo shorten them).
#[derive(Clone)]
pub struct NodeConfig {
    /// The gateway's base URL (`https://gw.example.com`); REST paths and the hub are under it.
    pub gateway_url: String,
    pub dialect: Dialect,
    pub identity: Identity,
    /// Optional name and platform sent with the pairing request.
    pub name: Option<String>,
    /// `platform` and `version` of the heartbeat.
    pub platform: String,
    pub version: String,
    pub gpus: Vec<GpuInfo>,
    pub commands: Vec<CommandSpec>,
    pub limits: CommandLimits,
    /// What the node's operator allows, whatever the gateway grants (`--allow`).
    pub local_scopes: ScopeSet,
    /// The last grant this node knew, if the host stored it; all scopes until the gateway says.
    pub granted_scopes: Option<ScopeSet>,
    /// The per-field cap results are chunked under (section 6 of the protocol).
    pub field_cap: usize,
    pub heartbeat_interval: Duration,
    pub reconnect_base: Duration,
    pub reconnect_cap: Duration,
    /// The least delay after a refusal (bad token, a Close without allowReconnect): such a
    /// failure will not heal by itself, so the node must not hammer the gateway.
    pub refusal_floor: Duration,
    /// A connection that stayed up this long resets the backoff.
    pub stable_after: Duration,
    /// `Transport::Auto`: WebSocket failures in a row before switching to polling, and how often
    /// to try the WebSocket again while polling.
    pub polling_after_failures: u32,
    pub websocket_retry: Duration,
    pub poll_interval: Duration,
    /// Results kept while no link is up (bytes of JSON); beyond it, the oldest results are
    /// replaced by an `internal_error` result so that the gateway still learns their end.
    pub max_pending_result_bytes: usize,
    /// How long an LLM task may run.
    pub llm_task_timeout: Duration,
}

impl NodeConfig {
    /// A configuration with the protocol's defaults.
    pub fn new(gateway_url: impl Into<String>, dialect: Dialect, identity: Identity) -> Self {
        NodeConfig {
            gateway_url: gateway_url.into(),
            dialect,
            identity,
            name: None,
            platform: String::new(),
            version: String::new(),
            gpus: Vec::new(),
            commands: Vec::new(),
            limits: CommandLimits::default(),
            local_scopes: ScopeSet::all(),
            granted_scopes: None,
            field_cap: crate::chunk::DEFAULT_FIELD_CAP,
            heartbeat_interval: Duration::from_secs(30),
            reconnect_base: backoff::DEFAULT_BASE,
            reconnect_cap: backoff::DEFAULT_CAP,
            refusal_floor: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            polling_after_failures: 3,
            websocket_retry: Duration::from_secs(300),
            poll_interval: crate::wire::rest::DEFAULT_POLL_INTERVAL,
            max_pending_result_bytes: 64 * 1024 * 1024,
            llm_task_timeout: Duration::from_secs(600),
        }
    }
}

/// Host statistics for the heartbeat, as the shell last measured them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostStats {
    pub cpu_percent: f64,
    pub memory_mb: u64,
}

/// Numbers the shell's WebSocket and HTTP requests so that a late answer for an old connection
/// or request is recognised and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// One WebSocket message, either way: JSON hub records and LLM tasks travel as Text, MessagePack
/// records and LLM results as Binary.
#[derive(Clone, PartialEq, Eq)]
pub enum WsFrame {
    Text(String),
    Binary(Vec<u8>),
    /// A WebSocket Ping control frame (sent only when `peer_timeout` is set; the shell's
    /// WebSocket layer answers the server's pings itself).
    Ping(Vec<u8>),
    /// A WebSocket Pong control frame; received, it only proves the server is alive.
    Pong(Vec<u8>),
}

impl WsFrame {
    /// The frame's payload bytes (of a control frame too).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            WsFrame::Text(text) => text.as_bytes(),
            WsFrame::Binary(bytes) | WsFrame::Ping(bytes) | WsFrame::Pong(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for WsFrame {
    /// Binary payloads as hex, as the snapshots and docs/protocol.md show them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |bytes: &[u8]| {
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            WsFrame::Text(text) => write!(f, "Text({text:?})"),
            WsFrame::Binary(bytes) => write!(f, "Binary({})", hex(bytes)),
            WsFrame::Ping(bytes) => write!(f, "Ping({})", hex(bytes)),
            WsFrame::Pong(bytes) => write!(f, "Pong({})", hex(bytes)),
        }
    }
}

/// What the shell feeds the node machine.
#[derive(Clone, Debug)]
pub enum NodeInput {
    HttpResponse {
        request: RequestId,
        result: HttpResult,
    },
    WebSocketOpened {
        link: LinkId,
    },
    WebSocketFailed {
        link: LinkId,
        status: Option<u16>,
        detail: String,
    },
    Frame {
        link: LinkId,
        frame: WsFrame,
    },
    WebSocketClosed {
        link: LinkId,
        code: Option<u16>,
        reason: String,
    },
    HostStats(HostStats),
}

/// What the node machine asks of its shell, or tells its host.
#[derive(Clone, Debug)]
pub enum NodeOutput {
    /// Make this request to `url`; answer with [`NodeInput::HttpResponse`].
    Http {
        request: RequestId,
        url: String,
        call: HttpCall,
    },
    /// Open a WebSocket (with `Authorization: Bearer` when a token is given); answer with
    /// [`NodeInput::WebSocketOpened`] or [`NodeInput::WebSocketFailed`].
    OpenWebSocket {
        link: LinkId,
        url: String,
        bearer: Option<NodeToken>,
    },
    /// Send one WebSocket message on the link.
    Send {
        link: LinkId,
        frame: WsFrame,
    },
    /// Close the link's socket (a close frame with this code and reason, then drop it).
    CloseWebSocket {
        link: LinkId,
        code: u16,
        reason: String,
    },
    /// Run a command on an executor; report with `Node::finish_command` (and
    /// `report_progress`, `stream_text`).
    Execute(ExecuteRequest),
    /// Stop a running command; a `finish_command` for it afterwards is dropped.
    Cancel {
        command_id: String,
        reason: CancelReason,
    },
    Event(NodeEvent),
}

/// What happened, for the host's log and state (the host persists the token on `Paired` and
/// deletes it on `TokenRevoked`).
#[derive(Clone, Debug, PartialEq)]
pub enum NodeEvent {
    StateChanged(NodeState),
    PairingCode(String),
    Paired {
        token: NodeToken,
        gateway_url: String,
    },
    PairingRejected {
        reason: Option<String>,
    },
    PairingExpired,
    /// The gateway revoked this node: discard the token; the node will not reconnect.
    TokenRevoked {
        reason: String,
    },
    Connected {
        protocol_version: String,
    },
    Disconnected {
        reason: String,
        retry_in: Duration,
    },
    /// The scopes the node now enforces.
    ScopesChanged(Vec<String>),
    /// A result was dropped from the buffer kept while disconnected (replaced by an error).
    ResultDiscarded {
        command_id: String,
    },
    Command(CommandEvent),
    /// The gateway sent something this node cannot use; what and why.
    PeerMisbehaved(String),
    /// A request failed and will be retried (pairing, polling).
    RequestFailed(String),
}

/// Where the node is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Pairing,
    Connecting,
    Ready,
    Polling,
    Backoff,
    /// Terminal without a token: pairing rejected or expired.
    Unpaired,
    /// Terminal: the gateway revoked this node.
    Revoked,
}
