//! The node machine: the sub-machines composed into one node.
//!
//! # Theory of operation
//! A node is a lifecycle (pairing -> connecting -> ready -> backoff -> connecting ..., polling as
//! the fallback, revoked and unpaired as the ends) around one *link* at a time (a SignalR
//! [`HubLink`], an [`LlmLink`] or a [`PollingClient`]) and one [`CommandTable`] that outlives
//! links. Every input goes to the sub-machine it concerns; then [`Node::pump`] drains the
//! sub-machines' outputs and reacts to them (a command from the link goes to the table, a result
//! from the table is chunked and goes to the link or waits for one), until nothing moves. The
//! node owns what spans links: the heartbeat timer, reconnect backoff, the scopes, the results
//! that wait for a link, and the numbering of the shell's sockets and requests.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::backoff::Backoff;
use crate::rng::Rng;
use crate::scope::ScopeSet;
use crate::time::{next_periodic, saturating_add};
use crate::wire::contract::LEGACY_PROTOCOL_VERSION;
use crate::wire::rest::NodeToken;

mod pump;
mod results;

use results::PendingPart;

use super::commands::{CommandState, CommandTable, CommandUsageError, Outcome, Progress};
use super::config::{
    Dialect, HostStats, Identity, LinkId, NodeConfig, NodeEvent, NodeInput, NodeOutput, NodeState,
    RequestId, Transport,
};
use super::hub::{HubConfig, HubLink};
use super::llm_link::{LlmConfig, LlmLink};
use super::pairing::{PairingClient, PairingInfo};
use super::polling::PollingClient;

/// Caller misuse of the node machine (never caused by a peer).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// `finish_command` or `report_progress` for a command no executor was given.
    #[error(transparent)]
    Command(#[from] CommandUsageError),
    /// The configuration cannot work (an invalid command spec, hub URL or LLM parameters).
    #[error("invalid node configuration: {0}")]
    Config(String),
}

/// The link the node currently keeps, if any (boxed: the three differ much in size).
enum Link {
    None,
    Hub(Box<HubLink>),
    Llm(Box<LlmLink>),
    Polling(Box<PollingClient>),
}

/// Who asked for an HTTP request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Requester {
    Pairing,
    Hub,
    Polling,
}

/// One node. See the module documentation, and `crate` docs for the run-loop contract.
pub struct Node {
    config: NodeConfig,
    rng: Rng,
    started: Instant,
    state: NodeState,
    token: Option<NodeToken>,
    node_id: String,
    pairing: Option<PairingClient>,
    link: Link,
    link_id: LinkId,
    commands: CommandTable,
    granted: ScopeSet,
    effective: ScopeSet,
    backoff: Backoff,
    reconnect_at: Option<Instant>,
    connected_at: Option<Instant>,
    websocket_failures: u32,
    /// While polling in `Transport::Auto`: when to try the WebSocket again.
    websocket_retry_at: Option<Instant>,
    heartbeat_at: Option<Instant>,
    stats: HostStats,
    protocol_version: String,
    /// Result parts waiting for a link, oldest first.
    pending_results: VecDeque<PendingPart>,
    pending_bytes: usize,
    requests: BTreeMap<RequestId, Requester>,
    next_request: u64,
    outputs: VecDeque<NodeOutput>,
}

