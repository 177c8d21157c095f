//! The SignalR hub protocol (dotnet/aspnetcore `HubProtocol.md`, `TransportProtocols.md`), as
//! nodelink speaks it and as the official clients and servers expect it.
//!
//! - [`message`]: the nine hub message types and the opaque argument [`Payload`].
//! - [`json`]: the JSON encoding, one record per message, each terminated by 0x1E.
//! - [`msgpack`]: the MessagePack encoding, each message prefixed by its VarInt length.
//! - [`framing`]: incremental record decoders (several records per WebSocket message, records split
//!   across messages, a size limit per record) for both encodings.
//! - [`handshake`]: the JSON handshake request and response that open every connection.
//! - [`negotiate`]: the bodies of `POST {hub}/negotiate` (negotiateVersion 0 and 1).

pub mod error;
pub mod framing;
pub mod handshake;
pub mod json;
pub mod message;
pub mod msgpack;
pub mod negotiate;

pub use error::DecodeError;
pub use message::{CompletionOutcome, Headers, HubMessage, Invocation, Payload, PayloadError};

/// The 0x1E record separator that terminates every JSON record and the handshake.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// Which hub protocol a connection speaks after its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HubProtocol {
    /// `"json"`: UTF-8 JSON records in WebSocket Text frames.
    Json,
    /// `"messagepack"`: VarInt-prefixed MessagePack messages in WebSocket Binary frames.
    MessagePack,
}

impl HubProtocol {
    /// The name used in the handshake request.
    pub fn name(self) -> &'static str {
        match self {
            HubProtocol::Json => "json",
            HubProtocol::MessagePack => "messagepack",
        }
    }

    /// The SignalR transfer format: JSON travels in Text frames, MessagePack in Binary frames.
    pub fn transfer_format(self) -> &'static str {
        match self {
            HubProtocol::Json => "Text",
            HubProtocol::MessagePack => "Binary",
        }
    }

    /// Appends `message` as one whole record of this protocol. The only failure is a payload held
    /// in the other encoding that cannot be transcoded.
    pub fn encode(self, message: &HubMessage, out: &mut Vec<u8>) -> Result<(), PayloadError> {
        match self {
            HubProtocol::Json => json::encode_record(message, out),
            HubProtocol::MessagePack => msgpack::encode(message, out),
        }
    }

    /// Parses a handshake protocol name (exact, as the .NET server compares them).
    pub fn from_name(name: &str) -> Option<HubProtocol> {
        match name {
            "json" => Some(HubProtocol::Json),
            "messagepack" => Some(HubProtocol::MessagePack),
            _ => None,
        }
    }
}
