//! What the interop tests share: a real gateway server in this process, a paired node token, an
//! external SignalR client (Node.js or Python) run as a child process whose JSON-lines output is
//! read with deadlines, and a TCP proxy that can cut every connection through it.
//!
//! The clients live in `tests/interop/` with their lock files; `.ci/run` installs them
//! (`npm ci`, a Python venv). Without them a test prints why it skips, unless
//! `NODELINK_REQUIRE_INTEROP=1` (set by `.ci/run`) makes a missing client a failure.
#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nodelink::gateway::{OperatorClient, RunningGateway, ServerConfig};
use serde_json::Value;

/// The folder with the interop clients and their lock files.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// True when `path` (under `tests/interop`) is installed. Otherwise prints why the test skips,
/// or fails when `.ci/run` requires the interop clients.
pub fn installed(path: &str, how: &str) -> bool {
    if interop_dir().join(path).exists() {
        return true;
    }
    if std::env::var_os("NODELINK_REQUIRE_INTEROP").is_some() {
        panic!("tests/interop/{path} is missing: {how}");
    }
    eprintln!("SKIP: tests/interop/{path} is not installed ({how}; .ci/run does it)");
    false
}

pub struct Fixture {
    pub gateway: RunningGateway,
    pub operator: OperatorClient,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A gateway on a free loopback port with a store in a temporary directory.
    pub fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = ServerConfig::new(
            "127.0.0.1:0".parse().expect("address"),
            dir.path().join("gateway.db"),
        );
        let gateway = nodelink::gateway::start(config).expect("gateway starts");
        let operator = OperatorClient::new(&gateway.url(), gateway.admin_token());
        Fixture {
            gateway,
            operator,
            _dir: dir,
        }
    }

    pub fn hub_url(&self) -> String {
        format!("{}/hubs/node", self.gateway.url())
    }

    /// Pairs `node_id` through the REST flow with every scope, and returns its token.
    pub fn pair(&self, node_id: &str) -> String {
        crate::gateway_support::pair_quickly(
            &self.gateway.url(),
            &self.operator,
            node_id,
            &["*".to_owned()],
        )
        .to_string()
    }

    /// The operator's view of `node_id`.
    pub fn node(&self, node_id: &str) -> Option<Value> {
        self.operator
            .nodes()
            .expect("list nodes")
            .into_iter()
            .find(|node| node["nodeId"] == node_id)
    }

    /// Waits until `check` holds for the operator's view of `node_id`.
    pub fn wait_node(&self, node_id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(node) = self.node(node_id) {
                if check(&node) {
                    return node;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {node_id} never {what}: {node}"
                );
            }
            assert!(Instant::now() < deadline, "node {node_id} never appeared");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a command and waits for its outcome.
    pub fn send(&self, node_id: &str, command: &str, params: Value) -> Value {
        self.operator
            .send(node_id, command, params, Duration::from_secs(20), true)
            .expect("command outcome")
    }
}

/// An external client process; its stdout is JSON lines (`{"event": ...}`).
pub struct Client {
    child: Child,
    lines: Receiver<Value>,
    seen: Vec<Value>,
    name: String,
}

impl Client {
    pub fn spawn(name: &str, mut command: Command) -> Client {
        command
            .current_dir(interop_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) => {
                        if send.send(value).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("client: {line}"),
                }
            }
        });
        Client {
            child,
            lines,
            seen: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// Waits (at most `within`) for an event named `event` that `check` accepts.
    pub fn expect(
        &mut self,
        event: &str,
        within: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(value) => {
                    self.seen.push(value.clone());
                    if value["event"] == event && check(&value) {
                        return value;
                    }
                    assert_ne!(value["event"], "failed", "{}: {value}", self.name);
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no `{event}` within {within:?}; saw {:?}",
                    self.name, self.seen
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited before `{event}`; saw {:?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// Every event seen so far plus those that arrive within `settle`.
    pub fn drain(&mut self, settle: Duration) -> &[Value] {
        while let Ok(value) = self.lines.recv_timeout(settle) {
            self.seen.push(value);
        }
        &self.seen
    }

    /// Waits for the process to end by itself.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {within:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP proxy to `upstream` whose connections can all be cut at once.
pub struct Proxy {
    pub addr: SocketAddr,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let live = Arc::new(Mutex::new(Vec::new()));
        let registry = live.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                    registry.lock().expect("proxy registry").extend([a, b]);
                }
                thread::spawn(move || pipe(client_read, server));
                thread::spawn(move || pipe(server_read, client));
            }
        });
        Proxy { addr, live }
    }

    /// Waits until at least one connection goes through the proxy.
    pub fn wait_connected(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.live.lock().expect("proxy registry").is_empty() {
            assert!(
                Instant::now() < deadline,
                "nothing reconnected through the proxy"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Cuts every connection through the proxy (both directions, at once).
    pub fn cut_all(&self) -> usize {
        let mut live = self.live.lock().expect("proxy registry");
        for stream in live.iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let count = live.len() / 2;
        live.clear();
        count
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buffer) {
        if n == 0 || to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}
