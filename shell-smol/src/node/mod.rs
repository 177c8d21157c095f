//! The node runtime (issue 7): drives `nodelink_core::node::Node` with real sockets, a clock and
//! threads, and runs executors on worker threads.
//!
//! ```no_run
//! use nodelink::node::{spawn_node, RuntimeConfig};
//! use nodelink_core::node::executor::ExecutorSet;
//! use nodelink_core::node::{Dialect, Identity, NodeConfig, Transport};
//! use nodelink_core::wire::signalr::HubProtocol;
//!
//! let dialect = Dialect::Hub { protocol: HubProtocol::Json, transport: Transport::Auto };
//! let node = NodeConfig::new("https://gw.example.com", dialect, Identity::Unpaired { node_id: None });
//! let handle = spawn_node(RuntimeConfig::new(node), ExecutorSet::new()).unwrap();
//! while let Ok(event) = handle.events().recv_blocking() {
//!     println!("{event:?}");
//! }
//! println!("{:?}", handle.wait());
//! ```
//!
//! Modules: [`driver`] (the one task that owns the machine), [`ws`] (WebSocket links),
//! [`http`] (ureq on the blocking pool), [`exec`] (executor threads), [`state`] (the token
//! file), [`tls`] (trust roots).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nodelink_core::node::executor::ExecutorSet;
use nodelink_core::node::{HostStats, Node, NodeConfig, NodeEvent, NodeState};
use smol::channel::{Receiver, Sender};

pub mod driver;
pub mod exec;
pub mod http;
pub mod state;
pub mod tls;
pub mod ws;

pub use state::{Credentials, StateDir, StateError};
pub use tls::{TlsOptions, TlsSetupError, TrustRoots};

use driver::{Driver, Wake};

/// Measures the host for the heartbeat (CPU %, memory MB). Called on the blocking pool.
pub type StatsSampler = Arc<dyn Fn() -> HostStats + Send + Sync>;

/// Events kept for a host that reads them late; beyond it, events are dropped (and logged).
pub const EVENT_QUEUE: usize = 4096;

/// What the runtime needs besides the machine's own configuration.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// The machine's configuration. `commands` is replaced by the executors' specs.
    pub node: NodeConfig,
    pub tls: TlsOptions,
    /// Where the token is stored on `Paired` and deleted on `TokenRevoked`; `None`: nowhere
    /// (embedders that keep the token themselves, from the `Paired` event).
    pub state_dir: Option<StateDir>,
    /// End the node right after pairing succeeds (`nodelink node pair`).
    pub exit_when_paired: bool,
    /// The host-stats sampler; `None`: the heartbeat reports zeros.
    pub host_stats: Option<StatsSampler>,
    /// How often the sampler runs (the heartbeat interval by default).
    pub stats_interval: Duration,
    /// One HTTP call, connect to last byte.
    pub http_timeout: Duration,
    /// TCP + TLS + WebSocket upgrade.
    pub connect_timeout: Duration,
    /// The machine's randomness (pairing secret, ids, jitter); `None`: from the OS.
    pub seed: Option<[u8; 32]>,
}

impl RuntimeConfig {
    pub fn new(node: NodeConfig) -> RuntimeConfig {
        let stats_interval = node.heartbeat_interval;
        RuntimeConfig {
            node,
            tls: TlsOptions::default(),
            state_dir: None,
            exit_when_paired: false,
            host_stats: None,
            stats_interval,
            http_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
            seed: None,
        }
    }
}

/// Why a node ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeExit {
    /// [`NodeHandle::stop`] (or the handle was dropped).
    Stopped,
    /// Paired, with `exit_when_paired` set; the token is stored when a state dir is set.
    Paired {
        node_id: String,
        gateway_url: String,
    },
    /// The gateway revoked this node; its token is deleted.
    Revoked {
        reason: String,
    },
    PairingRejected {
        reason: Option<String>,
    },
    PairingExpired,
    /// The runtime could not go on (the token could not be stored, say).
    Failed(String),
}

impl NodeExit {
    /// Whether the node ended the way its host asked (stopped, or paired when asked to stop).
    pub fn is_success(&self) -> bool {
        matches!(self, NodeExit::Stopped | NodeExit::Paired { .. })
    }
}

