//! proptest strategies for the node contract's DTOs, shared by wire_dto, wire_contract and
//! wire_rest, and the damaged-record strategy of the scanner tests.
#![allow(dead_code)] // each test file uses a subset

use nodelink_core::wire::dto::{
    CancelCommandDto, Capabilities, CommandError, CommandProgressDto, CommandResultDto, ErrorCode,
    ExecuteCommandDto, GpuInfo, HeartbeatDto, HelloDto, OriginatedBy,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// Up to two edits of an encoded record (where, what kind, which byte): see [`damage`].
pub fn record_edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 0..3)
}

/// `record` with `edits` applied: a byte removed, a JSON-ish byte inserted or overwritten, or a
/// space inserted. For the fast scanners' "wherever it still answers, it agrees" properties.
pub fn damage(record: &[u8], edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    let mut damaged = record.to_vec();
    for &(at, kind, byte) in edits {
        let at = at.index(damaged.len() + 1);
        let byte = b"{}[]\",:0123456789-.e \\nulltruefalse"[usize::from(byte) % 33];
        match kind {
            0 if at < damaged.len() => {
                damaged.remove(at);
            }
            1 => damaged.insert(at, byte),
            2 if at < damaged.len() => damaged[at] = byte,
            _ => damaged.insert(at, b' '),
        }
    }
    damaged
}

/// Floats that print and parse back exactly in JSON (quarters), so round trips compare equal.
pub fn exact_f64() -> impl Strategy<Value = f64> {
    (-40_000i32..40_000).prop_map(|n| f64::from(n) / 4.0)
}

pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_.]{1,12}",
        any::<String>(),
        Just("日本語 🎉 \"q\" \\ \n".to_owned()),
    ]
}

/// Any JSON value (bounded depth and width).
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        exact_f64().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map("[a-zA-Z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::NotAuthorized),
        Just(ErrorCode::ApprovalRejected),
        Just(ErrorCode::Timeout),
        Just(ErrorCode::PlatformUnsupported),
        Just(ErrorCode::InvalidParams),
        Just(ErrorCode::Busy),
        Just(ErrorCode::Cancelled),
        Just(ErrorCode::InternalError),
        // Unknown codes survive as Other (never a known code's spelling).
        "x_[a-z_]{1,10}".prop_map(ErrorCode::Other),
    ]
}

pub fn version() -> impl Strategy<Value = String> {
    prop_oneof![Just("2026-04-01".to_owned()), Just("2025-10-01".to_owned())]
}

pub fn heartbeat() -> impl Strategy<Value = HeartbeatDto> {
    (
        text(),
        text(),
        any::<u64>(),
        text(),
        text(),
        exact_f64(),
        any::<u64>(),
        option::of(capabilities()),
    )
        .prop_map(
            |(node_id, status, uptime, platform, version, cpu_percent, memory_mb, capabilities)| {
                HeartbeatDto {
                    node_id,
                    status,
                    uptime,
                    platform,
                    version,
                    cpu_percent,
                    memory_mb,
                    capabilities,
                }
            },
        )
}

pub fn capabilities() -> impl Strategy<Value = Capabilities> {
    let gpu = (
        any::<u32>(),
        text(),
        any::<u64>(),
        option::of("[0-9]\\.[0-9]"),
    )
        .prop_map(
            |(index, name, memory_total_mb, compute_capability)| GpuInfo {
                index,
                name,
                memory_total_mb,
                compute_capability,
            },
        );
    (vec(text(), 0..3), any::<u32>(), vec(gpu, 0..2)).prop_map(|(commands, slots, gpus)| {
        Capabilities {
            commands,
            slots,
            gpus,
        }
    })
}

pub fn execute_command() -> impl Strategy<Value = ExecuteCommandDto> {
    let originated_by = (option::of(text()), option::of(text()), option::of(text())).prop_map(
        |(user_id, agent_id, session_id)| OriginatedBy {
            user_id,
            agent_id,
            session_id,
        },
    );
    (
        text(),
        text(),
        // `params: null` reads back as absent, so generate only non-null params.
        option::of(json_value().prop_filter("not null", |v| !v.is_null())),
        option::of(any::<u64>()),
        option::of(originated_by),
        option::of(version()),
    )
        .prop_map(
            |(command_id, command, params, timeout_ms, originated_by, protocol_version)| {
                ExecuteCommandDto {
                    command_id,
                    command,
                    params,
                    timeout_ms,
                    originated_by,
                    protocol_version,
                }
            },
        )
}

