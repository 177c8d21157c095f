//! What the gateway server's tests share: a scratch directory, a gateway with short timers, and
//! a real `nodelink_core::node::Node` machine driven by a tiny blocking loop (ureq for REST,
//! tungstenite's blocking client for the hub) so that the tests need no node runtime.
#![allow(dead_code)] // each test file uses a subset

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::{self, Message, WebSocket};
use nodelink_core::node::commands::{CommandLimits, CommandSpec, ExecuteRequest};
use nodelink_core::node::http::{HttpError, HttpResponse, Method};
use nodelink_core::node::{
    Dialect, Identity, LinkId, Node, NodeConfig, NodeEvent, NodeInput, NodeOutput, NodeState,
    Transport, WsFrame,
};
use nodelink_core::wire::signalr::HubProtocol;

/// A fresh directory under the system's temp dir, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nodelink-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }

    pub fn db(&self) -> PathBuf {
        self.0.join("gateway.db")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway on 127.0.0.1:0 with its store in `scratch`, two executor threads.
pub fn start_gateway(scratch: &Scratch) -> nodelink::gateway::RunningGateway {
    let mut config = nodelink::gateway::ServerConfig::new(
        "127.0.0.1:0".parse().expect("an address"),
        scratch.db(),
    );
    config.threads = Some(2);
    nodelink::gateway::start(config).expect("the gateway starts")
}

/// A node configuration for `url`, JSON hub over WebSocket, with quick reconnects.
pub fn node_config(url: &str, node_id: &str) -> NodeConfig {
    let mut config = NodeConfig::new(
        url,
        Dialect::Hub {
            protocol: HubProtocol::Json,
            transport: Transport::WebSocket,
        },
        Identity::Unpaired {
            node_id: Some(node_id.to_string()),
        },
    );
    config.name = Some(format!("test {node_id}"));
    config.platform = "linux".to_string();
    config.version = "0.1.0".to_string();
    config.commands = vec![CommandSpec::new("echo"), CommandSpec::new("hang")];
    config.limits = CommandLimits {
        slots: 4,
        ..CommandLimits::default()
    };
    config.reconnect_base = Duration::from_millis(50);
    config.reconnect_cap = Duration::from_millis(200);
    config.refusal_floor = Duration::from_millis(200);
    config
}

/// A real node machine with real sockets, stepped by the test's thread. `echo` finishes at once
/// with `{"echo": params}`; `hang` never finishes.
pub struct TestNode {
    pub node: Node,
    pub events: Vec<NodeEvent>,
    pub executed: Vec<ExecuteRequest>,
    /// WebSocket messages sent that carry a result part (`partIndex`, in JSON or MessagePack).
    pub part_frames: usize,
    sockets: BTreeMap<LinkId, WebSocket<TcpStream>>,
    agent: ureq::Agent,
}

impl TestNode {
    pub fn new(config: NodeConfig, seed: u8) -> TestNode {
        let node = Node::new(config, Instant::now(), [seed; 32]).expect("a valid node config");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        TestNode {
            node,
            events: Vec::new(),
            executed: Vec::new(),
            part_frames: 0,
            sockets: BTreeMap::new(),
            agent,
        }
    }

    pub fn state(&self) -> NodeState {
        self.node.state()
    }

    /// The pairing code the node showed, if any.
    pub fn pairing_code(&self) -> Option<String> {
        self.events.iter().find_map(|e| match e {
            NodeEvent::PairingCode(code) => Some(code.clone()),
            _ => None,
        })
    }

    /// Steps until `done` or `limit`; whether `done` held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut TestNode) -> bool,
    ) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Runs for `d`, whatever happens.
    pub fn run_for(&mut self, d: Duration) {
        let _ = self.run_until(d, |_| false);
    }

    /// One turn: outputs, then each socket's pending message, then due timers.
    pub fn step(&mut self) {
        while let Some(output) = self.node.poll_output() {
            self.output(output);
        }
        let links: Vec<LinkId> = self.sockets.keys().copied().collect();
        for link in links {
            self.read(link);
        }
        if self.sockets.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
        let now = Instant::now();
        if self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.node.handle_timeout(now);
        }
    }

    fn output(&mut self, output: NodeOutput) {
        let now = Instant::now();
        match output {
            NodeOutput::Http { request, url, call } => {
                let mut builder = match call.method {
                    Method::Get => self.agent.get(&url).force_send_body(),
                    Method::Post => self.agent.post(&url),
                };
                if let Some(token) = &call.bearer {
                    builder = builder.header("authorization", &token.bearer());
                }
                let answer = builder
                    .header("content-type", "application/json")
                    .send(call.body.unwrap_or_default());
                let result = match answer {
                    Ok(mut response) => Ok(HttpResponse {
                        status: response.status().as_u16(),
                        body: response.body_mut().read_to_vec().unwrap_or_default(),
                    }),
                    Err(e) => Err(HttpError(e.to_string())),
                };
                self.node
                    .handle_input(now, NodeInput::HttpResponse { request, result });
            }
            NodeOutput::OpenWebSocket { link, url, bearer } => {
                let input = match open_socket(&url, bearer.map(|t| t.bearer())) {
                    Ok(socket) => {
                        self.sockets.insert(link, socket);
                        NodeInput::WebSocketOpened { link }
                    }
                    Err((status, detail)) => NodeInput::WebSocketFailed {
                        link,
                        status,
                        detail,
                    },
                };
                self.node.handle_input(Instant::now(), input);
            }
            NodeOutput::Send { link, frame } => {
                if frame.as_bytes().windows(9).any(|w| w == b"partIndex") {
                    self.part_frames += 1;
                }
                if let Some(socket) = self.sockets.get_mut(&link) {
                    let message = match frame {
                        WsFrame::Text(t) => Message::Text(t.into()),
                        WsFrame::Binary(b) => Message::Binary(b.into()),
                        WsFrame::Ping(p) => Message::Ping(p.into()),
                        WsFrame::Pong(p) => Message::Pong(p.into()),
                    };
                    if socket.send(message).is_err() {
                        self.closed(link, None, "send failed".into());
                    }
                }
            }
            NodeOutput::CloseWebSocket { link, code, reason } => {
                if let Some(mut socket) = self.sockets.remove(&link) {
                    let _ = socket.close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    }));
                    let _ = socket.flush();
                }
            }
            NodeOutput::Execute(request) => {
                self.executed.push(request.clone());
                if request.command != "hang" {
                    let outcome = Ok(serde_json::json!({ "echo": request.params }));
                    let _ = self.node.finish_command(now, &request.command_id, outcome);
                }
            }
            NodeOutput::Cancel { .. } => {}
            NodeOutput::Event(event) => self.events.push(event),
        }
    }

    fn read(&mut self, link: LinkId) {
        let Some(socket) = self.sockets.get_mut(&link) else {
            return;
        };
        let frame = match socket.read() {
            Ok(Message::Text(t)) => WsFrame::Text(t.as_str().to_owned()),
            Ok(Message::Binary(b)) => WsFrame::Binary(b.to_vec()),
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame
                    .map(|f| (Some(u16::from(f.code)), f.reason.as_str().to_owned()))
                    .unwrap_or((None, String::new()));
                self.closed(link, code, reason);
                return;
            }
            Ok(_) => return,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return
            }
            Err(e) => {
                self.closed(link, None, e.to_string());
                return;
            }
        };
        self.node
            .handle_input(Instant::now(), NodeInput::Frame { link, frame });
    }

    fn closed(&mut self, link: LinkId, code: Option<u16>, reason: String) {
        self.sockets.remove(&link);
        self.node.handle_input(
            Instant::now(),
            NodeInput::WebSocketClosed { link, code, reason },
        );
    }

    /// Drops every socket without a close frame (as a crash would); the node machine learns
    /// it at once (code 1006) and reconnects when stepped again.
    pub fn drop_sockets(&mut self) {
        let links: Vec<LinkId> = self.sockets.keys().copied().collect();
        for link in links {
            self.closed(link, Some(1006), "dropped by the test".into());
        }
    }
}

