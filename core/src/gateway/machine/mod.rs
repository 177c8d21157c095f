//! The gateway machine: the sub-machines composed into one gateway.
//!
//! # Theory of operation
//! Every input names the connection it came on (the shell numbers them) and, for requests, where
//! it came from. The machine authenticates it ([`NodeBook`]), hands it to the sub-machine it
//! concerns (the [`HubServer`] for SignalR, the [`PairingBook`] or the [`Dispatcher`] for REST),
//! then [`Gateway::pump`] drains what the sub-machines say and reacts (a node's `Hello` is
//! answered, its results go to the dispatcher and are acknowledged, the dispatcher's commands go
//! out on the node's connection) until nothing moves. Operators call the application API
//! (group C): dispatch, cancel, approve pairings, revoke, set scopes. Durable changes leave as
//! [`GatewayOutput::Persist`] and come back through [`Gateway::restore`] at start-up.

mod http;
mod llm_auth;
mod pump;
mod shutdown;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rng::Rng;
use crate::scope::ScopeSet;
use crate::wire::contract::{GatewayCall, SUPPORTED_PROTOCOL_VERSIONS};
use crate::wire::dto::HeartbeatDto;
use crate::wire::signalr::HubProtocol;

use super::auth::{AuthConfig, NodeBook, NodeRecord, NodeState, UnixClock};
use super::dispatch::FnvHasher;
use super::dispatch::{
    CancelOutcome, CommandOutcome, CommandStatus, DispatchConfig, DispatchError, DispatchEvent,
    DispatchRecord, DispatchRequest, Dispatcher,
};
use super::hub::{HubServer, HubServerConfig, RawHeartbeat};
use super::pairing::{PairingConfig, PairingError, PairingPersist, PairingRecord, PendingPairing};
use super::{ConnId, HttpReply, Source};
use crate::node::http::Method;
use crate::node::WsFrame;

pub use http::HUB_PATH;

/// Everything a gateway needs at start-up; [`GatewayConfig::new`] fills in the protocol's
/// defaults.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The URL nodes reach this gateway at (`gatewayUrl` of an approved pairing).
    pub public_url: String,
    pub hub: HubServerConfig,
    pub dispatch: DispatchConfig,
    pub auth: AuthConfig,
    pub pairing: PairingConfig,
    /// Commands handed out per poll of a polling node.
    pub lease_batch: usize,
}

impl GatewayConfig {
    pub fn new(public_url: impl Into<String>) -> GatewayConfig {
        let public_url = public_url.into();
        GatewayConfig {
            pairing: PairingConfig::new(public_url.clone()),
            public_url,
            hub: HubServerConfig::default(),
            dispatch: DispatchConfig::default(),
            auth: AuthConfig::default(),
            lease_batch: 16,
        }
    }
}

/// An HTTP request as the shell read it (the body whole, the headers the gateway needs).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: Method,
    /// Path and query, e.g. `/hubs/node/negotiate?negotiateVersion=1`.
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The target may carry `access_token`, the header a bearer token: neither is printed.
        let path = self
            .target
            .split_once('?')
            .map_or(&*self.target, |(p, _)| p);
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("path", &path)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What the shell feeds the gateway machine.
#[derive(Clone, Debug)]
pub enum GatewayInput {
    /// A plain HTTP request; answer with the [`GatewayOutput::Reply`] for `conn`.
    Http {
        conn: ConnId,
        source: Source,
        request: HttpRequest,
    },
    /// A WebSocket upgrade request (`GET /hubs/node?...`); the machine answers
    /// [`GatewayOutput::Upgrade`].
    Upgrade {
        conn: ConnId,
        source: Source,
        request: HttpRequest,
    },
    /// One WebSocket message on an upgraded connection.
    Frame { conn: ConnId, frame: WsFrame },
    /// The socket of `conn` closed (with the close code, if the peer sent one).
    SocketClosed { conn: ConnId, code: Option<u16> },
}

