//! What the LLM dialect's end-to-end tests share: a gateway with the dialect configured, our node
//! on the in-repo OpenAI backend, a raw WebSocket node, and user clients. Every wait is bounded.
#![allow(dead_code)] // each test file uses a subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{self, Message, WebSocket};
use nodelink::gateway::{RunningGateway, ServerConfig};
use nodelink::node::{spawn_node, NodeHandle, RuntimeConfig};
use nodelink_core::gateway::llm::LlmGatewayConfig;
use nodelink_core::node::executor::ExecutorSet;
use nodelink_core::node::{Dialect, Identity, NodeConfig};
use nodelink_core::wire::llm::ConnectParams;
use nodelink_worker_cuda::llm::{OpenAiChat, OpenAiConfig};
use serde_json::Value;

pub const NODE_TOKEN: &str = "llm-node-token";
pub const API_TOKEN: &str = "llm-user-token";
/// The bound of every wait in these tests.
pub const LIMIT: Duration = Duration::from_secs(5);

/// A fresh directory under the system's temp dir, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nodelink-llm-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway on 127.0.0.1:0 serving the LLM dialect with [`NODE_TOKEN`] and [`API_TOKEN`];
/// `tweak` shortens timers.
pub fn start_gateway(
    scratch: &Scratch,
    tweak: impl FnOnce(&mut LlmGatewayConfig),
) -> RunningGateway {
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().expect("an address"),
        scratch.0.join("gateway.db"),
    );
    config.threads = Some(2);
    config.llm.machine.shared_token = Some(NODE_TOKEN.into());
    config.llm.api_token = Some(API_TOKEN.into());
    tweak(&mut config.llm.machine);
    nodelink::gateway::start(config).expect("the gateway starts")
}

/// `ws://127.0.0.1:PORT/ws`.
pub fn ws_url(gateway: &RunningGateway) -> String {
    format!("ws://{}/ws", gateway.local_addr())
}

/// Our node, serving `model` as `name` from `backend_url`.
pub fn start_node(
    gateway: &RunningGateway,
    backend_url: &str,
    model: &str,
    name: &str,
    max_concurrency: u32,
) -> NodeHandle {
    start_node_with_token(
        gateway,
        backend_url,
        model,
        name,
        max_concurrency,
        NODE_TOKEN,
    )
}

/// [`start_node`] authenticating with `token` (a per-node token from pairing, say).
pub fn start_node_with_token(
    gateway: &RunningGateway,
    backend_url: &str,
    model: &str,
    name: &str,
    max_concurrency: u32,
    token: &str,
) -> NodeHandle {
    let params = ConnectParams {
        token: token.into(),
        model: model.into(),
        max_concurrency,
        name: name.into(),
    };
    let dialect = Dialect::Llm {
        server_url: ws_url(gateway),
        params,
    };
    let mut node = NodeConfig::new(gateway.url(), dialect, Identity::Unpaired { node_id: None });
    node.limits.slots = max_concurrency as usize;
    node.reconnect_base = Duration::from_millis(50);
    node.reconnect_cap = Duration::from_millis(200);
    let mut backend = OpenAiConfig::new(backend_url, model);
    backend.idle_timeout = LIMIT;
    let mut executors = ExecutorSet::new();
    executors.register(OpenAiChat::new(backend).expect("a valid backend"));
    spawn_node(RuntimeConfig::new(node), executors).expect("the node starts")
}

/// A chat body for `/api/chat` or `/v1/chat/completions`.
pub fn chat_body(model: &str, content: &str) -> Value {
    serde_json::json!({
        "model": model,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": content}],
        "max_new_tokens": 64,
        "temperature": 0.2
    })
}

/// A user's streaming request on a raw socket: lines as they come, and the socket to drop.
pub struct UserStream {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<String>,
    chunked: bool,
    content_length: Option<usize>,
    pending: Vec<u8>,
}

