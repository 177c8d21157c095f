//! `decode_command_result` (core/src/wire/signalr/json/scan_result.rs): what it decodes, what it
//! leaves to the general path, and the property that holds it to the general path: whenever it
//! answers, the general path decodes the same record as the same CommandResult with the same
//! invocation id.
mod contract_support;

use contract_support::{command_result, damage, record_edits};
use nodelink_core::wire::contract::NodeCall;
use nodelink_core::wire::dto::CommandResultDto;
use nodelink_core::wire::signalr::json::{decode_command_result, decode_record, TypedCall};
use nodelink_core::wire::signalr::{HubMessage, HubProtocol};
use proptest::prelude::*;
use serde_json::json;

const ARG: &str = r#"{"commandId":"c1","ok":true,"result":{"hostname":"bench","cpus":16},"durationMs":3,"protocolVersion":"2026-04-01"}"#;

fn record(argument: &str) -> String {
    format!(r#"{{"type":1,"invocationId":"7","target":"CommandResult","arguments":[{argument}]}}"#)
}

/// The general path: the record decoded, then the contract's decoding of the invocation.
fn general(record: &[u8]) -> Option<(Option<String>, CommandResultDto)> {
    match decode_record(record).ok()? {
        HubMessage::Invocation(invocation) => match NodeCall::from_invocation(&invocation).ok()? {
            NodeCall::CommandResult(dto) => Some((invocation.invocation_id, dto)),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn a_usual_result_is_decoded_with_its_value() {
    let text = record(ARG);
    let TypedCall {
        invocation_id,
        call,
    } = decode_command_result(text.as_bytes()).expect("recognized");
    assert_eq!(invocation_id.as_deref(), Some("7"));
    assert_eq!(
        call,
        CommandResultDto {
            command_id: "c1".to_owned(),
            ok: true,
            result: Some(json!({"hostname": "bench", "cpus": 16})),
            error: None,
            duration_ms: Some(3),
            part_index: None,
            is_last: None,
            protocol_version: Some("2026-04-01".to_owned()),
        }
    );
    assert_eq!(general(text.as_bytes()), Some((invocation_id, call)));
    // Nulls count as absent, unknown members are skipped, whitespace inside the argument and
    // escapes inside `result` are fine, members may come in any order, parts are read.
    let other = record(
        r#" { "x" : [1, {"y": null}] , "ok" : false , "result" : "a\"b\u00e9" , "partIndex" : 2 , "isLast" : true , "durationMs" : null , "protocolVersion" : null , "error" : null , "commandId" : "c2" } "#,
    );
    let call = decode_command_result(other.as_bytes()).expect("recognized");
    assert_eq!(call.call.result, Some(json!("a\"bé")));
    assert_eq!(
        (call.call.part_index, call.call.is_last),
        (Some(2), Some(true))
    );
    assert_eq!(
        general(other.as_bytes()),
        Some((call.invocation_id, call.call))
    );
    // `"result":null` is no result, as serde decodes an `Option<Value>`.
    let null = decode_command_result(
        record(&ARG.replace(r#"{"hostname":"bench","cpus":16}"#, "null")).as_bytes(),
    )
    .expect("recognized");
    assert_eq!(null.call.result, None);
}

#[test]
fn anything_unusual_goes_to_the_general_path() {
    let cases: Vec<String> = vec![
        // The envelope: only as nodes write it.
        record(ARG).replace(r#""type":1"#, r#""type":4"#),
        record(ARG).replace(r#""type":1,"#, r#""type":1, "#),
        record(ARG).replace("CommandResult", "commandresult"),
        record(ARG).replace("CommandResult", "Heartbeat"),
        record(ARG).replace(r#""7""#, r#""\u0037""#),
        record(ARG).replace(r#""7""#, "7"),
        record(ARG).replace(r#""type":1,"#, r#""type":1,"headers":{},"#),
        record(&format!("{ARG},{ARG}")),
        record(ARG) + " ",
        record(ARG) + "x",
        record(ARG).replace("]}", "] }"),
        // The argument's members.
        record(&ARG.replace(r#""commandId":"c1","#, "")),
        record(&ARG.replace(r#""ok":true,"#, "")),
        record(&ARG.replace(r#""ok":true"#, r#""ok":null"#)),
        record(&ARG.replace(r#""ok":true"#, r#""ok":1"#)),
        record(&ARG.replace(r#""ok":true,"#, r#""ok":true,"ok":true,"#)),
        record(&ARG.replace(r#""c1""#, r#""c\u0031""#)),
        record(&ARG.replace(r#""c1""#, "\"c\u{1}\"")),
        record(&ARG.replace(r#""c1""#, "1")),
        record(&ARG.replace(r#""commandId""#, r#""command\u0049d""#)),
        record(&ARG.replace(r#""durationMs":3"#, r#""durationMs":-3"#)),
        record(&ARG.replace(r#""durationMs":3"#, r#""durationMs":3.0"#)),
        record(&ARG.replace(r#""durationMs":3"#, r#""durationMs":3e0"#)),
        record(&ARG.replace(r#""durationMs":3"#, r#""durationMs":18446744073709551615"#)),
        record(&ARG.replace(r#""durationMs":3"#, r#""durationMs":3,"durationMs":3"#)),
        record(&ARG.replace(r#""durationMs":3"#, r#""partIndex":4294967296"#)),
        record(&ARG.replace(r#""durationMs":3"#, r#""isLast":1"#)),
        record(&ARG.replace(r#""durationMs":3"#, r#""error":null,"error":null"#)),
        record(&ARG.replace(
            r#""durationMs":3"#,
            r#""error":{"code":"busy","message":"full"}"#,
        )),
        record(&ARG.replace(r#""cpus":16}"#, r#""cpus":16},"result":1"#)),
        record(&ARG.replace(r#""cpus":16}"#, r#""cpus":16"#)),
        record(&ARG.replace(r#""cpus":16}"#, r#""cpus":16}}"#)),
        record(&ARG.replace(r#"3,"#, r#"3,}"#)),
        // A deeply nested result (a value the general path may not take).
        record(&ARG.replace(
            r#"{"hostname":"bench","cpus":16}"#,
            &format!("{}1{}", "[".repeat(70), "]".repeat(70)),
        )),
    ];
    for case in &cases {
        assert_eq!(decode_command_result(case.as_bytes()), None, "{case}");
    }
    assert_eq!(
        decode_command_result(record(ARG).replace("bench", "b\u{ff}").as_bytes())
            .map(|c| c.call.result),
        Some(Some(json!({"hostname": "b\u{ff}", "cpus": 16}))),
        "text outside ASCII is fine"
    );
    let mut invalid = record(ARG).into_bytes();
    let at = invalid.len() - 20;
    invalid[at] = 0xff;
    assert_eq!(decode_command_result(&invalid), None, "invalid UTF-8");
}

/// A record of the result as a node encodes it.
fn encoded(dto: &CommandResultDto, invocation_id: &str) -> Vec<u8> {
    let message = NodeCall::CommandResult(dto.clone())
        .to_message(HubProtocol::Json, Some(invocation_id.to_owned()))
        .expect("encodable");
    let mut out = Vec::new();
    HubProtocol::Json
        .encode(&message, &mut out)
        .expect("encodable");
    out.pop(); // the record separator
    out
}

/// The property: an answer is what the general path decodes.
fn agrees(record: &[u8], call: TypedCall<CommandResultDto>) -> Result<(), TestCaseError> {
    let general = general(record).expect("the general path decodes what the scanner decoded");
    prop_assert_eq!((call.invocation_id, call.call), general);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn whatever_it_decodes_the_general_path_decodes_the_same(
        dto in command_result(),
        invocation_id in "[0-9]{1,6}",
        edits in record_edits(),
    ) {
        let clean = encoded(&dto, &invocation_id);
        // A node's own result is decoded unless it failed (an `error` object), a string
        // outside `result` has an escape, or a number has 20 digits.
        let plain = |s: &str| !s.contains(['"', '\\']) && !s.chars().any(|c| c < ' ');
        let ordinary = dto.error.is_none()
            && plain(&dto.command_id)
            && dto.protocol_version.as_deref().is_none_or(plain)
            && dto.duration_ms.is_none_or(|n| n < 10u64.pow(19));
        match decode_command_result(&clean) {
            Some(call) => agrees(&clean, call)?,
            None => prop_assert!(!ordinary, "not decoded: {}", String::from_utf8_lossy(&clean)),
        }
        // Damaged copies: wherever it still answers, it agrees with the general path.
        let damaged = damage(&clean, &edits);
        if let Some(call) = decode_command_result(&damaged) {
            agrees(&damaged, call)?;
        }
    }
}
