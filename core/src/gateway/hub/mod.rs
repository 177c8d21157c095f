//! The SignalR server side of the gateway, for many connections at once: negotiate, WebSocket
//! upgrade, handshake, framing, keep-alive, client timeout and stateful reconnect. Sans-IO;
//! docs/protocol.md sections 2 to 5 are normative, `docs/gateway-parts/hub.md` is this module's
//! own part of the spec.
//!
//! # Theory of operation
//! A [`HubServer`] turns bytes into typed node calls and typed gateway calls into bytes, per
//! connection, and keeps each connection alive or ends it. It knows nothing about tokens, commands
//! or heartbeats: the gateway machine authenticates every request first and tells the hub which
//! node it is (`node: &str`), and it decides what each [`NodeCall`] means.
//!
//! ```text
//!  negotiate ----> token (forgotten after negotiate_ttl unless a socket opens with it)
//!                    |
//!  open_socket(?id=token | no id) --> Handshaking --{"protocol":..}--> Open --socket lost--> Detached
//!                                        |  15 s: closed                 |  ^   (stateful only)  |
//!                                        v                               |  +--open_socket(?id=)-+
//!                                      ended <---------------------------+-------- window expired
//! ```
//!
//! A *connection* is the SignalR connection; a [`ConnId`] names the *socket* it currently runs on,
//! as the shell numbers sockets (never reuse a number). Without stateful reconnect the two live and
//! die together. With it, a connection survives the loss of its socket for `reconnect_window`
//! ([`ConnState::Detached`]) and resumes on a new socket, whose `ConnId` it takes from then on
//! ([`HubServerEvent::Reconnected`] names both).
//!
//! Events ([`HubServer::poll_event`]), per connection: at most one [`HubServerEvent::Connected`]
//! (handshake accepted), then [`HubServerEvent::Call`]s (and [`HubServerEvent::Heartbeat`]s, kept
//! as text, when [`HubServer::set_raw_heartbeats`] is on) and [`HubServerEvent::Misbehaved`]s; each
//! socket loss of a resumable connection is a `Disconnected { will_resume: true }` followed by
//! either a `Reconnected` or the end. Every connection (every accepted `open_socket` that is not a
//! resume) ends with exactly one `Disconnected { will_resume: false }`, whatever ends it: the node,
//! the gateway ([`HubServer::close`]), a timeout or a protocol error.
//!
//! Outputs ([`HubServer::poll_output`]): [`HubServerOutput::Send`] (one WebSocket message of whole
//! records) and [`HubServerOutput::CloseSocket`]. Records are *batched*: every record written to a
//! connection joins that connection's pending frame, and pending frames are cut when they would
//! exceed `max_batch_len` or when `poll_output` runs dry, so the calls and Completions the gateway
//! makes in reaction to one input leave as one WebSocket message. A record is never split; one
//! larger than `max_batch_len` goes alone.
//!
//! Timers ([`HubServer::poll_timeout`]): one [`DeadlineQueue`] per kind (handshake, client timeout,
//! keep-alive, Ack, reconnect window, negotiation expiry), so that every operation is O(log n) in
//! the number of connections and nothing scans them. The client-timeout and keep-alive deadlines
//! are *lazy*: a frame only stamps `last_received` / `last_sent` (O(1)); when a queued deadline
//! comes, the true deadline is computed from the stamp and re-queued if it lies ahead. Due timers
//! are handled in deadline order; at one instant, client timeouts come before keep-alive Pings,
//! so a dead connection ends without a last Ping.
//!
//! [`NodeCall`]: crate::wire::contract::NodeCall
//! [`DeadlineQueue`]: crate::time::DeadlineQueue

mod conn;
mod heartbeat;
mod open;
mod receive;
mod send;
mod timers;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::contract::{ContractError, NodeCall};
use crate::wire::signalr::framing::DEFAULT_MAX_RECORD_LEN;
use crate::wire::signalr::handshake::{HANDSHAKE_TIMEOUT, KEEP_ALIVE_INTERVAL, PEER_TIMEOUT};
use crate::wire::signalr::{DecodeError, HubProtocol};

