//! Connecting: negotiate, redirects, the WebSocket, the handshake, Hello, how a link ends, misuse.
use super::*;

#[test]
fn negotiate_then_open_then_handshake_then_hello_then_ready() {
    let mut sim = Sim::new(HubProtocol::Json);
    assert_eq!(sim.link.state(), HubState::Idle);
    assert_eq!(sim.link.origin(), "https://gw.example.com");

    let out = sim.connect(0.0);
    assert_eq!(
        out,
        vec![HubOutput::Http(HttpCall {
            method: Method::Post,
            path: "/hubs/node/negotiate?negotiateVersion=1".to_owned(),
            bearer: Some(token()),
            body: None,
        })]
    );
    assert_eq!(sim.link.state(), HubState::Negotiating);
    assert_eq!(
        sim.link.poll_timeout(),
        None,
        "the shell times HTTP requests out"
    );

    let out = sim.http(1.0, 200, NEGOTIATE_V1);
    assert_eq!(
        out,
        vec![HubOutput::OpenWebSocket {
            url: WS_URL.to_owned(),
            bearer: token()
        }]
    );
    assert_eq!(sim.link.state(), HubState::OpeningSocket);

    let out = sim.opened(2.0);
    assert_eq!(
        out,
        vec![HubOutput::Send(WsFrame::Text(
            "{\"protocol\":\"json\",\"version\":1}\u{1e}".to_owned()
        ))]
    );
    assert_eq!(sim.link.state(), HubState::Handshaking);
    assert_eq!(sim.link.poll_timeout(), Some(sim.at(17.0)));

    let out = sim.frame(3.0, handshake_ok());
    assert_eq!(
        out,
        vec![HubOutput::Send(WsFrame::Text(
            "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Hello\",\"arguments\":[{\"nodeId\":\"abc123\",\"protocolVersions\":[\"2026-04-01\",\"2025-10-01\"]}]}\u{1e}".to_owned()
        ))]
    );
    assert_eq!(sim.link.state(), HubState::AwaitingHello);
    assert_eq!(
        sim.link.poll_timeout(),
        Some(sim.at(18.0)),
        "Hello timer and keep-alive"
    );

    let out = sim.frame(
        4.0,
        WsFrame::Text(
            "{\"type\":3,\"invocationId\":\"1\",\"result\":{\"protocolVersion\":\"2026-04-01\"}}\u{1e}"
                .to_owned(),
        ),
    );
    assert_eq!(
        out,
        vec![HubOutput::Event(HubEvent::Ready {
            protocol_version: "2026-04-01".to_owned(),
            negotiated: true
        })]
    );
    assert!(sim.link.is_ready());
    assert_eq!(sim.link.protocol_version(), Some("2026-04-01"));
    assert!(sim.link.is_negotiated());
    // Keep-alive from the Hello at 3 s; the peer timer from the Completion at 4 s.
    assert_eq!(sim.link.poll_timeout(), Some(sim.at(18.0)));
}

#[test]
fn messagepack_link_handshakes_in_text_then_speaks_binary() {
    let mut sim = Sim::new(HubProtocol::MessagePack);
    sim.connect(0.0);
    sim.http(1.0, 200, NEGOTIATE_V1);
    let out = sim.opened(2.0);
    assert_eq!(
        frames(&out),
        vec![WsFrame::Text(
            "{\"protocol\":\"messagepack\",\"version\":1}\u{1e}".to_owned()
        )]
    );
    let out = sim.frame(3.0, handshake_ok());
    let hello = "44 96 01 80 a1 31 a5 48 65 6c 6c 6f 91 82 a6 6e 6f 64 65 49 64 a6 61 62 63 31 32 33 b0 70 72 6f 74 6f 63 6f 6c 56 65 72 73 69 6f 6e 73 92 aa 32 30 32 36 2d 30 34 2d 30 31 aa 32 30 32 35 2d 31 30 2d 30 31 90";
    match &frames(&out)[..] {
        [WsFrame::Binary(bytes)] => assert_eq!(support::hex(bytes), hello),
        other => panic!("expected one binary frame, got {other:?}"),
    }
    let ack = hello_ack(HubProtocol::MessagePack, "1", "2025-10-01");
    let out = sim.gateway(4.0, &[ack]);
    assert_eq!(
        events(&out),
        vec![HubEvent::Ready {
            protocol_version: "2025-10-01".to_owned(),
            negotiated: true
        }]
    );
}

