//! A scriptable OpenAI-compatible streaming server for tests and benchmarks: what an LLM node's
//! backend (vLLM, llama.cpp's server, Ollama) looks like on the wire, on 127.0.0.1 with std
//! threads.
//!
//! `POST /v1/chat/completions` answers with the current [`Reply`]: server-sent events in chunked
//! transfer encoding, one `chat.completion.chunk` per token, `data: [DONE]` at the end (or a
//! whole `chat.completion` when the request has `"stream": false`). Between tokens the server
//! waits by reading its socket, so it notices at once when the client goes away, and records it
//! ([`StreamLog`]): that is how a test proves a stop reached the backend.
//!
//! This file depends on std and serde_json only, so that crates which cannot depend on
//! `nodelink-tests` (worker-cuda's tests: it would make a cycle) include it with `#[path]`.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What the server answers to the next chat requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Streams `tokens`, `delay` before each, then a finish chunk and `[DONE]`.
    Tokens {
        tokens: Vec<String>,
        delay: Duration,
    },
    /// Streams the last message's content back, one character per token.
    Echo { delay: Duration },
    /// Streams `tokens`, then an error event (`{"error":{"message":..}}`), and ends.
    FailAfter {
        tokens: Vec<String>,
        message: String,
    },
    /// Streams `tokens`, then closes the connection without a finish chunk or `[DONE]`.
    DropAfter { tokens: Vec<String> },
    /// Answers `status` with an OpenAI error body carrying `message`.
    Status { status: u16, message: String },
}

impl Reply {
    /// `n` tokens `t0 `, `t1 `, .. with `delay` before each.
    pub fn counting(n: usize, delay: Duration) -> Reply {
        Reply::Tokens {
            tokens: (0..n).map(|i| format!("t{i} ")).collect(),
            delay,
        }
    }
}

/// How the server writes its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Framing {
    /// Escape every non-ASCII character as `\uXXXX` (surrogate pairs above U+FFFF), as Python's
    /// `json.dumps` does by default.
    pub ascii_escape: bool,
    /// Write each event in pieces of this many bytes, flushed one by one (splitting lines and
    /// multibyte characters across TCP segments).
    pub piece_bytes: Option<usize>,
    /// Answer a whole `chat.completion` even when the request asks for a stream (as a server
    /// without streaming support would).
    pub ignore_stream: bool,
}

/// One streamed answer, as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLog {
    /// Token events written.
    pub tokens_sent: usize,
    /// The client closed its side before the stream was complete.
    pub client_gone: bool,
    /// When the server stopped writing (complete, or the client went away).
    pub ended_at: Instant,
}

#[derive(Default)]
struct Shared {
    reply: Mutex<Option<Reply>>,
    framing: Mutex<Framing>,
    requests: Mutex<Vec<Value>>,
    auth: Mutex<Vec<Option<String>>>,
    logs: Mutex<Vec<StreamLog>>,
    log_changed: Condvar,
    stopping: AtomicBool,
}

