//! The gateway's SignalR server side (core/src/gateway/hub): negotiate, upgrade, handshake,
//! framing, keep-alive, client timeout and stateful reconnect, at exact instants.
mod support;

#[path = "gateway_hub/interop.rs"]
mod interop;
#[path = "gateway_hub/lifecycle.rs"]
mod lifecycle;
#[path = "gateway_hub/messages.rs"]
mod messages;
#[path = "gateway_hub/negotiate.rs"]
mod negotiate;
#[path = "gateway_hub/props.rs"]
mod props;
#[path = "gateway_hub/raw_heartbeats.rs"]
mod raw_heartbeats;
#[path = "gateway_hub/stateful.rs"]
mod stateful;
#[path = "gateway_hub/wire.rs"]
mod wire;

use std::time::Instant;

use nodelink_core::gateway::hub::{
    DisconnectReason, HubServer, HubServerConfig, HubServerEvent, HubServerOutput, WsFrame,
};
use nodelink_core::gateway::{ConnId, HttpReply};
use nodelink_core::rng::Rng;
use nodelink_core::wire::contract::GatewayCall;
use nodelink_core::wire::dto::{ExecuteCommandDto, HeartbeatDto};
use nodelink_core::wire::signalr::framing::RecordDecoder;
use nodelink_core::wire::signalr::negotiate::{NegotiateResponse, NegotiatedConnection};
use nodelink_core::wire::signalr::{Headers, HubMessage, HubProtocol, Invocation, Payload};
use support::{decode_frame, SimClock};

// ---------------------------------------------------------------------------------------------
// Helpers

const NODE: &str = "abc123";
const BOTH: [HubProtocol; 2] = [HubProtocol::Json, HubProtocol::MessagePack];

/// What one input produced: outputs for the shell and events for the gateway machine.
#[derive(Debug, Default)]
struct Step {
    out: Vec<HubServerOutput>,
    events: Vec<HubServerEvent>,
}

impl Step {
    fn is_empty(&self) -> bool {
        self.out.is_empty() && self.events.is_empty()
    }

    /// The frames sent on `conn`.
    fn frames(&self, conn: ConnId) -> Vec<WsFrame> {
        self.out
            .iter()
            .filter_map(|o| match o {
                HubServerOutput::Send { conn: c, frame } if *c == conn => Some(frame.clone()),
                _ => None,
            })
            .collect()
    }

    /// The Text frames sent on `conn`, shown as in the spec (`\x1e` escaped).
    fn texts(&self, conn: ConnId) -> Vec<String> {
        self.frames(conn)
            .iter()
            .map(|f| support::text(f.as_bytes()))
            .collect()
    }

    /// Every message sent on `conn` after its handshake, decoded (and checked whole).
    fn messages(&self, conn: ConnId, protocol: HubProtocol) -> Vec<HubMessage> {
        self.frames(conn)
            .iter()
            .flat_map(|f| decode_frame(protocol, f).unwrap())
            .collect()
    }

    fn closes(&self) -> Vec<(ConnId, u16, String)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                HubServerOutput::CloseSocket { conn, code, reason } => {
                    Some((*conn, *code, reason.clone()))
                }
                _ => None,
            })
            .collect()
    }
}

