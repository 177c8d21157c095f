//! The hub methods of the node contract (core/src/wire/contract.rs): arguments as they travel,
//! decoding of received invocations, and protocolVersion negotiation.
mod contract_support;
mod support;

use contract_support as gen;
use contract_support::fixtures::{execute, heartbeat, hello, json_payload, result_ok, strings};
use nodelink_core::gateway::dispatch::{CommandRecord, Execute};
use nodelink_core::wire::contract::{
    answer_hello, choose_protocol_version, expects_completion, interpret_hello_completion,
    is_protocol_version, method, normalize_scopes, ContractError, ExecuteCommandRef, GatewayCall,
    HelloOutcome, NodeCall, LEGACY_PROTOCOL_VERSION, NO_SHARED_VERSION_ERROR,
    SUPPORTED_PROTOCOL_VERSIONS,
};
use nodelink_core::wire::dto::{
    CancelCommandDto, CommandError, CommandProgressDto, CommandResultDto, ErrorCode,
    ExecuteCommandDto, HelloAckDto, HelloDto,
};
use nodelink_core::wire::signalr::{
    CompletionOutcome, HubMessage, HubProtocol, Invocation, Payload,
};
use proptest::prelude::*;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Helpers

fn invocation_of(message: &HubMessage) -> &Invocation {
    match message {
        HubMessage::Invocation(inv) => inv,
        other => panic!("expected an Invocation, got {other:?}"),
    }
}

/// The `arguments` array exactly as the JSON hub protocol writes it.
fn json_arguments(message: &HubMessage) -> String {
    let parts: Vec<&str> = invocation_of(message)
        .arguments
        .iter()
        .map(|p| p.as_json().expect("a JSON payload"))
        .collect();
    support::text(format!("[{}]", parts.join(",")).as_bytes())
}

/// The `[Args]` array exactly as the MessagePack hub protocol writes it (fewer than 16 arguments).
fn msgpack_arguments(message: &HubMessage) -> String {
    let arguments = &invocation_of(message).arguments;
    let mut bytes = vec![0x90 | u8::try_from(arguments.len()).expect("few arguments")];
    for payload in arguments {
        bytes.extend_from_slice(payload.as_msgpack().expect("a MessagePack payload"));
    }
    support::hex(&bytes)
}

fn received(target: &str, arguments: &[&str]) -> Invocation {
    Invocation {
        target: target.to_owned(),
        arguments: arguments.iter().map(|a| json_payload(a)).collect(),
        ..Invocation::default()
    }
}

fn decode_node(inv: &Invocation) -> Result<NodeCall, ContractError> {
    NodeCall::from_invocation(inv)
}

fn decode_gateway(inv: &Invocation) -> Result<GatewayCall, ContractError> {
    GatewayCall::from_invocation(inv)
}

// ---------------------------------------------------------------------------------------------
// Snapshots: the arguments of every method

#[test]
fn heartbeat_is_fire_and_forget_with_one_dto_argument() {
    let message = NodeCall::Heartbeat(heartbeat())
        .to_message(HubProtocol::Json, None)
        .expect("encodes");
    let inv = invocation_of(&message);
    assert_eq!(inv.target, "Heartbeat");
    assert_eq!(inv.invocation_id, None);
    insta::assert_snapshot!("contract_heartbeat_arguments", json_arguments(&message));
}

#[test]
fn command_result_carries_an_invocation_id() {
    let call = NodeCall::CommandResult(result_ok());
    assert!(call.expects_completion());
    let message = call
        .to_message(HubProtocol::Json, Some("7".to_owned()))
        .expect("encodes");
    let inv = invocation_of(&message);
    assert_eq!(inv.target, "CommandResult");
    assert_eq!(inv.invocation_id.as_deref(), Some("7"));
    insta::assert_snapshot!(
        "contract_command_result_arguments",
        json_arguments(&message)
    );
}

#[test]
fn scope_changed_echoes_a_list_of_scopes() {
    let message = NodeCall::ScopeChanged(strings(&["screen.capture", "app.manage"]))
        .to_message(HubProtocol::Json, None)
        .expect("encodes");
    assert_eq!(invocation_of(&message).target, "ScopeChanged");
    insta::assert_snapshot!("contract_scope_changed_arguments", json_arguments(&message));
}

