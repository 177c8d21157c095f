//! Routing HTTP requests: negotiate and the WebSocket upgrade of the hub, and the REST API of
//! nodes (pairing, polling, results, heartbeats). docs/protocol.md sections 2 and 7.

use std::sync::Arc;
use std::time::Instant;

use crate::gateway::dispatch::{ResultAck, Transport};
use crate::gateway::{ConnId, HttpReply, Source};
use crate::node::http::Method;
use crate::wire::dto::HeartbeatDto;
use crate::wire::rest::{
    parse_command_result_path, CommandResultBody, CommandsResponse, RestErrorBody, RestErrorCode,
    COMMANDS_PATH, HEARTBEAT_PATH, PAIR_PATH,
};
use crate::wire::signalr::negotiate::query_param;

use super::{Gateway, GatewayEvent, HttpRequest, KeptHeartbeat};

/// Where the node hub is served.
pub const HUB_PATH: &str = "/hubs/node";

impl Gateway {
    pub(super) fn handle_http(
        &mut self,
        now: Instant,
        _conn: ConnId,
        source: &Source,
        request: HttpRequest,
    ) -> HttpReply {
        let (path, query) = split_target(&request.target);
        match (request.method, path) {
            (Method::Post, p) if p == format!("{HUB_PATH}/negotiate") => {
                match self.authenticate(now, source, &request, query) {
                    Ok(node) => self.hub.negotiate(now, &node, query, &mut self.rng),
                    Err(reply) => reply,
                }
            }
            (Method::Post, PAIR_PATH) => {
                let reply = self.pairing.pair_body(
                    now,
                    &request.body,
                    source,
                    &mut self.book,
                    &mut self.rng,
                );
                reply.to_http()
            }
            (Method::Get, COMMANDS_PATH) => match self.authenticate(now, source, &request, query) {
                Ok(node) => self.poll_commands(now, &node),
                Err(reply) => reply,
            },
            (Method::Post, HEARTBEAT_PATH) => {
                match self.authenticate(now, source, &request, query) {
                    Ok(node) => match serde_json::from_slice::<HeartbeatDto>(&request.body) {
                        Ok(heartbeat) => {
                            self.dispatcher.heartbeat(now, &node, &heartbeat);
                            let kept = KeptHeartbeat::Decoded(heartbeat);
                            self.keep_heartbeat(now, &Arc::from(node), kept);
                            no_content()
                        }
                        Err(e) => bad_request(&format!("invalid heartbeat: {e}")),
                    },
                    Err(reply) => reply,
                }
            }
            (Method::Post, p) if parse_command_result_path(p).is_ok() => {
                match self.authenticate(now, source, &request, query) {
                    Ok(node) => self.post_result(now, &node, p, &request.body),
                    Err(reply) => reply,
                }
            }
            _ => HttpReply::json(
                404,
                &RestErrorBody::new(RestErrorCode::NotFound, format!("no route for {path}")),
            ),
        }
    }

    /// `GET /hubs/node?...` with `Upgrade: websocket`.
    pub(super) fn handle_upgrade(
        &mut self,
        now: Instant,
        conn: ConnId,
        source: &Source,
        request: &HttpRequest,
    ) -> Result<(), HttpReply> {
        let (path, query) = split_target(&request.target);
        if path != HUB_PATH {
            return Err(HttpReply::json(
                404,
                &RestErrorBody::new(RestErrorCode::NotFound, format!("no hub at {path}")),
            ));
        }
        let node = self.authenticate(now, source, request, query)?;
        self.hub.open_socket(now, conn, &node, query)
    }

    /// The node behind a request: its token from `Authorization: Bearer` or `?access_token=`.
    fn authenticate(
        &mut self,
        now: Instant,
        source: &Source,
        request: &HttpRequest,
        query: &str,
    ) -> Result<String, HttpReply> {
        let result = match (&request.authorization, query_param(query, "access_token")) {
            (Some(header), _) => self.book.authenticate_bearer(now, header, source),
            (None, Some(token)) => self.book.authenticate(now, &token, source),
            (None, None) => {
                return Err(HttpReply::json(
                    401,
                    &RestErrorBody::new(
                        RestErrorCode::Unauthorized,
                        "a node token is required (Authorization: Bearer, or access_token)",
                    ),
                ))
            }
        };
        result.map_err(|error| {
            self.event(GatewayEvent::Refused {
                source: source.clone(),
                detail: error.to_string(),
            });
            error.to_reply()
        })
    }

    /// `GET /api/nodes/me/commands`: the node polls; its leased commands and its scopes.
    fn poll_commands(&mut self, now: Instant, node: &str) -> HttpReply {
        if !matches!(self.dispatcher.transport(node), Some(Transport::Poll)) {
            self.dispatcher
                .node_connected(now, node, Transport::Poll, None);
        }
        let commands = self.dispatcher.lease(now, node, self.config.lease_batch);
        let scopes = self.book.get(node).map(|r| r.scopes.clone());
        HttpReply::json(200, &CommandsResponse { commands, scopes })
    }

    /// `POST /api/nodes/me/commands/{id}/result`.
    fn post_result(&mut self, now: Instant, node: &str, path: &str, body: &[u8]) -> HttpReply {
        let command_id = match parse_command_result_path(path) {
            Ok(id) => id,
            Err(e) => return bad_request(&e.to_string()),
        };
        let body = match CommandResultBody::from_json(body) {
            Ok(body) => body,
            Err(e) => return bad_request(&e.to_string()),
        };
        match self.dispatcher.result(now, node, body.into_dto(command_id)) {
            ResultAck::Ack => no_content(),
            ResultAck::Refuse(refusal) => HttpReply::json(
                refusal.http_status(),
                &RestErrorBody::new(
                    if refusal.http_status() == 404 {
                        RestErrorCode::NotFound
                    } else {
                        RestErrorCode::Conflict
                    },
                    refusal.message(),
                ),
            ),
        }
    }
}

fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

fn no_content() -> HttpReply {
    HttpReply {
        status: 204,
        body: Vec::new(),
    }
}

fn bad_request(message: &str) -> HttpReply {
    HttpReply::json(
        400,
        &RestErrorBody::new(RestErrorCode::InvalidRequest, message),
    )
}
