//! A deterministic simulation of one node machine against a scripted gateway (design.md
//! section 4): a virtual clock that jumps to the next event, a network with latency and
//! partitions, simulated executors, and a transcript of everything that crossed the wire.
//!
//! The gateway side is a script built on the wire layer (until the gateway machine exists): it
//! answers negotiate, the handshake and `Hello`, acknowledges every result, pings every 15 s, and
//! lets a test send any gateway call, close or drop the socket, or answer pairing and polling.
#![allow(dead_code)] // each test file uses a subset

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nodelink_core::node::commands::Outcome;
use nodelink_core::node::http::{HttpCall, HttpError, HttpResponse};
use nodelink_core::node::{LinkId, Node, NodeConfig, NodeEvent, NodeInput, NodeOutput, WsFrame};
use nodelink_core::wire::contract::{
    answer_hello, GatewayCall, NodeCall, SUPPORTED_PROTOCOL_VERSIONS,
};
use nodelink_core::wire::dto::{CommandResultDto, ExecuteCommandDto, HeartbeatDto};
use nodelink_core::wire::llm::ResultFrame;
use nodelink_core::wire::rest::{parse_command_result_path, CommandResultBody, CommandsResponse};
use nodelink_core::wire::signalr::framing::RecordDecoder;
use nodelink_core::wire::signalr::handshake::{HandshakeRequest, HandshakeResponse};
use nodelink_core::wire::signalr::negotiate::{
    AvailableTransport, NegotiateResponse, NegotiatedConnection,
};
use nodelink_core::wire::signalr::{CompletionOutcome, Headers, HubMessage, HubProtocol};
use serde_json::Value;

use super::SimClock;

/// How long the simulated shell waits for an HTTP answer or a WebSocket upgrade.
pub const SHELL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the simulated executor does with a command.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Finish after this long with this outcome.
    Finish(Duration, Outcome),
    /// Never finish (until cancelled or timed out).
    Hang,
}

/// Something in flight on the simulated network or in an executor.
#[derive(Debug)]
enum Pending {
    ToNode(NodeInput),
    ToGateway(LinkId, WsFrame),
    ExecutorDone(String, Outcome),
}

/// One socket as the scripted gateway sees it.
struct GatewaySocket {
    decoder: RecordDecoder,
    protocol: Option<HubProtocol>,
    last_sent: Instant,
    next_invocation: u64,
}

/// How the scripted gateway answers pairing requests: `pending` this many times, then `then`.
#[derive(Clone, Debug)]
pub struct PairingScript {
    pub pending: usize,
    pub then: HttpResponse,
}

pub struct Sim {
    pub clock: SimClock,
    pub now: Instant,
    pub node: Node,
    /// One-way latency of every message and HTTP answer.
    pub latency: Duration,
    /// While set, new HTTP requests and WebSocket upgrades time out, and frames on open sockets
    /// are held (TCP retransmits) until [`Sim::heal`] or until a side gives the socket up.
    partitioned: bool,
    held: Vec<Pending>,
    /// Executors by command name; unknown names finish at once with `{"ok":true}`.
    pub behaviours: BTreeMap<String, Behaviour>,
    /// Whether the gateway acknowledges results (a void Completion per part).
    pub ack_results: bool,
    /// Whether the gateway sends keep-alive Pings.
    pub gateway_pings: bool,
    /// Answer to the WebSocket upgrade: `None` accepts, `Some(status)` refuses.
    pub refuse_upgrade: Option<u16>,
    pub pairing: Option<PairingScript>,
    /// Commands the polling endpoint hands out at the next GET.
    pub poll_commands: Vec<ExecuteCommandDto>,
    /// LLM dialect: text frames from the node (heartbeats) and result frames, decoded.
    pub llm_text: Vec<(Instant, String)>,
    pub llm_results: Vec<(Instant, u32, Option<String>)>,
    pub transcript: Vec<String>,
    pub events: Vec<(Instant, NodeEvent)>,
    pub executed: Vec<(Instant, String)>,
    pub cancelled: Vec<(Instant, String)>,
    pub heartbeats: Vec<(Instant, HeartbeatDto)>,
    pub results: Vec<(Instant, CommandResultDto)>,
    /// Other node -> gateway calls and messages, decoded.
    pub received: Vec<(Instant, HubMessage)>,
    pub http_requests: Vec<(Instant, String, HttpCall)>,
    queue: Vec<(Instant, u64, Pending)>,
    seq: u64,
    sockets: BTreeMap<LinkId, GatewaySocket>,
    llm_links: Vec<LinkId>,
    current_link: Option<LinkId>,
    pairing_answers: usize,
}

