//! The node's WebSocket client: one socket per [`LinkId`], opened, read and written on smol's
//! executor, never on the driver.
//!
//! A link is two tasks. The *reader* opens the socket (TCP, TLS for `wss://`, the upgrade with
//! `Authorization: Bearer` when the machine gives a token), reports `Opened` or `Failed`, then
//! forwards every message to the driver tagged with the link's id, until the socket ends. The
//! *writer* takes frames from a bounded queue and writes them with `feed` + one `flush` per batch
//! (design.md section 6: `send` flushes per message). A full queue means the peer stopped
//! reading: the driver treats the link as dead rather than block.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use futures_util::SinkExt;
use nodelink_core::node::{LinkId, WsFrame};
use nodelink_core::wire::rest::NodeToken;
use smol::channel::{Receiver, Sender, TrySendError};

use super::driver::Wake;
use super::tls::TrustRoots;

/// Frames waiting for the writer; beyond this the link is given up (the peer is not reading).
pub const WRITE_QUEUE: usize = 256;

/// The largest WebSocket message read: twice the hub's 5 MiB record limit, so that the machine
/// itself sees (and answers, 1009) an oversized record, and tungstenite stops anything larger.
const MAX_MESSAGE: usize = 2 * nodelink_core::wire::signalr::framing::DEFAULT_MAX_RECORD_LEN;

/// Bytes tungstenite may hold unsent before `WriteBufferFull` (the backpressure signal).
const MAX_WRITE_BUFFER: usize = 16 * 1024 * 1024;

/// tungstenite's settings for a node's socket (design.md section 6: a 4 KiB read buffer instead
/// of 128 KiB, no write buffering beyond a message, bounded message and write buffer sizes).
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// What a link reports to the driver.
#[derive(Debug)]
pub enum LinkEvent {
    Opened,
    Failed { status: Option<u16>, detail: String },
    Frame(WsFrame),
    Closed { code: Option<u16>, reason: String },
}

/// What the driver asks a link's writer to do.
#[derive(Debug)]
pub enum WriteOp {
    Frame(WsFrame),
    Close { code: u16, reason: String },
}

/// Any byte stream a WebSocket can run over (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Socket = WebSocketStream<Box<dyn Io>>;

/// The driver's side of one link: dropping it stops the reader; the writer finishes what was
/// queued (a close frame, say) and ends.
pub struct Link {
    pub id: LinkId,
    queue: Sender<WriteOp>,
    _reader: smol::Task<()>,
    writer: Option<smol::Task<()>>,
}

impl Link {
    /// Starts opening `url`; the outcome and then every message arrive through `report`.
    pub fn open(
        id: LinkId,
        url: String,
        bearer: Option<NodeToken>,
        roots: TrustRoots,
        connect_timeout: Duration,
        wake: Sender<Wake>,
    ) -> Link {
        let (queue, rx) = smol::channel::bounded(WRITE_QUEUE);
        let (writer_tx, writer_rx) = smol::channel::bounded::<WriterStart>(1);
        // A send fails only once the driver is gone: nothing is left to tell.
        let report = move |event: LinkEvent| {
            let wake = wake.clone();
            async move {
                let _ = wake.send(Wake::Link(id, event)).await;
            }
        };
        let report = Arc::new(report);
        let closed = Arc::new(AtomicBool::new(false));
        let reader = {
            let report = report.clone();
            let closed = closed.clone();
            smol::spawn(async move {
                let socket = connect(&url, bearer.as_ref(), &roots)
                    .or(async {
                        smol::Timer::after(connect_timeout).await;
                        Err((None, format!("no WebSocket after {connect_timeout:?}")))
                    })
                    .await;
                let socket = match socket {
                    Ok(socket) => socket,
                    Err((status, detail)) => {
                        report(LinkEvent::Failed { status, detail }).await;
                        return;
                    }
                };
                let (sender, mut receiver) = socket.split();
                if writer_tx.send(WriterStart { sender, rx }).await.is_err() {
                    return;
                }
                report(LinkEvent::Opened).await;
                let end = loop {
                    match receiver.next().await {
                        Some(Ok(message)) => {
                            let frame = match message {
                                Message::Text(text) => WsFrame::Text(text.as_str().to_owned()),
                                Message::Binary(bytes) => WsFrame::Binary(bytes.to_vec()),
                                Message::Ping(bytes) => WsFrame::Ping(bytes.to_vec()),
                                Message::Pong(bytes) => WsFrame::Pong(bytes.to_vec()),
                                Message::Close(frame) => {
                                    break match frame {
                                        Some(frame) => LinkEvent::Closed {
                                            code: Some(u16::from(frame.code)),
                                            reason: frame.reason.as_str().to_owned(),
                                        },
                                        None => LinkEvent::Closed {
                                            code: None,
                                            reason: String::new(),
                                        },
                                    };
                                }
                                Message::Frame(_) => continue,
                            };
                            report(LinkEvent::Frame(frame)).await;
                        }
                        Some(Err(error)) => {
                            break LinkEvent::Closed {
                                code: None,
                                reason: format!("read failed: {error}"),
                            }
                        }
                        None => {
                            break LinkEvent::Closed {
                                code: None,
                                reason: "connection closed".into(),
                            }
                        }
                    }
                };
                if !closed.swap(true, Ordering::SeqCst) {
                    report(end).await;
                }
            })
        };
        let writer = smol::spawn(async move {
            let Ok(WriterStart { sender, rx }) = writer_rx.recv().await else {
                return;
            };
            if let Err(error) = write_loop(sender, rx).await {
                if !closed.swap(true, Ordering::SeqCst) {
                    report(LinkEvent::Closed {
                        code: None,
                        reason: format!("write failed: {error}"),
                    })
                    .await;
                }
            }
        });
        Link {
            id,
            queue,
            _reader: reader,
            writer: Some(writer),
        }
    }

