//! The gateway machine: everything a gateway decides, sans-IO (issue 5).
//!
//! One machine serves many connections; the shell numbers them ([`ConnId`]) and passes the source
//! address in. Persistence is an output and the state comes back from the store through an input
//! at start-up. Sub-machines, composed by the gateway machine:
//! - [`auth`]: node records, token hashes (SHA-256, constant-time comparison), failed-attempt
//!   rate limits per node id and per source address.
//! - [`pairing`]: pairing requests, their codes, approval, rejection and expiry; token minting.
//! - [`hub`]: the SignalR server side for many connections (negotiate, handshake, keep-alive,
//!   client timeout, stateful reconnect).
//! - [`dispatch`]: the registry (online/offline) and the commands (dispatch, pending queue,
//!   correlation, reassembly, busy retry, cancel, status, approval).

pub mod auth;
pub mod dispatch;
pub mod hub;
pub mod llm;
mod machine;
pub mod pairing;
mod types;

pub use machine::{
    Gateway, GatewayConfig, GatewayError, GatewayEvent, GatewayInput, GatewayOutput, HttpRequest,
    NodeView, StoreRecord, HUB_PATH,
};
pub use types::{ConnId, HttpReply, Source};