impl Sim {
    pub fn new(config: NodeConfig, seed: u8) -> Sim {
        let clock = SimClock::new();
        let now = clock.at(0.0);
        let node = Node::new(config, now, [seed; 32]).expect("a valid configuration");
        let sim = Sim {
            clock,
            now,
            node,
            latency: Duration::from_millis(10),
            partitioned: false,
            held: Vec::new(),
            behaviours: BTreeMap::new(),
            ack_results: true,
            gateway_pings: true,
            refuse_upgrade: None,
            pairing: None,
            poll_commands: Vec::new(),
            llm_text: Vec::new(),
            llm_results: Vec::new(),
            transcript: Vec::new(),
            events: Vec::new(),
            executed: Vec::new(),
            cancelled: Vec::new(),
            heartbeats: Vec::new(),
            results: Vec::new(),
            received: Vec::new(),
            http_requests: Vec::new(),
            queue: Vec::new(),
            seq: 0,
            sockets: BTreeMap::new(),
            llm_links: Vec::new(),
            current_link: None,
            pairing_answers: 0,
        };
        // The node's first outputs are handled by the first run, after the test has set the
        // script up.
        sim
    }

    /// Seconds since the start, for assertions and the transcript.
    pub fn t(&self) -> f64 {
        self.clock.secs(self.now)
    }

    fn log(&mut self, line: String) {
        let t = self.t();
        self.transcript.push(format!("{t:>9.3}s {line}"));
    }

    fn schedule(&mut self, at: Instant, pending: Pending) {
        self.seq += 1;
        self.queue.push((at, self.seq, pending));
    }

    fn send_to_node(&mut self, input: NodeInput) {
        if self.partitioned {
            self.held.push(Pending::ToNode(input));
            return;
        }
        let at = self.now + self.latency;
        self.schedule(at, Pending::ToNode(input));
    }

    /// Cuts the network between node and gateway (see the `partitioned` field).
    pub fn partition(&mut self) {
        self.partitioned = true;
        self.log("net: partitioned".to_string());
    }

    /// Ends a partition: held frames arrive, in order, after one latency.
    pub fn heal(&mut self) {
        if !self.partitioned {
            return;
        }
        self.partitioned = false;
        self.log("net: healed".to_string());
        let at = self.now + self.latency;
        for pending in std::mem::take(&mut self.held) {
            self.schedule(at, pending);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Driving

    /// Runs until `d` of simulated time has passed.
    pub fn run_for(&mut self, d: Duration) {
        self.drain_node();
        let end = self.now + d;
        while self.step(end) {}
        self.now = end;
    }

    /// Runs until `done` holds (checked after every event) or `limit` passes; returns whether
    /// it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        self.drain_node();
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(end) {
                self.now = end;
                return done(self);
            }
        }
    }

