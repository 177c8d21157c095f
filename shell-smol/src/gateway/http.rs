//! One client connection: hyper (HTTP/1.1) over plain TCP or TLS, routing each request to the
//! machine (node REST, negotiate), the WebSocket upgrade, the operator API or the metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use nodelink_core::gateway::{HttpReply, HttpRequest, Source};
use nodelink_core::node::http::Method;
use smol::channel::Sender;
use smol::net::TcpStream;
use smol_hyper::rt::{FuturesIo, SmolTimer};

use super::driver::ToDriver;
use super::io::BoxIo;
use super::server::Shared;
use super::ws::{self, PendingSocket};

/// hyper's read buffer, which bounds a request head (request line and headers).
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most headers one request may carry.
const MAX_HEADERS: usize = 64;
/// A request body must arrive within this.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) type Body = Full<Bytes>;

/// Serves one accepted connection until it ends; an upgraded one becomes a WebSocket.
pub(crate) async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let io: BoxIo = match &shared.tls {
        None => Box::new(stream),
        Some(acceptor) => {
            let handshake = async { Some(acceptor.accept(stream).await) };
            match handshake
                .or(async {
                    smol::Timer::after(shared.handshake_timeout).await;
                    None
                })
                .await
            {
                Some(Ok(tls)) => Box::new(tls),
                Some(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                None => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let (upgrade_tx, upgrade_rx) = smol::channel::bounded::<PendingSocket>(1);
    let service_shared = Arc::clone(&shared);
    let service = hyper::service::service_fn(move |request| {
        let shared = Arc::clone(&service_shared);
        let upgrade_tx = upgrade_tx.clone();
        async move {
            // The LLM dialect's routes first (they may stream); everything else as before.
            let response =
                match super::llm::routes::try_route(&shared, peer, request, &upgrade_tx).await {
                    Ok(response) => response,
                    Err(request) => route(&shared, peer, request, upgrade_tx)
                        .await
                        .map(http_body_util::Either::Left),
                };
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(SmolTimer::new())
        .header_read_timeout(shared.handshake_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(FuturesIo::new(io), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        tracing::debug!(%peer, "connection: {e}");
    }
    if let Ok(pending) = upgrade_rx.try_recv() {
        // A task of its own, so that the memory of this HTTP connection's future goes now.
        if let Some(executor) = shared.executor.upgrade() {
            executor
                .spawn(ws::run(Arc::clone(&shared), pending))
                .detach();
        }
    }
}

async fn route(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
    upgrade_tx: Sender<PendingSocket>,
) -> Response<Body> {
    shared
        .metrics
        .http_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = request.uri().path();
    let response = if path == "/metrics" {
        super::operator::metrics(shared, peer, &request)
    } else if path == "/api/admin" || path.starts_with("/api/admin/") {
        super::operator::handle(shared, request).await
    } else if ws::is_upgrade(&request) {
        ws::upgrade(shared, peer, request, upgrade_tx).await
    } else {
        machine_http(shared, peer, request).await
    };
    if let Some(n) = hyper::body::Body::size_hint(response.body()).exact() {
        shared
            .metrics
            .add_out(usize::try_from(n).unwrap_or(usize::MAX));
    }
    response
}

/// A node's REST request or the hub's negotiate: the machine answers.
async fn machine_http(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let method = match *request.method() {
        hyper::Method::GET => Method::Get,
        hyper::Method::POST => Method::Post,
        _ => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and POST are served",
            )
        }
    };
    let target = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let authorization = header_str(&request, AUTHORIZATION.as_str());
    let body = match read_body(shared, request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let (reply_tx, reply_rx) = smol::channel::bounded(1);
    let message = ToDriver::Http {
        conn: shared.next_conn(),
        source: Source(peer.ip().to_string()),
        request: HttpRequest {
            method,
            target,
            authorization,
            body,
        },
        reply: reply_tx,
    };
    if shared.to_driver.send(message).await.is_err() {
        return unavailable();
    }
    match reply_rx.recv().await {
        Ok(reply) => machine_reply(reply),
        Err(_) => unavailable(),
    }
}

/// A header's value as text, if present and printable.
/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub(crate) fn bearer_token<B>(request: &Request<B>) -> Option<String> {
    let header = header_str(request, "authorization")?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

/// Compares without an early exit on the content, so timing tells nothing about a token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn header_str<B>(request: &Request<B>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The whole body, at most the configured cap (413 beyond), within [`BODY_TIMEOUT`].
pub(crate) async fn read_body(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Vec<u8>, Response<Body>> {
    let cap = shared.max_body;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large(cap));
    }
    let collect = async { Some(Limited::new(request.into_body(), cap).collect().await) };
    let collected = collect
        .or(async {
            smol::Timer::after(BODY_TIMEOUT).await;
            None
        })
        .await;
    match collected {
        Some(Ok(body)) => {
            let bytes = body.to_bytes().to_vec();
            shared.metrics.add_in(bytes.len());
            Ok(bytes)
        }
        Some(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(cap)),
        Some(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("cannot read the body: {e}"),
        )),
        None => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        )),
    }
}

/// The machine's reply as a response (JSON when it has a body).
pub(crate) fn machine_reply(reply: HttpReply) -> Response<Body> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let has_body = !reply.body.is_empty();
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = status;
    if has_body {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

fn too_large(cap: usize) -> Response<Body> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body is over the limit of {cap} bytes"),
    )
}

pub(crate) fn unavailable() -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the gateway is shutting down",
    )
}
