//! The hub's WebSocket: the upgrade (the machine authenticates it), then one task per socket
//! that forwards received messages to the driver and writes the driver's outbound queue.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use bytes::Bytes;
use futures_lite::{future, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use nodelink_core::gateway::{ConnId, HttpRequest, Source};
use nodelink_core::node::http::Method;
use nodelink_core::node::WsFrame;
use smol::channel::{Receiver, Sender};

use super::driver::{Outbound, SocketHandle, ToDriver};
use super::http::{error, header_str, machine_reply, unavailable, Body};
use super::io::UpgradedIo;
use super::outbound::{outbound_queue, OutboundReceiver};
use super::server::Shared;

/// tungstenite's bound on bytes written but not yet flushed to the socket.
const MAX_WRITE_BUFFER: usize = 8 * 1024 * 1024;

/// How long a socket we closed waits for the peer's Close.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// An accepted upgrade, handed from the HTTP service to the connection task.
pub(crate) struct PendingSocket {
    conn: ConnId,
    on_upgrade: OnUpgrade,
    outbound: OutboundReceiver,
    abort: Receiver<()>,
}

impl PendingSocket {
    /// An upgrade accepted by another route (the LLM dialect's `/ws`).
    pub(crate) fn new(
        conn: ConnId,
        on_upgrade: OnUpgrade,
        outbound: OutboundReceiver,
        abort: Receiver<()>,
    ) -> PendingSocket {
        PendingSocket {
            conn,
            on_upgrade,
            outbound,
            abort,
        }
    }
}

/// tungstenite per design.md section 6: small read buffer, no write batching buffer, messages
/// just above the largest legal record (the machine answers an oversized record with 1009).
pub(crate) fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER.max(max_message * 2))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

pub(crate) fn is_upgrade<B>(request: &Request<B>) -> bool {
    let has = |name, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    has(UPGRADE, "websocket") && has(CONNECTION, "upgrade")
}

/// `GET /hubs/node?...` with `Upgrade: websocket`: the machine decides, then 101.
pub(crate) async fn upgrade(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
    upgrade_tx: Sender<PendingSocket>,
) -> Response<Body> {
    if request.method() != hyper::Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade is a GET",
        );
    }
    if header_str(&request, "sec-websocket-version").as_deref() != Some("13") {
        let mut response = error(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is served",
        );
        response
            .headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = header_str(&request, SEC_WEBSOCKET_KEY.as_str()) else {
        return error(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
    };
    let conn = shared.next_conn();
    let (outbound_tx, outbound_rx) = outbound_queue(shared.outbound_bytes);
    let (abort_tx, abort_rx) = smol::channel::bounded(1);
    let (reply_tx, reply_rx) = smol::channel::bounded(1);
    let message = ToDriver::Upgrade {
        conn,
        source: Source(peer.ip().to_string()),
        request: HttpRequest {
            method: Method::Get,
            target: request
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string()),
            authorization: header_str(&request, "authorization"),
            body: Vec::new(),
        },
        reply: reply_tx,
        socket: SocketHandle {
            outbound: outbound_tx,
            abort: abort_tx,
        },
    };
    if shared.to_driver.send(message).await.is_err() {
        return unavailable();
    }
    match reply_rx.recv().await {
        Ok(Ok(())) => {
            let pending = PendingSocket {
                conn,
                on_upgrade: hyper::upgrade::on(&mut request),
                outbound: outbound_rx,
                abort: abort_rx,
            };
            if upgrade_tx.try_send(pending).is_err() {
                let _ = shared
                    .to_driver
                    .send(ToDriver::Closed { conn, code: None })
                    .await;
                return error(StatusCode::BAD_REQUEST, "one upgrade per connection");
            }
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
                headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
            }
            response
        }
        Ok(Err(reply)) => machine_reply(reply),
        Err(_) => unavailable(),
    }
}

/// Runs one upgraded socket until it ends, then tells the driver.
pub(crate) async fn run(shared: Arc<Shared>, pending: PendingSocket) {
    let conn = pending.conn;
    shared.metrics.sockets.fetch_add(1, Ordering::Relaxed);
    let upgraded = future::or(async { Some(pending.on_upgrade.await) }, async {
        smol::Timer::after(shared.handshake_timeout).await;
        None
    })
    .await;
    let code = match upgraded {
        Some(Ok(upgraded)) => {
            let stream = WebSocketStream::from_raw_socket(
                UpgradedIo(upgraded),
                Role::Server,
                Some(config(shared.max_message)),
            )
            .await;
            serve(&shared, conn, stream, pending.outbound, pending.abort).await
        }
        _ => None,
    };
    let _ = shared.to_driver.send(ToDriver::Closed { conn, code }).await;
    shared.metrics.sockets.fetch_sub(1, Ordering::Relaxed);
}

