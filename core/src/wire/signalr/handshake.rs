//! The handshake that opens every hub connection, in both hub protocols.
//!
//! The client's first record names the hub protocol and its version; the server answers `{}` or
//! `{"error":"..."}` and, after an error, closes. Both records are JSON terminated by 0x1E even
//! when the hub protocol is MessagePack, and both travel in Text frames. Decode them with
//! [`super::framing::RecordDecoder`] before calling [`RecordDecoder::set_protocol`].
//!
//! [`RecordDecoder::set_protocol`]: super::framing::RecordDecoder::set_protocol

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DecodeError, HubProtocol, RECORD_SEPARATOR};

/// The highest hub protocol version nodelink speaks. Version 2 adds stateful reconnect (Ack and
/// Sequence); the .NET server and the JS client accept every version up to their own.
pub const MAX_HUB_PROTOCOL_VERSION: u32 = 2;

/// How long a server waits for the handshake request, and a client for the response.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// A peer sends a Ping when it has sent nothing else for this long (server KeepAliveInterval,
/// JS client keepAliveIntervalInMilliseconds).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// A peer that has received nothing for this long considers the connection dead (server
/// ClientTimeoutInterval, JS client serverTimeoutInMilliseconds).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// `{"protocol":"json","version":1}`: the client's first record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HandshakeRequest {
    /// The hub protocol's name as sent; see [`HubProtocol::from_name`].
    pub protocol: String,
    pub version: u32,
}

/// The server's answer to the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeResponse {
    /// `{}`: hub messages may flow.
    Accepted,
    /// `{"error":"..."}`: the server closes the connection after sending it.
    Rejected(String),
}

/// What a server settled on when it accepted a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub protocol: HubProtocol,
    /// The client's version. Stateful reconnect needs version 2 *and* `useStatefulReconnect` in
    /// the negotiate request; a version 1 client never sees Ack or Sequence.
    pub version: u32,
}

impl HandshakeRequest {
    /// The request a nodelink client sends for `protocol`.
    pub fn new(protocol: HubProtocol, version: u32) -> HandshakeRequest {
        HandshakeRequest {
            protocol: protocol.name().to_string(),
            version,
        }
    }

    /// Appends the record, terminator included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self).expect("a struct of a string and a u32 serializes");
        out.push(RECORD_SEPARATOR);
    }

    /// Decodes a request record (without its terminator). Unknown fields, such as the
    /// `minorVersion` of older clients, are ignored.
    pub fn decode(record: &[u8]) -> Result<HandshakeRequest, DecodeError> {
        #[derive(Deserialize)]
        struct Wire {
            protocol: Option<serde_json::Value>,
            version: Option<serde_json::Value>,
        }
        const MESSAGE: &str = "handshake request";
        let wire: Wire = parse_object(record, MESSAGE)?;
        let protocol = match wire.protocol {
            None => return Err(missing(MESSAGE, "protocol")),
            Some(serde_json::Value::String(protocol)) => protocol,
            Some(_) => return Err(wrong_type(MESSAGE, "protocol", "a string")),
        };
        let version = match wire.version {
            None => return Err(missing(MESSAGE, "version")),
            Some(version) => version
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| wrong_type(MESSAGE, "version", "a non-negative integer"))?,
        };
        Ok(HandshakeRequest { protocol, version })
    }

    /// The server's decision: the protocol and version to use, or the error text to answer with
    /// (the texts of the .NET server, which the official clients show to their users).
    pub fn accept(&self, supported: &[HubProtocol]) -> Result<Handshake, String> {
        let protocol = HubProtocol::from_name(&self.protocol)
            .filter(|p| supported.contains(p))
            .ok_or_else(|| format!("The protocol '{}' is not supported.", self.protocol))?;
        if self.version > MAX_HUB_PROTOCOL_VERSION {
            return Err(format!(
                "The server does not support version {} of the '{}' protocol.",
                self.version, self.protocol
            ));
        }
        Ok(Handshake {
            protocol,
            version: self.version,
        })
    }
}

impl HandshakeResponse {
    /// Appends the record, terminator included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            HandshakeResponse::Accepted => out.extend_from_slice(b"{}"),
            HandshakeResponse::Rejected(error) => {
                out.extend_from_slice(b"{\"error\":");
                serde_json::to_writer(&mut *out, error).expect("a string serializes");
                out.push(b'}');
            }
        }
        out.push(RECORD_SEPARATOR);
    }

    /// Decodes a response record (without its terminator). Unknown fields are ignored.
    pub fn decode(record: &[u8]) -> Result<HandshakeResponse, DecodeError> {
        #[derive(Deserialize)]
        struct Wire {
            error: Option<serde_json::Value>,
        }
        const MESSAGE: &str = "handshake response";
        let wire: Wire = parse_object(record, MESSAGE)?;
        match wire.error {
            None | Some(serde_json::Value::Null) => Ok(HandshakeResponse::Accepted),
            Some(serde_json::Value::String(error)) => Ok(HandshakeResponse::Rejected(error)),
            Some(_) => Err(wrong_type(MESSAGE, "error", "a string")),
        }
    }
}

/// Parses a record that must be one JSON object, ignoring unknown fields.
fn parse_object<T: serde::de::DeserializeOwned>(
    record: &[u8],
    message: &'static str,
) -> Result<T, DecodeError> {
    let text = std::str::from_utf8(record).map_err(|_| DecodeError::NotUtf8 { what: message })?;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DecodeError::Syntax {
        encoding: "JSON",
        detail: format!("{message}: {e}"),
    })?;
    if !value.is_object() {
        return Err(wrong_type(message, "<record>", "a JSON object"));
    }
    // Every field of `T` is an optional `Value`: this cannot fail on an object.
    serde_json::from_value(value).map_err(|e| DecodeError::Syntax {
        encoding: "JSON",
        detail: format!("{message}: {e}"),
    })
}

fn missing(message: &'static str, field: &'static str) -> DecodeError {
    DecodeError::MissingField { message, field }
}

fn wrong_type(message: &'static str, field: &'static str, expected: &'static str) -> DecodeError {
    DecodeError::WrongType {
        message,
        field,
        expected,
    }
}