#[test]
fn hub_url_query_and_port_are_kept_and_the_path_is_relative_to_the_origin() {
    let mut config = config(HubProtocol::Json);
    config.hub_url = "http://10.0.0.5:8080/gw/hubs/node?access_token=abc123.s%2B1".to_owned();
    let mut sim = Sim::with(config);
    assert_eq!(sim.link.origin(), "http://10.0.0.5:8080");
    let out = sim.connect(0.0);
    match &out[..] {
        [HubOutput::Http(call)] => assert_eq!(
            call.path,
            "/gw/hubs/node/negotiate?access_token=abc123.s%2B1&negotiateVersion=1"
        ),
        other => panic!("{other:?}"),
    }
    let out = sim.http(1.0, 200, NEGOTIATE_V1);
    assert_eq!(
        out,
        vec![HubOutput::OpenWebSocket {
            url: "ws://10.0.0.5:8080/gw/hubs/node?access_token=abc123.s%2B1&id=Dk4r8bQxJm3WdUkvXg2N7A"
                .to_owned(),
            bearer: token()
        }]
    );
}

#[test]
fn negotiate_version_0_connects_with_the_connection_id() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    let body = r#"{"negotiateVersion":0,"connectionId":"n1Ab5Y0yGjWW2qKcHdEfWQ","availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}]}"#;
    let out = sim.http(1.0, 200, body);
    assert_eq!(
        out,
        vec![HubOutput::OpenWebSocket {
            url: "wss://gw.example.com/hubs/node?id=n1Ab5Y0yGjWW2qKcHdEfWQ".to_owned(),
            bearer: token()
        }]
    );
}

#[test]
fn unauthorized_negotiate() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    let out = sim.http(1.0, 401, r#"{"error":"Unauthorized: unknown node token"}"#);
    assert_eq!(
        out,
        vec![HubOutput::Event(HubEvent::Ended(LinkEnd::Unauthorized {
            status: 401,
            detail: "Unauthorized: unknown node token".to_owned()
        }))]
    );
    assert_eq!(sim.link.state(), HubState::Idle);
    assert!(LinkEnd::Unauthorized {
        status: 403,
        detail: String::new()
    }
    .is_unauthorized());

    sim.connect(10.0);
    let out = sim.http(11.0, 403, "forbidden");
    assert_eq!(
        ended(&out),
        Some(LinkEnd::Unauthorized {
            status: 403,
            detail: "forbidden".to_owned()
        })
    );
}

#[test]
fn unauthorized_upgrade() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    sim.http(1.0, 200, NEGOTIATE_V1);
    sim.link
        .handle_ws_failed(sim.at(2.0), Some(401), "401 Unauthorized".to_owned());
    assert_eq!(
        ended(&sim.drain()),
        Some(LinkEnd::Unauthorized {
            status: 401,
            detail: "401 Unauthorized".to_owned()
        })
    );
    sim.connect(3.0);
    sim.http(4.0, 200, NEGOTIATE_V1);
    sim.link
        .handle_ws_failed(sim.at(5.0), Some(404), "no such connection".to_owned());
    assert_eq!(
        ended(&sim.drain()),
        Some(LinkEnd::WebSocketFailed {
            status: Some(404),
            detail: "no such connection".to_owned()
        })
    );
}

#[test]
fn negotiate_failures_say_why() {
    let cases: [(Option<u16>, &str, LinkEnd); 6] = [
        (
            None,
            "connection refused",
            LinkEnd::NegotiateFailed {
                status: None,
                detail: "connection refused".to_owned(),
            },
        ),
        (
            Some(500),
            "",
            LinkEnd::NegotiateFailed {
                status: Some(500),
                detail: "(empty body)".to_owned(),
            },
        ),
        (
            Some(400),
            r#"{"error":"Negotiate version 7 is not supported."}"#,
            LinkEnd::NegotiateFailed {
                status: Some(400),
                detail: "Negotiate version 7 is not supported.".to_owned(),
            },
        ),
        (
            Some(200),
            r#"{"error":"go away"}"#,
            LinkEnd::NegotiateFailed {
                status: Some(200),
                detail: "go away".to_owned(),
            },
        ),
        (
            Some(200),
            r#"{"negotiateVersion":1,"connectionId":"a","connectionToken":"b","availableTransports":[{"transport":"LongPolling","transferFormats":["Text"]}]}"#,
            LinkEnd::NegotiateFailed {
                status: Some(200),
                detail: "the gateway offers no WebSockets transport with Text frames".to_owned(),
            },
        ),
        (
            Some(200),
            r#"{"ProtocolVersion":"1.5"}"#,
            LinkEnd::NegotiateFailed {
                status: Some(200),
                detail: "the server is an ASP.NET SignalR server, not ASP.NET Core SignalR; it cannot serve nodelink".to_owned(),
            },
        ),
    ];
    for (status, body, expected) in cases {
        let mut sim = Sim::new(HubProtocol::Json);
        sim.connect(0.0);
        let result = match status {
            None => Err(HttpError(body.to_owned())),
            Some(status) => Ok(HttpResponse {
                status,
                body: body.as_bytes().to_vec(),
            }),
        };
        sim.link.handle_http_response(sim.at(1.0), result);
        let out = sim.drain();
        assert_eq!(out, vec![HubOutput::Event(HubEvent::Ended(expected))]);
        assert_eq!(sim.link.state(), HubState::Idle);
    }
}