/// How the reading half ended.
enum ReadEnd {
    /// The peer closed (with its code, if any) or the stream ended.
    Peer(Option<u16>),
    /// The peer broke the WebSocket rules (too big, bad frame): close with this code.
    Violation(u16, String),
}

/// How the socket task ended.
enum End {
    Read(ReadEnd),
    /// The machine closed it (its Close went out), or the driver let go of it.
    Written,
    /// The driver aborted it: a slow reader.
    Aborted,
}

async fn serve(
    shared: &Shared,
    conn: ConnId,
    stream: WebSocketStream<UpgradedIo>,
    outbound: OutboundReceiver,
    abort: Receiver<()>,
) -> Option<u16> {
    let (mut tx, mut rx) = stream.split();
    let reader = async {
        loop {
            let frame = match rx.next().await {
                None => return End::Read(ReadEnd::Peer(None)),
                Some(Ok(Message::Text(text))) => WsFrame::Text(text.as_str().to_owned()),
                Some(Ok(Message::Binary(data))) => WsFrame::Binary(data.to_vec()),
                Some(Ok(Message::Close(frame))) => {
                    return End::Read(ReadEnd::Peer(frame.map(|f| u16::from(f.code))))
                }
                // Pings are answered by tungstenite; pongs and raw frames mean nothing here.
                Some(Ok(_)) => continue,
                Some(Err(WsError::Capacity(e))) => {
                    return End::Read(ReadEnd::Violation(1009, e.to_string()))
                }
                Some(Err(WsError::Protocol(e))) => {
                    return End::Read(ReadEnd::Violation(1002, e.to_string()))
                }
                Some(Err(WsError::Utf8(e))) => return End::Read(ReadEnd::Violation(1007, e)),
                Some(Err(_)) => return End::Read(ReadEnd::Peer(None)),
            };
            shared.metrics.add_in(frame.as_bytes().len());
            let message = ToDriver::Frame { conn, frame };
            if shared.to_driver.send(message).await.is_err() {
                return End::Read(ReadEnd::Peer(None));
            }
        }
    };
    let writer = async {
        loop {
            let frame = match outbound.recv().await {
                Ok(Outbound::Frame(frame)) => frame,
                Ok(Outbound::Close(code, reason)) => {
                    let close = CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    };
                    let _ = tx.close(Some(close)).await;
                    return End::Written;
                }
                Err(_) => {
                    // The driver stopped without a word for this socket.
                    let close = CloseFrame {
                        code: CloseCode::Away,
                        reason: "the gateway is going away".into(),
                    };
                    let _ = tx.close(Some(close)).await;
                    return End::Written;
                }
            };
            let len = frame.as_bytes().len();
            let message = match frame {
                WsFrame::Text(text) => Message::Text(text.into()),
                WsFrame::Binary(data) => Message::Binary(data.into()),
                WsFrame::Ping(data) => Message::Ping(data.into()),
                WsFrame::Pong(data) => Message::Pong(data.into()),
            };
            if tx.send(message).await.is_err() {
                return End::Read(ReadEnd::Peer(None));
            }
            shared.metrics.add_out(len);
        }
    };
    let aborted = async {
        match abort.recv().await {
            Ok(()) => End::Aborted,
            Err(_) => future::pending().await,
        }
    };
    let end = future::or(future::or(reader, writer), aborted).await;
    match end {
        End::Read(ReadEnd::Peer(code)) => {
            // Answer the peer's Close (tungstenite queued the reply); a dead socket just fails.
            let _ = future::or(
                async {
                    let _ = tx.close(None).await;
                },
                async {
                    smol::Timer::after(CLOSE_WAIT).await;
                },
            )
            .await;
            code
        }
        End::Read(ReadEnd::Violation(code, detail)) => {
            tracing::debug!(conn = conn.0, code, %detail, "WebSocket violation");
            let close = CloseFrame {
                code: CloseCode::from(code),
                reason: detail.chars().take(120).collect::<String>().into(),
            };
            let _ = future::or(
                async {
                    let _ = tx.close(Some(close)).await;
                },
                async {
                    smol::Timer::after(std::time::Duration::from_secs(1)).await;
                },
            )
            .await;
            None
        }
        End::Written => {
            // Our Close went out: read until the peer's Close (or EOF), so that closing the TCP
            // socket with unread data does not reset it and destroy what the peer has yet to read.
            let _ = future::or(
                async {
                    while let Some(Ok(message)) = rx.next().await {
                        if message.is_close() {
                            break;
                        }
                    }
                },
                async {
                    smol::Timer::after(CLOSE_WAIT).await;
                },
            )
            .await;
            None
        }
        End::Aborted => None,
    }
}
