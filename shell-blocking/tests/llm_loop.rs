//! The blocking loop against a tungstenite server thread on loopback, in the LLM dialect (one
//! WebSocket, no HTTP): opening (plain and wss:// with a private CA), frames both ways, executor
//! threads reporting through the channel + waker (streamed text, results), cancellation, the
//! reconnect after a server close, and a clean close on stop. The hub dialect and HTTP are
//! exercised end to end against the real gateway in `tests/tests/blocking_node.rs`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use nodelink_blocking::{spawn, NodeHandle, NodeOptions};
use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome};
use nodelink_core::node::executor::{Executor, ExecutorSet, RunContext};
use nodelink_core::node::{Dialect, Identity, NodeConfig, LLM_COMMAND};
use nodelink_core::wire::llm::{ChatMessage, ConnectParams, ResultFrame, ServerFrame, Task};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

const LIMIT: Duration = Duration::from_secs(5);

/// Streams "hello " and "world" through the context, or waits for a cancel when asked to.
struct Chat {
    cancelled: Arc<AtomicBool>,
}

impl Executor for Chat {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new(LLM_COMMAND)
    }

    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        let prompt = request.params.to_string();
        if prompt.contains("panic") {
            panic!("this executor panics on purpose");
        }
        if prompt.contains("wait for stop") {
            let until = Instant::now() + LIMIT;
            while !context.is_cancelled() && Instant::now() < until {
                thread::sleep(Duration::from_millis(5));
            }
            self.cancelled
                .store(context.is_cancelled(), Ordering::SeqCst);
            return Ok(serde_json::Value::Null);
        }
        context.stream_text("hello ");
        context.stream_text("world");
        Ok(serde_json::Value::Null)
    }
}

fn options(url: String, cancelled: Arc<AtomicBool>) -> NodeOptions {
    let params = ConnectParams {
        token: "t0ken".into(),
        model: "tiny".into(),
        max_concurrency: 2,
        name: "n1".into(),
    };
    let dialect = Dialect::Llm {
        server_url: url,
        params,
    };
    let mut config = NodeConfig::new("", dialect, Identity::Unpaired { node_id: None });
    config.reconnect_base = Duration::from_millis(50);
    config.reconnect_cap = Duration::from_millis(100);
    let mut executors = ExecutorSet::new();
    executors.register(Chat { cancelled });
    let mut options = NodeOptions::new(config, executors);
    options.connect_timeout = LIMIT;
    options
}

fn task(id: u32, text: &str) -> Message {
    let task = Task::new(id, vec![ChatMessage::new("user", text)]);
    Message::text(ServerFrame::Task(task).encode())
}

/// Reads until a non-heartbeat message comes (heartbeats are empty text frames).
fn next<S: Read + Write>(ws: &mut WebSocket<S>) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) if t.is_empty() => continue,
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(message) => return message,
            Err(e) => panic!("the test server's read failed: {e}"),
        }
    }
}

/// Collects the task's text until its finished frame.
fn collect_result<S: Read + Write>(ws: &mut WebSocket<S>, id: u32) -> String {
    let mut text = String::new();
    loop {
        let Message::Binary(bytes) = next(ws) else {
            panic!("expected a binary result frame");
        };
        let frame = ResultFrame::decode(&bytes).expect("a valid result frame");
        assert_eq!(frame.id, id);
        match frame.text {
            None => return text,
            Some(piece) => text.push_str(piece),
        }
    }
}

fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Accepts one WebSocket and checks the LLM dialect's query parameters arrived.
#[allow(clippy::result_large_err)] // the callback's error type is tungstenite's
fn accept(listener: &TcpListener) -> WebSocket<TcpStream> {
    let (tcp, _) = listener.accept().unwrap();
    tcp.set_read_timeout(Some(LIMIT)).unwrap();
    let (tx, rx) = mpsc::channel();
    let ws = tungstenite::accept_hdr(
        tcp,
        |request: &tungstenite::handshake::server::Request, response| {
            let _ = tx.send(request.uri().to_string());
            Ok(response)
        },
    )
    .unwrap();
    let uri = rx.recv().unwrap();
    assert!(
        uri.starts_with("/ws?") && uri.contains("model=tiny") && uri.contains("name=n1"),
        "{uri}"
    );
    ws
}

fn stop(node: NodeHandle) {
    let result = node.stop().expect("the loop ends without error");
    assert_eq!(result, nodelink_blocking::Exit::Stopped);
}

#[test]
fn a_task_streams_its_text_from_the_executor_thread_and_finishes() {
    let (listener, port) = listener();
    let node = spawn(options(format!("ws://127.0.0.1:{port}/ws"), Arc::default())).unwrap();
    let mut ws = accept(&listener);
    ws.send(task(7, "hi")).unwrap();
    assert_eq!(collect_result(&mut ws, 7), "hello world");
    // A second task on the same socket: the loop keeps serving.
    ws.send(task(8, "again")).unwrap();
    assert_eq!(collect_result(&mut ws, 8), "hello world");
    stop(node);
}