impl Node {
    /// A node starting at `now`, its randomness drawn from `seed`. Fails only on a
    /// configuration that cannot work; every link it opens later is built from the same,
    /// validated, configuration.
    pub fn new(config: NodeConfig, now: Instant, seed: [u8; 32]) -> Result<Node, UsageError> {
        let mut rng = Rng::from_seed(seed);
        let commands = CommandTable::new(config.commands.clone(), config.limits.clone())?;
        match &config.dialect {
            Dialect::Llm { server_url, params } => {
                LlmConfig::new(server_url.clone(), params.clone())
                    .validate()
                    .map_err(|e| UsageError::Config(e.to_string()))?
            }
            Dialect::Hub { .. } => {
                if !config.gateway_url.starts_with("http://")
                    && !config.gateway_url.starts_with("https://")
                {
                    return Err(UsageError::Config(format!(
                        "the gateway URL must start with http:// or https://: {}",
                        config.gateway_url
                    )));
                }
            }
        }
        let granted = config.granted_scopes.clone().unwrap_or_else(ScopeSet::all);
        let effective = granted.intersect(&config.local_scopes);
        let backoff = Backoff::new(config.reconnect_base, config.reconnect_cap);
        let (token, node_id) = match &config.identity {
            Identity::Paired(token) => (Some(token.clone()), token.node_id().to_string()),
            Identity::Unpaired { node_id } => (
                None,
                node_id
                    .clone()
                    .unwrap_or_else(|| format!("node-{}", rng.secret(6))),
            ),
        };
        let mut node = Node {
            rng,
            started: now,
            state: NodeState::Connecting,
            token,
            node_id,
            pairing: None,
            link: Link::None,
            link_id: LinkId(0),
            commands,
            granted,
            effective,
            backoff,
            reconnect_at: None,
            connected_at: None,
            websocket_failures: 0,
            websocket_retry_at: None,
            heartbeat_at: None,
            stats: HostStats::default(),
            protocol_version: LEGACY_PROTOCOL_VERSION.to_string(),
            pending_results: VecDeque::new(),
            pending_bytes: 0,
            requests: BTreeMap::new(),
            next_request: 0,
            outputs: VecDeque::new(),
            config,
        };
        if node.token.is_some() || matches!(node.config.dialect, Dialect::Llm { .. }) {
            node.start_link(now);
        } else {
            node.start_pairing(now);
        }
        node.pump(now);
        Ok(node)
    }

    // ---------------------------------------------------------------------------------------
    // A. Getters

    pub fn state(&self) -> NodeState {
        self.state
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The token, once paired (until revoked).
    pub fn token(&self) -> Option<&NodeToken> {
        self.token.as_ref()
    }

    /// The scopes the node enforces: what the gateway granted, within the local policy.
    pub fn effective_scopes(&self) -> &ScopeSet {
        &self.effective
    }

    /// The protocol version in use (negotiated by `Hello`, or the legacy default).
    pub fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    /// Commands executing or waiting for their serialization group.
    pub fn commands_in_flight(&self) -> usize {
        self.commands.in_flight()
    }

    /// Result parts waiting for a link.
    pub fn pending_results(&self) -> usize {
        self.pending_results.len()
    }

    // ---------------------------------------------------------------------------------------
    // B. Inputs

    /// Feeds one input from the shell. Never panics on what a peer sent.
    pub fn handle_input(&mut self, now: Instant, input: NodeInput) {
        match input {
            NodeInput::HostStats(stats) => self.stats = stats,
            NodeInput::HttpResponse { request, result } => self.handle_http(now, request, result),
            NodeInput::WebSocketOpened { link } if link == self.link_id => match &mut self.link {
                Link::Hub(hub) => hub.handle_ws_opened(now),
                Link::Llm(llm) => llm.handle_ws_opened(now),
                _ => {}
            },
            NodeInput::WebSocketFailed {
                link,
                status,
                detail,
            } if link == self.link_id => match &mut self.link {
                Link::Hub(hub) => hub.handle_ws_failed(now, status, detail),
                Link::Llm(llm) => llm.handle_ws_failed(now, detail),
                _ => {}
            },
            NodeInput::Frame { link, frame } if link == self.link_id => match &mut self.link {
                Link::Hub(hub) => hub.handle_frame(now, frame),
                Link::Llm(llm) => llm.handle_frame(now, frame),
                _ => {}
            },
            NodeInput::WebSocketClosed { link, code, reason } if link == self.link_id => {
                match &mut self.link {
                    Link::Hub(hub) => hub.handle_ws_closed(now, code, reason),
                    Link::Llm(llm) => llm.handle_ws_closed(now, code, reason),
                    _ => {}
                }
            }
            // An answer about a socket this node already gave up: nothing to do.
            NodeInput::WebSocketOpened { .. }
            | NodeInput::WebSocketFailed { .. }
            | NodeInput::Frame { .. }
            | NodeInput::WebSocketClosed { .. } => {}
        }
        self.pump(now);
    }

    /// Fires whatever timers are due; early or spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.commands.handle_timeout(now);
        if let Some(pairing) = &mut self.pairing {
            pairing.handle_timeout(now);
        }
        match &mut self.link {
            Link::Hub(hub) => hub.handle_timeout(now),
            Link::Llm(llm) => llm.handle_timeout(now),
            Link::Polling(polling) => polling.handle_timeout(now),
            Link::None => {}
        }
        if self.reconnect_at.is_some_and(|at| at <= now) {
            self.reconnect_at = None;
            self.start_link(now);
        }
        if self.websocket_retry_at.is_some_and(|at| at <= now) {
            self.websocket_retry_at = None;
            self.retry_websocket(now);
        }
        if let Some(at) = self.heartbeat_at.filter(|at| *at <= now) {
            self.heartbeat_at = Some(next_periodic(at, self.config.heartbeat_interval, now));
            self.send_heartbeat(now);
        }
        self.pump(now);
    }

