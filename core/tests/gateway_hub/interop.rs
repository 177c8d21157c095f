//! The node's real hub link (core/src/node/hub) against the server, stepped in a loop: the two
//! sides of the protocol interoperate.

use super::*;
use nodelink_core::node::http::HttpResponse;
use nodelink_core::node::hub::{HubConfig, HubEvent, HubLink, HubOutput, LinkEnd};
use nodelink_core::wire::contract::{answer_hello, NodeCall, SUPPORTED_PROTOCOL_VERSIONS};
use nodelink_core::wire::dto::CommandResultDto;
use nodelink_core::wire::rest::NodeToken;
use nodelink_core::wire::signalr::CompletionOutcome;

/// One node link and the server, with the gateway's minimal reactions: `Hello` answered with
/// the negotiated version, every `CommandResult` acknowledged.
struct Pair {
    clock: SimClock,
    now: f64,
    server: HubServer,
    link: HubLink,
    rng: Rng,
    /// The socket the link's connection runs on.
    conn: Option<ConnId>,
    next_conn: u64,
    node_events: Vec<HubEvent>,
    server_events: Vec<HubServerEvent>,
}

impl Pair {
    fn new(protocol: HubProtocol) -> Pair {
        let token = NodeToken::parse("abc123.s3cret").unwrap();
        let config = HubConfig::new("https://gw.example.com/hubs/node", protocol, token);
        Pair {
            clock: SimClock::new(),
            now: 0.0,
            server: HubServer::new(HubServerConfig::default()).unwrap(),
            link: HubLink::new(config).unwrap(),
            rng: Rng::from_seed([1; 32]),
            conn: None,
            next_conn: 1,
            node_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    fn at(&self) -> Instant {
        self.clock.at(self.now)
    }

    /// Delivers everything both sides have to say until neither has more.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(output) = self.link.poll_output() {
                moved = true;
                self.deliver_node_output(output);
            }
            while let Some(output) = self.server.poll_output() {
                moved = true;
                self.deliver_server_output(output);
            }
            while let Some(event) = self.server.poll_event() {
                moved = true;
                self.gateway_reacts(event);
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver_node_output(&mut self, output: HubOutput) {
        let now = self.at();
        match output {
            HubOutput::Http(call) => {
                let query = call.path.split_once('?').map_or("", |(_, q)| q).to_owned();
                let reply = self.server.negotiate(now, NODE, &query, &mut self.rng);
                let response = HttpResponse {
                    status: reply.status,
                    body: reply.body,
                };
                self.link.handle_http_response(now, Ok(response));
            }
            HubOutput::OpenWebSocket { url, .. } => {
                let query = url.split_once('?').map_or("", |(_, q)| q).to_owned();
                let conn = ConnId(self.next_conn);
                self.next_conn += 1;
                match self.server.open_socket(now, conn, NODE, &query) {
                    Ok(()) => {
                        self.conn = Some(conn);
                        self.link.handle_ws_opened(now);
                    }
                    Err(reply) => {
                        let detail = String::from_utf8_lossy(&reply.body).into_owned();
                        self.link.handle_ws_failed(now, Some(reply.status), detail);
                    }
                }
            }
            HubOutput::Send(frame) => {
                let conn = self.conn.expect("the link sends on an open socket");
                self.server.handle_frame(now, conn, frame);
            }
            HubOutput::Close { code, .. } => {
                if let Some(conn) = self.conn.take() {
                    self.server.socket_closed(now, conn, Some(code));
                }
            }
            HubOutput::Event(event) => self.node_events.push(event),
        }
    }

    fn deliver_server_output(&mut self, output: HubServerOutput) {
        let now = self.at();
        match output {
            HubServerOutput::Send { conn, frame } => {
                assert_eq!(Some(conn), self.conn, "frames go to the link's socket");
                self.link.handle_frame(now, frame);
            }
            HubServerOutput::CloseSocket { conn, code, reason } => {
                if self.conn == Some(conn) {
                    self.conn = None;
                    self.link.handle_ws_closed(now, Some(code), reason);
                }
            }
        }
    }

    fn gateway_reacts(&mut self, event: HubServerEvent) {
        let now = self.at();
        if let HubServerEvent::Call {
            conn,
            invocation_id: Some(id),
            call,
            ..
        } = &event
        {
            let protocol = self.server.protocol_of(*conn).unwrap();
            let outcome = match call {
                NodeCall::Hello(hello) => {
                    answer_hello(protocol, hello, &SUPPORTED_PROTOCOL_VERSIONS).unwrap()
                }
                _ => CompletionOutcome::Void,
            };
            self.server
                .complete(now, *conn, id.clone(), outcome)
                .unwrap();
        }
        self.server_events.push(event);
    }

    /// Advances the clock to `secs`, firing both sides' timers at their exact instants.
    fn run_until(&mut self, secs: f64) {
        self.settle();
        loop {
            let next = [self.link.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .map(|at| self.clock.secs(at));
            match next {
                Some(at) if at <= secs => {
                    self.now = self.now.max(at);
                    let now = self.at();
                    self.link.handle_timeout(now);
                    self.server.handle_timeout(now);
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = secs;
    }

    fn connect(&mut self) {
        let now = self.at();
        self.link.connect(now).unwrap();
        self.settle();
    }
}

#[test]
fn the_node_link_connects_says_hello_heartbeats_and_runs_a_command() {
    for protocol in BOTH {
        let mut pair = Pair::new(protocol);
        pair.connect();
        assert!(pair.link.is_ready(), "{protocol:?}: {:?}", pair.node_events);
        assert_eq!(
            pair.node_events,
            vec![HubEvent::Ready {
                protocol_version: "2026-04-01".into(),
                negotiated: true
            }]
        );
        let conn = pair.conn.unwrap();
        assert!(matches!(
            pair.server_events[..],
            [
                HubServerEvent::Connected {
                    stateful: false,
                    ..
                },
                HubServerEvent::Call {
                    call: NodeCall::Hello(_),
                    ..
                }
            ]
        ));

        pair.now = 1.0;
        let now = pair.at();
        pair.link
            .send_call(now, NodeCall::Heartbeat(heartbeat_dto()))
            .unwrap();
        pair.server.send(now, conn, &execute("cmd_1")).unwrap();
        pair.settle();
        assert!(matches!(
            pair.server_events.last(),
            Some(HubServerEvent::Call { call: NodeCall::Heartbeat(hb), invocation_id: None, .. })
                if *hb == heartbeat_dto()
        ));
        assert_eq!(
            pair.node_events.last(),
            Some(&HubEvent::Call(execute("cmd_1")))
        );

        let result = CommandResultDto {
            command_id: "cmd_1".into(),
            ok: true,
            result: Some(serde_json::json!({"hostname": "build-01"})),
            error: None,
            duration_ms: Some(3),
            part_index: None,
            is_last: None,
            protocol_version: Some("2026-04-01".into()),
        };
        pair.link.send_result(now, result.clone()).unwrap();
        pair.settle();
        assert!(matches!(
            pair.server_events.last(),
            Some(HubServerEvent::Call { call: NodeCall::CommandResult(r), invocation_id: Some(_), .. })
                if *r == result
        ));
        assert_eq!(
            pair.node_events.last(),
            Some(&HubEvent::ResultAcknowledged {
                command_id: "cmd_1".into(),
                part_index: None
            })
        );
    }
}

#[test]
fn an_idle_connection_is_kept_alive_by_pings_both_ways() {
    let mut pair = Pair::new(HubProtocol::Json);
    pair.connect();
    let events = pair.node_events.len();
    pair.run_until(300.0);
    assert!(pair.link.is_ready());
    assert_eq!(pair.node_events.len(), events, "{:?}", pair.node_events);
    assert!(
        !pair
            .server_events
            .iter()
            .any(|e| matches!(e, HubServerEvent::Disconnected { .. })),
        "{:?}",
        pair.server_events
    );
}

#[test]
fn a_revocation_reaches_the_node_which_does_not_reconnect() {
    let mut pair = Pair::new(HubProtocol::MessagePack);
    pair.connect();
    let conn = pair.conn.unwrap();
    let now = pair.at();
    let revoke = GatewayCall::RevokeAccess {
        reason: "admin_revoked".into(),
    };
    pair.server.send(now, conn, &revoke).unwrap();
    pair.server
        .close(now, conn, Some("admin_revoked".into()), false)
        .unwrap();
    pair.settle();
    assert_eq!(
        pair.node_events[1..],
        [
            HubEvent::Call(revoke),
            HubEvent::Ended(LinkEnd::ClosedByGateway {
                error: Some("admin_revoked".into()),
                allow_reconnect: false
            })
        ]
    );
    assert_eq!(pair.server.connection_count(), 0);
}

#[test]
fn a_node_that_goes_silent_is_dropped_at_30s() {
    let mut pair = Pair::new(HubProtocol::Json);
    pair.connect();
    let conn = pair.conn.unwrap();
    // The node's socket stops carrying anything (a dead NAT entry): only the server's timers run.
    pair.now = 30.0;
    let now = pair.at();
    pair.server.handle_timeout(now);
    let events: Vec<_> = std::iter::from_fn(|| pair.server.poll_event()).collect();
    assert_eq!(
        events,
        vec![HubServerEvent::Disconnected {
            conn,
            node: NODE.into(),
            reason: DisconnectReason::ClientTimeout,
            will_resume: false
        }]
    );
}