#[test]
fn command_progress_arguments() {
    let message = NodeCall::CommandProgress(CommandProgressDto {
        command_id: "cmd_xyz789".to_owned(),
        progress: 0.5,
        step: None,
        step_count: None,
        eta_ms: Some(4000),
        message: None,
    })
    .to_message(HubProtocol::Json, None)
    .expect("encodes");
    assert_eq!(invocation_of(&message).target, "CommandProgress");
    insta::assert_snapshot!(
        "contract_command_progress_arguments",
        json_arguments(&message)
    );
}

#[test]
fn hello_arguments() {
    let message = NodeCall::Hello(hello())
        .to_message(HubProtocol::Json, Some("0".to_owned()))
        .expect("encodes");
    assert_eq!(invocation_of(&message).target, "Hello");
    insta::assert_snapshot!("contract_hello_arguments", json_arguments(&message));
}

#[test]
fn execute_command_arguments() {
    let message = GatewayCall::ExecuteCommand(execute())
        .to_message(HubProtocol::Json, None)
        .expect("encodes");
    assert_eq!(invocation_of(&message).target, "ExecuteCommand");
    insta::assert_snapshot!(
        "contract_execute_command_arguments",
        json_arguments(&message)
    );
}

#[test]
fn refresh_scopes_arguments_in_both_encodings() {
    let call =
        GatewayCall::RefreshScopes(strings(&["screen.capture", "input.control", "app.manage"]));
    let json = call.to_message(HubProtocol::Json, None).expect("encodes");
    insta::assert_snapshot!("contract_refresh_scopes_arguments", json_arguments(&json));
    let msgpack = call
        .to_message(HubProtocol::MessagePack, None)
        .expect("encodes");
    insta::assert_snapshot!(
        "contract_refresh_scopes_arguments_msgpack",
        msgpack_arguments(&msgpack)
    );
}

#[test]
fn revoke_access_sends_its_reason_as_a_plain_string() {
    let call = GatewayCall::RevokeAccess {
        reason: "admin_revoked".to_owned(),
    };
    let json = call.to_message(HubProtocol::Json, None).expect("encodes");
    assert_eq!(invocation_of(&json).target, "RevokeAccess");
    insta::assert_snapshot!("contract_revoke_access_arguments", json_arguments(&json));
    let msgpack = call
        .to_message(HubProtocol::MessagePack, None)
        .expect("encodes");
    insta::assert_snapshot!(
        "contract_revoke_access_arguments_msgpack",
        msgpack_arguments(&msgpack)
    );
}

#[test]
fn cancel_command_arguments_in_both_encodings() {
    let call = GatewayCall::CancelCommand(CancelCommandDto {
        command_id: "cmd_xyz789".to_owned(),
        reason: Some("user_cancelled".to_owned()),
    });
    let json = call.to_message(HubProtocol::Json, None).expect("encodes");
    insta::assert_snapshot!("contract_cancel_command_arguments", json_arguments(&json));
    let msgpack = call
        .to_message(HubProtocol::MessagePack, None)
        .expect("encodes");
    insta::assert_snapshot!(
        "contract_cancel_command_arguments_msgpack",
        msgpack_arguments(&msgpack)
    );
}

// ---------------------------------------------------------------------------------------------
// Who waits for a Completion

#[test]
fn only_hello_and_command_result_expect_a_completion() {
    for target in [
        method::HELLO,
        method::COMMAND_RESULT,
        "hello",
        "COMMANDRESULT",
    ] {
        assert!(expects_completion(target), "{target}");
    }
    for target in [
        method::HEARTBEAT,
        method::SCOPE_CHANGED,
        method::COMMAND_PROGRESS,
        method::EXECUTE_COMMAND,
        method::REFRESH_SCOPES,
        method::REVOKE_ACCESS,
        method::CANCEL_COMMAND,
        "Unknown",
    ] {
        assert!(!expects_completion(target), "{target}");
    }
    assert!(!GatewayCall::RevokeAccess {
        reason: String::new()
    }
    .expects_completion());
    assert!(!NodeCall::Heartbeat(heartbeat()).expects_completion());
}

// ---------------------------------------------------------------------------------------------
// Decoding received invocations

