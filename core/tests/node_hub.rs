//! The node's SignalR link (core/src/node/hub): negotiate, WebSocket, handshake, Hello, keep-alive,
//! acknowledged results, control before bulk; timing asserted at exact instants.
mod support;

#[path = "node_hub/connecting.rs"]
mod connecting;
#[path = "node_hub/props.rs"]
mod props;
#[path = "node_hub/receiving.rs"]
mod receiving;
#[path = "node_hub/sending.rs"]
mod sending;

use std::time::Instant;

use nodelink_core::node::http::{HttpCall, HttpError, HttpResponse, Method};
use nodelink_core::node::hub::{
    split_origin, HubConfig, HubConfigError, HubEvent, HubLink, HubOutput, HubState, HubUsageError,
    LinkEnd, PeerError, WsFrame, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR,
};
use nodelink_core::wire::contract::{GatewayCall, NodeCall};
use nodelink_core::wire::dto::{CommandResultDto, ExecuteCommandDto, HeartbeatDto, HelloAckDto};
use nodelink_core::wire::rest::NodeToken;
use nodelink_core::wire::signalr::{CompletionOutcome, Headers, HubMessage, HubProtocol, Payload};
use support::{decode_frame, SimClock};

// ---------------------------------------------------------------------------------------------
// Helpers

const HUB: &str = "https://gw.example.com/hubs/node";
const NEGOTIATE_V1: &str = r#"{"negotiateVersion":1,"connectionId":"n1Ab5Y0yGjWW2qKcHdEfWQ","connectionToken":"Dk4r8bQxJm3WdUkvXg2N7A","availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}]}"#;
const WS_URL: &str = "wss://gw.example.com/hubs/node?id=Dk4r8bQxJm3WdUkvXg2N7A";
const BOTH: [HubProtocol; 2] = [HubProtocol::Json, HubProtocol::MessagePack];

fn token() -> NodeToken {
    NodeToken::parse("abc123.s3cret").unwrap()
}

fn config(protocol: HubProtocol) -> HubConfig {
    HubConfig::new(HUB, protocol, token())
}

/// A link driven by a virtual clock, outputs drained after every input.
struct Sim {
    clock: SimClock,
    link: HubLink,
    protocol: HubProtocol,
}

impl Sim {
    fn new(protocol: HubProtocol) -> Sim {
        Sim::with(config(protocol))
    }