use super::dispatch::FnvHasher;
use super::ConnId;
use conn::{Conn, TokenEntry};
use send::Tx;
use timers::Timers;

pub use crate::node::WsFrame;
pub use heartbeat::RawHeartbeat;

/// WebSocket close code of a normal close (RFC 6455).
pub const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code for a peer that broke the protocol.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// WebSocket close code for a record over [`HubServerConfig::max_record_len`].
pub const CLOSE_TOO_BIG: u16 = 1009;
/// The longest close reason a WebSocket close frame can carry, in bytes.
pub const MAX_CLOSE_REASON_LEN: usize = 123;

/// How long a negotiated id waits for its socket before it is forgotten.
pub const DEFAULT_NEGOTIATE_TTL: Duration = Duration::from_secs(30);
/// How long a stateful connection survives without a socket.
pub const DEFAULT_RECONNECT_WINDOW: Duration = Duration::from_secs(30);
/// The bound on the unacknowledged messages kept for replay (the SignalR default).
pub const DEFAULT_RECONNECT_BUFFER_BYTES: usize = 100_000;
/// How often, at most, an Ack goes out (the SignalR default).
pub const DEFAULT_ACK_INTERVAL: Duration = Duration::from_secs(1);
/// The default cap on a batched frame.
pub const DEFAULT_MAX_BATCH_LEN: usize = 64 * 1024;
/// The default number of negotiated ids one node may hold unused at once.
pub const DEFAULT_MAX_PENDING_NEGOTIATIONS: usize = 16;

/// How a [`HubServer`] behaves; [`HubServerConfig::default`] has the protocol's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubServerConfig {
    /// A Ping goes out on a connection that was sent nothing for this long (15 s).
    pub keep_alive: Duration,
    /// A connection that received nothing for this long is dead (30 s).
    pub client_timeout: Duration,
    /// How long a new socket has to send its handshake request (15 s).
    pub handshake_timeout: Duration,
    /// A negotiated id that no socket opened for this long is forgotten (30 s).
    pub negotiate_ttl: Duration,
    /// The longest record accepted (5 MiB); a longer one closes the connection with 1009.
    pub max_record_len: usize,
    /// Records are batched into one frame up to this many bytes (a larger record goes alone).
    pub max_batch_len: usize,
    /// Whether stateful reconnect is granted to clients that ask for it.
    pub stateful_reconnect: bool,
    /// The bound on a stateful connection's unacknowledged sent messages, in bytes (100,000).
    pub reconnect_buffer_bytes: usize,
    /// How long a stateful connection survives without a socket (30 s).
    pub reconnect_window: Duration,
    /// The delay between receiving a message and acknowledging it (1 s).
    pub ack_interval: Duration,
    /// How many negotiated ids one node may hold unused at once; more are refused with 429.
    pub max_pending_negotiations: usize,
}

impl Default for HubServerConfig {
    fn default() -> HubServerConfig {
        HubServerConfig {
            keep_alive: KEEP_ALIVE_INTERVAL,
            client_timeout: PEER_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            negotiate_ttl: DEFAULT_NEGOTIATE_TTL,
            max_record_len: DEFAULT_MAX_RECORD_LEN,
            max_batch_len: DEFAULT_MAX_BATCH_LEN,
            stateful_reconnect: true,
            reconnect_buffer_bytes: DEFAULT_RECONNECT_BUFFER_BYTES,
            reconnect_window: DEFAULT_RECONNECT_WINDOW,
            ack_interval: DEFAULT_ACK_INTERVAL,
            max_pending_negotiations: DEFAULT_MAX_PENDING_NEGOTIATIONS,
        }
    }
}

