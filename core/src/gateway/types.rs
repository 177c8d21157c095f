//! Types the gateway's sub-machines share.

/// A connection as the shell numbers it: one WebSocket, or one HTTP request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Where a request came from (an IP address, as text), for rate limits and logs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source(pub String);

/// An HTTP answer the gateway machine decided; the shell writes it. Bodies are JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpReply {
    /// A JSON body with this status.
    pub fn json(status: u16, body: &impl serde::Serialize) -> HttpReply {
        HttpReply {
            status,
            body: serde_json::to_vec(body).expect("reply bodies are plain data"),
        }
    }
}