#[test]
fn decodes_the_seed_execute_command_ignoring_unknown_fields() {
    let inv = received(
        "ExecuteCommand",
        &[
            r#"{"commandId":"cmd_xyz789","command":"screen.capture","params":{"quality":80,"maxWidth":1280},"timeoutMs":30000,"originatedBy":{"userId":"usr_abc","agentId":"sophon","sessionId":"sess_def"},"priority":"high"}"#,
        ],
    );
    let Ok(GatewayCall::ExecuteCommand(dto)) = decode_gateway(&inv) else {
        panic!("expected ExecuteCommand");
    };
    assert_eq!(dto.command_id, "cmd_xyz789");
    assert_eq!(dto.params, Some(json!({"quality": 80, "maxWidth": 1280})));
}

#[test]
fn method_names_match_case_insensitively() {
    let inv = received("executecommand", &[r#"{"commandId":"c","command":"x"}"#]);
    let call = decode_gateway(&inv).expect("decodes");
    assert_eq!(call.target(), "ExecuteCommand");
    let inv = received(
        "HEARTBEAT",
        &[&serde_json::to_string(&heartbeat()).expect("json")],
    );
    assert_eq!(decode_node(&inv), Ok(NodeCall::Heartbeat(heartbeat())));
}

#[test]
fn a_method_of_the_other_direction_is_an_unknown_target() {
    let inv = received(
        "Heartbeat",
        &[&serde_json::to_string(&heartbeat()).expect("json")],
    );
    assert_eq!(
        decode_gateway(&inv),
        Err(ContractError::UnknownTarget {
            target: "Heartbeat".to_owned()
        })
    );
    let inv = received("ExecuteCommand", &[r#"{"commandId":"c","command":"x"}"#]);
    assert_eq!(
        decode_node(&inv),
        Err(ContractError::UnknownTarget {
            target: "ExecuteCommand".to_owned()
        })
    );
    let err = decode_node(&received("Telemetry", &["1"])).expect_err("unknown");
    assert_eq!(err.to_string(), "unknown hub method `Telemetry`");
}

#[test]
fn every_method_takes_exactly_one_argument() {
    assert_eq!(
        decode_gateway(&received("ExecuteCommand", &[])),
        Err(ContractError::ArgumentCount {
            target: "ExecuteCommand",
            expected: 1,
            got: 0
        })
    );
    assert_eq!(
        decode_node(&received("ScopeChanged", &["[]", "[]"])),
        Err(ContractError::ArgumentCount {
            target: "ScopeChanged",
            expected: 1,
            got: 2
        })
    );
    let err = decode_node(&received("Heartbeat", &[])).expect_err("no argument");
    assert_eq!(
        err.to_string(),
        "hub method Heartbeat takes 1 argument(s), got 0"
    );
}

#[test]
fn a_dto_missing_a_field_names_the_method_and_the_field() {
    let err = decode_gateway(&received("ExecuteCommand", &[r#"{"command":"x"}"#]))
        .expect_err("commandId is required");
    let ContractError::InvalidArgument {
        target,
        index,
        detail,
    } = &err
    else {
        panic!("expected InvalidArgument, got {err:?}");
    };
    assert_eq!((*target, *index), ("ExecuteCommand", 0));
    assert!(detail.contains("ExecuteCommandDto"), "{detail}");
    assert!(detail.contains("missing field `commandId`"), "{detail}");

    let err = decode_node(&received("CommandResult", &[r#""done""#])).expect_err("not an object");
    assert!(
        matches!(&err, ContractError::InvalidArgument { target: "CommandResult", detail, .. }
            if detail.contains("invalid type: string")),
        "{err:?}"
    );
}

#[test]
fn scopes_must_be_non_empty_strings() {
    let err = decode_gateway(&received("RefreshScopes", &[r#"["screen.capture",7]"#]))
        .expect_err("a number is no scope");
    assert_eq!(
        err,
        ContractError::InvalidArgument {
            target: "RefreshScopes",
            index: 0,
            detail: "scope at index 1 must be a string, got a number".to_owned()
        }
    );
    let err = decode_gateway(&received("RefreshScopes", &["null"])).expect_err("null");
    assert_eq!(
        err,
        ContractError::InvalidArgument {
            target: "RefreshScopes",
            index: 0,
            detail: "expected an array of scope strings, got null".to_owned()
        }
    );
    let err = decode_node(&received("ScopeChanged", &[r#"["a.b",""]"#])).expect_err("empty");
    assert_eq!(
        err,
        ContractError::InvalidArgument {
            target: "ScopeChanged",
            index: 0,
            detail: "scope at index 1 is empty".to_owned()
        }
    );
}

#[test]
fn scopes_keep_their_order_and_lose_duplicates() {
    let inv = received("RefreshScopes", &[r#"["b.x","a.y","b.x","c.z","a.y"]"#]);
    assert_eq!(
        decode_gateway(&inv),
        Ok(GatewayCall::RefreshScopes(strings(&["b.x", "a.y", "c.z"])))
    );
    assert_eq!(
        decode_gateway(&received("RefreshScopes", &["[]"])),
        Ok(GatewayCall::RefreshScopes(vec![]))
    );
    assert_eq!(normalize_scopes(strings(&["a", "a"])), strings(&["a"]));
}

#[test]
fn revoke_access_accepts_the_signature_and_the_example_form() {
    let revoke = |reason: &str| {
        Ok(GatewayCall::RevokeAccess {
            reason: reason.to_owned(),
        })
    };
    // The seed's signature: RevokeAccess(reason: string).
    assert_eq!(
        decode_gateway(&received("RevokeAccess", &[r#""admin_revoked""#])),
        revoke("admin_revoked")
    );
    // The seed's example: { "reason": "admin_revoked" }.
    assert_eq!(
        decode_gateway(&received(
            "RevokeAccess",
            &[r#"{ "reason": "admin_revoked" }"#]
        )),
        revoke("admin_revoked")
    );
    // A revocation is never lost to a missing reason.
    assert_eq!(decode_gateway(&received("RevokeAccess", &[])), revoke(""));
    assert_eq!(
        decode_gateway(&received("RevokeAccess", &["null"])),
        revoke("")
    );
    assert_eq!(
        decode_gateway(&received("RevokeAccess", &["{}"])),
        revoke("")
    );
    assert_eq!(
        decode_gateway(&received(
            "RevokeAccess",
            &[r#"{"reason":null,"by":"admin"}"#]
        )),
        revoke("")
    );
}

#[test]
fn revoke_access_rejects_other_shapes() {
    assert_eq!(
        decode_gateway(&received("RevokeAccess", &["42"])),
        Err(ContractError::InvalidArgument {
            target: "RevokeAccess",
            index: 0,
            detail: "expected a reason string or {\"reason\": string}, got a number".to_owned()
        })
    );
    assert_eq!(
        decode_gateway(&received("RevokeAccess", &[r#"{"reason":["x"]}"#])),
        Err(ContractError::InvalidArgument {
            target: "RevokeAccess",
            index: 0,
            detail: "field `reason` must be a string, got an array".to_owned()
        })
    );
    assert_eq!(
        decode_gateway(&received("RevokeAccess", &[r#""a""#, r#""b""#])),
        Err(ContractError::ArgumentCount {
            target: "RevokeAccess",
            expected: 1,
            got: 2
        })
    );
}

#[test]
fn messagepack_arguments_decode_like_json() {
    let calls = [
        GatewayCall::ExecuteCommand(execute()),
        GatewayCall::RefreshScopes(strings(&["a.b"])),
        GatewayCall::RevokeAccess {
            reason: "admin_revoked".to_owned(),
        },
    ];
    for call in calls {
        let message = call
            .to_message(HubProtocol::MessagePack, None)
            .expect("encodes");
        assert_eq!(decode_gateway(invocation_of(&message)), Ok(call));
    }
    // The seed's object form of RevokeAccess, as a MessagePack map {"reason": "x"}.
    let map = Payload::encode(HubProtocol::MessagePack, &json!({"reason": "x"})).expect("encodes");
    let inv = Invocation {
        target: "RevokeAccess".to_owned(),
        arguments: vec![map],
        ..Invocation::default()
    };
    assert_eq!(
        decode_gateway(&inv),
        Ok(GatewayCall::RevokeAccess {
            reason: "x".to_owned()
        })
    );
}

#[test]
fn unknown_error_codes_pass_through_the_hub() {
    let dto = CommandResultDto {
        ok: false,
        result: None,
        error: Some(CommandError {
            code: ErrorCode::Other("gpu_lost".to_owned()),
            message: "Xid 79".to_owned(),
            details: None,
            retry_after_ms: None,
        }),
        ..result_ok()
    };
    for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
        let message = NodeCall::CommandResult(dto.clone())
            .to_message(protocol, Some("1".to_owned()))
            .expect("encodes");
        assert_eq!(
            decode_node(invocation_of(&message)),
            Ok(NodeCall::CommandResult(dto.clone()))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// protocolVersion negotiation

#[test]
fn protocol_versions_are_iso_dates() {
    for ok in ["2026-04-01", "2025-10-01", "1999-12-31"] {
        assert!(is_protocol_version(ok), "{ok}");
    }
    for bad in [
        "",
        "2026-4-1",
        "2026-04-01 ",
        "2026/04/01",
        "2026-13-01",
        "2026-00-10",
        "2026-04-32",
        "2026-04-00",
        "v2026-04-0",
        "２０２６-04-01",
        "26-04-01",
    ] {
        assert!(!is_protocol_version(bad), "{bad:?}");
    }
}

#[test]
fn the_highest_shared_version_wins() {
    let supported = SUPPORTED_PROTOCOL_VERSIONS;
    let choose = |offered: &[&str]| choose_protocol_version(&strings(offered), &supported);
    assert_eq!(
        choose(&["2026-04-01", "2025-10-01"]),
        Some("2026-04-01".to_owned())
    );
    // Order of the offer does not matter: the highest shared one is chosen.
    assert_eq!(
        choose(&["2025-10-01", "2026-04-01"]),
        Some("2026-04-01".to_owned())
    );
    // A newer node still finds the gateway's current version.
    assert_eq!(
        choose(&["2026-10-01", "2026-04-01"]),
        Some("2026-04-01".to_owned())
    );
    // An older gateway's previous version.
    assert_eq!(
        choose(&["2025-10-01", "2025-04-01"]),
        Some("2025-10-01".to_owned())
    );
    assert_eq!(choose(&["2027-01-01"]), None);
    assert_eq!(choose(&[]), None);
    // Malformed offers are ignored even if the gateway listed them.
    assert_eq!(
        choose_protocol_version(&strings(&["latest"]), &["latest"]),
        None
    );
}

#[test]
fn gateway_answers_hello_with_the_chosen_version() {
    let outcome =
        answer_hello(HubProtocol::Json, &hello(), &SUPPORTED_PROTOCOL_VERSIONS).expect("encodes");
    let CompletionOutcome::Result(payload) = &outcome else {
        panic!("expected a result, got {outcome:?}");
    };
    assert_eq!(
        payload.as_json(),
        Some(r#"{"protocolVersion":"2026-04-01"}"#)
    );
    let msgpack = answer_hello(
        HubProtocol::MessagePack,
        &hello(),
        &SUPPORTED_PROTOCOL_VERSIONS,
    )
    .expect("encodes");
    let CompletionOutcome::Result(payload) = &msgpack else {
        panic!("expected a result, got {msgpack:?}");
    };
    insta::assert_snapshot!(
        "contract_hello_ack_msgpack",
        support::hex(payload.as_msgpack().expect("msgpack"))
    );
}

#[test]
fn gateway_answers_hello_with_an_error_when_nothing_is_shared() {
    let hello = HelloDto {
        protocol_versions: strings(&["2027-01-01"]),
        ..hello()
    };
    let outcome =
        answer_hello(HubProtocol::Json, &hello, &SUPPORTED_PROTOCOL_VERSIONS).expect("encodes");
    let CompletionOutcome::Error(message) = outcome else {
        panic!("expected an error");
    };
    assert!(message.starts_with(NO_SHARED_VERSION_ERROR));
    insta::assert_snapshot!("contract_hello_no_shared_version", message);
}

#[test]
fn node_interprets_the_completion_of_hello() {
    let offered = strings(&SUPPORTED_PROTOCOL_VERSIONS);
    let ack = |text: &str| CompletionOutcome::Result(json_payload(text));

    let negotiated =
        interpret_hello_completion(&ack(r#"{"protocolVersion":"2025-10-01"}"#), &offered);
    assert_eq!(
        negotiated,
        Ok(HelloOutcome::Negotiated("2025-10-01".to_owned()))
    );
    assert_eq!(
        negotiated
            .ok()
            .as_ref()
            .and_then(HelloOutcome::protocol_version),
        Some("2025-10-01")
    );

    // A plain Sophon gateway does not know Hello: any error but ours means legacy.
    let dotnet = CompletionOutcome::Error(
        "Failed to invoke 'Hello' due to an error on the server. HubException: Method does not exist."
            .to_owned(),
    );
    let legacy = interpret_hello_completion(&dotnet, &offered);
    assert_eq!(legacy, Ok(HelloOutcome::Legacy));
    assert_eq!(
        legacy
            .ok()
            .as_ref()
            .and_then(HelloOutcome::protocol_version),
        Some(LEGACY_PROTOCOL_VERSION)
    );
    assert_eq!(
        interpret_hello_completion(&CompletionOutcome::Void, &offered),
        Ok(HelloOutcome::Legacy)
    );

    let none = CompletionOutcome::Error(format!("{NO_SHARED_VERSION_ERROR}: no"));
    assert_eq!(
        interpret_hello_completion(&none, &offered),
        Ok(HelloOutcome::NoSharedVersion {
            detail: format!("{NO_SHARED_VERSION_ERROR}: no")
        })
    );

    // A node that no longer speaks the legacy version cannot fall back.
    let outcome =
        interpret_hello_completion(&dotnet, &strings(&["2026-10-01"])).expect("interprets");
    assert!(
        matches!(outcome, HelloOutcome::NoSharedVersion { .. }),
        "{outcome:?}"
    );
    assert_eq!(outcome.protocol_version(), None);
}

#[test]
fn a_hello_result_must_name_an_offered_version() {
    let offered = strings(&["2026-04-01"]);
    let err = interpret_hello_completion(
        &CompletionOutcome::Result(json_payload(r#"{"protocolVersion":"2025-10-01"}"#)),
        &offered,
    )
    .expect_err("not offered");
    assert_eq!(
        err,
        ContractError::InvalidResult {
            target: "Hello",
            detail: "the gateway chose protocolVersion `2025-10-01`, which the node did not offer \
                     (offered: [2026-04-01])"
                .to_owned()
        }
    );
    let err = interpret_hello_completion(
        &CompletionOutcome::Result(json_payload(r#"{"version":"2026-04-01"}"#)),
        &offered,
    )
    .expect_err("malformed");
    assert!(
        matches!(&err, ContractError::InvalidResult { target: "Hello", detail }
            if detail.contains("missing field `protocolVersion`")),
        "{err:?}"
    );
}

#[test]
fn hello_ack_round_trips_through_a_messagepack_completion() {
    let outcome = answer_hello(
        HubProtocol::MessagePack,
        &hello(),
        &SUPPORTED_PROTOCOL_VERSIONS,
    )
    .expect("encodes");
    assert_eq!(
        interpret_hello_completion(&outcome, &hello().protocol_versions),
        Ok(HelloOutcome::Negotiated("2026-04-01".to_owned()))
    );
    let CompletionOutcome::Result(payload) = outcome else {
        panic!("a result");
    };
    assert_eq!(
        payload.decode::<HelloAckDto>(),
        Ok(HelloAckDto {
            protocol_version: "2026-04-01".to_owned()
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Properties

fn node_call() -> impl Strategy<Value = NodeCall> {
    prop_oneof![
        gen::heartbeat().prop_map(NodeCall::Heartbeat),
        gen::command_result().prop_map(NodeCall::CommandResult),
        gen::scopes().prop_map(NodeCall::ScopeChanged),
        gen::command_progress().prop_map(NodeCall::CommandProgress),
        gen::hello().prop_map(NodeCall::Hello),
    ]
}

fn gateway_call() -> impl Strategy<Value = GatewayCall> {
    prop_oneof![
        gen::execute_command().prop_map(GatewayCall::ExecuteCommand),
        gen::scopes().prop_map(GatewayCall::RefreshScopes),
        gen::text().prop_map(|reason| GatewayCall::RevokeAccess { reason }),
        gen::cancel_command().prop_map(GatewayCall::CancelCommand),
    ]
}

fn protocol() -> impl Strategy<Value = HubProtocol> {
    prop_oneof![Just(HubProtocol::Json), Just(HubProtocol::MessagePack)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn node_calls_round_trip(call in node_call(), protocol in protocol()) {
        let message = call.to_message(protocol, None).expect("encodes");
        prop_assert_eq!(invocation_of(&message).target.as_str(), call.target());
        prop_assert_eq!(decode_node(invocation_of(&message)), Ok(call));
    }

    #[test]
    fn gateway_calls_round_trip(call in gateway_call(), protocol in protocol()) {
        let message = call.to_message(protocol, None).expect("encodes");
        prop_assert_eq!(decode_gateway(invocation_of(&message)), Ok(call));
    }

    #[test]
    fn the_direct_json_record_is_the_message_s_record(call in gateway_call(), prefix in "[a-z]{0,3}") {
        let mut expected = prefix.clone().into_bytes();
        let message = call.to_message(HubProtocol::Json, None).expect("encodes");
        HubProtocol::Json.encode(&message, &mut expected).expect("encodes");
        let mut direct = prefix.into_bytes();
        call.encode_json_record(&mut direct).expect("encodes");
        prop_assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&expected));
    }

    #[test]
    fn an_execute_written_from_its_parts_is_the_call_s_record(
        dto in gen::execute_command(),
        timeout_ms in any::<u64>(),
        node in "[a-z]{1,4}",
    ) {
        let dto = ExecuteCommandDto { timeout_ms: Some(timeout_ms), ..dto };
        // By reference: the same DTO, the same bytes.
        let parts = ExecuteCommandRef::of(&dto);
        prop_assert_eq!(&parts.to_dto(), &dto);
        // Against the general encoder (the call's own direct record is written by `parts`).
        let call = GatewayCall::ExecuteCommand(dto.clone());
        let mut expected = Vec::new();
        let message = call.to_message(HubProtocol::Json, None).expect("encodes");
        HubProtocol::Json.encode(&message, &mut expected).expect("encodes");
        let mut direct = Vec::new();
        parts.encode_json_record(&mut direct).expect("encodes");
        prop_assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&expected));
        // As the dispatcher keeps it: its record shared, the timeout and version beside it.
        let execute = Execute {
            record: std::sync::Arc::new(CommandRecord {
                command_id: dto.command_id.as_str().into(),
                node,
                command: dto.command.clone(),
                params: dto.params.clone(),
                timeout_ms: 1,
                created_at_ms: 2,
                originated_by: dto.originated_by.clone(),
                critical: false,
                required_scope: None,
            }),
            timeout_ms,
            protocol_version: dto.protocol_version.as_deref().map(Into::into),
        };
        prop_assert_eq!(&execute.to_call(), &call);
        let mut kept = Vec::new();
        execute.encode_json_record(&mut kept).expect("encodes");
        prop_assert_eq!(String::from_utf8_lossy(&kept), String::from_utf8_lossy(&expected));
    }

    #[test]
    fn decoding_never_panics_on_any_json_argument(
        target in prop_oneof![
            Just("Heartbeat"), Just("CommandResult"), Just("ScopeChanged"),
            Just("CommandProgress"), Just("Hello"), Just("ExecuteCommand"),
            Just("RefreshScopes"), Just("RevokeAccess"), Just("CancelCommand"), Just("x"),
        ],
        values in proptest::collection::vec(gen::json_value(), 0..3),
    ) {
        let inv = Invocation {
            target: target.to_owned(),
            arguments: values
                .iter()
                .map(|v| Payload::encode(HubProtocol::Json, v).expect("encodes"))
                .collect(),
            ..Invocation::default()
        };
        let _ = decode_node(&inv);
        let _ = decode_gateway(&inv);
    }

    #[test]
    fn decoding_never_panics_on_arbitrary_messagepack_bytes(
        target in prop_oneof![Just("Heartbeat"), Just("ExecuteCommand"), Just("RevokeAccess"),
            Just("RefreshScopes"), Just("Hello")],
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let inv = Invocation {
            target: target.to_owned(),
            arguments: vec![Payload::from_raw_msgpack(bytes.clone())],
            ..Invocation::default()
        };
        let _ = decode_node(&inv);
        let _ = decode_gateway(&inv);
        let _ = interpret_hello_completion(
            &CompletionOutcome::Result(Payload::from_raw_msgpack(bytes)),
            &strings(&SUPPORTED_PROTOCOL_VERSIONS),
        );
    }

    #[test]
    fn the_chosen_version_is_offered_supported_and_maximal(
        offered in proptest::collection::vec(
            prop_oneof![gen::version(), "20[0-9]{2}-[01][0-9]-[0-3][0-9]", ".{0,12}"], 0..5),
    ) {
        let supported = SUPPORTED_PROTOCOL_VERSIONS;
        match choose_protocol_version(&offered, &supported) {
            Some(chosen) => {
                prop_assert!(offered.contains(&chosen));
                prop_assert!(supported.contains(&chosen.as_str()));
                for v in &offered {
                    if supported.contains(&v.as_str()) {
                        prop_assert!(v <= &chosen);
                    }
                }
            }
            None => prop_assert!(offered.iter().all(|v| !supported.contains(&v.as_str()))),
        }
    }
}