impl HubServerConfig {
    /// Checks what [`HubServer::new`] needs: no zero duration or size.
    pub fn validate(&self) -> Result<(), HubServerConfigError> {
        for (name, value) in [
            ("keep_alive", self.keep_alive),
            ("client_timeout", self.client_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("negotiate_ttl", self.negotiate_ttl),
            ("reconnect_window", self.reconnect_window),
            ("ack_interval", self.ack_interval),
        ] {
            if value.is_zero() {
                return Err(HubServerConfigError::Zero(name));
            }
        }
        for (name, value) in [
            ("max_record_len", self.max_record_len),
            ("max_batch_len", self.max_batch_len),
            ("reconnect_buffer_bytes", self.reconnect_buffer_bytes),
            ("max_pending_negotiations", self.max_pending_negotiations),
        ] {
            if value == 0 {
                return Err(HubServerConfigError::Zero(name));
            }
        }
        Ok(())
    }
}

/// A [`HubServerConfig`] that cannot work (caller misuse).
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HubServerConfigError {
    #[error("`{0}` must not be zero")]
    Zero(&'static str),
}

/// A method of [`HubServer`] called when it cannot be (caller misuse).
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HubUsageError {
    /// No connection runs on this socket (never opened, ended, or resumed on another socket).
    #[error("no connection runs on socket {0:?}")]
    UnknownConnection(ConnId),
    /// The connection's handshake is not done: nothing may be sent on it yet.
    #[error("the handshake of connection {0:?} is not done")]
    NotOpen(ConnId),
    /// The message cannot be encoded in the connection's hub protocol.
    #[error("the message cannot be encoded: {0}")]
    Unencodable(String),
}

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// The socket is open; its handshake request has not arrived.
    Handshaking,
    /// The handshake is accepted: hub messages flow.
    Open,
    /// A stateful connection whose socket was lost, waiting for the client to come back.
    Detached,
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubServerOutput {
    /// Send one WebSocket message on the socket `conn` (whole records only; JSON and the
    /// handshake in Text frames, MessagePack in Binary frames).
    Send { conn: ConnId, frame: WsFrame },
    /// Close the socket `conn` with this code and reason (at most 123 bytes). The connection is
    /// already ended or detached: do not report the close back with `socket_closed`.
    CloseSocket {
        conn: ConnId,
        code: u16,
        reason: String,
    },
}

/// What happened on a connection, for the gateway machine.
#[derive(Clone, Debug, PartialEq)]
pub enum HubServerEvent {
    /// The handshake was accepted: the connection is open. `stateful`: stateful reconnect is on.
    Connected {
        conn: ConnId,
        node: Arc<str>,
        protocol: HubProtocol,
        stateful: bool,
    },
    /// The node invoked a hub method. With an `invocation_id` the node waits for a Completion:
    /// answer with [`HubServer::complete`] (`Hello` and `CommandResult`).
    Call {
        conn: ConnId,
        node: Arc<str>,
        invocation_id: Option<String>,
        call: NodeCall,
    },
    /// The node sent a Heartbeat (fire-and-forget), kept as text: only with
    /// [`HubServer::set_raw_heartbeats`] on, and only for the usual JSON shape (any other
    /// Heartbeat is a `Call`).
    Heartbeat {
        conn: ConnId,
        node: Arc<str>,
        heartbeat: RawHeartbeat,
    },
    /// A stateful connection resumed on the socket `conn`; `previous` names it no longer.
    Reconnected {
        conn: ConnId,
        previous: ConnId,
        node: Arc<str>,
    },
    /// The connection lost its socket. `will_resume`: it is a stateful connection that waits for
    /// the node to come back (a `Reconnected` or a final `Disconnected` follows, and calls sent
    /// meanwhile are kept for replay); otherwise it is over and `conn` names nothing any more.
    Disconnected {
        conn: ConnId,
        node: Arc<str>,
        reason: DisconnectReason,
        will_resume: bool,
    },
    /// The node sent something the protocol does not allow; it was dropped (and answered where
    /// the protocol says so).
    Misbehaved {
        conn: ConnId,
        node: Arc<str>,
        error: HubPeerError,
    },
}

/// Why a connection (or its socket) ended.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectReason {
    #[error("no handshake request within the handshake timeout")]
    HandshakeTimeout,
    /// The handshake request was refused with this error (sent to the node).
    #[error("handshake refused: {0}")]
    HandshakeRefused(String),
    #[error("the node sent nothing within the client timeout")]
    ClientTimeout,
    /// The shell reported the socket closed (`code`: the close frame's code; None: no close frame).
    #[error("socket closed (code {code:?})")]
    SocketClosed { code: Option<u16> },
    /// The node sent a Close message.
    #[error("closed by the node (error {error:?})")]
    ClosedByNode { error: Option<String> },
    /// [`HubServer::close`].
    #[error("closed by the gateway (error {error:?})")]
    ClosedByGateway { error: Option<String> },
    /// The node broke the protocol beyond one record (framing, sequence ids).
    #[error("protocol error: {0}")]
    ProtocolError(HubPeerError),
    /// A stateful connection's node did not come back within the reconnect window.
    #[error("the node did not reconnect within the reconnect window")]
    ReconnectWindowExpired,
    /// A detached stateful connection was sent more than its replay buffer holds.
    #[error("the replay buffer of {bytes} bytes exceeds its bound of {limit} bytes")]
    ReplayBufferFull { bytes: usize, limit: usize },
    /// A new socket resumed the stateful connection while its old socket still looked alive.
    #[error("replaced by a new socket of the same connection")]
    Replaced,
}

/// Something a node sent that the protocol does not allow.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubPeerError {
    /// A record (or the handshake request) that does not decode.
    #[error("undecodable record: {0}")]
    Decode(DecodeError),
    /// An invocation that does not fit the contract (unknown method, wrong arguments).
    #[error("invalid invocation: {0}")]
    Contract(ContractError),
    /// A message type the node has no business sending.
    #[error("unexpected {message} message: {detail}")]
    UnexpectedMessage {
        message: &'static str,
        detail: &'static str,
    },
    /// A Sequence announcing an id beyond the next one expected: messages were lost.
    #[error("Sequence {sequence_id} is beyond the next expected id {expected}")]
    SequenceTooHigh { sequence_id: u64, expected: u64 },
    /// An Ack of a sequence id never sent.
    #[error("Ack {sequence_id} acknowledges more than the {last_sent} messages sent")]
    AckBeyondSent { sequence_id: u64, last_sent: u64 },
    /// A message before the Sequence that must open a resumed connection.
    #[error("{message} message before the Sequence of a resumed connection")]
    BeforeSequence { message: &'static str },
}

/// The SignalR server side for many connections; see the module docs.
pub struct HubServer {
    /// By number with a fixed hasher: several lookups per message among thousands of
    /// connections (never iterated where the order could reach an output; see `connections`).
    conns: HashMap<ConnId, Conn, BuildHasherDefault<FnvHasher>>,
    /// Connection tokens (the `?id=` of the WebSocket URL): negotiated, or bound to a connection.
    tokens: BTreeMap<Arc<str>, TokenEntry>,
    /// Unused negotiated ids per node, for `max_pending_negotiations`.
    pending_per_node: BTreeMap<Arc<str>, usize>,
    shared: Shared,
}

/// The parts of the server a connection's handlers use while the connection is borrowed.
#[derive(Debug)]
struct Shared {
    config: HubServerConfig,
    /// See [`HubServer::set_raw_heartbeats`].
    raw_heartbeats: bool,
    /// A heartbeat's text buffer handed back ([`HubServer::recycle_heartbeat`]), for the next
    /// raw heartbeat: no allocation per heartbeat.
    spare_heartbeat: Option<String>,
    tx: Tx,
    events: VecDeque<HubServerEvent>,
    timers: Timers,
}

impl HubServer {
    /// A server with no connection. Errors: a configuration that cannot work.
    pub fn new(config: HubServerConfig) -> Result<HubServer, HubServerConfigError> {
        config.validate()?;
        Ok(HubServer {
            conns: HashMap::default(),
            tokens: BTreeMap::new(),
            pending_per_node: BTreeMap::new(),
            shared: Shared {
                tx: Tx::new(config.max_batch_len),
                events: VecDeque::new(),
                timers: Timers::default(),
                raw_heartbeats: false,
                spare_heartbeat: None,
                config,
            },
        })
    }

