//! The gateway server (issue 6): drives `nodelink_core::gateway::Gateway` with real sockets.
//!
//! # Shape
//! One listening port served by hyper (HTTP/1.1): node REST routes and the hub's negotiate go to
//! the machine, `GET /hubs/node` upgrades to a WebSocket, `/api/admin/...` is the operator API,
//! `GET /metrics` the Prometheus text. The LLM node dialect (`/ws`, `/api/chat`,
//! `/v1/chat/completions`) is [`llm`], driven on the same driver thread. One task, the driver
//! (`driver.rs`), owns the machine on its own thread; every other task talks to it over a
//! channel. Persisted records reach the SQLite
//! [`store`] before any other output of the same drain is delivered. Connection tasks run
//! on a `smol::Executor` with one thread per core (`SMOL_THREADS` overrides).

pub mod client;
mod driver;
mod http;
mod io;
pub mod llm;
mod metrics;
mod operator;
mod outbound;
mod server;
pub mod store;
mod tls;
mod token;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use client::{ClientError, OperatorClient};
pub use llm::LlmServerConfig;
pub use server::RunningGateway;
pub use store::StoreError;
pub use token::token_path;

/// How a gateway server starts; [`ServerConfig::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen (`127.0.0.1:0` in tests).
    pub listen: SocketAddr,
    /// The SQLite store; the admin token file is `<db>.admin-token` next to it.
    pub db_path: PathBuf,
    /// The URL nodes reach this gateway at; default `http(s)://<local addr>`.
    pub public_url: Option<String>,
    /// Serve TLS with this certificate chain and key (PEM).
    pub tls: Option<TlsFiles>,
    /// The operator API's bearer token; `None`: read the token file, or generate it.
    pub admin_token: Option<String>,
    /// The machine's timers and limits (tests and the demo shorten them). Its URLs are replaced
    /// by the public URL at start.
    pub machine: nodelink_core::gateway::GatewayConfig,
    /// Executor threads; `None`: `SMOL_THREADS`, else the number of cores.
    pub threads: Option<usize>,
    /// How long a connection has to finish TLS and send its request head, and an upgraded one
    /// to become a WebSocket (15 s).
    pub handshake_timeout: std::time::Duration,
    /// Bytes queued for one connection's socket; a peer that lets more pile up is a slow reader
    /// and is disconnected (16 MiB). Bounded in bytes, not messages, so that a burst of small
    /// messages (the Completions of pipelined result parts) is fine.
    pub outbound_bytes: usize,
    /// The LLM node dialect (`/ws`, `/api/chat`, `/v1/chat/completions`): its timers, the shared
    /// node token and the user API token.
    pub llm: LlmServerConfig,
}

/// A PEM certificate chain and its PEM private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, db_path: PathBuf) -> Self {
        ServerConfig {
            listen,
            db_path,
            public_url: None,
            tls: None,
            admin_token: None,
            machine: nodelink_core::gateway::GatewayConfig::new("http://127.0.0.1"),
            threads: None,
            handshake_timeout: std::time::Duration::from_secs(15),
            outbound_bytes: outbound::DEFAULT_OUTBOUND_BYTES,
            llm: LlmServerConfig::default(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("admin token: {0}")]
    AdminToken(String),
    #[error("the gateway machine: {0}")]
    Machine(#[from] nodelink_core::gateway::GatewayError),
    #[error("the LLM dialect: {0}")]
    Llm(#[from] llm::LlmConfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Starts a gateway on its own threads; returns once it listens.
pub fn start(config: ServerConfig) -> Result<RunningGateway, ServerError> {
    server::start(config)
}