    // ---------------------------------------------------------------------------------------
    // C. The executors' side

    /// An executor finished a command. A result for a command that already ended (timed out,
    /// cancelled) is dropped: that race is normal.
    pub fn finish_command(
        &mut self,
        now: Instant,
        command_id: &str,
        outcome: Outcome,
    ) -> Result<(), UsageError> {
        let result = self.commands.finish(now, command_id, outcome);
        self.pump(now);
        result.map(|_| ()).map_err(UsageError::from)
    }

    /// An executor reports progress; sent as `CommandProgress`, rate-limited.
    pub fn report_progress(
        &mut self,
        now: Instant,
        command_id: &str,
        progress: Progress,
    ) -> Result<(), UsageError> {
        let result = self.commands.progress(now, command_id, progress);
        self.pump(now);
        result.map_err(UsageError::from)
    }

    /// LLM dialect: text produced so far by task `command_id`, sent at once as result frames.
    pub fn stream_text(&mut self, now: Instant, command_id: &str, text: &str) {
        if let (Link::Llm(llm), Ok(id)) = (&mut self.link, command_id.parse::<u32>()) {
            if self.commands.command_state(command_id) == Some(CommandState::Executing) {
                llm.send_text(now, id, text);
            }
        }
        self.pump(now);
    }

    // ---------------------------------------------------------------------------------------
    // D. Outputs