#[test]
fn a_same_origin_redirect_is_followed_once() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    let out = sim.http(
        1.0,
        200,
        r#"{"url":"https://gw.example.com/hubs/node2?x=1","accessToken":"abc123.other"}"#,
    );
    assert_eq!(
        out,
        vec![HubOutput::Http(HttpCall {
            method: Method::Post,
            path: "/hubs/node2/negotiate?x=1&negotiateVersion=1".to_owned(),
            bearer: Some(NodeToken::parse("abc123.other").unwrap()),
            body: None,
        })]
    );
    let out = sim.http(2.0, 200, NEGOTIATE_V1);
    assert_eq!(
        out,
        vec![HubOutput::OpenWebSocket {
            url: "wss://gw.example.com/hubs/node2?x=1&id=Dk4r8bQxJm3WdUkvXg2N7A".to_owned(),
            bearer: NodeToken::parse("abc123.other").unwrap(),
        }]
    );

    // A second redirect ends the attempt; the next attempt starts from the configured URL again.
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    sim.http(1.0, 200, r#"{"url":"https://gw.example.com/a"}"#);
    let out = sim.http(2.0, 200, r#"{"url":"https://gw.example.com/b"}"#);
    assert!(matches!(
        ended(&out),
        Some(LinkEnd::NegotiateFailed { status: Some(200), detail }) if detail.contains("second redirect")
    ));
    match &sim.connect(3.0)[..] {
        [HubOutput::Http(call)] => assert_eq!(call.path, "/hubs/node/negotiate?negotiateVersion=1"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_redirect_to_another_origin_or_with_a_foreign_token_is_not_followed() {
    for body in [
        r#"{"url":"https://signalr.azure.example/client/?hub=node","accessToken":"abc123.x"}"#,
        r#"{"url":"https://gw.example.com/hubs/node","accessToken":"eyJhbGciOi"}"#,
    ] {
        let mut sim = Sim::new(HubProtocol::Json);
        sim.connect(0.0);
        let out = sim.http(1.0, 200, body);
        assert!(
            matches!(
                ended(&out),
                Some(LinkEnd::NegotiateFailed {
                    status: Some(200),
                    ..
                })
            ),
            "{out:?}"
        );
    }
}

#[test]
fn handshake_times_out_at_15s() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    sim.http(1.0, 200, NEGOTIATE_V1);
    sim.opened(2.0);
    assert_eq!(sim.link.poll_timeout(), Some(sim.at(17.0)));
    assert_eq!(sim.timeout(16.999), vec![], "an early call is a no-op");
    let out = sim.timeout(17.0);
    assert_eq!(
        out,
        vec![
            HubOutput::Close {
                code: CLOSE_NORMAL,
                reason: "handshake timeout".to_owned()
            },
            HubOutput::Event(HubEvent::Ended(LinkEnd::HandshakeTimeout)),
        ]
    );
    assert_eq!(sim.link.poll_timeout(), None);
    assert_eq!(sim.link.state(), HubState::Idle);
}

#[test]
fn hello_times_out_15s_after_the_handshake() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    sim.http(1.0, 200, NEGOTIATE_V1);
    sim.opened(2.0);
    sim.frame(3.0, handshake_ok());
    // The gateway pings but never answers Hello: keep-alive runs, the Hello timer does not move.
    sim.gateway(10.0, &[HubMessage::Ping]);
    let out = sim.timeout(18.0);
    assert_eq!(
        out,
        vec![
            HubOutput::Close {
                code: CLOSE_NORMAL,
                reason: "Hello timeout".to_owned()
            },
            HubOutput::Event(HubEvent::Ended(LinkEnd::HelloTimeout)),
        ]
    );
}

#[test]
fn handshake_rejected_closes_with_the_gateways_error() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    sim.http(1.0, 200, NEGOTIATE_V1);
    sim.opened(2.0);
    let out = sim.frame(
        3.0,
        WsFrame::Text("{\"error\":\"The protocol 'json' is not supported.\"}\u{1e}".to_owned()),
    );
    assert_eq!(
        out,
        vec![
            HubOutput::Close {
                code: CLOSE_NORMAL,
                reason: "handshake rejected".to_owned()
            },
            HubOutput::Event(HubEvent::Ended(LinkEnd::HandshakeRejected(
                "The protocol 'json' is not supported.".to_owned()
            ))),
        ]
    );
}

#[test]
fn an_invalid_handshake_response_is_a_protocol_error() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    sim.http(1.0, 200, NEGOTIATE_V1);
    sim.opened(2.0);
    let out = sim.frame(3.0, WsFrame::Text("[1,2]\u{1e}".to_owned()));
    assert_eq!(
        closes(&out),
        vec![(
            CLOSE_PROTOCOL_ERROR,
            "invalid handshake response".to_owned()
        )]
    );
    assert!(matches!(
        ended(&out),
        Some(LinkEnd::ProtocolError(PeerError::Decode(_)))
    ));
}