/// One durable change, for the shell's store; [`Gateway::restore`] takes them back.
///
/// The node and pairing records are boxed: they are rare and large, and every output is moved
/// several times on its way out (a `GatewayOutput` small enough to be moved without a `memcpy`
/// call). The JSON form is the same as unboxed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "camelCase")]
pub enum StoreRecord {
    Node(Box<NodeRecord>),
    Pairing(Box<PairingPersist>),
    Dispatch(DispatchRecord),
}

/// What the gateway machine asks of its shell, or tells its host.
#[derive(Clone, Debug)]
pub enum GatewayOutput {
    /// The answer to the HTTP request on `conn`.
    Reply {
        conn: ConnId,
        reply: HttpReply,
    },
    /// The answer to the upgrade on `conn`: `Ok` switches protocols, `Err` is the refusal.
    Upgrade {
        conn: ConnId,
        result: Result<(), HttpReply>,
    },
    /// Send one WebSocket message on `conn`.
    Send {
        conn: ConnId,
        frame: WsFrame,
    },
    /// Close the socket of `conn` (a close frame with this code and reason).
    CloseSocket {
        conn: ConnId,
        code: u16,
        reason: String,
    },
    /// Store this before answering anything that depends on it.
    Persist(StoreRecord),
    /// A command ended: its one terminal outcome. The ids are shared with the machine's own
    /// copies (cheap to move and clone).
    Finished {
        command_id: Arc<str>,
        node: Arc<str>,
        outcome: CommandOutcome,
    },
    Event(GatewayEvent),
}

/// What happened, for the host's log and the operator.
#[derive(Clone, Debug, PartialEq)]
pub enum GatewayEvent {
    NodeOnline {
        node: String,
    },
    NodeOffline {
        node: String,
    },
    NodeConnected {
        node: String,
        conn: ConnId,
    },
    NodeDisconnected {
        node: String,
        conn: ConnId,
    },
    PairingRequested {
        code: String,
        node_id: String,
    },
    Paired {
        node_id: String,
    },
    CommandStatus {
        command_id: Arc<str>,
        status: CommandStatus,
    },
    Dispatch(DispatchEvent),
    /// A node sent something that breaks the protocol.
    PeerMisbehaved {
        node: String,
        detail: String,
    },
    /// A request was refused (bad token, unknown path, ...): why, without secrets.
    Refused {
        source: Source,
        detail: String,
    },
}

/// What an operator sees of a node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub node_id: String,
    pub revoked: bool,
    pub online: bool,
    pub connected: bool,
    pub scopes: Vec<String>,
    pub name: Option<String>,
    pub platform: Option<String>,
    /// The last heartbeat's content (its stats), as received.
    pub last_heartbeat: Option<HeartbeatDto>,
    /// The last contact that keeps the node online (a heartbeat, or its hub connection
    /// becoming ready), in Unix milliseconds.
    pub last_contact_unix_ms: Option<u64>,
    pub in_flight: Vec<String>,
}

/// A node's last heartbeat as the gateway keeps it: as received over JSON (decoded only when an
/// operator asks), or decoded already (MessagePack, REST, or an unusual JSON record).
#[derive(Debug)]
enum KeptHeartbeat {
    Raw(RawHeartbeat),
    Decoded(HeartbeatDto),
}

impl KeptHeartbeat {
    fn decode(&self) -> Option<HeartbeatDto> {
        match self {
            // The hub checked it decodes.
            KeptHeartbeat::Raw(raw) => raw.decode().ok(),
            KeptHeartbeat::Decoded(dto) => Some(dto.clone()),
        }
    }
}