    /// Advances to the next event at or before `end` and handles it; false when there is none.
    fn step(&mut self, end: Instant) -> bool {
        let next_queue = self.queue.iter().map(|(at, seq, _)| (*at, *seq)).min();
        let next_timer = self.node.poll_timeout();
        let next_ping = self.next_gateway_ping();
        let next = [next_queue.map(|(at, _)| at), next_timer, next_ping]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next.filter(|at| *at <= end) else {
            return false;
        };
        assert!(at >= self.now, "time never goes backwards");
        self.now = at;
        if let Some((q_at, seq)) = next_queue.filter(|(q_at, _)| *q_at == at) {
            let _ = q_at;
            let index = self
                .queue
                .iter()
                .position(|(_, s, _)| *s == seq)
                .expect("the entry just found");
            let (_, _, pending) = self.queue.remove(index);
            match pending {
                Pending::ToNode(input) => {
                    self.node.handle_input(at, input);
                }
                Pending::ToGateway(link, frame) => self.gateway_receive(link, frame),
                Pending::ExecutorDone(id, outcome) => {
                    let _ = self.node.finish_command(at, &id, outcome);
                }
            }
        } else if next_ping == Some(at) {
            self.gateway_ping();
        } else {
            self.node.handle_timeout(at);
            if let Some(next) = self.node.poll_timeout() {
                assert!(
                    next > at,
                    "poll_timeout after handle_timeout({at:?}) must be later"
                );
            }
        }
        self.drain_node();
        true
    }

    fn drain_node(&mut self) {
        while let Some(output) = self.node.poll_output() {
            self.handle_output(output);
        }
    }

