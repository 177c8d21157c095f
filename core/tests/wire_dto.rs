//! The node contract's DTOs as JSON (core/src/wire/dto.rs): the seed's examples byte for byte,
//! the nodelink extensions, unknown fields and codes, missing fields, round trips.
mod contract_support;
mod support;

use contract_support as gen;
use contract_support::fixtures::heartbeat as seed_heartbeat;
use nodelink_core::wire::dto::{
    CancelCommandDto, Capabilities, CommandError, CommandProgressDto, CommandResultDto, ErrorCode,
    ExecuteCommandDto, GpuInfo, HeartbeatDto, HelloAckDto, HelloDto, OriginatedBy,
    DEFAULT_COMMAND_TIMEOUT_MS, PROTOCOL_VERSION,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

fn wire<T: Serialize>(value: &T) -> String {
    support::text(&serde_json::to_vec(value).expect("a DTO serializes"))
}

fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

fn seed_execute_command() -> ExecuteCommandDto {
    ExecuteCommandDto {
        command_id: "cmd_xyz789".to_owned(),
        command: "screen.capture".to_owned(),
        params: Some(json!({ "quality": 80, "maxWidth": 1280 })),
        timeout_ms: Some(30000),
        originated_by: Some(OriginatedBy {
            user_id: Some("usr_abc".to_owned()),
            agent_id: Some("sophon".to_owned()),
            session_id: Some("sess_def".to_owned()),
        }),
        protocol_version: None,
    }
}

fn seed_result_ok() -> CommandResultDto {
    CommandResultDto {
        command_id: "cmd_xyz789".to_owned(),
        ok: true,
        result: Some(json!({ "image": "<base64>", "sizeBytes": 12345, "format": "jpeg" })),
        error: None,
        duration_ms: Some(234),
        part_index: None,
        is_last: None,
        protocol_version: None,
    }
}

fn seed_result_failure() -> CommandResultDto {
    CommandResultDto {
        ok: false,
        result: None,
        error: Some(CommandError {
            code: ErrorCode::PlatformUnsupported,
            message: "screen.region not supported under Wayland".to_owned(),
            details: Some(json!({})),
            retry_after_ms: None,
        }),
        duration_ms: None,
        ..seed_result_ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots: the seed's examples, compact

#[test]
fn heartbeat_matches_the_seed_example() {
    let text = wire(&seed_heartbeat());
    insta::assert_snapshot!("dto_heartbeat", text);
    assert_eq!(parse::<HeartbeatDto>(&text), Ok(seed_heartbeat()));
}

#[test]
fn execute_command_matches_the_seed_example_with_params_members_sorted() {
    let text = wire(&seed_execute_command());
    insta::assert_snapshot!("dto_execute_command", text);
    // The seed's own member order decodes to the same value.
    let seed = r#"{"commandId":"cmd_xyz789","command":"screen.capture","params":{"quality":80,"maxWidth":1280},"timeoutMs":30000,"originatedBy":{"userId":"usr_abc","agentId":"sophon","sessionId":"sess_def"}}"#;
    assert_eq!(parse::<ExecuteCommandDto>(seed), Ok(seed_execute_command()));
}

#[test]
fn command_result_ok_matches_the_seed_example_with_result_members_sorted() {
    let text = wire(&seed_result_ok());
    insta::assert_snapshot!("dto_command_result_ok", text);
    let seed = r#"{"commandId":"cmd_xyz789","ok":true,"result":{"image":"<base64>","sizeBytes":12345,"format":"jpeg"},"durationMs":234}"#;
    assert_eq!(parse::<CommandResultDto>(seed), Ok(seed_result_ok()));
}

#[test]
fn command_result_failure_matches_the_seed_example() {
    let text = wire(&seed_result_failure());
    insta::assert_snapshot!("dto_command_result_failure", text);
    assert_eq!(parse::<CommandResultDto>(&text), Ok(seed_result_failure()));
}

// ---------------------------------------------------------------------------------------------
// Snapshots: what the seed leaves implicit, and the nodelink extensions

#[test]
fn busy_result_carries_retry_after_and_the_protocol_version() {
    let dto = CommandResultDto {
        command_id: "cmd_1".to_owned(),
        ok: false,
        result: None,
        error: Some(CommandError {
            code: ErrorCode::Busy,
            message: "all 2 slots in use".to_owned(),
            details: None,
            retry_after_ms: Some(5000),
        }),
        duration_ms: Some(0),
        part_index: None,
        is_last: None,
        protocol_version: Some(PROTOCOL_VERSION.to_owned()),
    };
    let text = wire(&dto);
    insta::assert_snapshot!("dto_command_result_busy", text);
    assert_eq!(parse::<CommandResultDto>(&text), Ok(dto));
}

#[test]
fn minimal_execute_command_with_protocol_version() {
    let dto = ExecuteCommandDto {
        command_id: "cmd_1".to_owned(),
        command: "system.info".to_owned(),
        params: None,
        timeout_ms: None,
        originated_by: None,
        protocol_version: Some(PROTOCOL_VERSION.to_owned()),
    };
    let text = wire(&dto);
    insta::assert_snapshot!("dto_execute_command_minimal", text);
    let back: ExecuteCommandDto = parse(&text).expect("decodes");
    assert_eq!(back.effective_timeout_ms(), DEFAULT_COMMAND_TIMEOUT_MS);
    assert_eq!(back, dto);
}

#[test]
fn heartbeat_with_capabilities() {
    let dto = HeartbeatDto {
        node_id: "gpu-node-1".to_owned(),
        platform: "linux".to_owned(),
        version: "0.1.0".to_owned(),
        cpu_percent: 12.5,
        memory_mb: 812,
        capabilities: Some(Capabilities {
            commands: vec!["llm.generate".to_owned(), "system.info".to_owned()],
            slots: 4,
            gpus: vec![GpuInfo {
                index: 0,
                name: "NVIDIA H100 80GB HBM3".to_owned(),
                memory_total_mb: 81559,
                compute_capability: Some("9.0".to_owned()),
            }],
        }),
        ..seed_heartbeat()
    };
    let text = wire(&dto);
    insta::assert_snapshot!("dto_heartbeat_capabilities", text);
    assert_eq!(parse::<HeartbeatDto>(&text), Ok(dto));
}

#[test]
fn command_progress() {
    let dto = CommandProgressDto {
        command_id: "cmd_1".to_owned(),
        progress: 0.25,
        step: Some(5),
        step_count: Some(20),
        eta_ms: Some(12000),
        message: Some("sampling".to_owned()),
    };
    let text = wire(&dto);
    insta::assert_snapshot!("dto_command_progress", text);
    assert_eq!(parse::<CommandProgressDto>(&text), Ok(dto));
}

#[test]
fn cancel_command() {
    let dto = CancelCommandDto {
        command_id: "cmd_xyz789".to_owned(),
        reason: Some("user_cancelled".to_owned()),
    };
    let text = wire(&dto);
    insta::assert_snapshot!("dto_cancel_command", text);
    assert_eq!(parse::<CancelCommandDto>(&text), Ok(dto));
}

#[test]
fn hello_and_its_ack() {
    let hello = HelloDto {
        node_id: "abc123".to_owned(),
        protocol_versions: vec!["2026-04-01".to_owned(), "2025-10-01".to_owned()],
        capabilities: None,
    };
    let text = wire(&hello);
    insta::assert_snapshot!("dto_hello", text);
    assert_eq!(parse::<HelloDto>(&text), Ok(hello));

    let ack = HelloAckDto {
        protocol_version: "2026-04-01".to_owned(),
    };
    let text = wire(&ack);
    insta::assert_snapshot!("dto_hello_ack", text);
    assert_eq!(parse::<HelloAckDto>(&text), Ok(ack));
}

// ---------------------------------------------------------------------------------------------
// Forward compatibility and errors

#[test]
fn unknown_fields_are_ignored_everywhere() {
    let heartbeat = r#"{"nodeId":"abc123","status":"online","uptime":3600,"platform":"windows","version":"1.0.0","cpuPercent":2.5,"memoryMb":45,"diskMb":10,"capabilities":{"commands":[],"slots":1,"tpu":true}}"#;
    let parsed: HeartbeatDto = parse(heartbeat).expect("decodes");
    assert_eq!(parsed.node_id, "abc123");
    assert_eq!(
        parsed.capabilities,
        Some(Capabilities {
            commands: vec![],
            slots: 1,
            gpus: vec![]
        })
    );

    let command = r#"{"commandId":"c","command":"x","priority":9,"originatedBy":{"userId":"u","tenant":"t"}}"#;
    let parsed: ExecuteCommandDto = parse(command).expect("decodes");
    assert_eq!(
        parsed.originated_by.and_then(|o| o.user_id),
        Some("u".to_owned())
    );

    let result = r#"{"commandId":"c","ok":false,"error":{"code":"busy","message":"m","hint":"later"},"trace":[]}"#;
    let parsed: CommandResultDto = parse(result).expect("decodes");
    assert_eq!(parsed.error.map(|e| e.code), Some(ErrorCode::Busy));

    let ack: HelloAckDto =
        parse(r#"{"protocolVersion":"2026-04-01","features":["x"]}"#).expect("decodes");
    assert_eq!(ack.protocol_version, "2026-04-01");
}

#[test]
fn unknown_error_codes_survive_a_round_trip() {
    let text = r#"{"commandId":"c","ok":false,"error":{"code":"quota_exceeded","message":"m"}}"#;
    let parsed: CommandResultDto = parse(text).expect("decodes");
    assert_eq!(
        parsed.error.as_ref().map(|e| e.code.clone()),
        Some(ErrorCode::Other("quota_exceeded".to_owned()))
    );
    assert_eq!(wire(&parsed), text);
}

#[test]
fn every_known_error_code_has_its_seed_spelling() {
    let codes = [
        (ErrorCode::NotAuthorized, "not_authorized"),
        (ErrorCode::ApprovalRejected, "approval_rejected"),
        (ErrorCode::Timeout, "timeout"),
        (ErrorCode::PlatformUnsupported, "platform_unsupported"),
        (ErrorCode::InvalidParams, "invalid_params"),
        (ErrorCode::Busy, "busy"),
        (ErrorCode::Cancelled, "cancelled"),
        (ErrorCode::InternalError, "internal_error"),
    ];
    for (code, spelling) in codes {
        assert_eq!(code.as_str(), spelling);
        assert_eq!(ErrorCode::parse(spelling), code);
        assert_eq!(
            serde_json::to_string(&code).expect("serializes"),
            format!("\"{spelling}\"")
        );
    }
}

fn missing_field<T: DeserializeOwned + std::fmt::Debug>(text: &str, field: &str) {
    let err = parse::<T>(text).expect_err("a required field is missing");
    assert!(
        err.contains(&format!("missing field `{field}`")),
        "error `{err}` does not name `{field}`"
    );
}

#[test]
fn missing_required_fields_are_named_in_the_error() {
    missing_field::<HeartbeatDto>(
        r#"{"nodeId":"a","status":"online","uptime":1,"platform":"p","version":"v","cpuPercent":1}"#,
        "memoryMb",
    );
    missing_field::<ExecuteCommandDto>(r#"{"command":"x"}"#, "commandId");
    missing_field::<ExecuteCommandDto>(r#"{"commandId":"c"}"#, "command");
    missing_field::<CommandResultDto>(r#"{"commandId":"c"}"#, "ok");
    missing_field::<CommandResultDto>(r#"{"ok":true}"#, "commandId");
    missing_field::<CommandResultDto>(
        r#"{"commandId":"c","ok":false,"error":{"message":"m"}}"#,
        "code",
    );
    missing_field::<CommandResultDto>(
        r#"{"commandId":"c","ok":false,"error":{"code":"busy"}}"#,
        "message",
    );
    missing_field::<CommandProgressDto>(r#"{"commandId":"c"}"#, "progress");
    missing_field::<CancelCommandDto>(r#"{"reason":"r"}"#, "commandId");
    missing_field::<HelloDto>(r#"{"nodeId":"a"}"#, "protocolVersions");
    missing_field::<HelloAckDto>(r#"{}"#, "protocolVersion");
}

#[test]
fn wrong_types_are_reported() {
    let err = parse::<ExecuteCommandDto>(r#"{"commandId":"c","command":"x","timeoutMs":"30s"}"#)
        .expect_err("timeoutMs must be a number");
    assert!(err.contains("invalid type: string \"30s\""), "{err}");
    let err = parse::<HeartbeatDto>(
        r#"{"nodeId":"a","status":"online","uptime":-1,"platform":"p","version":"v","cpuPercent":1,"memoryMb":1}"#,
    )
    .expect_err("uptime is unsigned");
    assert!(err.contains("invalid value: integer `-1`"), "{err}");
}

#[test]
fn absent_optional_fields_are_omitted_and_null_reads_as_absent() {
    let text = r#"{"commandId":"c","command":"x","params":null,"timeoutMs":null}"#;
    let parsed: ExecuteCommandDto = parse(text).expect("decodes");
    assert_eq!(parsed.params, None);
    assert_eq!(parsed.timeout_ms, None);
    assert_eq!(wire(&parsed), r#"{"commandId":"c","command":"x"}"#);
}

// ---------------------------------------------------------------------------------------------
// Round trips

fn json_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let text = serde_json::to_string(value).expect("serializes");
    let back: T = serde_json::from_str(&text).expect("decodes");
    assert_eq!(&back, value, "JSON: {text}");
}

fn msgpack_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = rmp_serde::to_vec_named(value).expect("serializes");
    let back: T = rmp_serde::from_slice(&bytes).expect("decodes");
    assert_eq!(&back, value);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn heartbeat_round_trips(dto in gen::heartbeat()) {
        json_round_trip(&dto);
        msgpack_round_trip(&dto);
    }

    #[test]
    fn execute_command_round_trips(dto in gen::execute_command()) {
        json_round_trip(&dto);
        msgpack_round_trip(&dto);
    }

    #[test]
    fn command_result_round_trips(dto in gen::command_result()) {
        json_round_trip(&dto);
        msgpack_round_trip(&dto);
    }

    #[test]
    fn extension_dtos_round_trip(
        progress in gen::command_progress(),
        cancel in gen::cancel_command(),
        hello in gen::hello(),
    ) {
        json_round_trip(&progress);
        msgpack_round_trip(&progress);
        json_round_trip(&cancel);
        msgpack_round_trip(&cancel);
        json_round_trip(&hello);
        msgpack_round_trip(&hello);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_text(text in any::<String>()) {
        let _ = parse::<HeartbeatDto>(&text);
        let _ = parse::<ExecuteCommandDto>(&text);
        let _ = parse::<CommandResultDto>(&text);
        let _ = parse::<HelloDto>(&text);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_json(value in gen::json_value()) {
        let _ = serde_json::from_value::<HeartbeatDto>(value.clone());
        let _ = serde_json::from_value::<ExecuteCommandDto>(value.clone());
        let _ = serde_json::from_value::<CommandResultDto>(value.clone());
        let _ = serde_json::from_value::<CommandProgressDto>(value);
    }
}