impl UserStream {
    /// POSTs `body` to `path` with `token` and reads the response head.
    pub fn open(gateway: &RunningGateway, path: &str, token: &str, body: &Value) -> UserStream {
        let stream = TcpStream::connect(gateway.local_addr()).expect("connect to the gateway");
        stream
            .set_read_timeout(Some(LIMIT))
            .expect("a read timeout");
        let body = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        (&stream)
            .write_all(request.as_bytes())
            .expect("send the request");
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("a status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a header line");
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            headers.push(line);
        }
        let chunked = headers.iter().any(|h| h == "transfer-encoding: chunked");
        let content_length = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok());
        UserStream {
            reader,
            status,
            headers,
            chunked,
            content_length,
            pending: Vec::new(),
        }
    }

    /// The next line of the body (the last one may lack its `\n`); `None` at its end.
    pub fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                return Some(String::from_utf8(line).expect("the gateway sends UTF-8"));
            }
            match self.next_chunk() {
                Some(mut chunk) => self.pending.append(&mut chunk),
                None if self.pending.is_empty() => return None,
                None => {
                    let rest = std::mem::take(&mut self.pending);
                    return Some(String::from_utf8(rest).expect("the gateway sends UTF-8"));
                }
            }
        }
    }

    /// The next piece of the body: a chunk, or the whole `content-length` body.
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if !self.chunked {
            let length = self.content_length.take()?;
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body).ok()?;
            return (!body.is_empty()).then_some(body);
        }
        let mut size = String::new();
        self.reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return None;
        }
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).ok()?;
        data.truncate(size);
        Some(data)
    }

    /// All the remaining lines.
    pub fn lines(mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next_line()).collect()
    }

    /// Goes away: closes the socket.
    pub fn leave(self) {
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

/// The texts of `{"o":..}` lines joined, and the final line.
pub fn ndjson_result(lines: &[String]) -> (String, Value) {
    let mut text = String::new();
    let mut last = Value::Null;
    for line in lines {
        let value: Value = serde_json::from_str(line).expect("each line is JSON");
        match value.get("o").and_then(Value::as_str) {
            Some(o) => {
                assert!(!o.is_empty(), "an empty text line");
                text.push_str(o);
            }
            None => last = value,
        }
    }
    (text, last)
}

/// A raw LLM node: tungstenite's blocking client.
pub struct RawNode {
    pub socket: WebSocket<TcpStream>,
}

impl RawNode {
    /// Dials `/ws` with `query` (already encoded).
    pub fn connect(gateway: &RunningGateway, query: &str) -> RawNode {
        let stream = TcpStream::connect(gateway.local_addr()).expect("connect to the gateway");
        stream
            .set_read_timeout(Some(LIMIT))
            .expect("a read timeout");
        let url = format!("{}?{query}", ws_url(gateway));
        let (socket, _) = tungstenite::client::client(url, stream).expect("the WebSocket opens");
        RawNode { socket }
    }

    /// Dials with the shared token as `model`/`name`.
    pub fn connect_as(gateway: &RunningGateway, model: &str, name: &str, max: u32) -> RawNode {
        RawNode::connect(
            gateway,
            &format!("token={NODE_TOKEN}&model={model}&max_concurrency={max}&name={name}"),
        )
    }

    /// The next text frame (a task or a stop), skipping pings.
    pub fn next_text(&mut self) -> Value {
        loop {
            match self.socket.read().expect("a frame from the gateway") {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("JSON from the gateway")
                }
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// Waits for the close; its code and reason.
    pub fn close_code(&mut self) -> (u16, String) {
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            match self.socket.read() {
                Ok(Message::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Ok(Message::Close(None)) => return (0, String::new()),
                Ok(_) => {}
                Err(e) => panic!("no close frame: {e}"),
            }
        }
        panic!("no close within {LIMIT:?}");
    }

    /// A result frame: `id` then `bytes` (the id alone is the finished frame).
    pub fn send_result(&mut self, id: u32, bytes: &[u8]) {
        let mut frame = id.to_be_bytes().to_vec();
        frame.extend_from_slice(bytes);
        self.socket
            .send(Message::Binary(frame.into()))
            .expect("send a result frame");
    }
}
