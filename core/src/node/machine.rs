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
use crate::chunk;
use crate::rng::Rng;
use crate::scope::ScopeSet;
use crate::time::{next_periodic, saturating_add};
use crate::wire::contract::{GatewayCall, NodeCall, LEGACY_PROTOCOL_VERSION};
use crate::wire::dto::{
    Capabilities, CommandError, CommandResultDto, ErrorCode, ExecuteCommandDto, HeartbeatDto,
};
use crate::wire::rest::NodeToken;

use super::commands::{
    CommandAction, CommandState, CommandTable, CommandUsageError, Outcome, Progress,
};
use super::config::{
    Dialect, HostStats, Identity, LinkId, NodeConfig, NodeEvent, NodeInput, NodeOutput, NodeState,
    RequestId, Transport, LLM_COMMAND,
};
use super::http::{HttpCall, HttpResult};
use super::hub::{HubConfig, HubEvent, HubLink, HubOutput, LinkEnd};
use super::llm_link::{LlmConfig, LlmEnd, LlmEvent, LlmLink, LlmOutput};
use super::pairing::{PairingClient, PairingEvent, PairingInfo};
use super::polling::{PollingClient, PollingEvent};

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

/// The link the node currently keeps, if any.
enum Link {
    None,
    Hub(HubLink),
    Llm(LlmLink),
    Polling(PollingClient),
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
                self.link = Link::Llm(llm);
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
                    self.link = Link::Polling(polling);
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
                    self.link = Link::Hub(hub);
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