/// The running server; stops when dropped.
pub struct OpenAiBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl OpenAiBackend {
    /// Listens on 127.0.0.1 (port 0) and answers every request with `reply`.
    pub fn start(reply: Reply) -> io::Result<OpenAiBackend> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        *lock(&shared.reply) = Some(reply);
        let accept = Arc::clone(&shared);
        thread::Builder::new()
            .name("openai-backend".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&accept);
                    let _ = thread::Builder::new()
                        .name("openai-backend-conn".into())
                        .spawn(move || {
                            let _ = serve(stream, &shared);
                        });
                }
            })?;
        Ok(OpenAiBackend { addr, shared })
    }

    /// The API base to give a node: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the next requests with `reply`.
    pub fn set_reply(&self, reply: Reply) {
        *lock(&self.shared.reply) = Some(reply);
    }

    pub fn set_framing(&self, framing: Framing) {
        *lock(&self.shared.framing) = framing;
    }

    /// The JSON bodies of the chat requests received, in order.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.requests).clone()
    }

    /// The `Authorization` header of each chat request.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        lock(&self.shared.auth).clone()
    }

    /// The streams that have ended, in the order they ended.
    pub fn logs(&self) -> Vec<StreamLog> {
        lock(&self.shared.logs).clone()
    }

    /// Waits up to `timeout` until `n` streams have ended; their logs, or `None` on timeout.
    pub fn wait_for_logs(&self, n: usize, timeout: Duration) -> Option<Vec<StreamLog>> {
        let deadline = Instant::now() + timeout;
        let mut logs = lock(&self.shared.logs);
        while logs.len() < n {
            let left = deadline.checked_duration_since(Instant::now())?;
            logs = match self.shared.log_changed.wait_timeout(logs, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Some(logs.clone())
    }
}

impl Drop for OpenAiBackend {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One connection: one request, one answer, then close.
fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0usize;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; content_length.min(16 << 20)];
    reader.read_exact(&mut body)?;
    let mut out = stream;
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    if !request_line.starts_with("POST ") || path != "/v1/chat/completions" {
        return respond(
            &mut out,
            404,
            &json!({"error": {"message": format!("no route {path}")}}),
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return respond(
            &mut out,
            400,
            &json!({"error": {"message": "body is not JSON"}}),
        );
    };
    lock(&shared.requests).push(request.clone());
    lock(&shared.auth).push(authorization);
    let reply = lock(&shared.reply).clone();
    let framing = lock(&shared.framing).clone();
    let (tokens, delay, ending) = match reply {
        Some(Reply::Tokens { tokens, delay }) => (tokens, delay, Ending::Done),
        Some(Reply::Echo { delay }) => {
            let last = request["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .chars()
                .map(String::from)
                .collect();
            (last, delay, Ending::Done)
        }
        Some(Reply::FailAfter { tokens, message }) => {
            (tokens, Duration::ZERO, Ending::Error(message))
        }
        Some(Reply::DropAfter { tokens }) => (tokens, Duration::ZERO, Ending::Drop),
        Some(Reply::Status { status, message }) => {
            return respond(
                &mut out,
                status,
                &json!({"error": {"message": message, "type": "test"}}),
            );
        }
        None => {
            return respond(
                &mut out,
                503,
                &json!({"error": {"message": "no reply scripted"}}),
            )
        }
    };
    if request["stream"] != json!(true) || framing.ignore_stream {
        let content: String = tokens.concat();
        let answer = json!({
            "id": "chatcmpl-test", "object": "chat.completion", "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]
        });
        return respond(&mut out, 200, &answer);
    }
    out.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    )?;
    let model = request["model"].clone();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut sent = 0usize;
    let mut gone = false;
    let send = |out: &mut TcpStream, data: &str| -> io::Result<()> {
        write_event(out, &format!("data: {data}\n\n"), &framing)
    };
    let mut result = send(
        &mut out,
        &encode(
            &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            &framing,
        ),
    );
    for token in &tokens {
        if result.is_err() {
            break;
        }
        if !delay.is_zero() && client_left(&mut reader, delay) {
            gone = true;
            break;
        }
        result = send(
            &mut out,
            &encode(&chunk(json!({"content": token}), Value::Null), &framing),
        );
        if result.is_ok() {
            sent += 1;
        }
    }
    if result.is_err() {
        gone = true;
    }
    if !gone {
        result = match &ending {
            Ending::Done => send(
                &mut out,
                &encode(&chunk(json!({}), json!("stop")), &framing),
            )
            .and_then(|()| send(&mut out, "[DONE]"))
            .and_then(|()| out.write_all(b"0\r\n\r\n")),
            Ending::Error(message) => send(
                &mut out,
                &json!({"error": {"message": message}}).to_string(),
            )
            .and_then(|()| out.write_all(b"0\r\n\r\n")),
            Ending::Drop => Ok(()),
        };
        gone = result.is_err();
    }
    if !gone && ending != Ending::Drop {
        // The client reads to the end and closes; a client that went away already is gone.
        let _ = out.flush();
    }
    let mut logs = lock(&shared.logs);
    logs.push(StreamLog {
        tokens_sent: sent,
        client_gone: gone,
        ended_at: Instant::now(),
    });
    shared.log_changed.notify_all();
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ending {
    Done,
    Error(String),
    Drop,
}

/// Waits `delay` by reading the socket: true when the client closed its side (or the socket
/// failed) meanwhile.
fn client_left(reader: &mut BufReader<TcpStream>, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return false;
        };
        if reader.get_ref().set_read_timeout(Some(left)).is_err() {
            return true;
        }
        let mut byte = [0u8; 64];
        match reader.read(&mut byte) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// One SSE event as an HTTP chunk, written whole or in pieces.
fn write_event(out: &mut TcpStream, event: &str, framing: &Framing) -> io::Result<()> {
    let mut bytes = format!("{:x}\r\n", event.len()).into_bytes();
    bytes.extend_from_slice(event.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    match framing.piece_bytes {
        Some(n) if n > 0 => {
            for piece in bytes.chunks(n) {
                out.write_all(piece)?;
                out.flush()?;
            }
            Ok(())
        }
        _ => {
            out.write_all(&bytes)?;
            out.flush()
        }
    }
}

fn encode(value: &Value, framing: &Framing) -> String {
    let text = value.to_string();
    if !framing.ascii_escape {
        return text;
    }
    // Non-ASCII only occurs inside JSON strings, where `\uXXXX` means the same.
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn respond(out: &mut TcpStream, status: u16, body: &Value) -> io::Result<()> {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())?;
    out.flush()
}
