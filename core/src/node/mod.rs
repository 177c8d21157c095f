//! The node machine: everything a node decides, sans-IO (issue 4).
//!
//! Sub-machines, each with its own inputs, outputs and timers, composed by the node machine:
//! - [`commands`]: admission, serialization groups, deadlines, cancellation and exactly-once
//!   results of the commands a node runs.
//! - [`hub`]: the SignalR link to a gateway (negotiate, WebSocket, handshake, keep-alive,
//!   `Hello`, acknowledged results, control before bulk).
//! - [`pairing`]: the pairing client (POST every 3 s until approved, rejected or expired).
//! - [`polling`]: the HTTP polling fallback (GET commands, POST results, REST heartbeat).
//! - [`llm_link`]: the LLM node dialect's WebSocket link (query parameters, tasks, stop frames,
//!   binary results, the empty-text heartbeat).
//! - [`http`]: the requests the sub-machines ask the shell to make.
//! - [`executor`]: the interface command implementations are written against (run by shells).

pub mod commands;
mod config;
pub mod executor;
pub mod http;
pub mod hub;
pub mod llm_link;
mod machine;
pub mod pairing;
pub mod polling;

pub use config::{
    Dialect, HostStats, Identity, LinkId, NodeConfig, NodeEvent, NodeInput, NodeOutput, NodeState,
    RequestId, Transport, WsFrame, LLM_COMMAND,
};
pub use machine::{Node, UsageError};