    fn handle_output(&mut self, output: NodeOutput) {
        match output {
            NodeOutput::Http { url, call, request } => {
                self.log(format!("node -> gw  {} {url}", call.method.as_str()));
                self.http_requests
                    .push((self.now, url.clone(), call.clone()));
                if self.partitioned {
                    // The shell's own timeout answers a request that got no answer.
                    let at = self.now + SHELL_TIMEOUT;
                    let result = Err(HttpError("timed out".to_string()));
                    self.schedule(
                        at,
                        Pending::ToNode(NodeInput::HttpResponse { request, result }),
                    );
                    return;
                }
                let response = self.gateway_http(&url, &call);
                let input = NodeInput::HttpResponse {
                    request,
                    result: response,
                };
                let at = self.now + self.latency * 2;
                self.schedule(at, Pending::ToNode(input));
            }
            NodeOutput::OpenWebSocket { link, url, .. } => {
                self.log(format!("node -> gw  open {url}"));
                if self.partitioned {
                    let at = self.now + SHELL_TIMEOUT;
                    let detail = "timed out".to_string();
                    let failed = NodeInput::WebSocketFailed {
                        link,
                        status: None,
                        detail,
                    };
                    self.schedule(at, Pending::ToNode(failed));
                    return;
                }
                let input = match self.refuse_upgrade {
                    Some(status) => NodeInput::WebSocketFailed {
                        link,
                        status: Some(status),
                        detail: format!("HTTP {status}"),
                    },
                    None => {
                        self.sockets.insert(
                            link,
                            GatewaySocket {
                                decoder: RecordDecoder::new(usize::MAX),
                                protocol: None,
                                last_sent: self.now,
                                next_invocation: 0,
                            },
                        );
                        self.current_link = Some(link);
                        if url.contains("/ws?") {
                            self.llm_links.push(link);
                        }
                        NodeInput::WebSocketOpened { link }
                    }
                };
                let at = self.now + self.latency * 2;
                self.schedule(at, Pending::ToNode(input));
            }
            NodeOutput::Send { link, frame } => {
                if self.partitioned {
                    self.held.push(Pending::ToGateway(link, frame));
                    return;
                }
                let at = self.now + self.latency;
                self.schedule(at, Pending::ToGateway(link, frame));
            }
            NodeOutput::CloseWebSocket { link, code, reason } => {
                self.log(format!("node -> gw  close {code} {reason}"));
                self.sockets.remove(&link);
            }
            NodeOutput::Execute(request) => {
                self.log(format!(
                    "node: execute {} {}",
                    request.command, request.command_id
                ));
                self.executed.push((self.now, request.command_id.clone()));
                let behaviour =
                    self.behaviours
                        .get(&request.command)
                        .cloned()
                        .unwrap_or(Behaviour::Finish(
                            Duration::ZERO,
                            Ok(serde_json::json!({"ok": true})),
                        ));
                if let Behaviour::Finish(after, outcome) = behaviour {
                    let at = self.now + after;
                    self.schedule(at, Pending::ExecutorDone(request.command_id, outcome));
                }
            }
            NodeOutput::Cancel { command_id, reason } => {
                self.log(format!("node: cancel {command_id} ({reason:?})"));
                self.cancelled.push((self.now, command_id.clone()));
                // A cancelled executor never finishes.
                self.queue.retain(
                    |(_, _, p)| !matches!(p, Pending::ExecutorDone(id, _) if *id == command_id),
                );
            }
            NodeOutput::Event(event) => {
                self.log(format!("node: {event:?}"));
                self.events.push((self.now, event));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The scripted gateway

    fn gateway_http(
        &mut self,
        url: &str,
        call: &HttpCall,
    ) -> Result<HttpResponse, nodelink_core::node::http::HttpError> {
        if url.contains("/negotiate") {
            let body = NegotiateResponse::Connection(NegotiatedConnection {
                negotiate_version: 1,
                connection_id: format!("conn-{}", self.seq),
                connection_token: Some(format!("token-{}", self.seq)),
                use_stateful_reconnect: false,
                available_transports: vec![AvailableTransport::websockets()],
            })
            .encode();
            return Ok(HttpResponse { status: 200, body });
        }
        if url.ends_with("/api/nodes/me/pair") {
            let script = self
                .pairing
                .clone()
                .expect("a pairing script for a pairing test");
            self.pairing_answers += 1;
            let answer = if self.pairing_answers <= script.pending {
                HttpResponse {
                    status: 200,
                    body: br#"{"status":"pending","pairingCode":"ABC-123"}"#.to_vec(),
                }
            } else {
                script.then
            };
            return Ok(answer);
        }
        let path = url.split_once("://").map_or(url, |(_, rest)| rest);
        let path = path.find('/').map_or("", |at| &path[at..]);
        if path == "/api/nodes/me/commands" {
            let commands = std::mem::take(&mut self.poll_commands);
            let body = serde_json::to_vec(&CommandsResponse {
                commands,
                scopes: None,
            })
            .expect("encodes");
            return Ok(HttpResponse { status: 200, body });
        }
        if path == "/api/nodes/me/heartbeat" {
            let heartbeat: HeartbeatDto =
                serde_json::from_slice(call.body.as_deref().unwrap_or_default())
                    .expect("a heartbeat");
            self.log("node -> gw  REST heartbeat".to_string());
            self.heartbeats.push((self.now, heartbeat));
            return Ok(HttpResponse {
                status: 204,
                body: Vec::new(),
            });
        }
        if let Ok(command_id) = parse_command_result_path(path) {
            let body = CommandResultBody::from_json(call.body.as_deref().unwrap_or_default())
                .expect("a result body");
            let result = body.into_dto(command_id);
            self.log(format!(
                "node -> gw  REST result {} ok={}",
                result.command_id, result.ok
            ));
            self.results.push((self.now, result));
            return Ok(HttpResponse {
                status: 204,
                body: Vec::new(),
            });
        }
        Ok(HttpResponse {
            status: 404,
            body: br#"{"error":"not_found","message":"no such endpoint in the script"}"#.to_vec(),
        })
    }

    fn gateway_receive(&mut self, link: LinkId, frame: WsFrame) {
        if self.llm_links.contains(&link) {
            match frame {
                WsFrame::Text(text) => self.llm_text.push((self.now, text)),
                WsFrame::Binary(bytes) => {
                    let decoded = ResultFrame::decode(&bytes).expect("a valid result frame");
                    self.log(format!(
                        "node -> server  result {} {:?}",
                        decoded.id, decoded.text
                    ));
                    self.llm_results
                        .push((self.now, decoded.id, decoded.text.map(str::to_owned)));
                }
                WsFrame::Ping(_) | WsFrame::Pong(_) => {}
            }
            return;
        }
        let Some(socket) = self.sockets.get_mut(&link) else {
            return;
        };
        match &frame {
            WsFrame::Text(text) => socket.decoder.push(text.as_bytes()),
            WsFrame::Binary(bytes) => socket.decoder.push(bytes),
            WsFrame::Ping(_) | WsFrame::Pong(_) => return,
        }
        let mut messages = Vec::new();
        let mut handshake = None;
        loop {
            if socket.protocol.is_none() {
                match socket.decoder.next_record() {
                    Ok(Some(record)) => {
                        let request = HandshakeRequest::decode(record).expect("a valid handshake");
                        let protocol = HubProtocol::from_name(&request.protocol).expect("known");
                        socket.protocol = Some(protocol);
                        socket.decoder.set_protocol(protocol);
                        handshake = Some(request);
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => panic!("node sent a bad handshake: {e}"),
                }
            }
            match socket.decoder.next_message() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(e) => panic!("node sent a bad record: {e}"),
            }
        }
        if let Some(request) = handshake {
            self.log(format!(
                "node -> gw  handshake {} v{}",
                request.protocol, request.version
            ));
            let mut out = Vec::new();
            HandshakeResponse::Accepted.encode(&mut out);
            self.gateway_send_raw(link, WsFrame::Text(String::from_utf8(out).expect("JSON")));
        }
        for message in messages {
            self.gateway_handle(link, message);
        }
    }

    fn gateway_handle(&mut self, link: LinkId, message: HubMessage) {
        match &message {
            HubMessage::Invocation(invocation) => {
                let call = NodeCall::from_invocation(invocation).expect("a valid node call");
                match (&call, &invocation.invocation_id) {
                    (NodeCall::Hello(hello), Some(id)) => {
                        self.log(format!("node -> gw  Hello {:?}", hello.protocol_versions));
                        let protocol = self.sockets[&link].protocol.expect("after handshake");
                        let outcome = answer_hello(protocol, hello, &SUPPORTED_PROTOCOL_VERSIONS)
                            .expect("encodes");
                        self.gateway_send(
                            link,
                            HubMessage::Completion {
                                headers: Headers::new(),
                                invocation_id: id.clone(),
                                outcome,
                            },
                        );
                    }
                    (NodeCall::Heartbeat(heartbeat), _) => {
                        self.log("node -> gw  Heartbeat".to_string());
                        self.heartbeats.push((self.now, heartbeat.clone()));
                    }
                    (NodeCall::CommandResult(result), id) => {
                        self.log(format!(
                            "node -> gw  CommandResult {} ok={} part={:?} last={:?}",
                            result.command_id, result.ok, result.part_index, result.is_last
                        ));
                        self.results.push((self.now, result.clone()));
                        if let (true, Some(id)) = (self.ack_results, id) {
                            self.gateway_send(
                                link,
                                HubMessage::Completion {
                                    headers: Headers::new(),
                                    invocation_id: id.clone(),
                                    outcome: CompletionOutcome::Void,
                                },
                            );
                        }
                    }
                    (other, _) => {
                        self.log(format!("node -> gw  {}", other.target()));
                        self.received.push((self.now, message.clone()));
                    }
                }
            }
            HubMessage::Ping => {}
            other => {
                self.log(format!("node -> gw  {other:?}"));
                self.received.push((self.now, message.clone()));
            }
        }
    }

    fn gateway_send(&mut self, link: LinkId, message: HubMessage) {
        let Some(protocol) = self.sockets.get(&link).and_then(|s| s.protocol) else {
            return;
        };
        let mut out = Vec::new();
        protocol.encode(&message, &mut out).expect("encodes");
        let frame = match protocol {
            HubProtocol::Json => WsFrame::Text(String::from_utf8(out).expect("JSON")),
            HubProtocol::MessagePack => WsFrame::Binary(out),
        };
        self.gateway_send_raw(link, frame);
    }

    fn gateway_send_raw(&mut self, link: LinkId, frame: WsFrame) {
        if let Some(socket) = self.sockets.get_mut(&link) {
            socket.last_sent = self.now;
        }
        self.send_to_node(NodeInput::Frame { link, frame });
    }

    fn next_gateway_ping(&self) -> Option<Instant> {
        if !self.gateway_pings {
            return None;
        }
        self.sockets
            .values()
            .filter(|s| s.protocol.is_some())
            .map(|s| s.last_sent + Duration::from_secs(15))
            .min()
    }

    fn gateway_ping(&mut self) {
        let due: Vec<LinkId> = self
            .sockets
            .iter()
            .filter(|(_, s)| {
                s.protocol.is_some() && s.last_sent + Duration::from_secs(15) <= self.now
            })
            .map(|(link, _)| *link)
            .collect();
        for link in due {
            self.gateway_send(link, HubMessage::Ping);
        }
    }

    /// The gateway invokes a call on the node's current socket (fire-and-forget).
    pub fn gateway_call(&mut self, call: GatewayCall) {
        assert!(self.try_gateway_call(call), "no open socket to call on");
    }

    /// [`Sim::gateway_call`] when the gateway has a socket with a completed handshake; false
    /// (and nothing sent) otherwise.
    pub fn try_gateway_call(&mut self, call: GatewayCall) -> bool {
        let Some(link) = self
            .current_link
            .filter(|l| self.sockets.get(l).is_some_and(|s| s.protocol.is_some()))
        else {
            return false;
        };
        let protocol = self.sockets[&link].protocol.expect("after handshake");
        self.log(format!("gw -> node  {}", call.target()));
        let message = call.to_message(protocol, None).expect("encodes");
        self.gateway_send(link, message);
        self.drain_node();
        true
    }

    /// LLM dialect: the server sends a text frame (a task or a stop) on the current socket.
    pub fn server_text(&mut self, text: &str) {
        let link = self.current_link.expect("an open socket");
        self.log(format!("server -> node  {text}"));
        self.send_to_node(NodeInput::Frame {
            link,
            frame: WsFrame::Text(text.to_string()),
        });
        self.drain_node();
    }

    /// The gateway sends a Close message on the current socket.
    pub fn gateway_close(&mut self, error: Option<&str>, allow_reconnect: Option<bool>) {
        if let Some(link) = self.current_link {
            self.gateway_send(
                link,
                HubMessage::Close {
                    error: error.map(str::to_owned),
                    allow_reconnect,
                },
            );
        }
    }

    /// The gateway's socket goes away without a Close message (a crash, a network cut).
    pub fn drop_socket(&mut self) {
        if let Some(link) = self.current_link.take() {
            self.sockets.remove(&link);
            self.log("gw: socket dropped".to_string());
            self.send_to_node(NodeInput::WebSocketClosed {
                link,
                code: Some(1006),
                reason: "abnormal closure".to_string(),
            });
        }
    }

    /// The gateway's view: whether the node has a socket with a completed handshake.
    pub fn gateway_connected(&self) -> bool {
        self.current_link
            .and_then(|l| self.sockets.get(&l))
            .is_some_and(|s| s.protocol.is_some())
    }

    pub fn results_for(&self, command_id: &str) -> Vec<&CommandResultDto> {
        self.results
            .iter()
            .filter(|(_, r)| r.command_id == command_id)
            .map(|(_, r)| r)
            .collect()
    }

    pub fn has_event(&self, pred: impl Fn(&NodeEvent) -> bool) -> bool {
        self.events.iter().any(|(_, e)| pred(e))
    }

    /// The reconnect delays the node chose, in order (one per `Disconnected`).
    pub fn retry_delays(&self) -> Vec<Duration> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                NodeEvent::Disconnected { retry_in, .. } => Some(*retry_in),
                _ => None,
            })
            .collect()
    }

    /// The instants of the heartbeats, in seconds.
    pub fn heartbeat_times(&self) -> Vec<f64> {
        self.heartbeats
            .iter()
            .map(|(at, _)| self.clock.secs(*at))
            .collect()
    }

    pub fn json(value: &str) -> Value {
        serde_json::from_str(value).expect("valid JSON")
    }
}