impl std::fmt::Display for NodeExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeExit::Stopped => write!(f, "stopped"),
            NodeExit::Paired {
                node_id,
                gateway_url,
            } => write!(f, "paired as {node_id} with {gateway_url}"),
            NodeExit::Revoked { reason } if reason.is_empty() => {
                write!(f, "the gateway revoked this node's access")
            }
            NodeExit::Revoked { reason } => {
                write!(f, "the gateway revoked this node's access: {reason}")
            }
            NodeExit::PairingRejected { reason: Some(r) } => {
                write!(f, "the operator rejected the pairing: {r}")
            }
            NodeExit::PairingRejected { reason: None } => {
                write!(f, "the operator rejected the pairing")
            }
            NodeExit::PairingExpired => write!(f, "the pairing code expired before approval"),
            NodeExit::Failed(why) => write!(f, "{why}"),
        }
    }
}

/// Where a running node stands, as of the driver's last turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub state: NodeState,
    pub node_id: String,
    pub commands_running: usize,
    /// Set once the node ended.
    pub exit: Option<NodeExit>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] nodelink_core::node::UsageError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("cannot start the node's thread: {0}")]
    Thread(std::io::Error),
}

/// A running node. Dropping it stops the node (without waiting for it).
pub struct NodeHandle {
    events: Receiver<NodeEvent>,
    status: Arc<Mutex<Status>>,
    wake: Sender<Wake>,
    thread: Option<JoinHandle<NodeExit>>,
}

impl NodeHandle {
    /// Every event of the machine, in order (bounded: see [`EVENT_QUEUE`]).
    pub fn events(&self) -> &Receiver<NodeEvent> {
        &self.events
    }

    /// The next event, waiting at most `timeout`; `None` when none came in time (or the node
    /// ended and every event was read). For synchronous callers that need a deadline.
    pub fn next_event(&self, timeout: Duration) -> Option<NodeEvent> {
        smol::block_on(smol::future::or(
            async { self.events.recv().await.ok() },
            async {
                smol::Timer::after(timeout).await;
                None
            },
        ))
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn state(&self) -> NodeState {
        self.status().state
    }

    pub fn node_id(&self) -> String {
        self.status().node_id
    }

    /// Asks the node to stop: running commands are cancelled, the link closed (1000).
    pub fn stop(&self) {
        let _ = self.wake.try_send(Wake::Stop);
    }

    /// Waits for the node to end.
    pub fn wait(mut self) -> NodeExit {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(exit)) => exit,
            Some(Err(_)) => NodeExit::Failed("the node's thread panicked".into()),
            None => NodeExit::Stopped,
        }
    }

    /// Whether the node ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

/// Starts a node on its own thread: the machine from `config.node`, the commands of
/// `executors`. Fails at once on a configuration the machine refuses or unreadable TLS roots.
pub fn spawn_node(
    mut config: RuntimeConfig,
    executors: ExecutorSet,
) -> Result<NodeHandle, RuntimeError> {
    config.node.commands = executors.specs();
    let roots = TrustRoots::load(&config.tls)?;
    let seed = config.seed.unwrap_or_else(os_seed);
    let node = Node::new(config.node.clone(), std::time::Instant::now(), seed)?;
    let status = Arc::new(Mutex::new(Status {
        state: node.state(),
        node_id: node.node_id().to_owned(),
        commands_running: 0,
        exit: None,
    }));
    // Bounded: link readers wait (TCP back-pressure) when the driver falls behind.
    let (wake_tx, wake_rx) = smol::channel::bounded(1024);
    let (events_tx, events_rx) = smol::channel::bounded(EVENT_QUEUE);
    let driver = Driver::new(
        node,
        config,
        Arc::new(executors),
        roots,
        (wake_tx.clone(), wake_rx),
        events_tx,
        status.clone(),
    );
    let thread = std::thread::Builder::new()
        .name("nodelink-node".into())
        .spawn(move || smol::block_on(driver.run()))
        .map_err(RuntimeError::Thread)?;
    Ok(NodeHandle {
        events: events_rx,
        status,
        wake: wake_tx,
        thread: Some(thread),
    })
}

/// 32 bytes from the OS (`/dev/urandom`), else from std's randomly keyed hasher.
pub fn os_seed() -> [u8; 32] {
    use std::io::Read;
    let mut seed = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .is_ok()
    {
        return seed;
    }
    use std::hash::{BuildHasher, Hasher};
    for chunk in seed.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    seed
}