#[test]
fn a_panicking_executor_still_finishes_its_task_and_the_node_serves_on() {
    let (listener, port) = listener();
    let node = spawn(options(format!("ws://127.0.0.1:{port}/ws"), Arc::default())).unwrap();
    let mut ws = accept(&listener);
    ws.send(task(4, "panic")).unwrap();
    assert_eq!(collect_result(&mut ws, 4), "");
    ws.send(task(5, "hi")).unwrap();
    assert_eq!(collect_result(&mut ws, 5), "hello world");
    stop(node);
}

#[test]
fn a_stop_from_the_server_cancels_the_running_executor() {
    let (listener, port) = listener();
    let cancelled = Arc::new(AtomicBool::new(false));
    let node = spawn(options(
        format!("ws://127.0.0.1:{port}/ws"),
        cancelled.clone(),
    ))
    .unwrap();
    let mut ws = accept(&listener);
    ws.send(task(3, "wait for stop")).unwrap();
    // Give the executor thread time to start, then stop the task.
    thread::sleep(Duration::from_millis(100));
    ws.send(Message::text(ServerFrame::Stop { id: 3 }.encode()))
        .unwrap();
    let until = Instant::now() + LIMIT;
    while !cancelled.load(Ordering::SeqCst) {
        assert!(Instant::now() < until, "the executor never saw the cancel");
        thread::sleep(Duration::from_millis(10));
    }
    stop(node);
}

#[test]
fn the_node_reconnects_after_the_server_closes_and_closes_with_1000_on_stop() {
    let (listener, port) = listener();
    let node = spawn(options(format!("ws://127.0.0.1:{port}/ws"), Arc::default())).unwrap();
    let mut first = accept(&listener);
    first
        .close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "restarting".into(),
        }))
        .unwrap();
    // Drive the close handshake; the node answers and drops the socket.
    while first.read().is_ok() {}
    let mut second = accept(&listener);
    second.send(task(1, "hi")).unwrap();
    assert_eq!(collect_result(&mut second, 1), "hello world");
    node.stopper().stop();
    match next(&mut second) {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close frame, got {other:?}"),
    }
    stop(node);
}

#[test]
fn a_refused_connection_is_retried_until_the_server_is_up() {
    // Bind, note the port, and drop the listener: the first attempts are refused.
    let (listener, port) = listener();
    drop(listener);
    let node = spawn(options(format!("ws://127.0.0.1:{port}/ws"), Arc::default())).unwrap();
    thread::sleep(Duration::from_millis(150));
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut ws = accept(&listener);
    ws.send(task(2, "hi")).unwrap();
    assert_eq!(collect_result(&mut ws, 2), "hello world");
    stop(node);
}

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    fn data(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name)
    }

    fn server_config() -> Arc<rustls::ServerConfig> {
        let certs = CertificateDer::pem_file_iter(data("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(data("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(config)
    }

    #[test]
    fn wss_with_a_private_ca_carries_a_task() {
        let (listener, port) = listener();
        let mut options = options(format!("wss://localhost:{port}/ws"), Arc::default());
        options.ca_file = Some(data("ca.pem"));
        let node = spawn(options).unwrap();
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(LIMIT)).unwrap();
        let session = rustls::ServerConnection::new(server_config()).unwrap();
        let tls = rustls::StreamOwned::new(session, tcp);
        let mut ws = tungstenite::accept(tls).unwrap();
        ws.send(task(9, "hi")).unwrap();
        assert_eq!(collect_result(&mut ws, 9), "hello world");
        stop(node);
    }

    #[test]
    fn wss_refuses_a_server_its_roots_do_not_trust() {
        let (listener, port) = listener();
        // The built-in Mozilla roots do not know the test CA.
        let node = spawn(options(
            format!("wss://localhost:{port}/ws"),
            Arc::default(),
        ))
        .unwrap();
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(LIMIT)).unwrap();
        let session = rustls::ServerConnection::new(server_config()).unwrap();
        let mut tls = rustls::StreamOwned::new(session, tcp);
        // The client aborts the handshake: the server sees an alert or EOF, never a request.
        let mut buf = [0u8; 64];
        let read = tls.read(&mut buf);
        assert!(
            !matches!(read, Ok(n) if n > 0),
            "the node must not talk to an untrusted server"
        );
        stop(node);
    }

    #[test]
    fn a_missing_ca_file_is_a_clear_error() {
        let mut options = options("wss://localhost:1/ws".into(), Arc::default());
        options.ca_file = Some(data("absent.pem"));
        let error = spawn(options).err().expect("an error").to_string();
        assert!(error.contains("absent.pem"), "{error}");
    }
}