pub fn command_error() -> impl Strategy<Value = CommandError> {
    (
        error_code(),
        text(),
        option::of(json_value().prop_filter("not null", |v| !v.is_null())),
        option::of(any::<u64>()),
    )
        .prop_map(|(code, message, details, retry_after_ms)| CommandError {
            code,
            message,
            details,
            retry_after_ms,
        })
}

pub fn command_result() -> impl Strategy<Value = CommandResultDto> {
    (
        text(),
        any::<bool>(),
        option::of(json_value().prop_filter("not null", |v| !v.is_null())),
        option::of(command_error()),
        option::of(any::<u64>()),
        option::of(any::<u32>()),
        option::of(any::<bool>()),
        option::of(version()),
    )
        .prop_map(
            |(
                command_id,
                ok,
                result,
                error,
                duration_ms,
                part_index,
                is_last,
                protocol_version,
            )| {
                CommandResultDto {
                    command_id,
                    ok,
                    result,
                    error,
                    duration_ms,
                    part_index,
                    is_last,
                    protocol_version,
                }
            },
        )
}

pub fn command_progress() -> impl Strategy<Value = CommandProgressDto> {
    (
        text(),
        (0u32..=4).prop_map(|n| f64::from(n) / 4.0),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        option::of(any::<u64>()),
        option::of(text()),
    )
        .prop_map(
            |(command_id, progress, step, step_count, eta_ms, message)| CommandProgressDto {
                command_id,
                progress,
                step,
                step_count,
                eta_ms,
                message,
            },
        )
}

pub fn cancel_command() -> impl Strategy<Value = CancelCommandDto> {
    (text(), option::of(text()))
        .prop_map(|(command_id, reason)| CancelCommandDto { command_id, reason })
}

pub fn hello() -> impl Strategy<Value = HelloDto> {
    (text(), vec(version(), 0..3), option::of(capabilities())).prop_map(
        |(node_id, protocol_versions, capabilities)| HelloDto {
            node_id,
            protocol_versions,
            capabilities,
        },
    )
}

/// Scope lists as receivers keep them: non-empty, no duplicates, order kept.
pub fn scopes() -> impl Strategy<Value = Vec<String>> {
    vec("[a-z]{1,6}\\.[a-z]{1,8}", 0..5).prop_map(|list| {
        let mut seen = std::collections::BTreeSet::new();
        list.into_iter()
            .filter(|s| seen.insert(s.clone()))
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Hand-written values shared by the example-based tests.
pub mod fixtures {
    use nodelink_core::wire::contract::SUPPORTED_PROTOCOL_VERSIONS;
    use nodelink_core::wire::dto::{CommandResultDto, ExecuteCommandDto, HeartbeatDto, HelloDto};
    use nodelink_core::wire::signalr::Payload;
    use serde_json::json;
    use serde_json::value::RawValue;

    pub fn json_payload(text: &str) -> Payload {
        Payload::from_raw_json(RawValue::from_string(text.to_owned()).expect("valid JSON"))
    }

    pub fn heartbeat() -> HeartbeatDto {
        HeartbeatDto {
            node_id: "abc123".to_owned(),
            status: "online".to_owned(),
            uptime: 3600,
            platform: "windows".to_owned(),
            version: "1.0.0".to_owned(),
            cpu_percent: 2.5,
            memory_mb: 45,
            capabilities: None,
        }
    }

    pub fn result_ok() -> CommandResultDto {
        CommandResultDto {
            command_id: "cmd_xyz789".to_owned(),
            ok: true,
            result: Some(json!({ "hostname": "build-01" })),
            error: None,
            duration_ms: Some(234),
            part_index: None,
            is_last: None,
            protocol_version: Some("2026-04-01".to_owned()),
        }
    }

    pub fn execute() -> ExecuteCommandDto {
        ExecuteCommandDto {
            command_id: "cmd_xyz789".to_owned(),
            command: "system.info".to_owned(),
            params: None,
            timeout_ms: Some(30000),
            originated_by: None,
            protocol_version: Some("2026-04-01".to_owned()),
        }
    }

    pub fn hello() -> HelloDto {
        HelloDto {
            node_id: "abc123".to_owned(),
            protocol_versions: SUPPORTED_PROTOCOL_VERSIONS
                .iter()
                .map(|v| (*v).to_owned())
                .collect(),
            capabilities: None,
        }
    }

    pub fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }
}