    // ---------------------------------------------------------------------------------------
    // Heartbeat, scopes, results

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            commands: self.commands.command_names(),
            slots: u32::try_from(self.commands.slots()).unwrap_or(u32::MAX),
            gpus: self.config.gpus.clone(),
        }
    }

    fn heartbeat(&self, now: Instant) -> HeartbeatDto {
        HeartbeatDto {
            node_id: self.node_id.clone(),
            status: "online".to_string(),
            uptime: now.saturating_duration_since(self.started).as_secs(),
            platform: self.config.platform.clone(),
            version: self.config.version.clone(),
            cpu_percent: self.stats.cpu_percent,
            memory_mb: self.stats.memory_mb,
            capabilities: Some(self.capabilities()),
        }
    }

    fn send_heartbeat(&mut self, now: Instant) {
        let heartbeat = self.heartbeat(now);
        // Refused only by a link that is ending: its next connection heartbeats afresh.
        match &mut self.link {
            Link::Hub(hub) => {
                let _ = hub.send_call(now, NodeCall::Heartbeat(heartbeat));
            }
            Link::Polling(polling) => {
                let _ = polling.queue_heartbeat(now, heartbeat);
            }
            // The LLM link keeps its own empty-text heartbeat.
            Link::Llm(_) | Link::None => {}
        }
    }

    fn refresh_scopes(&mut self, now: Instant, scopes: Vec<String>) {
        let (granted, rejected) = ScopeSet::parse_lenient(scopes);
        for error in rejected {
            self.outputs
                .push_back(NodeOutput::Event(NodeEvent::PeerMisbehaved(format!(
                    "RefreshScopes: {error}"
                ))));
        }
        self.granted = granted;
        self.effective = self.granted.intersect(&self.config.local_scopes);
        let effective = self.effective.to_vec();
        if let Link::Hub(hub) = &mut self.link {
            let _ = hub.send_call(now, NodeCall::ScopeChanged(effective.clone()));
        }
        self.outputs
            .push_back(NodeOutput::Event(NodeEvent::ScopesChanged(effective)));
    }

    /// A terminal result from the table: chunked, then sent or kept for the next link.
    fn send_result(&mut self, now: Instant, mut result: CommandResultDto) {
        if matches!(self.config.dialect, Dialect::Llm { .. }) {
            // The LLM dialect has no error frame: every end is the finished frame, and a task
            // whose connection is gone is not answered at all.
            if let (Link::Llm(llm), Ok(id)) = (&mut self.link, result.command_id.parse::<u32>()) {
                llm.finish(now, id);
            }
            return;
        }
        if result.protocol_version.is_none() {
            result.protocol_version = Some(self.protocol_version.clone());
        }
        let parts = match chunk::split(&result, self.config.field_cap) {
            Ok(parts) => parts,
            Err(error) => vec![internal_error(
                &result,
                format!("cannot split result: {error}"),
            )],
        };
        for part in parts {
            self.send_part(now, part);
        }
    }

    fn send_part(&mut self, now: Instant, part: CommandResultDto) {
        // The links refuse a part only on misuse (a hub that is not ready, which is checked; a
        // polling client already stopped, which is replaced before it could be asked; an id no
        // URL can carry, which no retry would fix): the part is not worth a clone per send.
        match &mut self.link {
            Link::Hub(hub) if hub.is_ready() => {
                let _ = hub.send_result(now, part);
            }
            Link::Polling(polling) => {
                let _ = polling.queue_result(now, part);
            }
            _ => self.keep_part(part),
        }
    }

    /// Keeps a part until a link is ready, within `max_pending_result_bytes`: beyond it the
    /// oldest whole results give way, each replaced by a small `internal_error` result in its
    /// place, so that the gateway still learns how every command ended.
    fn keep_part(&mut self, part: CommandResultDto) {
        let pending = PendingPart::new(part, false);
        self.pending_bytes += pending.size;
        self.pending_results.push_back(pending);
        while self.pending_bytes > self.config.max_pending_result_bytes {
            let Some(at) = self.pending_results.iter().position(|p| !p.stand_in) else {
                break;
            };
            let victim = self.pending_results[at].part.clone();
            let before = self.pending_results.len();
            self.pending_results
                .retain(|p| p.stand_in || p.part.command_id != victim.command_id);
            let removed = before - self.pending_results.len();
            self.pending_bytes = self.pending_results.iter().map(|p| p.size).sum();
            let stand_in = PendingPart::new(
                internal_error(
                    &victim,
                    format!(
                        "result discarded: more than {} bytes of results waited for a connection",
                        self.config.max_pending_result_bytes
                    ),
                ),
                true,
            );
            self.pending_bytes += stand_in.size;
            self.pending_results.insert(at, stand_in);
            self.event(NodeEvent::ResultDiscarded {
                command_id: victim.command_id,
            });
            debug_assert!(removed > 0);
        }
    }

    fn requeue_front(&mut self, parts: Vec<CommandResultDto>) {
        for part in parts.into_iter().rev() {
            let pending = PendingPart::new(part, false);
            self.pending_bytes += pending.size;
            self.pending_results.push_front(pending);
        }
    }

    // ---------------------------------------------------------------------------------------
    // The pump

    fn handle_http(&mut self, now: Instant, request: RequestId, result: HttpResult) {
        let Some(requester) = self.requests.remove(&request) else {
            return;
        };
        match (requester, &mut self.link) {
            // The sub-machines refuse an answer only when none is in flight, which the request
            // numbering rules out.
            (Requester::Pairing, _) => {
                if let Some(pairing) = &mut self.pairing {
                    let _ = pairing.handle_response(now, result);
                }
            }
            (Requester::Hub, Link::Hub(hub)) => hub.handle_http_response(now, result),
            (Requester::Polling, Link::Polling(polling)) => {
                let _ = polling.handle_response(now, result);
            }
            _ => {}
        }
    }

    /// Numbers a request and joins its path with `base` (the gateway URL, or the hub's origin).
    fn http(&mut self, requester: Requester, base: &str, call: HttpCall) {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(request, requester);
        let url = format!("{}{}", base.trim_end_matches('/'), call.path);
        self.outputs
            .push_back(NodeOutput::Http { request, url, call });
    }

    /// Reacts to the sub-machines' outputs until none has anything left to say.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            moved |= self.drain_pairing(now);
            moved |= self.drain_commands(now);
            moved |= self.drain_link(now);
            if !moved {
                break;
            }
        }
    }

    fn drain_pairing(&mut self, now: Instant) -> bool {
        let mut moved = false;
        while let Some(call) = self.pairing.as_mut().and_then(PairingClient::poll_request) {
            let base = self.config.gateway_url.clone();
            self.http(Requester::Pairing, &base, call);
            moved = true;
        }
        while let Some(event) = self.pairing.as_mut().and_then(PairingClient::poll_event) {
            moved = true;
            match event {
                PairingEvent::Code(code) => self.event(NodeEvent::PairingCode(code)),
                PairingEvent::Approved { token, gateway_url } => {
                    self.pairing = None;
                    self.node_id = token.node_id().to_string();
                    self.token = Some(token.clone());
                    self.event(NodeEvent::Paired { token, gateway_url });
                    self.start_link(now);
                }
                PairingEvent::Rejected { reason } => {
                    self.pairing = None;
                    self.set_state(NodeState::Unpaired);
                    self.event(NodeEvent::PairingRejected { reason });
                }
                PairingEvent::Expired => {
                    self.pairing = None;
                    self.set_state(NodeState::Unpaired);
                    self.event(NodeEvent::PairingExpired);
                }
                PairingEvent::Refused { status, error } => {
                    self.pairing = None;
                    self.set_state(NodeState::Unpaired);
                    self.event(NodeEvent::RequestFailed(format!(
                        "the gateway refused the pairing request with status {status}: {error:?}"
                    )));
                }
                PairingEvent::RequestFailed { failure } => {
                    self.event(NodeEvent::RequestFailed(format!("pairing: {failure}")));
                }
            }
        }
        moved
    }

    fn drain_commands(&mut self, now: Instant) -> bool {
        let mut moved = false;
        while let Some(action) = self.commands.poll_action() {
            moved = true;
            match action {
                CommandAction::Execute(request) => {
                    self.outputs.push_back(NodeOutput::Execute(request));
                }
                CommandAction::Cancel { command_id, reason } => {
                    self.outputs
                        .push_back(NodeOutput::Cancel { command_id, reason });
                }
                CommandAction::Result(result) => self.send_result(now, result),
                CommandAction::Progress(progress) => {
                    if let Link::Hub(hub) = &mut self.link {
                        let _ = hub.send_call(now, NodeCall::CommandProgress(progress));
                    }
                }
                CommandAction::Event(event) => self.event(NodeEvent::Command(event)),
            }
        }
        moved
    }

    fn drain_link(&mut self, now: Instant) -> bool {
        let mut moved = false;
        loop {
            let link = self.link_id;
            let step = match &mut self.link {
                Link::Hub(hub) => hub.poll_output().map(Step::Hub),
                Link::Llm(llm) => llm.poll_output().map(Step::Llm),
                Link::Polling(polling) => polling
                    .poll_request()
                    .map(Step::PollingRequest)
                    .or_else(|| polling.poll_event().map(Step::Polling)),
                Link::None => None,
            };
            let Some(step) = step else {
                return moved;
            };
            moved = true;
            match step {
                Step::Hub(HubOutput::Http(call)) => {
                    let origin = match &self.link {
                        Link::Hub(hub) => hub.origin().to_string(),
                        _ => self.config.gateway_url.clone(),
                    };
                    self.http(Requester::Hub, &origin, call);
                }
                Step::Hub(HubOutput::OpenWebSocket { url, bearer }) => {
                    self.outputs.push_back(NodeOutput::OpenWebSocket {
                        link,
                        url,
                        bearer: Some(bearer),
                    });
                }
                Step::Hub(HubOutput::Send(frame)) | Step::Llm(LlmOutput::Send(frame)) => {
                    self.outputs.push_back(NodeOutput::Send { link, frame });
                }
                Step::Hub(HubOutput::Close { code, reason })
                | Step::Llm(LlmOutput::Close { code, reason }) => {
                    self.outputs
                        .push_back(NodeOutput::CloseWebSocket { link, code, reason });
                }
                Step::Hub(HubOutput::Event(event)) => self.on_hub_event(now, event),
                Step::Llm(LlmOutput::OpenWebSocket { url }) => {
                    self.outputs.push_back(NodeOutput::OpenWebSocket {
                        link,
                        url,
                        bearer: None,
                    });
                }
                Step::Llm(LlmOutput::Event(event)) => self.on_llm_event(now, event),
                Step::PollingRequest(call) => {
                    let base = self.config.gateway_url.clone();
                    self.http(Requester::Polling, &base, call);
                }
                Step::Polling(event) => self.on_polling_event(now, event),
            }
        }
    }

    fn on_hub_event(&mut self, now: Instant, event: HubEvent) {
        match event {
            HubEvent::Ready {
                protocol_version, ..
            } => {
                self.protocol_version = protocol_version.clone();
                self.set_state(NodeState::Ready);
                self.event(NodeEvent::Connected { protocol_version });
                self.on_link_ready(now);
            }
            HubEvent::Call(call) => self.on_gateway_call(now, call),
            HubEvent::ResultAcknowledged { .. } => {}
            HubEvent::ResultRefused {
                command_id, error, ..
            } => self.event(NodeEvent::PeerMisbehaved(format!(
                "the gateway refused the result of {command_id}: {error}"
            ))),
            HubEvent::PeerMisbehaved(what) => {
                self.event(NodeEvent::PeerMisbehaved(what.to_string()))
            }
            HubEvent::Ended(end) => {
                let unacknowledged = match &mut self.link {
                    Link::Hub(hub) => hub.take_unacknowledged(),
                    _ => Vec::new(),
                };
                self.requeue_front(unacknowledged);
                // Failures that will not heal by themselves get the refusal floor.
                let refused = matches!(
                    end,
                    LinkEnd::Unauthorized { .. }
                        | LinkEnd::HandshakeRejected(_)
                        | LinkEnd::NoSharedVersion { .. }
                        | LinkEnd::ClosedByGateway {
                            allow_reconnect: false,
                            ..
                        }
                );
                self.on_link_ended(now, end.to_string(), refused, true);
            }
        }
    }

    fn on_gateway_call(&mut self, now: Instant, call: GatewayCall) {
        match call {
            GatewayCall::ExecuteCommand(dto) => {
                let scopes = self.effective.clone();
                self.commands.receive(now, dto, &scopes);
            }
            GatewayCall::CancelCommand(dto) => {
                self.commands
                    .cancel(now, &dto.command_id, dto.reason.as_deref());
            }
            GatewayCall::RefreshScopes(scopes) => self.refresh_scopes(now, scopes),
            GatewayCall::RevokeAccess { reason } => self.revoke(now, reason),
        }
    }

    fn on_llm_event(&mut self, now: Instant, event: LlmEvent) {
        match event {
            LlmEvent::Open => {
                self.set_state(NodeState::Ready);
                self.event(NodeEvent::Connected {
                    protocol_version: "llm".to_string(),
                });
                self.on_link_ready(now);
            }
            LlmEvent::Task(task) => {
                let dto = ExecuteCommandDto {
                    command_id: task.id.to_string(),
                    command: LLM_COMMAND.to_string(),
                    params: Some(task_params(&task)),
                    timeout_ms: Some(
                        u64::try_from(self.config.llm_task_timeout.as_millis()).unwrap_or(u64::MAX),
                    ),
                    originated_by: None,
                    protocol_version: None,
                };
                let scopes = self.effective.clone();
                self.commands.receive(now, dto, &scopes);
            }
            LlmEvent::Stop { id } => self.commands.cancel(now, &id.to_string(), None),
            LlmEvent::PeerMisbehaved(what) => {
                self.event(NodeEvent::PeerMisbehaved(what.to_string()))
            }
            LlmEvent::Ended {
                end, active_tasks, ..
            } => {
                // The server forgets a connection's tasks: stop their executors.
                for id in active_tasks {
                    self.commands.cancel(now, &id.to_string(), None);
                }
                let refused = matches!(end, LlmEnd::Rejected { .. } | LlmEnd::Replaced { .. });
                self.on_link_ended(now, format!("{end:?}"), refused, true);
            }
        }
    }

    fn on_polling_event(&mut self, now: Instant, event: PollingEvent) {
        match event {
            PollingEvent::Commands {
                commands, scopes, ..
            } => {
                if let Some(scopes) = scopes {
                    self.refresh_scopes(now, scopes);
                }
                for dto in commands {
                    let scopes = self.effective.clone();
                    self.commands.receive(now, dto, &scopes);
                }
            }
            PollingEvent::Revoked { reason } => self.revoke(now, reason),
            PollingEvent::Unauthorized { .. } | PollingEvent::Forbidden { .. } => {
                let unsent = match &mut self.link {
                    Link::Polling(polling) => polling.take_queued_results(),
                    _ => Vec::new(),
                };
                self.requeue_front(unsent);
                self.on_link_ended(now, "unauthorized".to_string(), true, false);
            }
            PollingEvent::RequestFailed { failure, .. } => {
                self.event(NodeEvent::RequestFailed(format!("polling: {failure}")))
            }
            PollingEvent::ResultRefused {
                command_id, status, ..
            } => self.event(NodeEvent::PeerMisbehaved(format!(
                "the gateway refused the result of {command_id} with status {status}"
            ))),
            PollingEvent::ResultAccepted { .. } | PollingEvent::HeartbeatAccepted => {}
        }
    }

    fn event(&mut self, event: NodeEvent) {
        self.outputs.push_back(NodeOutput::Event(event));
    }
}

