//! # nodelink-core
//!
//! The sans-IO heart of nodelink: deterministic state machines for the node and the gateway, and
//! the wire codecs of every dialect they speak. Nothing in this crate opens a socket, reads a
//! clock, sleeps, spawns a thread or draws a random number: time comes in as an argument and
//! randomness from a seed the caller passes, so every behaviour can be replayed exactly in a test.
//!
//! ## Layout
//! - [`wire`]: bytes <-> typed messages, one module per dialect (SignalR JSON and MessagePack hub
//!   protocols, negotiate, the node contract DTOs, the REST bodies, the LLM node dialect).
//! - [`chunk`]: splitting a command result under the 1 MiB per-field cap and reassembling it.
//! - [`node`]: the node machine and its sub-machines.
//! - [`gateway`]: the gateway machine and its sub-machines.
//! - [`rng`], [`backoff`], [`time`], [`scope`]: the machines' foundations: the seeded ChaCha
//!   stream (ids, jitter, pairing codes, secrets), reconnect backoff, timer tables and deadline
//!   queues driven by `now: Instant`, and scope sets with wildcard patterns.
//!
//! ## The run-loop contract (for the machines that build on the wire layer)
//! A shell drains `poll_output()` until it returns `None`, acting on each output; then waits for
//! whichever comes first (a frame, an executor completion, an HTTP response, or `poll_timeout()`),
//! feeds it in with the current `Instant`, and loops. Whatever a peer sends is an input and never a
//! panic or an `Err`: malformed input becomes an event. `Result` is reserved for caller misuse.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod chunk;
pub mod gateway;
pub mod node;
pub mod rng;
pub mod scope;
pub mod time;
pub mod wire;
