//! The REST bodies (core/src/wire/rest.rs): pairing, polling, results, heartbeat, errors, the
//! node token and the result path.
mod contract_support;
mod support;

use std::time::Duration;

use contract_support as gen;
use contract_support::fixtures;
use nodelink_core::wire::dto::{ExecuteCommandDto, HeartbeatDto};
use nodelink_core::wire::rest::{
    command_result_path, parse_command_result_path, validate_node_id, CommandResultBody,
    CommandsResponse, NodeToken, PairRequest, PairResponse, PolledCommands, RejectedCommand,
    RestError, RestErrorBody, RestErrorCode, TokenError, COMMANDS_PATH, DEFAULT_POLL_INTERVAL,
    HEARTBEAT_PATH, MAX_NODE_ID_LEN, PAIRING_POLL_INTERVAL, PAIRING_SECRET_LIFETIME, PAIR_PATH,
};
use proptest::prelude::*;
use serde::Serialize;
use serde_json::json;

fn body<T: Serialize>(value: &T) -> String {
    support::text(&serde_json::to_vec(value).expect("a body serializes"))
}

fn token(text: &str) -> NodeToken {
    NodeToken::parse(text).expect("a valid token")
}

// ---------------------------------------------------------------------------------------------
// Pairing

#[test]
fn pair_request_matches_the_seed_example() {
    let request = PairRequest {
        node_id: "abc123".to_owned(),
        pairing_secret: "s_a1b2c3...".to_owned(),
        name: None,
        platform: None,
    };
    let text = body(&request);
    insta::assert_snapshot!("rest_pair_request", text);
    assert_eq!(PairRequest::from_json(text.as_bytes()), Ok(request));
}

#[test]
fn pair_request_with_the_nodelink_extensions() {
    let request = PairRequest {
        node_id: "gpu-node-1".to_owned(),
        pairing_secret: "s_9f8e7d6c5b4a".to_owned(),
        name: Some("rack 3, slot 2".to_owned()),
        platform: Some("linux".to_owned()),
    };
    let text = body(&request);
    insta::assert_snapshot!("rest_pair_request_extended", text);
    assert_eq!(PairRequest::from_json(text.as_bytes()), Ok(request));
}