#[test]
fn the_handshake_response_may_share_a_frame_with_hub_messages() {
    for protocol in BOTH {
        let mut sim = Sim::new(protocol);
        sim.connect(0.0);
        sim.http(1.0, 200, NEGOTIATE_V1);
        sim.opened(2.0);
        let mut bytes = b"{}\x1e".to_vec();
        protocol.encode(&HubMessage::Ping, &mut bytes).unwrap();
        protocol
            .encode(&execute(protocol, "cmd_1"), &mut bytes)
            .unwrap();
        let frame = match protocol {
            HubProtocol::Json => WsFrame::Text(String::from_utf8(bytes).unwrap()),
            HubProtocol::MessagePack => WsFrame::Binary(bytes),
        };
        let out = sim.frame(3.0, frame);
        assert_eq!(summary(&sent(protocol, &out)), vec!["Hello#1"]);
        assert_eq!(events(&out), vec![], "calls wait for Ready");
        let out = sim.gateway(4.0, &[hello_ack(protocol, "1", "2026-04-01")]);
        assert_eq!(
            events(&out),
            vec![
                HubEvent::Ready {
                    protocol_version: "2026-04-01".to_owned(),
                    negotiated: true
                },
                HubEvent::Call(GatewayCall::ExecuteCommand(execute_dto("cmd_1"))),
            ]
        );
    }
}

#[test]
fn legacy_gateway_without_hello_gets_2026_04_01() {
    let error = "Failed to invoke 'Hello' due to an error on the server. HubException: Method does not exist.";
    for outcome in [
        CompletionOutcome::Error(error.to_owned()),
        CompletionOutcome::Void,
    ] {
        let mut sim = Sim::new(HubProtocol::Json);
        sim.connect(0.0);
        sim.http(1.0, 200, NEGOTIATE_V1);
        sim.opened(2.0);
        sim.frame(3.0, handshake_ok());
        let out = sim.gateway(4.0, &[completion("1", outcome)]);
        assert_eq!(
            events(&out),
            vec![HubEvent::Ready {
                protocol_version: "2026-04-01".to_owned(),
                negotiated: false
            }]
        );
        assert!(!sim.link.is_negotiated());
    }
}

#[test]
fn no_shared_version_ends_the_link() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    sim.http(1.0, 200, NEGOTIATE_V1);
    sim.opened(2.0);
    sim.frame(3.0, handshake_ok());
    let error = "unsupported_protocol_version: the node offers [2026-04-01, 2025-10-01], this gateway supports [2027-01-01]";
    let out = sim.gateway(
        4.0,
        &[completion("1", CompletionOutcome::Error(error.to_owned()))],
    );
    assert_eq!(
        out,
        vec![
            HubOutput::Close {
                code: CLOSE_NORMAL,
                reason: "no shared protocol version".to_owned()
            },
            HubOutput::Event(HubEvent::Ended(LinkEnd::NoSharedVersion {
                detail: error.to_owned()
            })),
        ]
    );
}

#[test]
fn a_hello_result_naming_a_version_not_offered_is_a_protocol_error() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    sim.http(1.0, 200, NEGOTIATE_V1);
    sim.opened(2.0);
    sim.frame(3.0, handshake_ok());
    let out = sim.gateway(4.0, &[hello_ack(HubProtocol::Json, "1", "2024-01-01")]);
    assert_eq!(
        closes(&out),
        vec![(CLOSE_PROTOCOL_ERROR, "invalid Hello completion".to_owned())]
    );
    assert!(matches!(
        ended(&out),
        Some(LinkEnd::ProtocolError(PeerError::InvalidHelloResult(_)))
    ));
}

