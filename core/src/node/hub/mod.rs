//! The node's SignalR link to a gateway: negotiate, WebSocket, handshake, `Hello`, keep-alive,
//! acknowledged results, control before bulk. Sans-IO; docs/protocol.md sections 2 to 5 are
//! normative, `docs/node-parts/hub.md` is this module's own part of the spec.
//!
//! # Theory of operation
//! A [`HubLink`] owns ONE connection attempt at a time and knows nothing about what heartbeats or
//! commands mean: the node machine hands it calls to send and gets typed [`HubEvent`]s back. It
//! never retries: every [`HubLink::connect`] ends in exactly one [`HubEvent::Ended`], whose
//! [`LinkEnd`] says why, and the node machine picks the reconnect delay from it.
//!
//! ```text
//!  Idle --connect--> Negotiating --200 + connection--> OpeningSocket --ws opened--> Handshaking
//!    ^                 |  (one same-origin redirect:     |                           | {} (send Hello)
//!    |                 |   negotiate again)              |                           v
//!    +---- Ended <-----+---------------------------------+------ Ready <--Hello-- AwaitingHello
//!                                                                       completion
//! ```
//!
//! Outputs, drained with [`HubLink::poll_output`] after every input: [`HubOutput::Http`] (the
//! negotiate POST, answered with [`HubLink::handle_http_response`]),
//! [`HubOutput::OpenWebSocket`] (answered with [`HubLink::handle_ws_opened`] or
//! [`HubLink::handle_ws_failed`]), [`HubOutput::Send`] (one WebSocket message of whole records),
//! [`HubOutput::Close`] and [`HubOutput::Event`].
//!
//! Sending. Every input handler ends by *pumping*: records waiting in the control queue (`Hello`,
//! `Ping`, `Heartbeat`, `ScopeChanged`, `CommandProgress`, Completions, `Close`) are batched into
//! frames first, then `CommandResult` parts from the bulk queue, at most
//! [`HubConfig::results_in_flight`] of them awaiting their Completion at once. A frame holds whole
//! records only and is cut at [`HubConfig::max_batch_len`] unless one record alone is larger. So a
//! heartbeat waits behind at most the window of result parts already handed to the shell (design
//! rule 6). Before `Ready`, only the handshake, `Hello` and `Ping` go out; the node's calls (and
//! our Completions) wait in a deferred queue and gateway calls received meanwhile are held back, so
//! the node machine always sees [`HubEvent::Ready`] (and the protocol version) before the first
//! [`HubEvent::Call`]. `RevokeAccess` is the exception: it is reported at once.
//!
//! Invocation ids are a counter from 1, as decimal strings, per connection: `Hello` gets `"1"`, each
//! result part the next one when it leaves the bulk queue.
//!
//! Timers ([`HubLink::poll_timeout`]): the handshake response and then the `Hello` Completion must
//! each come within [`HubConfig::handshake_timeout`]; from the handshake on, a `Ping` goes out when
//! nothing was *sent* for [`HubConfig::keep_alive`], and the link ends when nothing was
//! *received* for [`HubConfig::peer_timeout`]. Each is measured from the last send / receive,
//! SignalR's rule, not from a fixed schedule.
//!
//! After `Ended`, queued control calls are dropped (the node regenerates a heartbeat on the next
//! connection); result parts that were not acknowledged stay queued, in their original order,
//! for [`HubLink::take_unacknowledged`] or to be resent (with new invocation ids) once the next
//! connection is ready. Stateful reconnect (hub protocol version 2) is not used: the handshake
//! asks for version 1, and a broken connection is a new connection.

mod fair;
mod link;
mod receive;
mod send;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::time::{TimerKind, TimerTable};
use crate::wire::contract::{ContractError, GatewayCall, SUPPORTED_PROTOCOL_VERSIONS};
use crate::wire::dto::{Capabilities, CommandResultDto};
use crate::wire::rest::NodeToken;
use crate::wire::signalr::framing::{RecordDecoder, DEFAULT_MAX_RECORD_LEN};
use crate::wire::signalr::handshake::{HANDSHAKE_TIMEOUT, KEEP_ALIVE_INTERVAL, PEER_TIMEOUT};
use crate::wire::signalr::{DecodeError, HubProtocol, Payload};

use super::http::HttpCall;

/// WebSocket close code of a normal close (RFC 6455).
pub const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code for a peer that broke the protocol.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// WebSocket close code for a record over [`HubConfig::max_record_len`].
pub const CLOSE_TOO_BIG: u16 = 1009;
/// The longest close reason a WebSocket close frame can carry, in bytes.
pub const MAX_CLOSE_REASON_LEN: usize = 123;
/// The default cap on a batched frame: records are batched up to this size, never split.
pub const DEFAULT_MAX_BATCH_LEN: usize = 64 * 1024;
/// The default number of result parts awaiting their Completion at once.
pub const DEFAULT_RESULTS_IN_FLIGHT: usize = 4;

