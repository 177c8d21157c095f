//! `POST {hub}/negotiate`: the request's query and the response body (negotiateVersion 0 and 1),
//! and the URLs a client derives from a hub URL.
//!
//! A client posts `{hub}/negotiate?negotiateVersion=1` (keeping the hub URL's own query, such as
//! `access_token`), then opens the WebSocket at `{hub}?id=<connectionToken>` (version 1) or
//! `{hub}?id=<connectionId>` (version 0). The connection id is public (it appears in logs); the
//! connection token is the secret that binds the socket to the negotiation.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The highest negotiate version a nodelink server answers with.
pub const MAX_NEGOTIATE_VERSION: u32 = 1;

/// The only transport nodelink serves through SignalR. (HTTP polling of the node contract is the
/// REST API of [`crate::wire::rest`], not SignalR long polling.)
pub const WEBSOCKETS: &str = "WebSockets";

/// The query of a negotiate request, as a server reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegotiateRequest {
    /// What the client asked for; absent means 0.
    pub requested_version: u32,
    /// `useStatefulReconnect=true`: the client will send handshake version 2 and wants Ack and
    /// Sequence.
    pub use_stateful_reconnect: bool,
}

impl NegotiateRequest {
    /// Parses the request's query string (without the leading `?`). Unknown parameters, such as
    /// `access_token`, are ignored here.
    pub fn from_query(query: &str) -> Result<NegotiateRequest, NegotiateError> {
        let requested_version = match query_param(query, "negotiateVersion") {
            None => 0,
            Some(value) => value.parse().map_err(|_| NegotiateError::InvalidQuery {
                param: "negotiateVersion",
                value: value.into_owned(),
            })?,
        };
        let use_stateful_reconnect = match query_param(query, "useStatefulReconnect").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(NegotiateError::InvalidQuery {
                    param: "useStatefulReconnect",
                    value: other.to_string(),
                })
            }
        };
        Ok(NegotiateRequest {
            requested_version,
            use_stateful_reconnect,
        })
    }

    /// The version the server answers with: the client's, capped at the server's highest.
    pub fn answered_version(&self) -> u32 {
        self.requested_version.min(MAX_NEGOTIATE_VERSION)
    }
}

/// The body of a negotiate response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NegotiateResponse {
    /// The server accepts: connect to one of the transports with the id.
    Connection(NegotiatedConnection),
    /// Connect to another endpoint instead (Azure SignalR's `url` + `accessToken`).
    Redirect {
        url: String,
        access_token: Option<String>,
    },
    /// `{"error":"..."}`: the server refuses (for instance an unsupported negotiate version).
    Error(String),
}

/// A successful negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiatedConnection {
    pub negotiate_version: u32,
    /// Public id of the connection.
    pub connection_id: String,
    /// Secret id the client puts in `?id=`; present from version 1 on.
    pub connection_token: Option<String>,
    /// The server agreed to stateful reconnect.
    pub use_stateful_reconnect: bool,
    pub available_transports: Vec<AvailableTransport>,
}

/// One entry of `availableTransports`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableTransport {
    pub transport: String,
    pub transfer_formats: Vec<String>,
}

impl AvailableTransport {
    /// What a nodelink server offers: WebSockets, in Text (JSON) and Binary (MessagePack).
    pub fn websockets() -> AvailableTransport {
        AvailableTransport {
            transport: WEBSOCKETS.to_string(),
            transfer_formats: vec!["Text".to_string(), "Binary".to_string()],
        }
    }
}

impl NegotiatedConnection {
    /// The value of `?id=` on the WebSocket URL: the token in version 1, the id in version 0.
    pub fn websocket_id(&self) -> &str {
        self.connection_token
            .as_deref()
            .unwrap_or(&self.connection_id)
    }

    /// Whether the server offers WebSockets with the given transfer format (`Text` or `Binary`).
    pub fn offers_websockets(&self, transfer_format: &str) -> bool {
        self.available_transports.iter().any(|t| {
            t.transport == WEBSOCKETS && t.transfer_formats.iter().any(|f| f == transfer_format)
        })
    }
}

/// A negotiate body or query that cannot be used.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NegotiateError {
    #[error("negotiate response is not valid JSON: {0}")]
    Syntax(String),
    #[error("negotiate response is missing the required field `{0}`")]
    MissingField(&'static str),
    #[error("negotiate response: field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    /// The `ProtocolVersion` field of the pre-Core ASP.NET SignalR.
    #[error("the server is an ASP.NET SignalR server, not ASP.NET Core SignalR; it cannot serve nodelink")]
    LegacyServer,
    #[error("negotiate query parameter `{param}` has an invalid value `{value}`")]
    InvalidQuery { param: &'static str, value: String },
}

/// The order and presence of fields as the .NET server writes them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a> {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    use_stateful_reconnect: bool,
    negotiate_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_token: Option<&'a str>,
    available_transports: &'a [AvailableTransport],
}

