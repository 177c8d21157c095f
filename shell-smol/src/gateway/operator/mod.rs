//! The operator API: JSON over HTTP under `/api/admin/`, `Authorization: Bearer <admin token>`,
//! and `GET /metrics`. Every action runs on the driver with the machine in hand; errors are
//! `{"error": "..."}` with a fitting status. Routes and bodies: docs/gateway.md.

mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use nodelink_core::gateway::dispatch::{CancelOutcome, DispatchRequest};
use nodelink_core::scope::{validate_scope, ScopeEntry};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::driver::{answering, Ctx, ToDriver};
use super::http::{bearer_token, constant_time_eq, error, json, read_body, unavailable, Body};
use super::server::Shared;

/// How much longer than a command's own timeout a waiting dispatch waits (the machine ends
/// every command by its deadline; this only covers a stuck driver).
const WAIT_GRACE: Duration = Duration::from_secs(5);

/// `GET /metrics`: open to loopback peers, the admin token otherwise.
pub(crate) fn metrics(
    shared: &Shared,
    peer: SocketAddr,
    request: &Request<Incoming>,
) -> Response<Body> {
    if request.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics");
    }
    if !peer.ip().is_loopback() && !authorized(shared, request) {
        return unauthorized();
    }
    let mut response = Response::new(Body::from(shared.metrics.render()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

fn authorized<B>(shared: &Shared, request: &Request<B>) -> bool {
    bearer_token(request)
        .is_some_and(|token| constant_time_eq(token.as_bytes(), shared.admin_token.as_bytes()))
}

fn unauthorized() -> Response<Body> {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "the admin token is required (Authorization: Bearer <token>)",
    );
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Runs `f` on the driver and returns its answer once what it changed is stored (`None`: the
/// gateway is stopping, or its store failed).
async fn call<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce(&mut Ctx<'_>) -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = smol::channel::bounded(1);
    let call = answering(f, tx);
    shared.to_driver.send(ToDriver::Call(call)).await.ok()?;
    rx.recv().await.ok()
}

/// Reads a JSON body; an empty body is `T::default()` where `empty` allows it.
async fn body<T: DeserializeOwned>(
    shared: &Shared,
    request: Request<Incoming>,
    empty: Option<T>,
) -> Result<T, Response<Body>> {
    let bytes = read_body(shared, request).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return empty.ok_or_else(|| error(StatusCode::BAD_REQUEST, "a JSON body is required"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
}

fn result_response(result: Option<Result<Value, (u16, String)>>, ok: StatusCode) -> Response<Body> {
    match result {
        None => unavailable(),
        Some(Ok(value)) => json(ok, &value),
        Some(Err((status, message))) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &message,
        ),
    }
}

/// A 400 for the first invalid scope entry (patterns like `system.*` allowed), if any.
fn check_scopes(scopes: &[String]) -> Option<Response<Body>> {
    scopes.iter().find_map(|scope| {
        ScopeEntry::parse(scope).err().map(|e| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("invalid scope {scope:?}: {e}"),
            )
        })
    })
}

/// Routes one `/api/admin/...` request.
pub(crate) async fn handle(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    if !authorized(shared, &request) {
        return unauthorized();
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let segments: Vec<String> = path
        .trim_start_matches("/api/admin")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&method, parts.as_slice()) {
        (&Method::GET, ["nodes"]) => {
            let nodes = call(shared, |ctx| {
                let views = ctx.gateway.nodes(ctx.now);
                Value::Array(views.iter().map(views::node).collect())
            })
            .await;
            result_response(nodes.map(Ok), StatusCode::OK)
        }
        (&Method::GET, ["nodes", node]) => {
            let node = node.to_string();
            let view = call(shared, move |ctx| match ctx.gateway.node(ctx.now, &node) {
                Some(view) => Ok(views::node(&view)),
                None => Err((404, format!("unknown node `{node}`"))),
            })
            .await;
            result_response(view, StatusCode::OK)
        }
        (&Method::POST, ["nodes", node, "revoke"]) => {
            let node = node.to_string();
            let body: views::ReasonBody =
                match body(shared, request, Some(Default::default())).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
            let reason = body
                .reason
                .unwrap_or_else(|| "revoked by the operator".into());
            let done = call(shared, move |ctx| {
                ctx.gateway
                    .revoke(ctx.now, &node, &reason)
                    .map(|()| json!({"nodeId": node, "revoked": true}))
                    .map_err(|e| views::gateway_error(&e))
            })
            .await;
            result_response(done, StatusCode::OK)
        }
        (&Method::PUT | &Method::POST, ["nodes", node, "scopes"]) => {
            let node = node.to_string();
            let body: views::ScopesBody = match body(shared, request, None).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            if let Some(r) = check_scopes(&body.scopes) {
                return r;
            }
            let done = call(shared, move |ctx| {
                ctx.gateway
                    .set_scopes(ctx.now, &node, &body.scopes)
                    .map(|granted| json!({"nodeId": node, "scopes": granted}))
                    .map_err(|e| views::gateway_error(&e))
            })
            .await;
            result_response(done, StatusCode::OK)
        }
        (&Method::GET, ["pairings"]) => {
            let list = call(shared, |ctx| {
                let pending = ctx.gateway.pending_pairings(ctx.now);
                Value::Array(pending.iter().map(views::pairing).collect())
            })
            .await;
            result_response(list.map(Ok), StatusCode::OK)
        }
        (&Method::POST, ["pairings", code, "approve"]) => {
            let code = code.to_string();
            let body: views::ScopesBody =
                match body(shared, request, Some(Default::default())).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
            if let Some(r) = check_scopes(&body.scopes) {
                return r;
            }
            let done = call(shared, move |ctx| {
                ctx.gateway
                    .approve_pairing(ctx.now, &code, &body.scopes)
                    .map(|p| views::pairing(&p))
                    .map_err(|e| views::gateway_error(&e))
            })
            .await;
            result_response(done, StatusCode::OK)
        }
        (&Method::POST, ["pairings", code, "reject"]) => {
            let code = code.to_string();
            let body: views::ReasonBody =
                match body(shared, request, Some(Default::default())).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
            let done = call(shared, move |ctx| {
                ctx.gateway
                    .reject_pairing(ctx.now, &code, body.reason)
                    .map(|p| views::pairing(&p))
                    .map_err(|e| views::gateway_error(&e))
            })
            .await;
            result_response(done, StatusCode::OK)
        }
        (&Method::POST, ["commands"]) => dispatch(shared, request).await,
        (&Method::GET, ["commands", id]) => {
            let id = id.to_string();
            let status = call(shared, move |ctx| match ctx.gateway.command_status(&id) {
                Some(status) => Ok(views::command(&id, &status, ctx.now)),
                None => Err((404, format!("unknown command `{id}`"))),
            })
            .await;
            result_response(status, StatusCode::OK)
        }
        (&Method::POST, ["commands", id, "cancel"]) => {
            let id = id.to_string();
            let body: views::ReasonBody =
                match body(shared, request, Some(Default::default())).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
            let done = call(shared, move |ctx| {
                ctx.gateway
                    .cancel(ctx.now, &id, body.reason.as_deref())
                    .map(|outcome| {
                        let outcome = match outcome {
                            CancelOutcome::Cancelled => "cancelled",
                            CancelOutcome::Requested => "requested",
                        };
                        json!({"commandId": id, "cancel": outcome})
                    })
                    .map_err(|e| views::gateway_error(&e))
            })
            .await;
            result_response(done, StatusCode::OK)
        }
        (&Method::POST, ["commands", id, "approve"]) => {
            let id = id.to_string();
            let done = call(shared, move |ctx| {
                ctx.gateway
                    .approve_command(ctx.now, &id)
                    .map(|()| json!({"commandId": id, "approved": true}))
                    .map_err(|e| views::gateway_error(&e))
            })
            .await;
            result_response(done, StatusCode::OK)
        }
        (&Method::POST, ["commands", id, "reject"]) => {
            let id = id.to_string();
            let body: views::ReasonBody =
                match body(shared, request, Some(Default::default())).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
            let done = call(shared, move |ctx| {
                ctx.gateway
                    .reject_command(ctx.now, &id, body.reason.as_deref())
                    .map(|()| json!({"commandId": id, "rejected": true}))
                    .map_err(|e| views::gateway_error(&e))
            })
            .await;
            result_response(done, StatusCode::OK)
        }
        (_, ["nodes"] | ["nodes", _] | ["pairings"] | ["commands"] | ["commands", _])
        | (_, ["nodes", _, "revoke" | "scopes"])
        | (_, ["pairings", _, "approve" | "reject"])
        | (_, ["commands", _, "cancel" | "approve" | "reject"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not allowed on {path}"),
        ),
        _ => error(StatusCode::NOT_FOUND, &format!("no operator route {path}")),
    }
}

/// `POST /api/admin/commands`: 202 with the id, or (`wait`) 200 with the outcome.
async fn dispatch(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let body: views::DispatchBody = match body(shared, request, None).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.node.is_empty() || body.command.is_empty() {
        return error(StatusCode::BAD_REQUEST, "`node` and `command` are required");
    }
    if let Some(scope) = &body.required_scope {
        if let Err(e) = validate_scope(scope) {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid requiredScope {scope:?}: {e}"),
            );
        }
    }
    let wait = body.wait;
    let answer = call(shared, move |ctx| {
        let mut request = DispatchRequest::new(body.node, body.command);
        request.params = body.params;
        request.timeout = body.timeout_ms.map(Duration::from_millis);
        request.critical = body.critical;
        request.required_scope = body.required_scope;
        match ctx.gateway.dispatch(ctx.now, request) {
            Ok(id) => {
                ctx.dispatched(&id);
                let waiter = wait.then(|| ctx.wait_for(&id));
                let deadline = body
                    .timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(ctx.default_timeout);
                Ok((id, waiter, deadline))
            }
            Err(e) => Err(views::gateway_error(&e)),
        }
    })
    .await;
    let (id, waiter, timeout) = match answer {
        None => return unavailable(),
        Some(Err((status, message))) => {
            return error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &message,
            )
        }
        Some(Ok(answer)) => answer,
    };
    let Some(waiter) = waiter else {
        return json(StatusCode::ACCEPTED, &json!({"commandId": id}));
    };
    let outcome = futures_lite::future::or(async { waiter.recv().await.ok() }, async {
        smol::Timer::after(timeout + WAIT_GRACE).await;
        None
    })
    .await;
    match outcome {
        Some(outcome) => json(StatusCode::OK, &views::finished(&id, &outcome)),
        None => error(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("command `{id}` did not finish in time; GET /api/admin/commands/{id}"),
        ),
    }
}

/// Decodes `%XX` escapes of a path segment (node ids and codes are plain, but clients escape).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_of_segments() {
        assert_eq!(percent_decode("gpu%2D01"), "gpu-01");
        assert_eq!(percent_decode("a%"), "a%");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%41%42"), "AB");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