#[test]
fn socket_closed_by_the_peer_ends_the_link_without_a_close_output() {
    let mut sim = Sim::ready(HubProtocol::Json);
    sim.link
        .handle_ws_closed(sim.at(5.0), Some(1006), "abnormal".to_owned());
    let out = sim.drain();
    assert_eq!(
        out,
        vec![HubOutput::Event(HubEvent::Ended(LinkEnd::SocketClosed {
            code: Some(1006),
            reason: "abnormal".to_owned()
        }))]
    );
    assert_eq!(sim.link.poll_timeout(), None);
    // Reported twice, or late: ignored.
    sim.link.handle_ws_closed(sim.at(6.0), None, String::new());
    assert_eq!(sim.drain(), vec![]);
}

#[test]
fn inputs_nobody_waits_for_are_ignored() {
    let mut sim = Sim::new(HubProtocol::Json);
    let ok = HttpResponse {
        status: 200,
        body: NEGOTIATE_V1.as_bytes().to_vec(),
    };
    sim.link.handle_http_response(sim.at(0.0), Ok(ok));
    sim.link.handle_frame(sim.at(0.0), handshake_ok());
    sim.link.handle_ws_failed(sim.at(0.0), None, String::new());
    sim.link.handle_ws_closed(sim.at(0.0), None, String::new());
    sim.link.handle_timeout(sim.at(0.0));
    sim.link.close(sim.at(0.0), "bye");
    assert_eq!(sim.drain(), vec![]);
    // A socket opening that nobody waits for is closed.
    sim.link.handle_ws_opened(sim.at(0.0));
    assert_eq!(
        sim.drain(),
        vec![HubOutput::Close {
            code: CLOSE_NORMAL,
            reason: "unexpected socket".to_owned()
        }]
    );
    assert_eq!(sim.link.state(), HubState::Idle);
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let mut sim = Sim::new(HubProtocol::Json);
    assert_eq!(
        sim.link
            .send_call(sim.at(0.0), NodeCall::Heartbeat(heartbeat())),
        Err(HubUsageError::NotConnected)
    );
    sim.connect(0.0);
    assert_eq!(
        sim.link.connect(sim.at(0.0)),
        Err(HubUsageError::AlreadyConnected)
    );
    assert!(matches!(
        sim.link
            .send_call(sim.at(0.0), NodeCall::CommandResult(part("c", None))),
        Err(HubUsageError::WrongMethod("CommandResult", _))
    ));
    let hello = nodelink_core::wire::dto::HelloDto {
        node_id: "abc123".to_owned(),
        protocol_versions: vec![],
        capabilities: None,
    };
    assert!(matches!(
        sim.link.send_call(sim.at(0.0), NodeCall::Hello(hello)),
        Err(HubUsageError::WrongMethod("Hello", _))
    ));
}

#[test]
fn configurations_that_cannot_work_are_refused() {
    let bad = |edit: fn(&mut HubConfig)| {
        let mut config = config(HubProtocol::Json);
        edit(&mut config);
        HubLink::new(config).unwrap_err()
    };
    assert_eq!(
        bad(|c| c.hub_url = "wss://gw.example.com/hubs/node".to_owned()),
        HubConfigError::HubUrl("wss://gw.example.com/hubs/node".to_owned())
    );
    assert_eq!(
        bad(|c| c.hub_url = "https:///hubs/node".to_owned()),
        HubConfigError::HubUrl("https:///hubs/node".to_owned())
    );
    assert_eq!(
        bad(|c| c.keep_alive = std::time::Duration::ZERO),
        HubConfigError::Zero("keep_alive")
    );
    assert_eq!(
        bad(|c| c.results_in_flight = 0),
        HubConfigError::Zero("results_in_flight")
    );
    assert_eq!(
        bad(|c| c.protocol_versions.clear()),
        HubConfigError::NoProtocolVersion
    );
}

#[test]
fn split_origin_separates_the_origin_from_path_and_query() {
    assert_eq!(
        split_origin("https://gw.example.com/hubs/node"),
        Some(("https://gw.example.com", "/hubs/node".to_owned()))
    );
    assert_eq!(
        split_origin("HTTP://h:1?q=1#frag"),
        Some(("HTTP://h:1", "/?q=1".to_owned()))
    );
    assert_eq!(split_origin("http://h"), Some(("http://h", "/".to_owned())));
    assert_eq!(split_origin("ftp://h/x"), None);
    assert_eq!(split_origin("http:///x"), None);
}
