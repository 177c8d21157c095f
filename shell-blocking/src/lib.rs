//! # nodelink-blocking
//!
//! The node for minimal hosts: `nodelink-core`'s node machine driven by one `mio` event loop and
//! plain std threads, no async runtime.
//!
//! - The loop owns the machine and every socket: WebSockets are tungstenite (sync API) over
//!   non-blocking `mio` sockets, TLS is rustls (feature `tls`), and the poll's timeout is the
//!   machine's `poll_timeout()`.
//! - Helper threads do what would block: resolving and connecting a TCP socket, each HTTP request
//!   (ureq), each command's executor. They hand their answer back through a channel plus a
//!   `mio::Waker`, so the loop wakes at once and never waits on them.
//! - The loop decides nothing about the protocol: it performs the machine's `NodeOutput`s and
//!   feeds `NodeInput`s (see `nodelink_core`'s run-loop contract). What is left to it is the host's
//!   business: the token file, host statistics, and when to stop.
//!
//! ```no_run
//! use nodelink_blocking::{Exit, Flow, NodeOptions, Runner};
//! use nodelink_core::node::executor::ExecutorSet;
//! use nodelink_core::node::{Dialect, Identity, NodeConfig, Transport};
//! use nodelink_core::wire::signalr::HubProtocol;
//!
//! let dialect = Dialect::Hub { protocol: HubProtocol::Json, transport: Transport::Auto };
//! let config = NodeConfig::new("https://gw.example.com", dialect, Identity::Unpaired { node_id: None });
//! let runner = Runner::new(NodeOptions::new(config, ExecutorSet::new())).unwrap();
//! let exit = runner.run(|event| { println!("{event:?}"); Flow::Continue }).unwrap();
//! assert!(matches!(exit, Exit::Stopped | Exit::Revoked { .. } | Exit::Unpaired { .. }));
//! ```
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nodelink_core::node::executor::ExecutorSet;
use nodelink_core::node::{HostStats, NodeConfig, NodeEvent};

mod dial;
mod exec;
mod http;
mod notify;
mod runner;
pub mod seed;
mod store;
#[cfg(feature = "tls")]
mod tls;
mod ws;

pub use runner::Runner;
pub use store::{default_state_dir, StateDir, StoredToken, TOKEN_FILE};

/// Samples the host's statistics for the heartbeat (called on the loop's thread: keep it quick).
pub type StatsSampler = Box<dyn FnMut() -> HostStats + Send>;

/// Everything a blocking node needs. [`NodeOptions::new`] fills in the defaults.
pub struct NodeOptions {
    /// The machine's configuration; its `commands` are replaced by the executors' specs.
    pub config: NodeConfig,
    pub executors: ExecutorSet,
    /// Where the token is stored when pairing succeeds, and deleted from on revoke.
    pub state_dir: Option<StateDir>,
    /// Trust only the CA certificates of this PEM file instead of the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// DNS, TCP connect, TLS and the WebSocket upgrade together.
    pub connect_timeout: Duration,
    /// One HTTP request, from start to the end of its body.
    pub http_timeout: Duration,
    /// The largest HTTP answer body read.
    pub max_http_body: u64,
    /// The largest WebSocket message accepted (the hub's largest record, with room to spare).
    pub max_message_size: usize,
    /// How long a close frame may take to leave when the node stops or is told to close.
    pub close_timeout: Duration,
    /// Host statistics for the heartbeat, sampled at start and every `stats_interval`.
    pub stats: Option<StatsSampler>,
    pub stats_interval: Duration,
}

impl NodeOptions {
    pub fn new(config: NodeConfig, executors: ExecutorSet) -> NodeOptions {
        NodeOptions {
            config,
            executors,
            state_dir: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(15),
            http_timeout: Duration::from_secs(30),
            max_http_body: 64 * 1024 * 1024,
            max_message_size: 6 * 1024 * 1024,
            close_timeout: Duration::from_secs(2),
            stats: None,
            stats_interval: Duration::from_secs(10),
        }
    }
}

/// What the event callback tells the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Close the link and return [`Exit::Stopped`].
    Stop,
}

/// Why [`Runner::run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// [`Stopper::stop`] or the callback's [`Flow::Stop`].
    Stopped,
    /// The gateway revoked this node; its token file was deleted.
    Revoked { reason: String },
    /// Pairing ended without a token (rejected, expired, or refused).
    Unpaired { reason: String },
}

/// Why a node could not run at all (never something a peer sent).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid node configuration: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("state directory: {0}")]
    State(String),
    #[error("event loop: {0}")]
    Io(#[from] std::io::Error),
}

/// Stops a running loop from any thread.
#[derive(Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
}

impl Stopper {
    /// Asks the loop to close its link and return [`Exit::Stopped`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// A node running on its own thread, with its events on a channel.
pub struct NodeHandle {
    stopper: Stopper,
    events: Receiver<NodeEvent>,
    thread: JoinHandle<Result<Exit, Error>>,
}

impl NodeHandle {
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Every event of the machine, in order.
    pub fn events(&self) -> &Receiver<NodeEvent> {
        &self.events
    }

    /// Whether the loop has returned.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the loop and waits for it.
    pub fn stop(self) -> Result<Exit, Error> {
        self.stopper.stop();
        self.join()
    }

    /// Waits for the loop to return by itself.
    pub fn join(self) -> Result<Exit, Error> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(Error::Config("the node thread panicked".into())))
    }
}

/// Runs a node on a new thread.
pub fn spawn(options: NodeOptions) -> Result<NodeHandle, Error> {
    let runner = Runner::new(options)?;
    let stopper = runner.stopper();
    let (tx, events) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("nodelink-node".into())
        .spawn(move || {
            runner.run(move |event| {
                let _ = tx.send(event.clone());
                Flow::Continue
            })
        })?;
    Ok(NodeHandle {
        stopper,
        events,
        thread,
    })
}