/// A result part waiting for a link, with its JSON size.
struct PendingPart {
    part: CommandResultDto,
    size: usize,
    /// An `internal_error` standing in for a result discarded for room: never discarded itself.
    stand_in: bool,
}

impl PendingPart {
    fn new(part: CommandResultDto, stand_in: bool) -> PendingPart {
        let size = serde_json::to_vec(&part).map_or(0, |bytes| bytes.len());
        PendingPart {
            part,
            size,
            stand_in,
        }
    }
}

enum Step {
    Hub(HubOutput),
    Llm(LlmOutput),
    PollingRequest(HttpCall),
    Polling(PollingEvent),
}

/// The params an `llm.chat` executor receives: the task's conversation and sampling settings,
/// with the dialect's defaults filled in.
fn task_params(task: &crate::wire::llm::Task) -> serde_json::Value {
    serde_json::json!({
        "system": task.system,
        "messages": task.messages.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
        "max_new_tokens": task.effective_max_new_tokens(),
        "temperature": task.effective_temperature(),
    })
}

/// A one-part `internal_error` result standing in for `result`.
fn internal_error(result: &CommandResultDto, message: String) -> CommandResultDto {
    CommandResultDto {
        command_id: result.command_id.clone(),
        ok: false,
        result: None,
        error: Some(CommandError {
            code: ErrorCode::InternalError,
            message,
            details: None,
            retry_after_ms: None,
        }),
        duration_ms: result.duration_ms,
        part_index: None,
        is_last: None,
        protocol_version: result.protocol_version.clone(),
    }
}
