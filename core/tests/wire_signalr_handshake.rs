//! The handshake request and response (both hub protocols) and the negotiate bodies and URLs.

mod support;

use nodelink_core::wire::signalr::handshake::{
    Handshake, HandshakeRequest, HandshakeResponse, MAX_HUB_PROTOCOL_VERSION,
};
use nodelink_core::wire::signalr::negotiate::{
    negotiate_url, query_param, websocket_url, AvailableTransport, NegotiateError,
    NegotiateRequest, NegotiateResponse, NegotiatedConnection,
};
use nodelink_core::wire::signalr::{DecodeError, HubProtocol};
use proptest::prelude::*;
use support::text;

fn encode_request(request: &HandshakeRequest) -> Vec<u8> {
    let mut out = Vec::new();
    request.encode(&mut out);
    out
}

fn encode_response(response: &HandshakeResponse) -> Vec<u8> {
    let mut out = Vec::new();
    response.encode(&mut out);
    out
}

#[test]
fn handshake_request_json() {
    let bytes = encode_request(&HandshakeRequest::new(HubProtocol::Json, 1));
    insta::assert_snapshot!("handshake_request_json_v1", text(&bytes));
}

#[test]
fn handshake_request_messagepack_stateful() {
    let bytes = encode_request(&HandshakeRequest::new(HubProtocol::MessagePack, 2));
    insta::assert_snapshot!("handshake_request_messagepack_v2", text(&bytes));
}

#[test]
fn handshake_responses() {
    insta::assert_snapshot!(
        "handshake_response_accepted",
        text(&encode_response(&HandshakeResponse::Accepted))
    );
    let request = HandshakeRequest {
        protocol: "xml".to_string(),
        version: 1,
    };
    let error = request.accept(&[HubProtocol::Json]).unwrap_err();
    insta::assert_snapshot!(
        "handshake_response_unknown_protocol",
        text(&encode_response(&HandshakeResponse::Rejected(error)))
    );
}

