//! A deterministic world of real machines: one gateway machine and N node machines over a
//! simulated network (latency, per-direction FIFO), with simulated executors, a store that keeps
//! every persisted record, and a virtual clock that jumps to the next event (design.md section 4).
//! The gateway can be killed and restarted from its store; a node can be cut off.
#![allow(dead_code)] // each test file uses a subset

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nodelink_core::gateway::dispatch::CommandOutcome;
use nodelink_core::gateway::{
    ConnId, Gateway, GatewayConfig, GatewayEvent, GatewayInput, GatewayOutput, HttpRequest, Source,
    StoreRecord,
};
use nodelink_core::node::commands::Outcome;
use nodelink_core::node::http::{HttpError, HttpResponse};
use nodelink_core::node::{LinkId, Node, NodeConfig, NodeEvent, NodeInput, NodeOutput, RequestId};

use super::SimClock;

pub const GATEWAY_URL: &str = "https://gw.example.com";

/// What a simulated executor does: finish after a delay with one outcome per run (the last one
/// repeats), or never.
#[derive(Clone, Debug)]
pub enum Exec {
    Finish(Duration, Vec<Outcome>),
    Hang,
}

#[derive(Debug)]
enum Delivery {
    ToGateway(GatewayInput),
    ToNode(usize, NodeInput),
    Done(usize, String, Outcome),
}

/// What a connection id of the gateway stands for on the node side.
#[derive(Clone, Copy, Debug)]
enum Wire {
    Request(usize, RequestId),
    Socket(usize, LinkId),
}

pub struct SimNode {
    pub node: Node,
    pub name: String,
    pub execs: BTreeMap<String, Exec>,
    pub runs: BTreeMap<String, usize>,
    pub executed: Vec<(Instant, String)>,
    pub events: Vec<(Instant, NodeEvent)>,
    /// A node cut off: nothing in or out (its sockets stay "open" until a side times out).
    pub cut: bool,
}

pub struct World {
    pub clock: SimClock,
    pub now: Instant,
    pub latency: Duration,
    pub gateway: Gateway,
    pub config: GatewayConfig,
    pub nodes: Vec<SimNode>,
    pub store: Vec<StoreRecord>,
    pub finished: Vec<(Instant, String, CommandOutcome)>,
    pub gateway_events: Vec<(Instant, GatewayEvent)>,
    pub transcript: Vec<String>,
    queue: Vec<(Instant, u64, Delivery)>,
    seq: u64,
    next_conn: u64,
    wires: BTreeMap<u64, Wire>,
    sockets: BTreeMap<(usize, LinkId), ConnId>,
    restarts: u8,
}

impl World {
    pub fn new(config: GatewayConfig) -> World {
        let clock = SimClock::new();
        let now = clock.at(0.0);
        let gateway = Gateway::new(
            config.clone(),
            now,
            Duration::from_secs(1_764_000_000),
            [1; 32],
        )
        .expect("a valid gateway configuration");
        World {
            clock,
            now,
            latency: Duration::from_millis(5),
            gateway,
            config,
            nodes: Vec::new(),
            store: Vec::new(),
            finished: Vec::new(),
            gateway_events: Vec::new(),
            transcript: Vec::new(),
            queue: Vec::new(),
            seq: 0,
            next_conn: 0,
            wires: BTreeMap::new(),
            sockets: BTreeMap::new(),
            restarts: 0,
        }
    }

    pub fn t(&self) -> f64 {
        self.clock.secs(self.now)
    }

    fn log(&mut self, line: String) {
        let t = self.t();
        self.transcript.push(format!("{t:>9.3}s {line}"));
    }

    /// Adds a node; returns its index.
    pub fn add_node(&mut self, name: &str, config: NodeConfig, seed: u8) -> usize {
        let node = Node::new(config, self.now, [seed; 32]).expect("a valid node configuration");
        self.nodes.push(SimNode {
            node,
            name: name.to_string(),
            execs: BTreeMap::new(),
            runs: BTreeMap::new(),
            executed: Vec::new(),
            events: Vec::new(),
            cut: false,
        });
        let index = self.nodes.len() - 1;
        self.drain();
        index
    }

    fn schedule(&mut self, at: Instant, delivery: Delivery) {
        self.seq += 1;
        self.queue.push((at, self.seq, delivery));
    }

    fn conn(&mut self, wire: Wire) -> ConnId {
        self.next_conn += 1;
        self.wires.insert(self.next_conn, wire);
        ConnId(self.next_conn)
    }

