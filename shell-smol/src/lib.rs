//! nodelink's async shell: real sockets, clocks and threads around the sans-IO machines of
//! `nodelink-core`, on smol.
//!
//! - [`gateway`]: the gateway server (hub, REST, operator API, metrics, the SQLite store).
//! - [`node`]: the node runtime (WebSocket and HTTP links, executors on worker threads).
//! - [`cli`]: the `nodelink` command line.

pub mod cli;
pub mod gateway;
pub mod node;