impl NegotiateResponse {
    /// The response body as JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        let out = match self {
            NegotiateResponse::Error(error) => {
                return serde_json::to_vec(&serde_json::json!({ "error": error }))
                    .expect("a string map serializes")
            }
            NegotiateResponse::Redirect { url, access_token } => WireOut {
                negotiate_version: 0,
                url: Some(url),
                access_token: access_token.as_deref(),
                connection_id: None,
                connection_token: None,
                use_stateful_reconnect: false,
                available_transports: &[],
            },
            NegotiateResponse::Connection(c) => WireOut {
                negotiate_version: c.negotiate_version,
                url: None,
                access_token: None,
                connection_id: Some(&c.connection_id),
                connection_token: c
                    .connection_token
                    .as_deref()
                    .filter(|_| c.negotiate_version > 0),
                use_stateful_reconnect: c.use_stateful_reconnect,
                available_transports: &c.available_transports,
            },
        };
        serde_json::to_vec(&out).expect("strings and numbers serialize")
    }

    /// Decodes a response body as the official clients do: unknown fields are ignored; without
    /// `url` or `error`, `connectionId` and `availableTransports` are required, and
    /// `connectionToken` too from version 1 on.
    pub fn decode(body: &[u8]) -> Result<NegotiateResponse, NegotiateError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| NegotiateError::Syntax(e.to_string()))?;
        let object = value.as_object().ok_or(NegotiateError::WrongType {
            field: "<body>",
            expected: "a JSON object",
        })?;
        if object.contains_key("ProtocolVersion") {
            return Err(NegotiateError::LegacyServer);
        }
        let string = |field: &'static str| -> Result<Option<String>, NegotiateError> {
            match object.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(NegotiateError::WrongType {
                    field,
                    expected: "a string",
                }),
            }
        };
        if let Some(error) = string("error")? {
            return Ok(NegotiateResponse::Error(error));
        }
        if let Some(url) = string("url")? {
            return Ok(NegotiateResponse::Redirect {
                url,
                access_token: string("accessToken")?,
            });
        }
        let negotiate_version =
            match object.get("negotiateVersion") {
                None => 0,
                Some(v) => v.as_u64().and_then(|v| u32::try_from(v).ok()).ok_or(
                    NegotiateError::WrongType {
                        field: "negotiateVersion",
                        expected: "a non-negative integer",
                    },
                )?,
            };
        let connection_id =
            string("connectionId")?.ok_or(NegotiateError::MissingField("connectionId"))?;
        let connection_token = string("connectionToken")?;
        if negotiate_version > 0 && connection_token.is_none() {
            return Err(NegotiateError::MissingField("connectionToken"));
        }
        let use_stateful_reconnect = match object.get("useStatefulReconnect") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(NegotiateError::WrongType {
                    field: "useStatefulReconnect",
                    expected: "a boolean",
                })
            }
        };
        let transports = object
            .get("availableTransports")
            .ok_or(NegotiateError::MissingField("availableTransports"))?;
        let available_transports: Vec<AvailableTransport> =
            serde_json::from_value(transports.clone()).map_err(|_| NegotiateError::WrongType {
                field: "availableTransports",
                expected: "an array of {transport, transferFormats} objects",
            })?;
        Ok(NegotiateResponse::Connection(NegotiatedConnection {
            negotiate_version,
            connection_id,
            // A version 0 server's token, if any, is not what `?id=` takes.
            connection_token: connection_token.filter(|_| negotiate_version > 0),
            use_stateful_reconnect,
            available_transports,
        }))
    }
}

/// The URL of the negotiate request for a hub URL: `/negotiate` appended to the path, the hub
/// URL's own query kept, `negotiateVersion` (and `useStatefulReconnect`) added.
pub fn negotiate_url(
    hub_url: &str,
    negotiate_version: u32,
    use_stateful_reconnect: bool,
) -> String {
    let (base, query) = split_query(hub_url);
    let mut url = format!("{}/negotiate?", base.trim_end_matches('/'));
    let mut params = form_urlencoded::Serializer::new(String::new());
    if let Some(query) = query {
        params.extend_pairs(form_urlencoded::parse(query.as_bytes()));
    }
    params.append_pair("negotiateVersion", &negotiate_version.to_string());
    if use_stateful_reconnect {
        params.append_pair("useStatefulReconnect", "true");
    }
    url.push_str(&params.finish());
    url
}

/// The WebSocket URL for a hub URL: `http(s)` becomes `ws(s)`, the hub URL's own query is kept,
/// and `id` is added when the connection was negotiated (without it the server treats the socket
/// as a skip-negotiation connection).
pub fn websocket_url(hub_url: &str, id: Option<&str>) -> String {
    let (base, query) = split_query(hub_url);
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    let mut params = form_urlencoded::Serializer::new(String::new());
    if let Some(query) = query {
        params.extend_pairs(form_urlencoded::parse(query.as_bytes()));
    }
    if let Some(id) = id {
        params.append_pair("id", id);
    }
    let params = params.finish();
    if params.is_empty() {
        base
    } else {
        format!("{base}?{params}")
    }
}

/// The first value of a query parameter, percent-decoded. `query` is without the leading `?`.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// Splits `url` into what precedes the query and the query (fragment dropped).
fn split_query(url: &str) -> (&str, Option<&str>) {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    match url.split_once('?') {
        Some((base, query)) => (base, Some(query).filter(|q| !q.is_empty())),
        None => (url, None),
    }
}