/// What a [`HubLink`] connects to and how.
#[derive(Clone, PartialEq, Debug)]
pub struct HubConfig {
    /// The hub's URL, `http(s)://host[:port]/path[?query]`, e.g. `https://gw.example.com/hubs/node`.
    /// Its query is kept on every derived request (docs/protocol.md 2.1).
    pub hub_url: String,
    /// JSON (Text frames) or MessagePack (Binary frames).
    pub protocol: HubProtocol,
    /// Sent as `Authorization: Bearer` on the negotiate request and on the WebSocket upgrade.
    pub token: NodeToken,
    /// The `nodeId` of `Hello`: the token's nodeId.
    pub node_id: String,
    /// Offered in `Hello`, newest first.
    pub protocol_versions: Vec<String>,
    /// How long to wait for the handshake response, and then for the `Hello` Completion (15 s).
    pub handshake_timeout: Duration,
    /// A `Ping` goes out when nothing was sent for this long (15 s).
    pub keep_alive: Duration,
    /// The link ends when nothing was received for this long (30 s).
    pub peer_timeout: Duration,
    /// The longest record accepted ([`DEFAULT_MAX_RECORD_LEN`]); a longer one closes with 1009.
    pub max_record_len: usize,
    /// How many `CommandResult` parts may await their Completion at once (>= 1).
    pub results_in_flight: usize,
    /// Records are batched into one frame up to this many bytes (a larger record goes alone).
    pub max_batch_len: usize,
    /// Sent in `Hello` (a plain gateway ignores them); `None` leaves the field out.
    pub capabilities: Option<Capabilities>,
}

impl HubConfig {
    /// A configuration with the protocol's defaults: the token's nodeId, the versions this build
    /// speaks, 15 s handshake, 15 s keep-alive, 30 s peer timeout, 5 MiB records, 4 result parts
    /// in flight, 64 KiB batches.
    pub fn new(hub_url: impl Into<String>, protocol: HubProtocol, token: NodeToken) -> HubConfig {
        HubConfig {
            hub_url: hub_url.into(),
            protocol,
            node_id: token.node_id().to_owned(),
            token,
            protocol_versions: SUPPORTED_PROTOCOL_VERSIONS
                .iter()
                .map(|v| (*v).to_owned())
                .collect(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            keep_alive: KEEP_ALIVE_INTERVAL,
            peer_timeout: PEER_TIMEOUT,
            max_record_len: DEFAULT_MAX_RECORD_LEN,
            results_in_flight: DEFAULT_RESULTS_IN_FLIGHT,
            max_batch_len: DEFAULT_MAX_BATCH_LEN,
            capabilities: None,
        }
    }

    /// Checks what [`HubLink::new`] needs.
    pub fn validate(&self) -> Result<(), HubConfigError> {
        if split_origin(&self.hub_url).is_none() {
            return Err(HubConfigError::HubUrl(self.hub_url.clone()));
        }
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("keep_alive", self.keep_alive),
            ("peer_timeout", self.peer_timeout),
        ] {
            if value.is_zero() {
                return Err(HubConfigError::Zero(name));
            }
        }
        for (name, value) in [
            ("max_record_len", self.max_record_len),
            ("results_in_flight", self.results_in_flight),
            ("max_batch_len", self.max_batch_len),
        ] {
            if value == 0 {
                return Err(HubConfigError::Zero(name));
            }
        }
        if self.protocol_versions.is_empty() {
            return Err(HubConfigError::NoProtocolVersion);
        }
        Ok(())
    }
}