#[test]
fn a_request_decodes_with_unknown_fields_and_fields_in_any_order() {
    let request =
        HandshakeRequest::decode(br#"{ "version": 2, "minorVersion": 0, "protocol": "json" }"#)
            .unwrap();
    assert_eq!(request, HandshakeRequest::new(HubProtocol::Json, 2));
}

#[test]
fn request_decode_errors_name_the_field() {
    let cases: [(&[u8], DecodeError); 7] = [
        (
            br#"{"version":1}"#,
            DecodeError::MissingField {
                message: "handshake request",
                field: "protocol",
            },
        ),
        (
            br#"{"protocol":"json"}"#,
            DecodeError::MissingField {
                message: "handshake request",
                field: "version",
            },
        ),
        (
            br#"{"protocol":1,"version":1}"#,
            DecodeError::WrongType {
                message: "handshake request",
                field: "protocol",
                expected: "a string",
            },
        ),
        (
            br#"{"protocol":"json","version":"1"}"#,
            DecodeError::WrongType {
                message: "handshake request",
                field: "version",
                expected: "a non-negative integer",
            },
        ),
        (
            br#"{"protocol":"json","version":-1}"#,
            DecodeError::WrongType {
                message: "handshake request",
                field: "version",
                expected: "a non-negative integer",
            },
        ),
        (
            br#"["json",1]"#,
            DecodeError::WrongType {
                message: "handshake request",
                field: "<record>",
                expected: "a JSON object",
            },
        ),
        (
            b"{\"protocol\":\"\xff\"}",
            DecodeError::NotUtf8 {
                what: "handshake request",
            },
        ),
    ];
    for (record, expected) in cases {
        assert_eq!(
            HandshakeRequest::decode(record),
            Err(expected),
            "{}",
            text(record)
        );
    }
    assert!(matches!(
        HandshakeRequest::decode(b"{\"protocol\":"),
        Err(DecodeError::Syntax { .. })
    ));
}

#[test]
fn the_server_accepts_versions_up_to_two_of_a_supported_protocol() {
    let both = [HubProtocol::Json, HubProtocol::MessagePack];
    for version in 0..=MAX_HUB_PROTOCOL_VERSION {
        assert_eq!(
            HandshakeRequest::new(HubProtocol::MessagePack, version).accept(&both),
            Ok(Handshake {
                protocol: HubProtocol::MessagePack,
                version
            })
        );
    }
    assert_eq!(
        HandshakeRequest::new(HubProtocol::Json, 3).accept(&both),
        Err("The server does not support version 3 of the 'json' protocol.".to_string())
    );
    assert_eq!(
        HandshakeRequest::new(HubProtocol::MessagePack, 1).accept(&[HubProtocol::Json]),
        Err("The protocol 'messagepack' is not supported.".to_string()),
        "a known protocol the server has switched off"
    );
    assert_eq!(
        HandshakeRequest {
            protocol: "JSON".to_string(),
            version: 1
        }
        .accept(&both),
        Err("The protocol 'JSON' is not supported.".to_string()),
        "names are compared exactly"
    );
}

#[test]
fn responses_decode() {
    assert_eq!(
        HandshakeResponse::decode(b"{}"),
        Ok(HandshakeResponse::Accepted)
    );
    assert_eq!(
        HandshakeResponse::decode(br#"{"minorVersion":1}"#),
        Ok(HandshakeResponse::Accepted)
    );
    assert_eq!(
        HandshakeResponse::decode(br#"{"error":"nope"}"#),
        Ok(HandshakeResponse::Rejected("nope".to_string()))
    );
    assert_eq!(
        HandshakeResponse::decode(br#"{"error":5}"#),
        Err(DecodeError::WrongType {
            message: "handshake response",
            field: "error",
            expected: "a string"
        })
    );
    assert!(matches!(
        HandshakeResponse::decode(b""),
        Err(DecodeError::Syntax { .. })
    ));
}

#[test]
fn a_rejection_text_with_quotes_round_trips() {
    let response = HandshakeResponse::Rejected("bad \"x\"\n".to_string());
    let bytes = encode_response(&response);
    assert_eq!(bytes.last(), Some(&0x1e));
    assert_eq!(
        HandshakeResponse::decode(&bytes[..bytes.len() - 1]),
        Ok(response)
    );
}

fn connection(version: u32) -> NegotiatedConnection {
    NegotiatedConnection {
        negotiate_version: version,
        connection_id: "n1Ab5Y0yGjWW2qKcHdEfWQ".to_string(),
        connection_token: (version > 0).then(|| "Dk4r8bQxJm3WdUkvXg2N7A".to_string()),
        use_stateful_reconnect: false,
        available_transports: vec![AvailableTransport::websockets()],
    }
}

#[test]
fn negotiate_response_version_1() {
    let body = NegotiateResponse::Connection(connection(1)).encode();
    insta::assert_snapshot!("negotiate_response_v1", text(&body));
}

#[test]
fn negotiate_response_version_0() {
    let body = NegotiateResponse::Connection(connection(0)).encode();
    insta::assert_snapshot!("negotiate_response_v0", text(&body));
}

#[test]
fn negotiate_response_stateful_reconnect() {
    let mut c = connection(1);
    c.use_stateful_reconnect = true;
    let body = NegotiateResponse::Connection(c).encode();
    insta::assert_snapshot!("negotiate_response_v1_stateful", text(&body));
}

#[test]
fn negotiate_response_error() {
    let body = NegotiateResponse::Error("Unauthorized: unknown node token".to_string()).encode();
    insta::assert_snapshot!("negotiate_response_error", text(&body));
}

#[test]
fn negotiate_responses_round_trip() {
    let mut stateful = connection(1);
    stateful.use_stateful_reconnect = true;
    for response in [
        NegotiateResponse::Connection(connection(0)),
        NegotiateResponse::Connection(connection(1)),
        NegotiateResponse::Connection(stateful),
        NegotiateResponse::Error("no".to_string()),
        NegotiateResponse::Redirect {
            url: "https://other/hubs/node".to_string(),
            access_token: Some("t".to_string()),
        },
    ] {
        assert_eq!(NegotiateResponse::decode(&response.encode()), Ok(response));
    }
}

#[test]
fn the_websocket_id_is_the_token_in_version_1_and_the_id_in_version_0() {
    assert_eq!(connection(1).websocket_id(), "Dk4r8bQxJm3WdUkvXg2N7A");
    assert_eq!(connection(0).websocket_id(), "n1Ab5Y0yGjWW2qKcHdEfWQ");
    assert!(connection(1).offers_websockets("Binary"));
    assert!(!connection(1).offers_websockets("Xml"));
}

#[test]
fn the_example_from_the_transport_spec_decodes() {
    // TransportProtocols.md's version 1 example, with its whitespace and other transports.
    let body = br#"{
      "connectionToken":"05265228-1e2c-46c5-82a1-6a5bcc3f0143",
      "connectionId":"807809a5-31bf-470d-9e23-afaee35d8a0d",
      "negotiateVersion":1,
      "availableTransports":[
        { "transport": "WebSockets", "transferFormats": [ "Text", "Binary" ] },
        { "transport": "ServerSentEvents", "transferFormats": [ "Text" ] },
        { "transport": "LongPolling", "transferFormats": [ "Text", "Binary" ] }
      ]
    }"#;
    let NegotiateResponse::Connection(c) = NegotiateResponse::decode(body).unwrap() else {
        panic!("expected a connection");
    };
    assert_eq!(c.websocket_id(), "05265228-1e2c-46c5-82a1-6a5bcc3f0143");
    assert_eq!(c.available_transports.len(), 3);
    assert!(c.offers_websockets("Text"));
}

#[test]
fn negotiate_decode_errors() {
    let cases: [(&[u8], NegotiateError); 6] = [
        (
            br#"{"negotiateVersion":1,"connectionId":"a","availableTransports":[]}"#,
            NegotiateError::MissingField("connectionToken"),
        ),
        (
            br#"{"availableTransports":[]}"#,
            NegotiateError::MissingField("connectionId"),
        ),
        (
            br#"{"connectionId":"a"}"#,
            NegotiateError::MissingField("availableTransports"),
        ),
        (
            br#"{"connectionId":7,"availableTransports":[]}"#,
            NegotiateError::WrongType {
                field: "connectionId",
                expected: "a string",
            },
        ),
        (
            br#"{"connectionId":"a","availableTransports":[{"transport":"WebSockets"}]}"#,
            NegotiateError::WrongType {
                field: "availableTransports",
                expected: "an array of {transport, transferFormats} objects",
            },
        ),
        (
            br#"{"Url":"/signalr","ProtocolVersion":"1.5"}"#,
            NegotiateError::LegacyServer,
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            NegotiateResponse::decode(body),
            Err(expected),
            "{}",
            text(body)
        );
    }
    assert!(matches!(
        NegotiateResponse::decode(b"<html>"),
        Err(NegotiateError::Syntax(_))
    ));
}

#[test]
fn a_version_0_response_ignores_a_connection_token() {
    let body = br#"{"connectionId":"a","connectionToken":"t","availableTransports":[]}"#;
    let NegotiateResponse::Connection(c) = NegotiateResponse::decode(body).unwrap() else {
        panic!("expected a connection");
    };
    assert_eq!(c.websocket_id(), "a");
}

#[test]
fn negotiate_request_query() {
    assert_eq!(
        NegotiateRequest::from_query("access_token=abc.def&negotiateVersion=1"),
        Ok(NegotiateRequest {
            requested_version: 1,
            use_stateful_reconnect: false
        })
    );
    let stateful =
        NegotiateRequest::from_query("negotiateVersion=7&useStatefulReconnect=true").unwrap();
    assert!(stateful.use_stateful_reconnect);
    assert_eq!(
        stateful.answered_version(),
        1,
        "capped at the server's highest"
    );
    assert_eq!(
        NegotiateRequest::from_query("").unwrap().answered_version(),
        0
    );
    assert_eq!(
        NegotiateRequest::from_query("negotiateVersion=one"),
        Err(NegotiateError::InvalidQuery {
            param: "negotiateVersion",
            value: "one".to_string()
        })
    );
    assert_eq!(
        NegotiateRequest::from_query("useStatefulReconnect=yes"),
        Err(NegotiateError::InvalidQuery {
            param: "useStatefulReconnect",
            value: "yes".to_string()
        })
    );
}

#[test]
fn client_urls_keep_the_hub_query() {
    let hub = "https://gw.example.com/hubs/node?access_token=n1.s%2B1";
    assert_eq!(
        negotiate_url(hub, 1, false),
        "https://gw.example.com/hubs/node/negotiate?access_token=n1.s%2B1&negotiateVersion=1"
    );
    assert_eq!(
        negotiate_url("http://127.0.0.1:7300/hubs/node/", 1, true),
        "http://127.0.0.1:7300/hubs/node/negotiate?negotiateVersion=1&useStatefulReconnect=true"
    );
    assert_eq!(
        websocket_url(hub, Some("tok/en")),
        "wss://gw.example.com/hubs/node?access_token=n1.s%2B1&id=tok%2Fen"
    );
    assert_eq!(
        websocket_url("http://127.0.0.1:7300/hubs/node#x", None),
        "ws://127.0.0.1:7300/hubs/node"
    );
    assert_eq!(
        query_param("a=1&access_token=n1.s%2B1", "access_token").as_deref(),
        Some("n1.s+1")
    );
    assert_eq!(query_param("a=1", "id"), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn handshake_and_negotiate_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
        let _ = HandshakeRequest::decode(&bytes);
        let _ = HandshakeResponse::decode(&bytes);
        let _ = NegotiateResponse::decode(&bytes);
    }

    #[test]
    fn handshake_requests_round_trip(protocol in "[ -~]{0,12}", version in any::<u32>()) {
        let request = HandshakeRequest { protocol, version };
        let bytes = encode_request(&request);
        prop_assert_eq!(HandshakeRequest::decode(&bytes[..bytes.len() - 1]), Ok(request));
    }
}
