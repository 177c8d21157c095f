//! The LLM node dialect codec (core/src/wire/llm): connect parameters, close codes, server text
//! frames, result frames, the heartbeat, and the node's UTF-8 cutter and splitter.
mod support;

#[path = "wire_llm/props.rs"]
mod props;
#[path = "wire_llm/server_text.rs"]
mod server_text;
#[path = "wire_llm/text.rs"]
mod text;

use nodelink_core::wire::llm::connect::MAX_CLOSE_REASON_BYTES;
use nodelink_core::wire::llm::{
    decode_node_text, decode_server_text, format_js_number, split_text, ChatMessage, CloseCode,
    ConnectError, ConnectParams, EmptyResultText, NodeIdentity, NodeText, ResultFrame,
    ResultFrameError, ServerFrame, ServerFrameError, SplitError, Task, TaskState, Utf8Cutter,
    HEARTBEAT, SILENCE_LIMIT,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn params() -> ConnectParams {
    ConnectParams {
        token: "s3cr=t".to_owned(),
        model: "llama-3-8b".to_owned(),
        max_concurrency: 4,
        name: "rig 1".to_owned(),
    }
}

fn full_task() -> Task {
    Task {
        state: TaskState::Pending,
        id: 123,
        system: Some("You are Buddy.".to_owned()),
        messages: vec![
            ChatMessage::new("user", "hi"),
            ChatMessage::new("assistant", "Hello! How can I help?"),
            ChatMessage::new("user", "Say \"hi\" in 日本語"),
        ],
        max_new_tokens: Some(50),
        temperature: Some(0.5),
        created_at: Some(1_700_000_000),
    }
}

fn minimal_task() -> Task {
    Task::new(7, vec![ChatMessage::new("user", "hi")])
}

// ---------------------------------------------------------------------------------------------
// Connect

#[test]
fn connect_query_snapshot() {
    insta::assert_snapshot!("llm_connect_query", params().to_query());
}

#[test]
fn connect_url_appends_the_query() {
    assert_eq!(
        params().connect_url("ws://gw.example:8120/ws"),
        "ws://gw.example:8120/ws?token=s3cr%3Dt&model=llama-3-8b&max_concurrency=4&name=rig+1"
    );
    assert!(params()
        .connect_url("ws://gw/ws?region=eu")
        .starts_with("ws://gw/ws?region=eu&token="));
}

#[test]
fn connect_query_round_trips() {
    assert_eq!(
        ConnectParams::from_query(&params().to_query()),
        Ok(params())
    );
}

#[test]
fn connect_query_in_the_original_nodes_order_parses() {
    // The Python and Go nodes write name, model, token, max_concurrency, unescaped.
    let parsed =
        ConnectParams::from_request_target("/ws?name=beagle&model=7b&token=t&max_concurrency=1");
    assert_eq!(
        parsed,
        Ok(ConnectParams {
            token: "t".to_owned(),
            model: "7b".to_owned(),
            max_concurrency: 1,
            name: "beagle".to_owned(),
        })
    );
}

#[test]
fn connect_ignores_unknown_parameters_and_keeps_the_first_of_a_repeated_one() {
    let parsed = ConnectParams::from_query(
        "v=2&token=a&model=m&token=b&max_concurrency=2&name=n&name=other&gpu=h100",
    )
    .expect("valid");
    assert_eq!(parsed.token, "a");
    assert_eq!(parsed.name, "n");
    assert_eq!(parsed.max_concurrency, 2);
}

#[test]
fn connect_missing_parameter_is_4001() {
    let err = ConnectParams::from_query("token=t&model=m&max_concurrency=1").unwrap_err();
    assert_eq!(
        err,
        ConnectError::MissingParameters {
            names: vec!["name"]
        }
    );
    assert_eq!(err.close_code(), CloseCode::InvalidParameters);
    assert_eq!(err.close_code().code(), 4001);
    assert_eq!(
        err.to_string(),
        "connect request: missing or empty query parameter(s): name"
    );
}

#[test]
fn connect_empty_parameters_count_as_missing() {
    let err = ConnectParams::from_query("token=&model=m&max_concurrency=&name=n").unwrap_err();
    assert_eq!(
        err,
        ConnectError::MissingParameters {
            names: vec!["token", "max_concurrency"]
        }
    );
}

#[test]
fn connect_without_a_query_names_all_four_parameters() {
    let err = ConnectParams::from_request_target("/ws").unwrap_err();
    assert_eq!(
        err,
        ConnectError::MissingParameters {
            names: vec!["token", "model", "max_concurrency", "name"]
        }
    );
}

#[test]
fn connect_max_concurrency_must_be_a_positive_integer() {
    for bad in [
        "0",
        "-1",
        "abc",
        "4.0",
        "+4",
        " 4",
        "4 ",
        "1e3",
        "4294967296",
        "０",
    ] {
        let query = format!(
            "token=t&model=m&name=n&max_concurrency={}",
            form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>()
        );
        let err = ConnectParams::from_query(&query).unwrap_err();
        assert_eq!(
            err,
            ConnectError::InvalidMaxConcurrency {
                value: bad.to_owned()
            },
            "{bad:?}"
        );
        assert_eq!(err.close_code(), CloseCode::InvalidParameters);
        assert!(err.to_string().contains("max_concurrency"));
        assert!(err.to_string().contains(&format!("{bad:?}")));
    }
}

#[test]
fn connect_max_concurrency_accepts_leading_zeros_and_the_u32_maximum() {
    let parse = |value: &str| {
        ConnectParams::from_query(&format!("token=t&model=m&name=n&max_concurrency={value}"))
            .map(|p| p.max_concurrency)
    };
    assert_eq!(parse("004"), Ok(4));
    assert_eq!(parse("4294967295"), Ok(u32::MAX));
}

#[test]
fn connect_error_clips_a_long_bad_value_and_fits_the_close_reason() {
    let long = "9".repeat(40) + "é".repeat(80).as_str();
    let err = ConnectParams::from_query(&format!("token=t&model=m&name=n&max_concurrency={long}"))
        .unwrap_err();
    let ConnectError::InvalidMaxConcurrency { value } = &err else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(value, &format!("{}…", "9".repeat(32)));
    let reason = err.close_reason();
    assert!(reason.len() <= MAX_CLOSE_REASON_BYTES);
    assert!(err.to_string().starts_with(&reason));
}

#[test]
fn close_codes_and_reasons_match_the_original_server() {
    let table = [
        (CloseCode::Bye, 4000, "Bye"),
        (
            CloseCode::InvalidParameters,
            4001,
            "Missing token, model, max_concurrency, or name",
        ),
        (CloseCode::InvalidToken, 4002, "Invalid token"),
        (CloseCode::ReplacedConnection, 4003, "Invalid connection"),
    ];
    for (close, code, reason) in table {
        assert_eq!(close.code(), code);
        assert_eq!(close.reason(), reason);
        assert_eq!(CloseCode::from_code(code), Some(close));
    }
    assert_eq!(CloseCode::from_code(1000), None);
    assert_eq!(CloseCode::from_code(4004), None);
    assert_eq!(ConnectError::InvalidToken.close_code().code(), 4002);
}

#[test]
fn connect_params_debug_never_shows_the_token() {
    let shown = format!("{:?}", params());
    assert!(!shown.contains("s3cr"), "{shown}");
    assert!(shown.contains("<redacted>") && shown.contains("llama-3-8b"));
}

#[test]
fn identity_is_the_model_and_name_pair() {
    let a = NodeIdentity {
        model: "a-b".to_owned(),
        name: "c".to_owned(),
    };
    let b = NodeIdentity {
        model: "a".to_owned(),
        name: "b-c".to_owned(),
    };
    // The original server's "model-name" key would confuse these two.
    assert_ne!(a, b);
    assert_eq!(a.to_string(), "a-b-c");
    assert_eq!(
        params().identity(),
        NodeIdentity {
            model: "llama-3-8b".to_owned(),
            name: "rig 1".to_owned()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Server -> node: tasks and stops

#[test]
fn task_full_snapshot() {
    insta::assert_snapshot!(
        "llm_task_full",
        support::text(full_task().encode().as_bytes())
    );
}

#[test]
fn task_minimal_snapshot() {
    insta::assert_snapshot!(
        "llm_task_minimal",
        support::text(minimal_task().encode().as_bytes())
    );
}

#[test]
fn stop_snapshot() {
    let stop = ServerFrame::Stop { id: 123 };
    insta::assert_snapshot!("llm_stop", support::text(stop.encode().as_bytes()));
}

#[test]
fn task_encoding_matches_json_stringify_of_the_wire_facts_example() {
    let task = Task {
        state: TaskState::Pending,
        id: 123,
        system: Some("..".to_owned()),
        messages: vec![
            ChatMessage::new("user", "hi"),
            ChatMessage::new("assistant", ".."),
        ],
        max_new_tokens: Some(50),
        temperature: Some(0.5),
        created_at: Some(1_700_000_000),
    };
    let expected = r#"{"state":0,"id":123,"system":"..","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":".."}],"max_new_tokens":50,"temperature":0.5,"created_at":1700000000}"#;
    assert_eq!(task.encode(), expected);
    assert_eq!(decode_server_text(expected), Ok(ServerFrame::Task(task)));
}

#[test]
fn task_temperature_is_written_as_javascript_writes_numbers() {
    let with = |t: f64| {
        let task = Task {
            temperature: Some(t),
            ..minimal_task()
        };
        task.encode()
    };
    assert!(with(0.0).ends_with(r#""temperature":0}"#));
    assert!(with(-0.0).ends_with(r#""temperature":0}"#));
    assert!(with(1.0).ends_with(r#""temperature":1}"#));
    assert!(with(f64::NAN).ends_with(r#""temperature":null}"#));
    // null reads back as absent.
    assert_eq!(
        decode_server_text(&with(f64::INFINITY)),
        Ok(ServerFrame::Task(minimal_task()))
    );
}

#[test]
fn format_js_number_matches_ecmascript_number_to_string() {
    let table: &[(f64, &str)] = &[
        (0.0, "0"),
        (-0.0, "0"),
        (0.5, "0.5"),
        (1.0, "1"),
        (-2.5, "-2.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (123.456, "123.456"),
        (1e21, "1e+21"),
        (1.5e21, "1.5e+21"),
        (123456789012345680000.0, "123456789012345680000"),
        (1e20, "100000000000000000000"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (-1.5e-7, "-1.5e-7"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (4294967296.0, "4294967296"),
        (f64::INFINITY, "null"),
        (f64::NEG_INFINITY, "null"),
    ];
    for &(x, js) in table {
        assert_eq!(format_js_number(x), js, "{x:e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Node -> server: heartbeat and result frames

#[test]
fn heartbeat_snapshot() {
    // The frame is empty; the snapshot quotes it so that it is visible.
    insta::assert_snapshot!(
        "llm_heartbeat",
        format!("\"{}\"", support::text(HEARTBEAT.as_bytes()))
    );
}

#[test]
fn node_text_is_a_heartbeat_only_when_empty() {
    assert_eq!(decode_node_text(HEARTBEAT), NodeText::Heartbeat);
    assert_eq!(decode_node_text("ping"), NodeText::Unexpected("ping"));
    assert_eq!(decode_node_text(" "), NodeText::Unexpected(" "));
    assert_eq!(SILENCE_LIMIT.as_secs(), 30);
}

#[test]
fn result_multibyte_snapshot() {
    let bytes = ResultFrame::data(123, "日本 🎉")
        .to_bytes()
        .expect("non-empty");
    insta::assert_snapshot!("llm_result_multibyte", support::hex(&bytes));
}

#[test]
fn result_finished_snapshot() {
    let bytes = ResultFrame::finished(123).to_bytes().expect("finished");
    insta::assert_snapshot!("llm_result_finished", support::hex(&bytes));
}

#[test]
fn result_split_snapshot() {
    // A text cut into frames of at most 4 + 8 bytes: no character is split.
    let frames: Vec<String> = split_text("Grüße 🎉 日本語", 8)
        .expect("8 >= 4")
        .map(|piece| support::hex(&ResultFrame::data(123, piece).to_bytes().expect("piece")))
        .collect();
    insta::assert_snapshot!("llm_result_split", frames.join("\n"));
}

#[test]
fn result_frames_decode() {
    assert_eq!(
        ResultFrame::decode(&[0, 0, 0, 0x7b, b'h', b'i']),
        Ok(ResultFrame::data(123, "hi"))
    );
    let finished = ResultFrame::decode(&[0xff, 0xff, 0xff, 0xff]).expect("finished");
    assert_eq!(finished, ResultFrame::finished(u32::MAX));
    assert!(finished.is_finished());
}

#[test]
fn result_frame_shorter_than_the_id_is_too_short() {
    for len in 0..4 {
        assert_eq!(
            ResultFrame::decode(&[0x7b; 4][..len]),
            Err(ResultFrameError::TooShort { len })
        );
    }
    assert_eq!(ResultFrameError::TooShort { len: 3 }.id(), None);
}

#[test]
fn result_frame_with_a_cut_character_is_not_utf8() {
    let mut bytes = vec![0, 0, 0, 9];
    bytes.extend_from_slice("ab日".as_bytes());
    bytes.pop();
    let err = ResultFrame::decode(&bytes).unwrap_err();
    assert_eq!(
        err,
        ResultFrameError::NotUtf8 {
            id: 9,
            valid_up_to: 2
        }
    );
    assert_eq!(err.id(), Some(9));
    assert!(err.to_string().contains("task 9"));
}

#[test]
fn result_frame_with_invalid_bytes_is_not_utf8() {
    assert_eq!(
        ResultFrame::decode(&[0, 0, 0, 1, 0xff]),
        Err(ResultFrameError::NotUtf8 {
            id: 1,
            valid_up_to: 0
        })
    );
}

#[test]
fn result_frame_with_empty_text_cannot_be_encoded() {
    let mut out = vec![0xaa];
    assert_eq!(
        ResultFrame::data(5, "").encode(&mut out),
        Err(EmptyResultText { id: 5 })
    );
    assert_eq!(out, [0xaa], "nothing is written on error");
    ResultFrame::data(5, "x").encode(&mut out).expect("text");
    assert_eq!(out, [0xaa, 0, 0, 0, 5, b'x'], "encode appends");
}