    fn with(config: HubConfig) -> Sim {
        Sim {
            clock: SimClock::new(),
            protocol: config.protocol,
            link: HubLink::new(config).unwrap(),
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.clock.at(secs)
    }

    fn drain(&mut self) -> Vec<HubOutput> {
        std::iter::from_fn(|| self.link.poll_output()).collect()
    }

    fn connect(&mut self, secs: f64) -> Vec<HubOutput> {
        self.link.connect(self.at(secs)).unwrap();
        self.drain()
    }

    fn http(&mut self, secs: f64, status: u16, body: &str) -> Vec<HubOutput> {
        let response = HttpResponse {
            status,
            body: body.as_bytes().to_vec(),
        };
        self.link.handle_http_response(self.at(secs), Ok(response));
        self.drain()
    }

    fn opened(&mut self, secs: f64) -> Vec<HubOutput> {
        self.link.handle_ws_opened(self.at(secs));
        self.drain()
    }

    fn frame(&mut self, secs: f64, frame: WsFrame) -> Vec<HubOutput> {
        self.link.handle_frame(self.at(secs), frame);
        self.drain()
    }

    /// The gateway sends `messages` in one frame.
    fn gateway(&mut self, secs: f64, messages: &[HubMessage]) -> Vec<HubOutput> {
        let frame = gateway_frame(self.protocol, messages);
        self.frame(secs, frame)
    }

    fn timeout(&mut self, secs: f64) -> Vec<HubOutput> {
        self.link.handle_timeout(self.at(secs));
        self.drain()
    }

    fn send_call(&mut self, secs: f64, call: NodeCall) -> Vec<HubOutput> {
        self.link.send_call(self.at(secs), call).unwrap();
        self.drain()
    }

    fn send_result(&mut self, secs: f64, part: CommandResultDto) -> Vec<HubOutput> {
        self.link.send_result(self.at(secs), part).unwrap();
        self.drain()
    }

    /// Connect at 0 s, negotiate answered at 1 s, socket open at 2 s, handshake accepted at 3 s
    /// (Hello out), Hello answered at 4 s: ready, nothing else pending.
    fn ready(protocol: HubProtocol) -> Sim {
        let mut sim = Sim::new(protocol);
        sim.ready_at(0.0);
        sim
    }

    fn ready_at(&mut self, start: f64) {
        self.connect(start);
        self.http(start + 1.0, 200, NEGOTIATE_V1);
        self.opened(start + 2.0);
        self.frame(start + 3.0, handshake_ok());
        let ack = hello_ack(self.protocol, "1", "2026-04-01");
        let out = self.gateway(start + 4.0, &[ack]);
        assert_eq!(
            events(&out),
            vec![HubEvent::Ready {
                protocol_version: "2026-04-01".to_owned(),
                negotiated: true
            }]
        );
        assert!(self.link.is_ready());
    }
}

fn handshake_ok() -> WsFrame {
    WsFrame::Text("{}\u{1e}".to_owned())
}

/// `messages` encoded by the gateway in one frame of `protocol`.
fn gateway_frame(protocol: HubProtocol, messages: &[HubMessage]) -> WsFrame {
    let mut bytes = Vec::new();
    for message in messages {
        protocol.encode(message, &mut bytes).unwrap();
    }
    match protocol {
        HubProtocol::Json => WsFrame::Text(String::from_utf8(bytes).unwrap()),
        HubProtocol::MessagePack => WsFrame::Binary(bytes),
    }
}

fn completion(id: &str, outcome: CompletionOutcome) -> HubMessage {
    HubMessage::Completion {
        headers: Headers::new(),
        invocation_id: id.to_owned(),
        outcome,
    }
}

fn void_completion(id: &str) -> HubMessage {
    completion(id, CompletionOutcome::Void)
}

fn hello_ack(protocol: HubProtocol, id: &str, version: &str) -> HubMessage {
    let ack = HelloAckDto {
        protocol_version: version.to_owned(),
    };
    completion(
        id,
        CompletionOutcome::Result(Payload::encode(protocol, &ack).unwrap()),
    )
}

fn execute(protocol: HubProtocol, command_id: &str) -> HubMessage {
    GatewayCall::ExecuteCommand(execute_dto(command_id))
        .to_message(protocol, None)
        .unwrap()
}

fn execute_dto(command_id: &str) -> ExecuteCommandDto {
    ExecuteCommandDto {
        command_id: command_id.to_owned(),
        command: "system.info".to_owned(),
        params: None,
        timeout_ms: Some(30_000),
        originated_by: None,
        protocol_version: Some("2026-04-01".to_owned()),
    }
}

fn heartbeat() -> HeartbeatDto {
    HeartbeatDto {
        node_id: "abc123".to_owned(),
        status: "online".to_owned(),
        uptime: 3600,
        platform: "windows".to_owned(),
        version: "1.0.0".to_owned(),
        cpu_percent: 2.5,
        memory_mb: 45,
        capabilities: None,
    }
}

fn part(command_id: &str, part_index: Option<u32>) -> CommandResultDto {
    CommandResultDto {
        command_id: command_id.to_owned(),
        ok: true,
        result: Some(serde_json::json!({ "hostname": "build-01" })),
        error: None,
        duration_ms: Some(234),
        part_index,
        is_last: part_index.map(|_| false),
        protocol_version: Some("2026-04-01".to_owned()),
    }
}

fn events(outputs: &[HubOutput]) -> Vec<HubEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            HubOutput::Event(event) => Some(event.clone()),
            _ => None,
        })
        .collect()
}

fn frames(outputs: &[HubOutput]) -> Vec<WsFrame> {
    outputs
        .iter()
        .filter_map(|o| match o {
            HubOutput::Send(frame) => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

/// Every hub message sent in `outputs` (all after the handshake), in order.
fn sent(protocol: HubProtocol, outputs: &[HubOutput]) -> Vec<HubMessage> {
    frames(outputs)
        .iter()
        .flat_map(|frame| decode_frame(protocol, frame).unwrap())
        .collect()
}

/// The target and invocation id of each Invocation, "Ping" for pings, "Completion <id>" ...
fn summary(messages: &[HubMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            HubMessage::Invocation(inv) => match &inv.invocation_id {
                Some(id) => format!("{}#{id}", inv.target),
                None => inv.target.clone(),
            },
            HubMessage::Completion { invocation_id, .. } => format!("Completion#{invocation_id}"),
            HubMessage::Ping => "Ping".to_owned(),
            HubMessage::Close { .. } => "Close".to_owned(),
            other => format!("type {}", other.message_type()),
        })
        .collect()
}

fn ended(outputs: &[HubOutput]) -> Option<LinkEnd> {
    events(outputs).into_iter().find_map(|e| match e {
        HubEvent::Ended(end) => Some(end),
        _ => None,
    })
}

fn closes(outputs: &[HubOutput]) -> Vec<(u16, String)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            HubOutput::Close { code, reason } => Some((*code, reason.clone())),
            _ => None,
        })
        .collect()
}