    // ---- getters ----------------------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &HubServerConfig {
        &self.shared.config
    }

    /// How many connections there are (detached ones included).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Every connection with its node, in `ConnId` order.
    pub fn connections(&self) -> impl Iterator<Item = (ConnId, &str)> + '_ {
        let mut all: Vec<(ConnId, &str)> = self
            .conns
            .iter()
            .map(|(id, conn)| (*id, &*conn.node))
            .collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all.into_iter()
    }

    /// The node of the connection on socket `conn`.
    pub fn node_of(&self, conn: ConnId) -> Option<&Arc<str>> {
        self.conns.get(&conn).map(|c| &c.node)
    }

    /// Where the connection on socket `conn` stands.
    pub fn state_of(&self, conn: ConnId) -> Option<ConnState> {
        self.conns.get(&conn).map(|c| c.state)
    }

    /// The hub protocol of an open (or detached) connection.
    pub fn protocol_of(&self, conn: ConnId) -> Option<HubProtocol> {
        self.conns
            .get(&conn)
            .filter(|c| c.state != ConnState::Handshaking)
            .map(|c| c.protocol)
    }

    /// Whether the connection would survive the loss of its socket now (stateful reconnect on,
    /// and its replay buffer never overflowed).
    pub fn is_resumable(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(Conn::is_resumable)
    }

    /// Bytes of unacknowledged messages kept for replay on a stateful connection.
    pub fn replay_buffer_len(&self, conn: ConnId) -> usize {
        self.conns
            .get(&conn)
            .and_then(|c| c.replay.as_ref())
            .map_or(0, |r| r.buffered_bytes)
    }

    /// Negotiated ids that no socket has opened yet.
    pub fn pending_negotiations(&self) -> usize {
        self.pending_per_node.values().sum()
    }

    // ---- outputs -----------------------------------------------------------------------------

    /// The next thing the shell must do; drain until `None` after every input. Frames still being
    /// batched are cut here, once the queue is empty.
    #[must_use]
    #[inline]
    pub fn poll_output(&mut self) -> Option<HubServerOutput> {
        // Most polls find nothing (the pump asks after every input): answered inline.
        if self.shared.tx.out.is_empty() && self.shared.tx.dirty.is_empty() {
            return None;
        }
        self.next_output()
    }

    fn next_output(&mut self) -> Option<HubServerOutput> {
        loop {
            if let Some(output) = self.shared.tx.out.pop_front() {
                return Some(output);
            }
            let id = self.shared.tx.dirty.pop_front()?;
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.dirty = false;
                // Nothing is queued before it: handed out at once, not queued and taken back.
                if let Some(frame) = send::Tx::cut(conn) {
                    return Some(HubServerOutput::Send { conn: id, frame });
                }
            }
        }
    }

    /// The next event for the gateway machine; drain until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<HubServerEvent> {
        self.shared.events.pop_front()
    }
}

impl std::fmt::Debug for HubServer {
    // Connection tokens are secrets: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubServer")
            .field("connections", &self.conns.len())
            .field("pending_negotiations", &self.pending_negotiations())
            .field("next_timeout", &self.poll_timeout())
            .finish_non_exhaustive()
    }
}

/// A close reason cut to what a WebSocket close frame can carry (on a character boundary).
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_CLOSE_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}
