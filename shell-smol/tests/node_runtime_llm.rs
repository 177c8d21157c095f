//! The node runtime against a small LLM-dialect server written here (async-tungstenite on
//! loopback): the driver, the WebSocket link, executor threads and streamed text, stop and
//! cancel, with no gateway needed. Every wait is bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::{FutureExt, StreamExt};
use nodelink::node::{spawn_node, NodeExit, RuntimeConfig};
use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome};
use nodelink_core::node::executor::{command_error, Executor, ExecutorSet, RunContext};
use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeEvent, NodeState, LLM_COMMAND};
use nodelink_core::wire::dto::ErrorCode;
use nodelink_core::wire::llm::ConnectParams;

const LIMIT: Duration = Duration::from_secs(5);

/// Streams the words of the last message back, one `stream_text` per word; `stop` makes it
/// wait (checking cancellation) instead of finishing.
struct Words {
    hang: bool,
    saw_cancel: Arc<AtomicBool>,
}

impl Executor for Words {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new(LLM_COMMAND)
    }
    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        let text = request.params["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        for word in text.split(' ') {
            context.stream_text(&format!("{word} "));
        }
        if self.hang {
            let start = Instant::now();
            while start.elapsed() < LIMIT {
                if context.is_cancelled() {
                    self.saw_cancel.store(true, Ordering::SeqCst);
                    return Err(command_error(ErrorCode::Cancelled, "stopped"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(serde_json::json!({}))
    }
}

fn node_config(port: u16) -> NodeConfig {
    let params = ConnectParams {
        token: "shared-secret".into(),
        model: "tiny".into(),
        max_concurrency: 2,
        name: "n1".into(),
    };
    let dialect = Dialect::Llm {
        server_url: format!("ws://127.0.0.1:{port}/ws"),
        params,
    };
    NodeConfig::new(
        format!("http://127.0.0.1:{port}"),
        dialect,
        Identity::Unpaired { node_id: None },
    )
}

fn task(id: u32, content: &str) -> String {
    serde_json::json!({
        "state": 0, "id": id, "system": "", "max_new_tokens": 5, "temperature": 0.5,
        "created_at": 1_700_000_000u64,
        "messages": [{"role": "user", "content": content}],
    })
    .to_string()
}

#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
/// Runs `server` on one accepted WebSocket; returns what it returned, or fails after LIMIT.
fn serve<T: Send + 'static>(
    server: impl FnOnce(
            async_tungstenite::WebSocketStream<smol::net::TcpStream>,
            String,
        ) -> smol::future::Boxed<T>
        + Send
        + 'static,
) -> (u16, std::thread::JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        smol::block_on(
            async move {
                let listener = smol::net::TcpListener::try_from(listener).unwrap();
                let (tcp, _) = listener.accept().await.unwrap();
                let path = Arc::new(std::sync::Mutex::new(String::new()));
                let seen = path.clone();
                let ws = async_tungstenite::accept_hdr_async(
                    tcp,
                    move |request: &async_tungstenite::tungstenite::handshake::server::Request,
                          response| {
                        *seen.lock().unwrap() = request.uri().to_string();
                        Ok(response)
                    },
                )
                .await
                .unwrap();
                let path = path.lock().unwrap().clone();
                server(ws, path).await
            }
            .or(async {
                smol::Timer::after(LIMIT).await;
                panic!("the test server timed out");
            }),
        )
    });
    (port, handle)
}

#[test]
fn a_task_is_streamed_back_word_by_word_then_finished() {
    let (port, server) = serve(|mut ws, path| {
        Box::pin(async move {
            ws.send(Message::text(task(7, "hello brave new world")))
                .await
                .unwrap();
            let mut text = String::new();
            loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(bytes))) => {
                        assert_eq!(&bytes[..4], &7u32.to_be_bytes());
                        if bytes.len() == 4 {
                            break;
                        }
                        text.push_str(std::str::from_utf8(&bytes[4..]).unwrap());
                    }
                    Some(Ok(_)) => {}
                    other => panic!("socket ended early: {other:?}"),
                }
            }
            (path, text)
        })
    });
    let mut executors = ExecutorSet::new();
    executors.register(Words {
        hang: false,
        saw_cancel: Arc::default(),
    });
    let node = spawn_node(RuntimeConfig::new(node_config(port)), executors).unwrap();
    let (path, text) = server.join().unwrap();
    assert!(path.starts_with("/ws?"), "{path}");
    assert!(
        path.contains("model=tiny") && path.contains("name=n1"),
        "{path}"
    );
    assert_eq!(text, "hello brave new world ");
    let mut connected = false;
    while let Ok(event) = node.events().try_recv() {
        connected |= matches!(event, NodeEvent::Connected { .. });
    }
    assert!(connected, "a Connected event was published");
    node.stop();
    assert_eq!(node.wait(), NodeExit::Stopped);
}

#[test]
fn a_stop_frame_cancels_the_executor_and_stop_closes_the_socket_with_1000() {
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let (port, server) = serve(|mut ws, _| {
        Box::pin(async move {
            ws.send(Message::text(task(9, "one two"))).await.unwrap();
            // The first streamed word proves the executor runs; then stop the task.
            loop {
                if let Some(Ok(Message::Binary(_))) = ws.next().await {
                    break;
                }
            }
            ws.send(Message::text(r#"{"id":9,"stop":true}"#))
                .await
                .unwrap();
            // Whatever comes next until the node closes the socket.
            let mut close = None;
            while let Some(message) = ws.next().await {
                match message {
                    Ok(Message::Close(frame)) => {
                        close = frame.map(|f| u16::from(f.code));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            close
        })
    });
    let mut executors = ExecutorSet::new();
    executors.register(Words {
        hang: true,
        saw_cancel: saw_cancel.clone(),
    });
    let node = spawn_node(RuntimeConfig::new(node_config(port)), executors).unwrap();
    let deadline = Instant::now() + LIMIT;
    while !saw_cancel.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the executor was never cancelled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(node.state(), NodeState::Ready);
    node.stop();
    assert_eq!(node.wait(), NodeExit::Stopped);
    assert_eq!(server.join().unwrap(), Some(1000), "closed with 1000");
}

#[test]
fn a_refused_connection_is_tried_again_and_stop_still_ends_the_node() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = node_config(port);
    config.reconnect_base = Duration::from_millis(50);
    config.reconnect_cap = Duration::from_millis(200);
    let node = spawn_node(RuntimeConfig::new(config), ExecutorSet::new()).unwrap();
    let deadline = Instant::now() + LIMIT;
    let mut failures = 0;
    while failures < 2 {
        match node.events().recv_blocking() {
            Ok(NodeEvent::Disconnected { .. }) => failures += 1,
            Ok(_) => {}
            Err(_) => panic!("events ended"),
        }
        assert!(Instant::now() < deadline, "no second attempt");
    }
    node.stop();
    assert_eq!(node.wait(), NodeExit::Stopped);
}