    /// The next thing for the shell to do; drain until `None` after every input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<NodeOutput> {
        self.outputs.pop_front()
    }

    /// When to call [`Node::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = match &self.link {
            Link::Hub(hub) => hub.poll_timeout(),
            Link::Llm(llm) => llm.poll_timeout(),
            Link::Polling(polling) => polling.poll_timeout(),
            Link::None => None,
        };
        [
            self.commands.poll_timeout(),
            self.pairing.as_ref().and_then(PairingClient::poll_timeout),
            link,
            self.reconnect_at,
            self.websocket_retry_at,
            self.heartbeat_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---------------------------------------------------------------------------------------
    // Lifecycle

    fn set_state(&mut self, state: NodeState) {
        if self.state != state {
            self.state = state;
            self.outputs
                .push_back(NodeOutput::Event(NodeEvent::StateChanged(state)));
        }
    }

    fn start_pairing(&mut self, now: Instant) {
        let secret = PairingClient::generate_secret(&mut self.rng);
        let info = PairingInfo {
            name: self.config.name.clone(),
            platform: Some(self.config.platform.clone()).filter(|p| !p.is_empty()),
        };
        match PairingClient::new(now, self.node_id.clone(), secret, info) {
            Ok(pairing) => {
                self.pairing = Some(pairing);
                self.set_state(NodeState::Pairing);
            }
            Err(error) => {
                // Only a node id the gateway could never accept gets here.
                self.set_state(NodeState::Unpaired);
                self.event(NodeEvent::RequestFailed(format!("cannot pair: {error}")));
            }
        }
    }

    /// Opens the configured link (or the polling client).
    fn start_link(&mut self, now: Instant) {
        self.link_id = LinkId(self.link_id.0 + 1);
        match self.config.dialect.clone() {
            Dialect::Llm { server_url, params } => {
                let mut llm = LlmLink::new(LlmConfig::new(server_url, params))
                    .expect("the LLM configuration was validated in Node::new");
                llm.connect(now).expect("a new link is idle");
                self.link = Link::Llm(Box::new(llm));
                self.set_state(NodeState::Connecting);
            }
            Dialect::Hub {
                protocol,
                transport,
            } => {
                let Some(token) = self.token.clone() else {
                    return;
                };
                let polling = transport == Transport::Polling
                    || (transport == Transport::Auto
                        && self.websocket_failures >= self.config.polling_after_failures);
                if polling {
                    let polling = PollingClient::new(now, token, self.config.poll_interval)
                        .expect("a non-zero poll interval (validated in Node::new)");
                    self.link = Link::Polling(Box::new(polling));
                    self.set_state(NodeState::Polling);
                    self.on_link_ready(now);
                    if transport == Transport::Auto {
                        self.websocket_retry_at =
                            Some(saturating_add(now, self.config.websocket_retry));
                    }
                } else {
                    let hub_url = format!(
                        "{}/hubs/node",
                        self.config.gateway_url.trim_end_matches('/')
                    );
                    let mut config = HubConfig::new(hub_url, protocol, token);
                    config.node_id = self.node_id.clone();
                    config.capabilities = Some(self.capabilities());
                    let mut hub =
                        HubLink::new(config).expect("the gateway URL was validated in Node::new");
                    hub.connect(now).expect("a new link is idle");
                    self.link = Link::Hub(Box::new(hub));
                    self.set_state(NodeState::Connecting);
                }
            }
        }
    }

    /// While polling in `Auto`: try the WebSocket again; polling stops once it is ready.
    fn retry_websocket(&mut self, now: Instant) {
        if let Link::Polling(polling) = &mut self.link {
            polling.stop();
            let unsent = polling.take_queued_results();
            self.requeue_front(unsent);
        }
        self.heartbeat_at = None;
        // One failure of this attempt sends the node back to polling.
        self.websocket_failures = self.config.polling_after_failures.saturating_sub(1);
        self.link = Link::None;
        self.start_link(now);
    }

    /// A link is ready for traffic: heartbeat now and every interval, flush waiting results.
    fn on_link_ready(&mut self, now: Instant) {
        self.connected_at = Some(now);
        self.heartbeat_at = Some(saturating_add(now, self.config.heartbeat_interval));
        if !matches!(self.link, Link::Llm(_)) {
            self.send_heartbeat(now);
        }
        self.pending_bytes = 0;
        for pending in std::mem::take(&mut self.pending_results) {
            self.send_part(now, pending.part);
        }
    }

    /// The link ended: back off, then try again (or stop for good).
    fn on_link_ended(&mut self, now: Instant, reason: String, refused: bool, websocket: bool) {
        self.heartbeat_at = None;
        self.link = Link::None;
        let stayed_up = self
            .connected_at
            .take()
            .is_some_and(|at| now.saturating_duration_since(at) >= self.config.stable_after);
        if stayed_up {
            self.backoff.reset();
            self.websocket_failures = 0;
        } else if websocket {
            self.websocket_failures = self.websocket_failures.saturating_add(1);
        }
        let delay = if refused {
            self.backoff
                .next_delay_at_least(&mut self.rng, self.config.refusal_floor)
        } else {
            self.backoff.next_delay(&mut self.rng)
        };
        self.reconnect_at = Some(saturating_add(now, delay));
        self.set_state(NodeState::Backoff);
        self.outputs
            .push_back(NodeOutput::Event(NodeEvent::Disconnected {
                reason,
                retry_in: delay,
            }));
    }

    /// RevokeAccess (or a revoked answer over REST): close, forget the token, stop for good.
    fn revoke(&mut self, now: Instant, reason: String) {
        self.commands.abort_all(now);
        match &mut self.link {
            Link::Hub(hub) => hub.close(now, "revoked"),
            Link::Llm(llm) => llm.close(now),
            Link::Polling(polling) => polling.stop(),
            Link::None => {}
        }
        // The close output of the link, then nothing more.
        self.drain_link(now);
        self.link = Link::None;
        self.token = None;
        self.heartbeat_at = None;
        self.reconnect_at = None;
        self.websocket_retry_at = None;
        self.pending_results.clear();
        self.pending_bytes = 0;
        self.set_state(NodeState::Revoked);
        self.outputs
            .push_back(NodeOutput::Event(NodeEvent::TokenRevoked { reason }));
    }
}
