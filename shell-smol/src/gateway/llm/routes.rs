//! The LLM dialect's HTTP routes: the node WebSocket at `/ws` and the user APIs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use nodelink_core::gateway::llm::{TaskId, TaskUpdate};
use nodelink_core::gateway::Source;
use serde_json::{json, Value};
use smol::channel::Sender;

use super::super::driver::{SocketHandle, ToDriver};
use super::super::http::{self as gw_http, bearer_token, constant_time_eq, header_str};
use super::super::outbound::outbound_queue;
use super::super::server::Shared;
use super::super::ws::{self, PendingSocket};
use super::api::{self, OpenAiIds, UserChat};
use super::body::{Render, StopGuard, TaskStream};
use super::LlmMessage;

/// The path LLM nodes dial.
pub(crate) const NODE_PATH: &str = nodelink_core::wire::llm::PATH;
/// The original server's user API.
pub(crate) const API_CHAT_PATH: &str = "/api/chat";
/// The OpenAI-compatible user API.
pub(crate) const OPENAI_PATH: &str = "/v1/chat/completions";

/// A response with a whole body or a task's stream.
pub(crate) type AnyBody = Either<Full<Bytes>, TaskStream>;

/// Serves the LLM routes; any other request is handed back.
pub(crate) async fn try_route(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
    upgrade_tx: &Sender<PendingSocket>,
) -> Result<Response<AnyBody>, Request<Incoming>> {
    let path = request.uri().path();
    if path != NODE_PATH && path != API_CHAT_PATH && path != OPENAI_PATH {
        return Err(request);
    }
    shared
        .metrics
        .http_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(match path {
        NODE_PATH => node_socket(shared, peer, request, upgrade_tx)
            .await
            .map(Either::Left),
        API_CHAT_PATH => user_chat(shared, request, Api::Original).await,
        _ => user_chat(shared, request, Api::OpenAi).await,
    })
}