/// Opens a blocking WebSocket to `url` (ws://), with a short read timeout for stepping.
pub fn open_socket(
    url: &str,
    bearer: Option<String>,
) -> Result<WebSocket<TcpStream>, (Option<u16>, String)> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or((None, format!("not a ws:// URL: {url}")))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let stream = TcpStream::connect(host).map_err(|e| (None, e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| (None, e.to_string()))?;
    let mut request = url
        .into_client_request()
        .map_err(|e| (None, e.to_string()))?;
    if let Some(bearer) = bearer {
        let value = bearer
            .parse()
            .map_err(|_| (None, "bad header".to_string()))?;
        request.headers_mut().insert("authorization", value);
    }
    match tungstenite::client::client(request, stream) {
        Ok((socket, _)) => {
            socket
                .get_ref()
                .set_read_timeout(Some(Duration::from_millis(2)))
                .map_err(|e| (None, e.to_string()))?;
            Ok(socket)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => Err((
            Some(response.status().as_u16()),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => Err((None, e.to_string())),
    }
}

/// Pairs `node` against `gateway` through the operator API, with `scopes`; the node ends Ready.
pub fn pair_and_connect(
    node: &mut TestNode,
    client: &nodelink::gateway::OperatorClient,
    scopes: &[String],
) {
    assert!(
        node.run_until(Duration::from_secs(3), |n| n.pairing_code().is_some()),
        "the node shows a pairing code"
    );
    let code = node.pairing_code().expect("a code");
    let pending = client.pairings().expect("pairings");
    assert!(
        pending.iter().any(|p| p["code"] == code.as_str()),
        "the gateway lists the code: {pending:?}"
    );
    client.approve(&code, scopes).expect("approved");
    assert!(
        node.run_until(Duration::from_secs(5), |n| n.state() == NodeState::Ready),
        "the node connects: {:?}",
        node.events
    );
}

/// Pairs `node_id` over raw REST and approves it through the operator API; returns its token.
/// Faster than a node machine's 3 s pairing poll: the repeat only waits for the gateway's 1 s
/// limit on repeats (answered 429 until then).
pub fn pair_quickly(
    url: &str,
    client: &nodelink::gateway::OperatorClient,
    node_id: &str,
    scopes: &[String],
) -> nodelink_core::wire::rest::NodeToken {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let body = serde_json::json!({"nodeId": node_id, "pairingSecret": format!("secret-{node_id}-0123456789")});
    let pair = || -> (u16, serde_json::Value) {
        let mut response = agent
            .post(&format!("{url}/api/nodes/me/pair"))
            .header("content-type", "application/json")
            .send(body.to_string())
            .expect("the gateway answers");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or_default())
    };
    let (status, pending) = pair();
    assert_eq!(status, 200, "{pending}");
    let code = pending["pairingCode"]
        .as_str()
        .expect("a pairing code")
        .to_string();
    client.approve(&code, scopes).expect("approved");
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, answer) = pair();
        if status == 200 && answer["status"] == "approved" {
            let token = answer["token"].as_str().expect("a token");
            return token.parse().expect("a valid token");
        }
        assert!(Instant::now() < end, "no token: {status} {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node configuration with a token from an earlier pairing.
pub fn paired_config(url: &str, token: nodelink_core::wire::rest::NodeToken) -> NodeConfig {
    let mut config = node_config(url, "unused");
    config.identity = Identity::Paired(token);
    config
}