/// A [`HubConfig`] that cannot work (caller misuse).
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HubConfigError {
    #[error("hub URL `{0}` is not an http:// or https:// URL with a host")]
    HubUrl(String),
    #[error("`{0}` must not be zero")]
    Zero(&'static str),
    #[error("`protocol_versions` is empty: Hello must offer at least one version")]
    NoProtocolVersion,
}

/// A method of [`HubLink`] called when it cannot be (caller misuse).
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HubUsageError {
    /// `connect` while a connection attempt is under way.
    #[error("the hub link is already connecting or connected; wait for Ended")]
    AlreadyConnected,
    /// `send_call` with no connection attempt under way.
    #[error("the hub link is idle: connect first (control calls are not kept across connections)")]
    NotConnected,
    /// `send_call` with a call the link sends itself or through another method.
    #[error("{0} is not sent with send_call: {1}")]
    WrongMethod(&'static str, &'static str),
    /// The call's argument cannot be encoded in the link's hub protocol.
    #[error("the call cannot be encoded: {0}")]
    Unencodable(String),
}

pub use crate::node::WsFrame;

/// What the shell must do, or what the node machine must learn.
#[derive(Clone, PartialEq, Debug)]
pub enum HubOutput {
    /// The negotiate POST. `path` is the path and query of the negotiate URL on the origin
    /// (`scheme://host[:port]`) of the hub URL, [`HubLink::origin`]: the node machine joins them.
    /// Answer with [`HubLink::handle_http_response`].
    Http(HttpCall),
    /// Open a WebSocket at `url` (`ws(s)://...?id=<connectionToken>`; the id is a secret, do not
    /// log it) with `Authorization: Bearer <bearer>`. Answer with [`HubLink::handle_ws_opened`]
    /// or [`HubLink::handle_ws_failed`].
    OpenWebSocket {
        url: String,
        bearer: NodeToken,
    },
    /// Send one WebSocket message (whole records only; JSON in Text, MessagePack in Binary, the
    /// handshake in Text).
    Send(WsFrame),
    /// Close the WebSocket (or abandon its opening) with this code and reason (at most 123 bytes).
    /// Do not report the close back with `handle_ws_closed`: the link is already over.
    Close {
        code: u16,
        reason: String,
    },
    Event(HubEvent),
}

/// What happened on the link.
#[derive(Clone, PartialEq, Debug)]
pub enum HubEvent {
    /// The handshake was accepted and `Hello` answered. `negotiated` is false for a gateway that
    /// does not know `Hello` (legacy, [`crate::wire::contract::LEGACY_PROTOCOL_VERSION`]): do not
    /// send `CommandProgress` there (docs/protocol.md 5.7).
    Ready {
        protocol_version: String,
        negotiated: bool,
    },
    /// A gateway call (`ExecuteCommand`, `CancelCommand`, `RefreshScopes`, `RevokeAccess`).
    Call(GatewayCall),
    /// The gateway recorded this result part (a void Completion): it is forgotten here.
    ResultAcknowledged {
        command_id: String,
        part_index: Option<u32>,
    },
    /// The gateway refused this result part for good (a Completion error): do not resend it.
    ResultRefused {
        command_id: String,
        part_index: Option<u32>,
        error: String,
    },
    /// The connection is over and the link idle again: [`HubLink::connect`] may be called.
    Ended(LinkEnd),
    /// The gateway sent something the protocol does not allow; it was dropped (and answered
    /// where the protocol says so), the link goes on.
    PeerMisbehaved(PeerError),
}

/// Why a connection ended, so that the node machine can pick its backoff.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LinkEnd {
    /// The negotiate request failed: no answer (`status` None), an unexpected status, an
    /// unusable body, a refusal (`{"error"}`), or a redirect that is not followed.
    #[error("negotiate failed (status {status:?}): {detail}")]
    NegotiateFailed { status: Option<u16>, detail: String },
    /// 401 or 403 on the negotiate request or the WebSocket upgrade: the token is refused.
    #[error("unauthorized (status {status}): {detail}")]
    Unauthorized { status: u16, detail: String },
    /// The WebSocket could not be opened (another status, or no HTTP answer at all).
    #[error("WebSocket upgrade failed (status {status:?}): {detail}")]
    WebSocketFailed { status: Option<u16>, detail: String },
    /// The gateway refused the handshake with this error.
    #[error("handshake rejected: {0}")]
    HandshakeRejected(String),
    /// No handshake response within the handshake timeout.
    #[error("no handshake response within the handshake timeout")]
    HandshakeTimeout,
    /// No Completion of `Hello` within the handshake timeout.
    #[error("no answer to Hello within the handshake timeout")]
    HelloTimeout,
    /// The gateway shares no protocol version with this node: do not retry until one side is
    /// upgraded (docs/protocol.md 5.8).
    #[error("no shared protocol version: {detail}")]
    NoSharedVersion { detail: String },
    /// Nothing received within the peer timeout.
    #[error("the gateway sent nothing within the peer timeout")]
    PeerTimeout,
    /// The gateway sent a Close message. Reconnect automatically only if `allow_reconnect`.
    #[error("closed by the gateway (error {error:?}, allow reconnect: {allow_reconnect})")]
    ClosedByGateway {
        error: Option<String>,
        allow_reconnect: bool,
    },
    /// The socket closed (or broke) without a Close message.
    #[error("socket closed (code {code:?}): {reason}")]
    SocketClosed { code: Option<u16>, reason: String },
    /// The gateway broke the protocol beyond one record (framing, handshake, `Hello` result).
    #[error("protocol error: {0}")]
    ProtocolError(PeerError),
    /// The node machine called [`HubLink::close`].
    #[error("closed by the node: {reason}")]
    ClosedByNode { reason: String },
}