/// `GET /ws?..` with `Upgrade: websocket`: always 101; the machine then accepts the node or
/// closes the socket with 4001/4002 (the original server's order).
async fn node_socket(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
    upgrade_tx: &Sender<PendingSocket>,
) -> Response<Full<Bytes>> {
    if request.method() != hyper::Method::GET || !ws::is_upgrade(&request) {
        return gw_http::error(
            StatusCode::UPGRADE_REQUIRED,
            "LLM nodes connect here with a WebSocket upgrade",
        );
    }
    if header_str(&request, "sec-websocket-version").as_deref() != Some("13") {
        return gw_http::error(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is served",
        );
    }
    let Some(key) = header_str(&request, SEC_WEBSOCKET_KEY.as_str()) else {
        return gw_http::error(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
    };
    let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) else {
        return gw_http::error(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key");
    };
    let conn = shared.next_conn();
    let (outbound_tx, outbound_rx) = outbound_queue(shared.outbound_bytes);
    let (abort_tx, abort_rx) = smol::channel::bounded(1);
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| NODE_PATH.to_string(), |pq| pq.as_str().to_string());
    let pending = PendingSocket::new(
        conn,
        hyper::upgrade::on(&mut request),
        outbound_rx,
        abort_rx,
    );
    if upgrade_tx.try_send(pending).is_err() {
        return gw_http::error(StatusCode::BAD_REQUEST, "one upgrade per connection");
    }
    let message = ToDriver::Llm(LlmMessage::Connect {
        conn,
        source: Source(peer.ip().to_string()),
        target,
        socket: SocketHandle {
            outbound: outbound_tx,
            abort: abort_tx,
        },
    });
    if shared.to_driver.send(message).await.is_err() {
        return gw_http::unavailable();
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Original,
    OpenAi,
}

impl Api {
    /// An error before any task exists, in the API's own shape.
    fn refuse(self, status: StatusCode, message: &str) -> Response<AnyBody> {
        let body = match self {
            Api::Original => json!({ "err": message }),
            Api::OpenAi => json!({"error": {"message": message, "type": "invalid_request_error"}}),
        };
        gw_http::json(status, &body).map(Either::Left)
    }
}

async fn user_chat(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
    api: Api,
) -> Response<AnyBody> {
    if request.method() != hyper::Method::POST {
        return api.refuse(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    if !authorized(shared, &request) {
        let mut response = api.refuse(
            StatusCode::UNAUTHORIZED,
            "a valid API token is required (Authorization: Bearer <token>)",
        );
        response
            .headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return response;
    }
    let body = match gw_http::read_body(shared, request).await {
        Ok(body) => body,
        Err(response) => return response.map(Either::Left),
    };
    let parsed = match api {
        Api::Original => api::parse_api_chat(&body),
        Api::OpenAi => api::parse_openai(&body),
    };
    let chat = match parsed {
        Ok(chat) => chat,
        Err(message) => return api.refuse(StatusCode::BAD_REQUEST, &message),
    };
    let model = chat.model.clone();
    let stream = chat.stream;
    let Some((task, updates)) = submit(shared, chat).await else {
        return api.refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is shutting down",
        );
    };
    let guard = StopGuard::new(task, shared.to_driver.clone());
    let ids = OpenAiIds {
        id: format!("chatcmpl-{task}"),
        model,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    match api {
        Api::Original => {
            let render: Render = Box::new(api::ndjson_line);
            streamed(
                TaskStream::new(None, updates, render, guard),
                "application/x-ndjson",
            )
        }
        Api::OpenAi if stream => {
            let head = ids.sse_head();
            let render: Render = Box::new(move |update| ids.sse_events(update));
            streamed(
                TaskStream::new(Some(head), updates, render, guard),
                "text/event-stream",
            )
        }
        Api::OpenAi => whole(ids, updates, guard).await,
    }
}

/// Submits on the driver; the task's id and its updates.
async fn submit(
    shared: &Shared,
    chat: UserChat,
) -> Option<(TaskId, smol::channel::Receiver<TaskUpdate>)> {
    let (updates_tx, updates_rx) = smol::channel::unbounded();
    let (reply_tx, reply_rx) = smol::channel::bounded(1);
    let message = ToDriver::Llm(LlmMessage::Submit {
        model: chat.model,
        request: chat.request,
        updates: updates_tx,
        reply: reply_tx,
    });
    shared.to_driver.send(message).await.ok()?;
    let task = reply_rx.recv().await.ok()?;
    Some((task, updates_rx))
}

fn streamed(body: TaskStream, content_type: &'static str) -> Response<AnyBody> {
    let mut response = Response::new(Either::Right(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A non-streamed OpenAI request: waits for the end (the guard stops the task if the client
/// leaves meanwhile, which drops this future).
async fn whole(
    ids: OpenAiIds,
    updates: smol::channel::Receiver<TaskUpdate>,
    mut guard: StopGuard,
) -> Response<AnyBody> {
    let mut text = String::new();
    let (status, body): (u16, Value) = loop {
        match updates.recv().await {
            Ok(TaskUpdate::Text(more)) => text.push_str(&more),
            Ok(TaskUpdate::Done) => break (200, ids.completion(&text)),
            Ok(TaskUpdate::Failed(error)) => {
                break (api::error_status(&error), api::openai_error(&error))
            }
            Ok(TaskUpdate::Stopped) | Err(_) => {
                break (
                    503,
                    json!({"error": {"message": "the gateway is shutting down", "type": "server_error"}}),
                )
            }
        }
    };
    guard.disarm();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    gw_http::json(status, &body).map(Either::Left)
}

/// `Authorization: Bearer <T>` with the API token or the admin token, compared in constant time.
fn authorized<B>(shared: &Shared, request: &Request<B>) -> bool {
    let Some(token) = bearer_token(request) else {
        return false;
    };
    let token = token.as_bytes();
    let admin = constant_time_eq(token, shared.admin_token.as_bytes());
    let api = shared
        .llm_api_token
        .as_deref()
        .is_some_and(|t| constant_time_eq(token, t.as_bytes()));
    admin | api
}
