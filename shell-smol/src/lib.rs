//! nodelink's async shell: real sockets, clocks and threads around the sans-IO machines of
//! `nodelink-core`, on smol.
//!
//! - [`gateway`]: the gateway server (hub, REST, operator API, metrics, the SQLite store).
//! - [`node`]: the node runtime (WebSocket and HTTP links, executors on worker threads).
//! - [`cli`]: the `nodelink` command line.
//! - [`demo`]: `nodelink demo`, a gateway and three nodes in one process.

pub mod cli;
pub mod demo;
pub mod gateway;
pub mod node;