/// A server driven by a virtual clock, drained after every input.
struct Sim {
    clock: SimClock,
    server: HubServer,
    rng: Rng,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(HubServerConfig::default())
    }

    fn with(config: HubServerConfig) -> Sim {
        Sim {
            clock: SimClock::new(),
            server: HubServer::new(config).unwrap(),
            rng: Rng::from_seed([7; 32]),
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.clock.at(secs)
    }

    fn drain(&mut self) -> Step {
        Step {
            out: std::iter::from_fn(|| self.server.poll_output()).collect(),
            events: std::iter::from_fn(|| self.server.poll_event()).collect(),
        }
    }

    fn negotiate(&mut self, secs: f64, query: &str) -> HttpReply {
        let now = self.at(secs);
        let reply = self.server.negotiate(now, NODE, query, &mut self.rng);
        assert!(self.drain().is_empty(), "negotiate only answers");
        reply
    }

    /// Negotiates (version 1) and answers the connection token.
    fn negotiate_token(&mut self, secs: f64, query: &str) -> String {
        let reply = self.negotiate(secs, query);
        assert_eq!(reply.status, 200);
        connection(&reply).connection_token.unwrap()
    }

    fn open(&mut self, secs: f64, conn: u64, query: &str) -> Result<Step, HttpReply> {
        self.open_as(secs, conn, NODE, query)
    }

    fn open_as(
        &mut self,
        secs: f64,
        conn: u64,
        node: &str,
        query: &str,
    ) -> Result<Step, HttpReply> {
        let now = self.at(secs);
        self.server.open_socket(now, ConnId(conn), node, query)?;
        Ok(self.drain())
    }

    fn frame(&mut self, secs: f64, conn: u64, frame: WsFrame) -> Step {
        self.server.handle_frame(self.at(secs), ConnId(conn), frame);
        self.drain()
    }

    /// `messages` in one frame of `protocol` from the node on `conn`.
    fn node_sends(
        &mut self,
        secs: f64,
        conn: u64,
        protocol: HubProtocol,
        messages: &[HubMessage],
    ) -> Step {
        self.frame(secs, conn, frame_of(protocol, messages))
    }

    fn timeout(&mut self, secs: f64) -> Step {
        self.server.handle_timeout(self.at(secs));
        self.drain()
    }

    fn closed(&mut self, secs: f64, conn: u64, code: Option<u16>) -> Step {
        self.server.socket_closed(self.at(secs), ConnId(conn), code);
        self.drain()
    }

    fn send(&mut self, secs: f64, conn: u64, call: &GatewayCall) -> Step {
        self.server.send(self.at(secs), ConnId(conn), call).unwrap();
        self.drain()
    }

    /// A skip-negotiation socket `conn` opened and its handshake accepted, both at `secs`.
    fn connected(&mut self, secs: f64, conn: u64, protocol: HubProtocol) {
        self.open(secs, conn, "").unwrap();
        let step = self.frame(secs, conn, handshake(protocol, 1));
        assert_eq!(step.texts(ConnId(conn)), vec!["{}\\x1e"]);
        assert_eq!(
            step.events,
            vec![HubServerEvent::Connected {
                conn: ConnId(conn),
                node: NODE.into(),
                protocol,
                stateful: false
            }]
        );
    }

    fn poll_timeout_secs(&self) -> Option<f64> {
        self.server.poll_timeout().map(|at| self.clock.secs(at))
    }
}

fn connection(reply: &HttpReply) -> NegotiatedConnection {
    match NegotiateResponse::decode(&reply.body).unwrap() {
        NegotiateResponse::Connection(connection) => connection,
        other => panic!("not a connection: {other:?}"),
    }
}

fn body(reply: &HttpReply) -> String {
    String::from_utf8(reply.body.clone()).unwrap()
}

fn handshake(protocol: HubProtocol, version: u32) -> WsFrame {
    WsFrame::Text(format!(
        "{{\"protocol\":\"{}\",\"version\":{version}}}\u{1e}",
        protocol.name()
    ))
}

fn text(s: &str) -> WsFrame {
    WsFrame::Text(s.to_owned())
}

/// `messages` encoded in one frame of `protocol`.
fn frame_of(protocol: HubProtocol, messages: &[HubMessage]) -> WsFrame {
    let mut bytes = Vec::new();
    for message in messages {
        protocol.encode(message, &mut bytes).unwrap();
    }
    match protocol {
        HubProtocol::Json => WsFrame::Text(String::from_utf8(bytes).unwrap()),
        HubProtocol::MessagePack => WsFrame::Binary(bytes),
    }
}

fn heartbeat_dto() -> HeartbeatDto {
    HeartbeatDto {
        node_id: NODE.to_owned(),
        status: "online".to_owned(),
        uptime: 3600,
        platform: "linux".to_owned(),
        version: "0.1.0".to_owned(),
        cpu_percent: 2.5,
        memory_mb: 45,
        capabilities: None,
    }
}

/// A fire-and-forget `Heartbeat` invocation as the node sends it.
fn heartbeat(protocol: HubProtocol) -> HubMessage {
    invocation(protocol, None, "Heartbeat", &heartbeat_dto())
}

fn invocation<T: serde::Serialize>(
    protocol: HubProtocol,
    id: Option<&str>,
    target: &str,
    argument: &T,
) -> HubMessage {
    HubMessage::Invocation(Invocation {
        headers: Headers::new(),
        invocation_id: id.map(str::to_owned),
        target: target.to_owned(),
        arguments: vec![Payload::encode(protocol, argument).unwrap()],
        stream_ids: Vec::new(),
    })
}

fn execute(command_id: &str) -> GatewayCall {
    GatewayCall::ExecuteCommand(ExecuteCommandDto {
        command_id: command_id.to_owned(),
        command: "system.info".to_owned(),
        params: None,
        timeout_ms: Some(30_000),
        originated_by: None,
        protocol_version: Some("2026-04-01".to_owned()),
    })
}

/// The `Disconnected` events of a step: (conn, reason, will_resume).
fn disconnects(step: &Step) -> Vec<(ConnId, DisconnectReason, bool)> {
    step.events
        .iter()
        .filter_map(|e| match e {
            HubServerEvent::Disconnected {
                conn,
                reason,
                will_resume,
                ..
            } => Some((*conn, reason.clone(), *will_resume)),
            _ => None,
        })
        .collect()
}