    // -----------------------------------------------------------------------------------------
    // Driving

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.step(end) {}
        self.now = end;
    }

    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
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

    fn step(&mut self, end: Instant) -> bool {
        self.drain();
        let next_queue = self.queue.iter().map(|(at, seq, _)| (*at, *seq)).min();
        let gateway_timer = self.gateway.poll_timeout();
        let node_timer = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.node.poll_timeout().map(|at| (at, i)))
            .min();
        let next = [
            next_queue.map(|(at, _)| at),
            gateway_timer,
            node_timer.map(|(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(due) = next.filter(|at| *at <= end) else {
            return false;
        };
        // A deadline already past (restored from the store after a restart) is due now.
        let at = due.max(self.now);
        self.now = at;
        if let Some((_, seq)) = next_queue.filter(|(q, _)| *q == due) {
            let index = self
                .queue
                .iter()
                .position(|(_, s, _)| *s == seq)
                .expect("found");
            let (_, _, delivery) = self.queue.remove(index);
            match delivery {
                Delivery::ToGateway(input) => self.gateway.handle_input(at, input),
                Delivery::ToNode(i, input) => self.nodes[i].node.handle_input(at, input),
                Delivery::Done(i, id, outcome) => {
                    let _ = self.nodes[i].node.finish_command(at, &id, outcome);
                }
            }
        } else if gateway_timer == Some(due) {
            self.gateway.handle_timeout(at);
            if let Some(next) = self.gateway.poll_timeout() {
                assert!(
                    next > at,
                    "gateway: poll_timeout after handle_timeout must be later"
                );
            }
        } else if let Some((_, i)) = node_timer {
            self.nodes[i].node.handle_timeout(at);
            if let Some(next) = self.nodes[i].node.poll_timeout() {
                assert!(
                    next > at,
                    "node: poll_timeout after handle_timeout must be later"
                );
            }
        }
        self.drain();
        true
    }

    /// Handles every output of every machine until all are quiet.
    pub fn drain(&mut self) {
        loop {
            let mut moved = false;
            while let Some(output) = self.gateway.poll_output() {
                moved = true;
                self.gateway_output(output);
            }
            for i in 0..self.nodes.len() {
                while let Some(output) = self.nodes[i].node.poll_output() {
                    moved = true;
                    self.node_output(i, output);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn send_to_gateway(&mut self, from: usize, input: GatewayInput) {
        if self.nodes[from].cut {
            return;
        }
        let at = self.now + self.latency;
        self.schedule(at, Delivery::ToGateway(input));
    }

    fn send_to_node(&mut self, to: usize, input: NodeInput) {
        if self.nodes[to].cut {
            return;
        }
        let at = self.now + self.latency;
        self.schedule(at, Delivery::ToNode(to, input));
    }

    fn node_output(&mut self, i: usize, output: NodeOutput) {
        let source = Source(format!("10.0.0.{}", i + 1));
        match output {
            NodeOutput::Http { request, url, call } => {
                let target = url.strip_prefix(GATEWAY_URL).unwrap_or(&url).to_string();
                if self.nodes[i].cut {
                    // The shell's own timeout answers.
                    let at = self.now + Duration::from_secs(10);
                    let result = Err(HttpError("timed out".to_string()));
                    self.schedule(
                        at,
                        Delivery::ToNode(i, NodeInput::HttpResponse { request, result }),
                    );
                    return;
                }
                let conn = self.conn(Wire::Request(i, request));
                let request = HttpRequest {
                    method: call.method,
                    target,
                    authorization: call.bearer.map(|t| t.bearer()),
                    body: call.body.unwrap_or_default(),
                };
                self.send_to_gateway(
                    i,
                    GatewayInput::Http {
                        conn,
                        source,
                        request,
                    },
                );
            }
            NodeOutput::OpenWebSocket { link, url, bearer } => {
                let target = url
                    .strip_prefix("wss://gw.example.com")
                    .unwrap_or(&url)
                    .to_string();
                if self.nodes[i].cut {
                    let at = self.now + Duration::from_secs(10);
                    let failed = NodeInput::WebSocketFailed {
                        link,
                        status: None,
                        detail: "timed out".to_string(),
                    };
                    self.schedule(at, Delivery::ToNode(i, failed));
                    return;
                }
                let conn = self.conn(Wire::Socket(i, link));
                self.sockets.insert((i, link), conn);
                let request = HttpRequest {
                    method: nodelink_core::node::http::Method::Get,
                    target,
                    authorization: bearer.map(|t| t.bearer()),
                    body: Vec::new(),
                };
                self.send_to_gateway(
                    i,
                    GatewayInput::Upgrade {
                        conn,
                        source,
                        request,
                    },
                );
            }
            NodeOutput::Send { link, frame } => {
                if let Some(conn) = self.sockets.get(&(i, link)).copied() {
                    self.send_to_gateway(i, GatewayInput::Frame { conn, frame });
                }
            }
            NodeOutput::CloseWebSocket { link, code, .. } => {
                if let Some(conn) = self.sockets.remove(&(i, link)) {
                    self.send_to_gateway(
                        i,
                        GatewayInput::SocketClosed {
                            conn,
                            code: Some(code),
                        },
                    );
                }
            }
            NodeOutput::Execute(request) => {
                let name = self.nodes[i].name.clone();
                self.log(format!(
                    "{name}: execute {} {}",
                    request.command, request.command_id
                ));
                let node = &mut self.nodes[i];
                node.executed.push((self.now, request.command_id.clone()));
                let run = node.runs.entry(request.command.clone()).or_default();
                let exec = node
                    .execs
                    .get(&request.command)
                    .cloned()
                    .unwrap_or(Exec::Finish(
                        Duration::from_millis(1),
                        vec![Ok(serde_json::json!({"ok": true}))],
                    ));
                if let Exec::Finish(after, outcomes) = exec {
                    let outcome = outcomes[(*run).min(outcomes.len() - 1)].clone();
                    *run += 1;
                    let at = self.now + after;
                    self.schedule(at, Delivery::Done(i, request.command_id, outcome));
                }
            }
            NodeOutput::Cancel { command_id, .. } => {
                self.queue.retain(
                    |(_, _, d)| !matches!(d, Delivery::Done(n, id, _) if *n == i && *id == command_id),
                );
            }
            NodeOutput::Event(event) => {
                let name = self.nodes[i].name.clone();
                self.log(format!("{name}: {event:?}"));
                self.nodes[i].events.push((self.now, event));
            }
        }
    }

    fn gateway_output(&mut self, output: GatewayOutput) {
        match output {
            GatewayOutput::Reply { conn, reply } => {
                if let Some(Wire::Request(i, request)) = self.wires.remove(&conn.0) {
                    let result = Ok(HttpResponse {
                        status: reply.status,
                        body: reply.body,
                    });
                    self.send_to_node(i, NodeInput::HttpResponse { request, result });
                }
            }
            GatewayOutput::Upgrade { conn, result } => {
                if let Some(Wire::Socket(i, link)) = self.wires.get(&conn.0).copied() {
                    let input = match result {
                        Ok(()) => NodeInput::WebSocketOpened { link },
                        Err(reply) => {
                            self.sockets.remove(&(i, link));
                            NodeInput::WebSocketFailed {
                                link,
                                status: Some(reply.status),
                                detail: String::from_utf8_lossy(&reply.body).into_owned(),
                            }
                        }
                    };
                    self.send_to_node(i, input);
                }
            }
            GatewayOutput::Send { conn, frame } => {
                if let Some(Wire::Socket(i, link)) = self.wires.get(&conn.0).copied() {
                    if self.sockets.get(&(i, link)) == Some(&conn) {
                        self.send_to_node(i, NodeInput::Frame { link, frame });
                    }
                }
            }
            GatewayOutput::CloseSocket { conn, code, reason } => {
                if let Some(Wire::Socket(i, link)) = self.wires.get(&conn.0).copied() {
                    if self.sockets.remove(&(i, link)).is_some() {
                        self.send_to_node(
                            i,
                            NodeInput::WebSocketClosed {
                                link,
                                code: Some(code),
                                reason,
                            },
                        );
                    }
                }
            }
            GatewayOutput::Persist(record) => self.store.push(record),
            GatewayOutput::Finished {
                command_id,
                outcome,
                ..
            } => {
                self.log(format!(
                    "gw: finished {command_id} ok={} {:?}",
                    outcome.result.ok,
                    outcome.result.error.as_ref().map(|e| e.code.clone())
                ));
                self.finished
                    .push((self.now, command_id.to_string(), outcome));
            }
            GatewayOutput::Event(event) => {
                if !matches!(event, GatewayEvent::CommandStatus { .. }) {
                    self.log(format!("gw: {event:?}"));
                }
                self.gateway_events.push((self.now, event));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Faults

    /// The gateway process dies (SIGKILL): every socket breaks, requests in flight fail, and a new
    /// gateway starts from the store.
    pub fn restart_gateway(&mut self) {
        self.log("gw: killed and restarted".to_string());
        self.restarts += 1;
        for ((i, link), _) in std::mem::take(&mut self.sockets) {
            let closed = NodeInput::WebSocketClosed {
                link,
                code: Some(1006),
                reason: "connection reset".to_string(),
            };
            self.send_to_node(i, closed);
        }
        for (_, wire) in std::mem::take(&mut self.wires) {
            if let Wire::Request(i, request) = wire {
                let result = Err(HttpError("connection reset".to_string()));
                self.send_to_node(i, NodeInput::HttpResponse { request, result });
            }
        }
        self.queue
            .retain(|(_, _, d)| !matches!(d, Delivery::ToGateway(_)));
        let mut gateway = Gateway::new(
            self.config.clone(),
            self.now,
            Duration::from_secs(1_764_000_000) + self.now.duration_since(self.clock.origin),
            [1 + self.restarts; 32],
        )
        .expect("a valid gateway configuration");
        gateway
            .restore(self.now, self.store.clone())
            .expect("the store restores");
        self.gateway = gateway;
        self.drain();
    }

    /// Whether the gateway reported this event.
    pub fn gateway_saw(&self, pred: impl Fn(&GatewayEvent) -> bool) -> bool {
        self.gateway_events.iter().any(|(_, e)| pred(e))
    }

    pub fn outcome(&self, command_id: &str) -> Option<&CommandOutcome> {
        self.finished
            .iter()
            .find(|(_, id, _)| id == command_id)
            .map(|(_, _, o)| o)
    }

    pub fn finished_count(&self, command_id: &str) -> usize {
        self.finished
            .iter()
            .filter(|(_, id, _)| id == command_id)
            .count()
    }
}