impl LinkEnd {
    /// 401 or 403: the token was refused.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, LinkEnd::Unauthorized { .. })
    }
}

/// Something the gateway sent that the protocol does not allow.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum PeerError {
    /// A record (or the handshake response) that does not decode.
    #[error("undecodable record: {0}")]
    Decode(DecodeError),
    /// An invocation that does not fit the contract (unknown method, wrong arguments).
    #[error("invalid invocation: {0}")]
    Contract(ContractError),
    /// The `Hello` Completion carries a result that is not an acceptable `HelloAckDto`.
    #[error("invalid Hello completion: {0}")]
    InvalidHelloResult(ContractError),
    /// A Completion whose invocation id is not awaiting one.
    #[error("completion for invocation id `{invocation_id}`, which awaits none")]
    UnknownCompletion { invocation_id: String },
    /// A message type the contract does not use (streams, stateful-reconnect Ack/Sequence).
    #[error("unexpected {message} message: {detail}")]
    UnexpectedMessage {
        message: &'static str,
        detail: &'static str,
    },
}

/// Where the link stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HubState {
    /// No connection: `connect` may be called.
    Idle,
    /// The negotiate request is out.
    Negotiating,
    /// The WebSocket is being opened.
    OpeningSocket,
    /// The handshake request is out; waiting for the response.
    Handshaking,
    /// The handshake was accepted and `Hello` is out; waiting for its Completion.
    AwaitingHello,
    /// Calls flow both ways.
    Ready,
}

/// The link's timers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum HubTimer {
    Handshake,
    Hello,
    KeepAlive,
    PeerTimeout,
}

impl TimerKind for HubTimer {
    /// Timers due at the same instant fire in this order: a dead peer ends the link before a
    /// keep-alive Ping would go out.
    const ALL: &'static [Self] = &[
        HubTimer::Handshake,
        HubTimer::Hello,
        HubTimer::PeerTimeout,
        HubTimer::KeepAlive,
    ];

    fn index(self) -> usize {
        match self {
            HubTimer::Handshake => 0,
            HubTimer::Hello => 1,
            HubTimer::PeerTimeout => 2,
            HubTimer::KeepAlive => 3,
        }
    }
}

/// A result part handed over by the node machine, with its argument already encoded.
#[derive(Clone, Debug)]
struct Part {
    dto: CommandResultDto,
    argument: Payload,
}

/// The node's SignalR link to a gateway; see the module docs.
#[derive(Debug)]
pub struct HubLink {
    config: HubConfig,
    state: HubState,
    /// The hub URL of this attempt: the configured one, or the one a redirect named.
    hub_url: String,
    /// The bearer of this attempt: the node token, or the one a redirect handed out.
    bearer: NodeToken,
    redirected: bool,
    timers: TimerTable<HubTimer>,
    decoder: RecordDecoder,
    /// The last invocation id handed out on this connection (ids start at 1).
    last_invocation_id: u64,
    hello_id: Option<u64>,
    out: VecDeque<HubOutput>,
    /// Encoded records to send before any result part.
    control: VecDeque<Vec<u8>>,
    /// Encoded control records held until `Ready`.
    deferred: VecDeque<Vec<u8>>,
    /// Gateway calls received before `Ready`, reported right after it.
    early_calls: Vec<GatewayCall>,
    /// Result parts not sent yet (or sent on a connection that ended), in order.
    bulk: fair::FairQueue<Part>,
    /// Result parts sent and awaiting their Completion, by invocation id (= send order).
    in_flight: BTreeMap<u64, Part>,
    protocol_version: Option<String>,
    negotiated: bool,
}

/// Splits an `http(s)://authority/path?query` URL into its origin (`scheme://authority`) and its
/// path and query (`/` when empty; the fragment dropped). `None` for other schemes or no host.
pub fn split_origin(url: &str) -> Option<(&str, String)> {
    let scheme_len = if url.len() >= 8 && url[..8].eq_ignore_ascii_case("https://") {
        8
    } else if url.len() >= 7 && url[..7].eq_ignore_ascii_case("http://") {
        7
    } else {
        return None;
    };
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let rest = &url[scheme_len..];
    let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
    if authority_len == 0 {
        return None;
    }
    let origin = &url[..scheme_len + authority_len];
    let tail = &rest[authority_len..];
    let path = if tail.starts_with('/') {
        tail.to_owned()
    } else {
        format!("/{tail}")
    };
    Some((origin, path))
}

/// `reason` cut to [`MAX_CLOSE_REASON_LEN`] bytes on a character boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_CLOSE_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}