/// Caller misuse or an operator action that cannot be done.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error(transparent)]
    Pairing(#[from] PairingError),
    #[error("unknown node `{0}`")]
    UnknownNode(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the store's records cannot be restored: {0}")]
    Restore(String),
}

/// One gateway. See the module documentation, and the `crate` docs for the run-loop contract.
pub struct Gateway {
    config: GatewayConfig,
    rng: Rng,
    clock: UnixClock,
    book: NodeBook,
    pairing: super::pairing::PairingBook,
    hub: HubServer,
    dispatcher: Dispatcher,
    /// The live hub connection of each node, and the other way round.
    node_conns: BTreeMap<Arc<str>, ConnId>,
    /// Looked up by number on every command sent; never iterated.
    conn_nodes: HashMap<ConnId, Arc<str>, BuildHasherDefault<FnvHasher>>,
    /// Connections whose node has not been attached to the dispatcher yet (waiting for `Hello`).
    unattached: BTreeSet<ConnId>,
    /// The last heartbeat of each node, for operators. Never iterated.
    heartbeats: HashMap<Arc<str>, KeptHeartbeat, BuildHasherDefault<FnvHasher>>,
    outputs: VecDeque<GatewayOutput>,
}

impl Gateway {
    /// A gateway starting at `now` (`unix_now` = the wall clock at `now`), its randomness drawn
    /// from `seed`. Restore the store with [`Gateway::restore`] before the first input.
    pub fn new(
        config: GatewayConfig,
        now: Instant,
        unix_now: Duration,
        seed: [u8; 32],
    ) -> Result<Gateway, GatewayError> {
        let clock = UnixClock::new(now, unix_now);
        let mut hub =
            HubServer::new(config.hub.clone()).map_err(|e| GatewayError::Config(e.to_string()))?;
        hub.set_raw_heartbeats(true);
        Ok(Gateway {
            rng: Rng::from_seed(seed),
            clock,
            book: NodeBook::new(config.auth.clone(), clock),
            pairing: super::pairing::PairingBook::new(config.pairing.clone(), clock),
            hub,
            dispatcher: Dispatcher::new(config.dispatch.clone(), now, unix_now),
            node_conns: BTreeMap::new(),
            conn_nodes: HashMap::default(),
            unattached: BTreeSet::new(),
            heartbeats: HashMap::default(),
            outputs: VecDeque::new(),
            config,
        })
    }

    /// Rebuilds the state from the store's records (at start-up, before any input).
    pub fn restore(
        &mut self,
        now: Instant,
        records: impl IntoIterator<Item = StoreRecord>,
    ) -> Result<(), GatewayError> {
        let mut nodes = Vec::new();
        let mut pairings: BTreeMap<(String, [u8; 32]), PairingRecord> = BTreeMap::new();
        let mut dispatch = Vec::new();
        for record in records {
            match record {
                StoreRecord::Node(node) => nodes.push(*node),
                StoreRecord::Pairing(persist) => match *persist {
                    PairingPersist::Put(record) => {
                        pairings.insert((record.node_id.clone(), record.secret_sha256), record);
                    }
                    PairingPersist::Delete {
                        node_id,
                        secret_sha256,
                    } => {
                        pairings.remove(&(node_id, secret_sha256));
                    }
                },
                StoreRecord::Dispatch(record) => dispatch.push(record),
            }
        }
        self.dispatcher
            .restore(now, dispatch)
            .map_err(|e| GatewayError::Restore(e.to_string()))?;
        self.book.restore(nodes);
        self.pairing.restore(pairings.into_values());
        let approved: Vec<(String, Vec<String>)> = self
            .book
            .list()
            .filter(|r| r.is_approved())
            .map(|r| (r.node_id.clone(), r.scopes.clone()))
            .collect();
        for (node, scopes) in approved {
            self.dispatcher.register(&node);
            if self.dispatcher.scopes(&node).is_none() {
                self.dispatcher
                    .set_scopes(now, &node, ScopeSet::parse_lenient(scopes).0);
            }
        }
        self.pump(now);
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // A. Getters

    /// Every known node, sorted by id. Each hub heartbeat is decoded here, from the text kept
    /// on receipt (a heartbeat costs little; an operator's view of 10,000 nodes some ms).
    pub fn nodes(&self, now: Instant) -> Vec<NodeView> {
        self.book
            .list()
            .map(|record| self.node_view(now, record))
            .collect()
    }

    pub fn node(&self, now: Instant, node_id: &str) -> Option<NodeView> {
        self.book.get(node_id).map(|r| self.node_view(now, r))
    }

    fn node_view(&self, now: Instant, record: &NodeRecord) -> NodeView {
        let heartbeat = self.heartbeats.get(record.node_id.as_str());
        NodeView {
            node_id: record.node_id.clone(),
            revoked: matches!(record.state, NodeState::Revoked { .. }),
            online: self.dispatcher.is_online(now, &record.node_id),
            connected: self.node_conns.contains_key(record.node_id.as_str()),
            scopes: record.scopes.clone(),
            name: record.name.clone(),
            platform: record.platform.clone(),
            last_heartbeat: heartbeat.and_then(KeptHeartbeat::decode),
            last_contact_unix_ms: self
                .dispatcher
                .last_heartbeat(&record.node_id)
                .map(|at| self.clock.unix_ms(at))
                .or_else(|| self.dispatcher.last_seen_unix_ms(&record.node_id)),
            in_flight: self.dispatcher.in_flight(&record.node_id),
        }
    }

    pub fn pending_pairings(&self, now: Instant) -> Vec<PendingPairing> {
        self.pairing.list_pending(now)
    }

    pub fn command_status(&self, command_id: &str) -> Option<CommandStatus> {
        self.dispatcher.status(command_id)
    }

    /// Live hub connections.
    pub fn connection_count(&self) -> usize {
        self.hub.connection_count()
    }

    // ---------------------------------------------------------------------------------------
    // B. Inputs

    /// Feeds one input from the shell. Never panics on what a peer sent.
    pub fn handle_input(&mut self, now: Instant, input: GatewayInput) {
        match input {
            GatewayInput::Http {
                conn,
                source,
                request,
            } => {
                let reply = self.handle_http(now, conn, &source, request);
                self.outputs.push_back(GatewayOutput::Reply { conn, reply });
            }
            GatewayInput::Upgrade {
                conn,
                source,
                request,
            } => {
                let result = self.handle_upgrade(now, conn, &source, &request);
                self.outputs
                    .push_back(GatewayOutput::Upgrade { conn, result });
            }
            GatewayInput::Frame { conn, frame } => self.hub.handle_frame(now, conn, frame),
            GatewayInput::SocketClosed { conn, code } => self.hub.socket_closed(now, conn, code),
        }
        self.pump(now);
    }

    /// Fires whatever timers are due; early or spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.book.handle_timeout(now);
        self.pairing.handle_timeout(now);
        self.hub.handle_timeout(now);
        self.dispatcher.handle_timeout(now);
        self.pump(now);
    }

    // ---------------------------------------------------------------------------------------
    // C. The application API

    /// Sends a command to a node (or queues it); its end arrives as [`GatewayOutput::Finished`].
    pub fn dispatch(
        &mut self,
        now: Instant,
        request: DispatchRequest,
    ) -> Result<String, GatewayError> {
        if !self.book.is_approved(&request.node) {
            return Err(GatewayError::UnknownNode(request.node));
        }
        let id = self.dispatcher.dispatch(now, &mut self.rng, request)?;
        self.pump(now);
        Ok(id)
    }

    pub fn cancel(
        &mut self,
        now: Instant,
        command_id: &str,
        reason: Option<&str>,
    ) -> Result<CancelOutcome, GatewayError> {
        let outcome = self.dispatcher.cancel(now, command_id, reason)?;
        self.pump(now);
        Ok(outcome)
    }

    /// An operator approves a critical command waiting for approval.
    pub fn approve_command(&mut self, now: Instant, command_id: &str) -> Result<(), GatewayError> {
        self.dispatcher.approve(now, command_id)?;
        self.pump(now);
        Ok(())
    }

    pub fn reject_command(
        &mut self,
        now: Instant,
        command_id: &str,
        reason: Option<&str>,
    ) -> Result<(), GatewayError> {
        self.dispatcher.reject(now, command_id, reason)?;
        self.pump(now);
        Ok(())
    }

    /// Approves the pairing with this code; the node gets its token at its next poll.
    pub fn approve_pairing(
        &mut self,
        now: Instant,
        code: &str,
        scopes: &[String],
    ) -> Result<PendingPairing, GatewayError> {
        let pending = self.pairing.approve(now, code, scopes, &self.book)?;
        self.pump(now);
        Ok(pending)
    }

    pub fn reject_pairing(
        &mut self,
        now: Instant,
        code: &str,
        reason: Option<String>,
    ) -> Result<PendingPairing, GatewayError> {
        let pending = self.pairing.reject(now, code, reason)?;
        self.pump(now);
        Ok(pending)
    }

    /// Revokes a node: its token stops working at once, its commands end `cancelled`, and a
    /// connected node is told (`RevokeAccess`, then a Close without allowReconnect).
    pub fn revoke(&mut self, now: Instant, node: &str, reason: &str) -> Result<(), GatewayError> {
        self.book
            .revoke(now, node, reason)
            .map_err(|_| GatewayError::UnknownNode(node.to_string()))?;
        let _ = self.dispatcher.revoke(now, node);
        if let Some(conn) = self.node_conns.get(node).copied() {
            let _ = self.hub.send(
                now,
                conn,
                &GatewayCall::RevokeAccess {
                    reason: reason.to_string(),
                },
            );
            let _ = self
                .hub
                .close(now, conn, Some(format!("revoked: {reason}")), false);
        }
        self.pump(now);
        Ok(())
    }

    /// Sets a node's granted scopes: stored, enforced at dispatch at once, and sent to a
    /// connected node (`RefreshScopes`), which answers with the scopes it enforces.
    pub fn set_scopes(
        &mut self,
        now: Instant,
        node: &str,
        scopes: &[String],
    ) -> Result<Vec<String>, GatewayError> {
        let granted = self
            .book
            .set_scopes(node, scopes)
            .map_err(|_| GatewayError::UnknownNode(node.to_string()))?;
        self.dispatcher
            .set_scopes(now, node, ScopeSet::parse_lenient(granted.clone()).0);
        if let Some(conn) = self.node_conns.get(node).copied() {
            let _ = self
                .hub
                .send(now, conn, &GatewayCall::RefreshScopes(granted.clone()));
        }
        self.pump(now);
        Ok(granted)
    }

    // ---------------------------------------------------------------------------------------
    // D. Outputs

    #[must_use]
    pub fn poll_output(&mut self) -> Option<GatewayOutput> {
        self.outputs.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.book.poll_timeout(),
            self.pairing.poll_timeout(),
            self.hub.poll_timeout(),
            self.dispatcher.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Keeps a node's last heartbeat for operators, overwriting the previous one in place; the
    /// text buffer of a raw one it replaces goes back to the hub for the next heartbeat.
    fn keep_heartbeat(&mut self, _now: Instant, node: &Arc<str>, heartbeat: KeptHeartbeat) {
        match self.heartbeats.get_mut(node) {
            Some(slot) => {
                if let KeptHeartbeat::Raw(old) = std::mem::replace(slot, heartbeat) {
                    self.hub.recycle_heartbeat(old);
                }
            }
            None => {
                self.heartbeats.insert(Arc::clone(node), heartbeat);
            }
        }
    }

    fn event(&mut self, event: GatewayEvent) {
        self.outputs.push_back(GatewayOutput::Event(event));
    }

    fn supported_versions(&self) -> &'static [&'static str] {
        &SUPPORTED_PROTOCOL_VERSIONS
    }

    fn protocol_of(&self, conn: ConnId) -> HubProtocol {
        self.hub.protocol_of(conn).unwrap_or(HubProtocol::Json)
    }
}