    /// Queues `op`; false when the queue is full or the writer is gone (the link is dead).
    pub fn write(&self, op: WriteOp) -> bool {
        match self.queue.try_send(op) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Closes the link: queues the close frame and hands back the writer, to be awaited (bounded)
    /// before the process exits so that the close frame is written.
    pub fn close(mut self, code: u16, reason: String) -> Option<smol::Task<()>> {
        let _ = self.write(WriteOp::Close { code, reason });
        self.writer.take()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The writer ends once its queue is drained and closed.
        if let Some(writer) = self.writer.take() {
            writer.detach();
        }
        self.queue.close();
    }
}

struct WriterStart {
    sender: async_tungstenite::WebSocketSender<Box<dyn Io>>,
    rx: Receiver<WriteOp>,
}

/// Writes what is queued, batching: every op available without waiting is fed, then one flush.
async fn write_loop(
    mut sender: async_tungstenite::WebSocketSender<Box<dyn Io>>,
    rx: Receiver<WriteOp>,
) -> Result<(), WsError> {
    while let Ok(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                WriteOp::Frame(frame) => sender.feed(to_message(frame)).await?,
                WriteOp::Close { code, reason } => {
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    };
                    sender.feed(Message::Close(Some(frame))).await?;
                    sender.flush().await?;
                    // Best effort: the socket ends with the writer.
                    let _ = sender.close(None).await;
                    return Ok(());
                }
            }
            next = rx.try_recv().ok();
        }
        sender.flush().await?;
    }
    Ok(())
}

fn to_message(frame: WsFrame) -> Message {
    match frame {
        WsFrame::Text(text) => Message::text(text),
        WsFrame::Binary(bytes) => Message::binary(bytes),
        WsFrame::Ping(bytes) => Message::Ping(bytes.into()),
        WsFrame::Pong(bytes) => Message::Pong(bytes.into()),
    }
}

/// TCP, TLS when `wss://`, then the upgrade. Errors carry the upgrade's HTTP status when there
/// was one (401/403 tell the machine its token is refused).
async fn connect(
    url: &str,
    bearer: Option<&NodeToken>,
    roots: &TrustRoots,
) -> Result<Socket, (Option<u16>, String)> {
    let mut request = url
        .into_client_request()
        .map_err(|e| (None, format!("invalid WebSocket URL: {e}")))?;
    let uri = request.uri().clone();
    let secure = match uri.scheme_str() {
        Some("wss") | Some("https") => true,
        Some("ws") | Some("http") => false,
        other => return Err((None, format!("unsupported scheme {other:?}"))),
    };
    let host = uri
        .host()
        .ok_or((None, "the WebSocket URL has no host".to_string()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    if let Some(token) = bearer {
        let value = HeaderValue::from_str(&token.bearer())
            .map_err(|_| (None, "the token cannot travel in a header".to_string()))?;
        request.headers_mut().insert("Authorization", value);
    }
    let tcp = smol::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| (None, format!("connecting to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| (None, format!("invalid TLS server name {host}: {e}")))?;
        let connector = futures_rustls::TlsConnector::from(roots.client_config.clone());
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| (None, format!("TLS with {host}: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    match async_tungstenite::client_async_with_config(request, io, Some(websocket_config())).await {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            Err((
                Some(status),
                format!("the upgrade was answered HTTP {status}"),
            ))
        }
        Err(error) => Err((None, format!("WebSocket upgrade failed: {error}"))),
    }
}
