//! The LLM node dialect: a plain WebSocket between LLM inference nodes and their API server (seed
//! 001, corrected by what the original Node.js server and its nodes really do).
//!
//! # Theory of operation
//! A node dials `ws(s)://host/ws?token=..&model=..&max_concurrency=..&name=..` ([`connect`]).
//! The server checks the parameters (close 4001), the token (close 4002), and registers the node
//! under its [`NodeIdentity`] (`model` + `name`); a second connection with the same identity
//! replaces the first, which is closed with 4000 "Bye".
//!
//! Then three kinds of frames flow ([`task`], [`frames`]):
//! - server -> node, text: a JSON **task** to run, or a JSON **stop** for a task;
//! - node -> server, binary: **result** frames `[u32 BE task id][UTF-8 text]`, the id alone
//!   meaning "finished";
//! - node -> server, text: the empty **heartbeat** `""`, every [`HEARTBEAT_INTERVAL`].
//!
//! There is no error frame and no acknowledgement: a node that fails a task sends the finished
//! frame (or disconnects), and a stop is not answered. Each result frame is decoded on its own, so
//! a node must never cut a UTF-8 character across two frames: [`cutter`] turns a backend's byte
//! stream into whole characters and splits long text on character boundaries.
//!
//! Everything here is codec only: which task runs where, timers and closes belong to the machines
//! that use it. The normative text is section 8 of docs/protocol.md.

use std::time::Duration;

pub mod connect;
pub mod cutter;
pub mod frames;
pub mod task;

pub use connect::{CloseCode, ConnectError, ConnectParams, NodeIdentity};
pub use cutter::{split_text, SplitError, TextPieces, Utf8Cutter, MIN_PIECE_BYTES};
pub use frames::{
    decode_node_text, EmptyResultText, NodeText, ResultFrame, ResultFrameError, HEARTBEAT,
    TASK_ID_LEN,
};
pub use task::{
    decode_server_text, format_js_number, ChatMessage, ServerFrame, ServerFrameError, Task,
    TaskState,
};

/// The path the original nodes dial. The original server accepts any path; a nodelink server
/// serves this one.
pub const PATH: &str = "/ws";

/// How often a node sends the heartbeat (the original Python node's interval).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// How many heartbeat intervals of silence make a server drop a node.
pub const SILENT_INTERVALS: u32 = 3;

/// How long a node may stay silent (no frame of any kind) before a server drops it: 30 s.
pub const SILENCE_LIMIT: Duration =
    Duration::from_secs(HEARTBEAT_INTERVAL.as_secs() * SILENT_INTERVALS as u64);