#[test]
fn pair_request_checks_the_node_id_and_the_secret() {
    assert_eq!(
        PairRequest::from_json(br#"{"nodeId":"a.b","pairingSecret":"s"}"#),
        Err(RestError::InvalidBody {
            body: "pair request",
            detail: "field `nodeId`: nodeId contains '.' at byte 1; only A-Z, a-z, 0-9, `-` \
                     and `_` are allowed"
                .to_owned()
        })
    );
    assert_eq!(
        PairRequest::from_json(br#"{"nodeId":"abc","pairingSecret":""}"#),
        Err(RestError::InvalidBody {
            body: "pair request",
            detail: "field `pairingSecret` is empty".to_owned()
        })
    );
    let err = PairRequest::from_json(br#"{"nodeId":"abc"}"#).expect_err("no secret");
    assert!(
        err.to_string().contains("missing field `pairingSecret`"),
        "{err}"
    );
}

#[test]
fn pair_request_debug_hides_the_secret() {
    let request = PairRequest {
        node_id: "abc123".to_owned(),
        pairing_secret: "s_topsecret".to_owned(),
        name: None,
        platform: None,
    };
    let debug = format!("{request:?}");
    assert!(!debug.contains("topsecret"), "{debug}");
    assert!(debug.contains("abc123"), "{debug}");
}

#[test]
fn pair_responses_by_status() {
    let cases = [
        (
            "rest_pair_pending",
            PairResponse::Pending {
                pairing_code: "ABC-123".to_owned(),
            },
        ),
        (
            "rest_pair_approved",
            PairResponse::Approved {
                token: token("abc123.a1b2c3d4e5f6..."),
                gateway_url: "https://gw.example.com".to_owned(),
            },
        ),
        (
            "rest_pair_rejected",
            PairResponse::Rejected {
                reason: Some("unknown device".to_owned()),
            },
        ),
        ("rest_pair_expired", PairResponse::Expired),
    ];
    for (name, response) in cases {
        let text = body(&response);
        insta::assert_snapshot!(name, text);
        assert_eq!(PairResponse::from_json(text.as_bytes()), Ok(response));
    }
}

#[test]
fn pair_response_decoding() {
    // The seed's pretty-printed forms, with an unknown field.
    let pending = PairResponse::from_json(
        b"{ \"status\": \"pending\", \"pairingCode\": \"ABC-123\", \"expiresInSeconds\": 840 }",
    );
    assert_eq!(
        pending,
        Ok(PairResponse::Pending {
            pairing_code: "ABC-123".to_owned()
        })
    );
    assert!(pending.expect("decodes").is_pending());
    assert_eq!(
        PairResponse::from_json(br#"{"status":"rejected"}"#),
        Ok(PairResponse::Rejected { reason: None })
    );

    let err = PairResponse::from_json(br#"{"status":"revoked"}"#).expect_err("unknown status");
    let RestError::InvalidBody { body, detail } = &err else {
        panic!("expected InvalidBody, got {err:?}");
    };
    assert_eq!(*body, "pair response");
    assert!(
        detail.contains("unknown variant `revoked`, expected one of `pending`, `approved`, `rejected`, `expired`"),
        "{detail}"
    );
    let err = PairResponse::from_json(br#"{"pairingCode":"X"}"#).expect_err("no status");
    assert!(err.to_string().contains("missing field `status`"), "{err}");
    let err = PairResponse::from_json(br#"{"status":"pending"}"#).expect_err("no code");
    assert!(
        err.to_string().contains("missing field `pairingCode`"),
        "{err}"
    );
    let err = PairResponse::from_json(
        br#"{"status":"approved","token":"no-dot","gatewayUrl":"https://gw"}"#,
    )
    .expect_err("bad token");
    assert!(err.to_string().contains("has no `.`"), "{err}");
}

#[test]
fn an_approved_response_never_shows_the_secret_in_debug() {
    let response = PairResponse::Approved {
        token: token("abc123.hunter2"),
        gateway_url: "https://gw.example.com".to_owned(),
    };
    assert!(!format!("{response:?}").contains("hunter2"));
}

// ---------------------------------------------------------------------------------------------
// Polling, results, heartbeat

#[test]
fn commands_response_matches_the_seed_example() {
    let response = CommandsResponse {
        commands: vec![ExecuteCommandDto {
            command_id: "cmd_xyz789".to_owned(),
            command: "screen.capture".to_owned(),
            params: Some(json!({ "quality": 80 })),
            timeout_ms: Some(30000),
            originated_by: None,
            protocol_version: None,
        }],
        scopes: None,
    };
    let text = body(&response);
    insta::assert_snapshot!("rest_commands", text);
    let polled = PolledCommands::from_json(text.as_bytes()).expect("decodes");
    assert_eq!(polled.commands, response.commands);
    assert!(polled.rejected.is_empty());
    assert_eq!(polled.scopes, None);
}

#[test]
fn an_empty_poll_with_scopes() {
    let response = CommandsResponse {
        commands: vec![],
        scopes: Some(vec!["screen.capture".to_owned(), "system.info".to_owned()]),
    };
    let text = body(&response);
    insta::assert_snapshot!("rest_commands_scopes", text);
    let polled = PolledCommands::from_json(text.as_bytes()).expect("decodes");
    assert_eq!(polled.scopes, response.scopes);
}

#[test]
fn one_malformed_command_does_not_hide_the_others() {
    let text = br#"{"commands":[{"commandId":"a","command":"x"},{"commandId":"b","timeoutMs":5},7,{"commandId":"c","command":"y"}]}"#;
    let polled = PolledCommands::from_json(text).expect("decodes");
    let ids: Vec<&str> = polled
        .commands
        .iter()
        .map(|c| c.command_id.as_str())
        .collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(
        polled.rejected,
        vec![
            RejectedCommand {
                index: 1,
                command_id: Some("b".to_owned()),
                detail: "commands[1]: missing field `command`".to_owned()
            },
            RejectedCommand {
                index: 2,
                command_id: None,
                detail: "commands[2]: invalid type: integer `7`, expected struct ExecuteCommandDto"
                    .to_owned()
            },
        ]
    );
}

#[test]
fn a_poll_answer_needs_a_commands_array_and_valid_scopes() {
    let err = PolledCommands::from_json(b"{}").expect_err("no commands");
    assert!(
        matches!(&err, RestError::InvalidBody { body: "commands response", detail }
            if detail.contains("missing field `commands`")),
        "{err:?}"
    );
    assert!(PolledCommands::from_json(b"<html>").is_err());
    assert_eq!(
        PolledCommands::from_json(br#"{"commands":[],"scopes":["a.b",1]}"#),
        Err(RestError::InvalidBody {
            body: "commands response",
            detail: "field `scopes`: scope at index 1 must be a string, got a number".to_owned()
        })
    );
    let polled =
        PolledCommands::from_json(br#"{"commands":[],"scopes":["b.b","a.a","b.b"]}"#).expect("ok");
    assert_eq!(
        polled.scopes,
        Some(vec!["b.b".to_owned(), "a.a".to_owned()])
    );
    let polled = PolledCommands::from_json(br#"{"commands":[],"scopes":null}"#).expect("ok");
    assert_eq!(polled.scopes, None);
}

#[test]
fn result_body_is_the_dto_without_its_command_id() {
    let body_value = CommandResultBody {
        ok: true,
        result: Some(json!({ "hostname": "build-01" })),
        error: None,
        duration_ms: Some(234),
        part_index: None,
        is_last: None,
        protocol_version: None,
    };
    let text = body(&body_value);
    insta::assert_snapshot!("rest_command_result", text);

    let dto = body_value.clone().into_dto("cmd_xyz789".to_owned());
    assert_eq!(dto.command_id, "cmd_xyz789");
    assert_eq!(
        CommandResultBody::from_dto(dto),
        ("cmd_xyz789".to_owned(), body_value.clone())
    );
    // A commandId in the body (a node that posts the whole DTO) is ignored: the path wins.
    let with_id =
        br#"{"commandId":"other","ok":true,"result":{"hostname":"build-01"},"durationMs":234}"#;
    assert_eq!(CommandResultBody::from_json(with_id), Ok(body_value));
    let err = CommandResultBody::from_json(br#"{"result":1}"#).expect_err("no ok");
    assert_eq!(
        err.to_string(),
        "command result body is invalid: missing field `ok` at line 1 column 12"
    );
}

#[test]
fn rest_heartbeat_body_is_the_heartbeat_dto() {
    let heartbeat: HeartbeatDto = fixtures::heartbeat();
    insta::assert_snapshot!("rest_heartbeat", body(&heartbeat));
}

// ---------------------------------------------------------------------------------------------
// Paths

#[test]
fn endpoint_paths_and_intervals() {
    assert_eq!(PAIR_PATH, "/api/nodes/me/pair");
    assert_eq!(COMMANDS_PATH, "/api/nodes/me/commands");
    assert_eq!(HEARTBEAT_PATH, "/api/nodes/me/heartbeat");
    assert_eq!(PAIRING_POLL_INTERVAL, Duration::from_secs(3));
    assert_eq!(PAIRING_SECRET_LIFETIME, Duration::from_secs(900));
    assert_eq!(DEFAULT_POLL_INTERVAL, Duration::from_secs(2));
}

#[test]
fn result_paths_percent_encode_the_command_id() {
    let plain = command_result_path("cmd_xyz789").expect("valid");
    insta::assert_snapshot!("rest_command_result_path", plain);
    let escaped = command_result_path("job 42/ü?#%").expect("valid");
    insta::assert_snapshot!("rest_command_result_path_escaped", escaped);
    assert_eq!(
        parse_command_result_path(&escaped),
        Ok("job 42/ü?#%".to_owned())
    );
    // UUIDs and dots inside an id travel as they are.
    assert_eq!(
        command_result_path("0b7e.5c1d-~_").expect("valid"),
        "/api/nodes/me/commands/0b7e.5c1d-~_/result"
    );
}

#[test]
fn result_paths_refuse_ids_no_url_can_carry() {
    assert_eq!(command_result_path(""), Err(RestError::EmptyCommandId));
    for dots in [".", ".."] {
        assert_eq!(
            command_result_path(dots),
            Err(RestError::DotSegmentCommandId {
                command_id: dots.to_owned()
            })
        );
    }
    // The same ids arriving percent-encoded are refused too.
    assert_eq!(
        parse_command_result_path("/api/nodes/me/commands/%2e%2E/result"),
        Err(RestError::DotSegmentCommandId {
            command_id: "..".to_owned()
        })
    );
    assert_eq!(
        parse_command_result_path("/api/nodes/me/commands//result"),
        Err(RestError::EmptyCommandId)
    );
}

#[test]
fn result_path_parsing_errors() {
    let form = "/api/nodes/me/commands/{commandId}/result";
    for path in [
        "/api/nodes/me/commands/a/b/result",
        "/api/nodes/me/commands/a",
        "/api/nodes/me/pair",
        "/api/nodes/me/commands/a/result/",
    ] {
        assert_eq!(
            parse_command_result_path(path),
            Err(RestError::UnexpectedPath {
                path: path.to_owned(),
                expected: form
            }),
            "{path}"
        );
    }
    for segment in ["a%2", "a%zz", "%ff", "%C3"] {
        assert_eq!(
            parse_command_result_path(&format!("/api/nodes/me/commands/{segment}/result")),
            Err(RestError::BadPercentEncoding {
                segment: segment.to_owned()
            }),
            "{segment}"
        );
    }
    assert_eq!(
        parse_command_result_path("/api/nodes/me/commands/cmd_1/result?attempt=2"),
        Ok("cmd_1".to_owned())
    );
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn error_bodies() {
    let unauthorized = RestErrorBody::new(RestErrorCode::Unauthorized, "unknown node token");
    let text = body(&unauthorized);
    insta::assert_snapshot!("rest_error_unauthorized", text);
    assert_eq!(RestErrorBody::from_json(text.as_bytes()), Ok(unauthorized));

    let limited = RestErrorBody {
        retry_after_ms: Some(3000),
        ..RestErrorBody::new(RestErrorCode::RateLimited, "poll at most every 2 s")
    };
    let text = body(&limited);
    insta::assert_snapshot!("rest_error_rate_limited", text);
    assert_eq!(RestErrorBody::from_json(text.as_bytes()), Ok(limited));
}

#[test]
fn error_codes_map_to_http_statuses_and_unknown_codes_survive() {
    let codes = [
        (RestErrorCode::InvalidRequest, "invalid_request", 400),
        (RestErrorCode::Unauthorized, "unauthorized", 401),
        (RestErrorCode::Forbidden, "forbidden", 403),
        (RestErrorCode::Revoked, "revoked", 403),
        (RestErrorCode::NotFound, "not_found", 404),
        (RestErrorCode::Conflict, "conflict", 409),
        (RestErrorCode::RateLimited, "rate_limited", 429),
    ];
    for (code, spelling, status) in codes {
        assert_eq!(code.as_str(), spelling);
        assert_eq!(RestErrorCode::parse(spelling), code);
        assert_eq!(code.http_status(), Some(status));
    }
    let text = br#"{"error":"maintenance","message":"back at 06:00","until":"06:00"}"#;
    let parsed = RestErrorBody::from_json(text).expect("decodes");
    assert_eq!(parsed.error, RestErrorCode::Other("maintenance".to_owned()));
    assert_eq!(parsed.error.http_status(), None);
    assert_eq!(
        body(&parsed),
        r#"{"error":"maintenance","message":"back at 06:00"}"#
    );
    // A missing message reads as empty; a missing code is an error.
    assert_eq!(
        RestErrorBody::from_json(br#"{"error":"conflict"}"#).map(|b| b.message),
        Ok(String::new())
    );
    assert!(RestErrorBody::from_json(br#"{"message":"x"}"#).is_err());
}

// ---------------------------------------------------------------------------------------------
// The node token

#[test]
fn node_token_parses_at_the_first_dot() {
    let parsed = token("abc123.a1b2c3d4e5f6...");
    assert_eq!(parsed.node_id(), "abc123");
    assert_eq!(parsed.secret(), "a1b2c3d4e5f6...");
    assert_eq!(parsed.to_string(), "abc123.a1b2c3d4e5f6...");
    assert_eq!("abc123.x".parse::<NodeToken>(), Ok(token("abc123.x")));
    assert_eq!(NodeToken::new("abc123", "x"), Ok(token("abc123.x")));
}

#[test]
fn node_token_errors() {
    let cases = [
        ("", TokenError::Empty),
        ("abc123", TokenError::MissingDot),
        (".secret", TokenError::EmptyNodeId),
        ("abc123.", TokenError::EmptySecret),
        (
            "ab c.secret",
            TokenError::InvalidNodeIdChar { at: 2, found: ' ' },
        ),
        (
            "nœud.secret",
            TokenError::InvalidNodeIdChar { at: 1, found: 'œ' },
        ),
        ("abc.se cret", TokenError::InvalidSecretChar { at: 2 }),
        ("abc.secr\u{e9}t", TokenError::InvalidSecretChar { at: 4 }),
    ];
    for (text, expected) in cases {
        assert_eq!(NodeToken::parse(text), Err(expected), "{text:?}");
    }
    let long = format!("{}.s", "n".repeat(MAX_NODE_ID_LEN + 1));
    assert_eq!(
        NodeToken::parse(&long),
        Err(TokenError::NodeIdTooLong {
            len: MAX_NODE_ID_LEN + 1,
            max: MAX_NODE_ID_LEN
        })
    );
    assert_eq!(validate_node_id(&"n".repeat(MAX_NODE_ID_LEN)), Ok(()));
    assert_eq!(
        TokenError::MissingDot.to_string(),
        "node token has no `.` between nodeId and secret (expected {nodeId}.{secret})"
    );
}

#[test]
fn token_errors_and_debug_never_show_the_secret() {
    let secret_part = "hunter2 x";
    let err = NodeToken::parse(&format!("abc.{secret_part}")).expect_err("space in the secret");
    assert!(!err.to_string().contains("hunter2"));
    let debug = format!("{:?}", token("abc123.hunter2"));
    assert_eq!(
        debug,
        r#"NodeToken { node_id: "abc123", secret: "<redacted>" }"#
    );
}

#[test]
fn bearer_header() {
    let parsed = token("abc123.a1b2c3d4e5f6...");
    let header = parsed.bearer();
    insta::assert_snapshot!("rest_bearer", header);
    assert_eq!(NodeToken::from_bearer(&header), Ok(parsed.clone()));
    assert_eq!(
        NodeToken::from_bearer("bearer abc123.a1b2c3d4e5f6..."),
        Ok(parsed)
    );
    assert_eq!(
        NodeToken::from_bearer("Basic dXNlcjpwYXNz"),
        Err(TokenError::NotBearer)
    );
    assert_eq!(
        NodeToken::from_bearer("abc123.secret"),
        Err(TokenError::NotBearer)
    );
    assert_eq!(
        NodeToken::from_bearer("Bearer "),
        Err(TokenError::NotBearer)
    );
    assert_eq!(
        NodeToken::from_bearer("Bearer nodot"),
        Err(TokenError::MissingDot)
    );
}

#[test]
fn node_token_serializes_as_its_string() {
    let parsed = token("abc123.s3cr3t");
    assert_eq!(
        serde_json::to_string(&parsed).expect("json"),
        r#""abc123.s3cr3t""#
    );
    let err = serde_json::from_str::<NodeToken>(r#""a b.c""#).expect_err("bad nodeId");
    assert!(err.to_string().contains("nodeId contains ' '"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Properties

fn pair_response() -> impl Strategy<Value = PairResponse> {
    prop_oneof![
        gen::text().prop_map(|pairing_code| PairResponse::Pending { pairing_code }),
        ("[A-Za-z0-9_-]{1,20}", "[!-~]{1,40}", gen::text()).prop_map(|(id, secret, url)| {
            PairResponse::Approved {
                token: NodeToken::new(&id, &secret).expect("valid by construction"),
                gateway_url: url,
            }
        }),
        proptest::option::of(gen::text()).prop_map(|reason| PairResponse::Rejected { reason }),
        Just(PairResponse::Expired),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn command_ids_survive_the_path(id in any::<String>()) {
        match command_result_path(&id) {
            Ok(path) => {
                prop_assert!(path.is_ascii());
                prop_assert_eq!(parse_command_result_path(&path), Ok(id));
            }
            Err(_) => prop_assert!(id.is_empty() || id == "." || id == ".."),
        }
    }

    #[test]
    fn pair_responses_round_trip(response in pair_response()) {
        let text = serde_json::to_vec(&response).expect("serializes");
        prop_assert_eq!(PairResponse::from_json(&text), Ok(response));
    }

    #[test]
    fn result_bodies_round_trip(dto in gen::command_result()) {
        let (id, result_body) = CommandResultBody::from_dto(dto.clone());
        let text = serde_json::to_vec(&result_body).expect("serializes");
        let back = CommandResultBody::from_json(&text).expect("decodes");
        prop_assert_eq!(back.into_dto(id), dto);
    }

    #[test]
    fn poll_answers_round_trip(
        commands in proptest::collection::vec(gen::execute_command(), 0..4),
        scopes in proptest::option::of(gen::scopes()),
    ) {
        let response = CommandsResponse { commands, scopes };
        let text = serde_json::to_vec(&response).expect("serializes");
        let polled = PolledCommands::from_json(&text).expect("decodes");
        prop_assert!(polled.rejected.is_empty());
        prop_assert_eq!(polled.commands, response.commands);
        prop_assert_eq!(polled.scopes, response.scopes);
    }

    #[test]
    fn tokens_round_trip_and_parsing_never_panics(text in any::<String>()) {
        if let Ok(parsed) = NodeToken::parse(&text) {
            prop_assert_eq!(parsed.to_string(), text.clone());
            prop_assert_eq!(NodeToken::from_bearer(&parsed.bearer()), Ok(parsed));
        }
        let _ = NodeToken::from_bearer(&text);
        let _ = parse_command_result_path(&text);
    }

    #[test]
    fn body_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = PairRequest::from_json(&bytes);
        let _ = PairResponse::from_json(&bytes);
        let _ = PolledCommands::from_json(&bytes);
        let _ = CommandResultBody::from_json(&bytes);
        let _ = RestErrorBody::from_json(&bytes);
    }

    #[test]
    fn body_decoders_never_panic_on_json(value in gen::json_value()) {
        let text = serde_json::to_vec(&json!({"commands": [value.clone()], "status": value.clone(),
            "scopes": value}))
            .expect("serializes");
        let _ = PairResponse::from_json(&text);
        let _ = PolledCommands::from_json(&text);
    }
}
