//! The HTTP requests a node machine asks its shell to make, and what the shell reports back.
//!
//! Sub-machines (pairing, polling, the hub's negotiate) produce an [`HttpCall`] with a path
//! relative to the gateway's base URL; the node machine numbers it, joins the URL and routes the
//! shell's answer back to the sub-machine that asked. Each sub-machine has at most one request in
//! flight, which keeps their cadence simple to reason about and to test.

use std::fmt;

use crate::wire::rest::NodeToken;

/// GET or POST: the only methods the node side of the protocol uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// One request a sub-machine wants made. `path` starts with `/` and may carry a query; bodies are
/// JSON (`Content-Type: application/json`).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub method: Method,
    pub path: String,
    /// Sent as `Authorization: Bearer <token>`; never logged.
    pub bearer: Option<NodeToken>,
    pub body: Option<Vec<u8>>,
}

impl fmt::Debug for HttpCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCall")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            // Bodies may hold secrets (the pairing secret): their length only.
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .finish()
    }
}

/// The answer to an [`HttpCall`]: any status (the sub-machine judges it) and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The request never got an HTTP answer (refused, reset, DNS, TLS, or the shell's own timeout).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("HTTP request failed: {0}")]
pub struct HttpError(pub String);

/// What the shell reports for a request.
pub type HttpResult = Result<HttpResponse, HttpError>;
