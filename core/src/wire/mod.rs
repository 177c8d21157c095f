//! Bytes <-> typed messages for every dialect nodelink speaks.
//!
//! - [`signalr`]: the SignalR hub protocol (JSON and MessagePack encodings, record framing,
//!   handshake, negotiate) that carries the node contract of [`dto`] and [`contract`].
//! - [`dto`]: the node contract's data types exactly as they appear on the wire.
//! - [`contract`]: the hub methods of the node contract (targets, arguments, who calls whom).
//! - [`rest`]: the REST bodies of pairing and HTTP polling.
//! - [`llm`]: the LLM node dialect (query parameters, text tasks, binary results, stop frames).
//!
//! Decoders never panic: malformed input yields a typed error that says which field was wrong and
//! what was expected. Unknown fields are ignored everywhere (forward compatibility).

pub mod contract;
pub mod dto;
pub mod llm;
pub mod rest;
pub mod signalr;
