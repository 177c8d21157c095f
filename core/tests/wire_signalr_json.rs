//! The SignalR JSON hub protocol (core/src/wire/signalr/json.rs): exact bytes of every message
//! kind, decoding leniency, every invalid case with its error, and round-trip properties.
mod support;

use nodelink_core::wire::signalr::json::{decode_record, encode_record};
use nodelink_core::wire::signalr::{
    CompletionOutcome, DecodeError, Headers, HubMessage, HubProtocol, Invocation, Payload,
    RECORD_SEPARATOR,
};
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A JSON payload from its exact text.
fn raw(text: &str) -> Payload {
    Payload::from_raw_json(RawValue::from_string(text.to_owned()).expect("valid JSON"))
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn record(message: &HubMessage) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(message, &mut out).expect("JSON payloads always encode");
    out
}

/// Encodes, checks the terminator, decodes it back and returns the record as pinned text.
fn pinned(message: &HubMessage) -> String {
    let bytes = record(message);
    assert_eq!(bytes.last(), Some(&RECORD_SEPARATOR));
    let decoded = decode_record(&bytes[..bytes.len() - 1]).expect("own records decode");
    assert_eq!(&decoded, message);
    support::text(&bytes)
}

fn decode(text: &str) -> Result<HubMessage, DecodeError> {
    decode_record(text.as_bytes())
}

fn invocation(id: Option<&str>, target: &str, arguments: &[&str]) -> Invocation {
    Invocation {
        headers: Headers::new(),
        invocation_id: id.map(str::to_owned),
        target: target.to_owned(),
        arguments: arguments.iter().map(|a| raw(a)).collect(),
        stream_ids: Vec::new(),
    }
}

fn completion(id: &str, outcome: CompletionOutcome) -> HubMessage {
    HubMessage::Completion {
        headers: Headers::new(),
        invocation_id: id.to_owned(),
        outcome,
    }
}

fn wrong(message: &'static str, field: &'static str, expected: &'static str) -> DecodeError {
    DecodeError::WrongType {
        message,
        field,
        expected,
    }
}

fn missing(message: &'static str, field: &'static str) -> DecodeError {
    DecodeError::MissingField { message, field }
}

// ---------------------------------------------------------------------------------------------
// The exact bytes of every message kind

#[test]
fn invocation_bytes() {
    let m = HubMessage::Invocation(invocation(Some("1"), "Add", &["40", "2"]));
    insta::assert_snapshot!("json_invocation", pinned(&m));
}

#[test]
fn non_blocking_invocation_bytes() {
    let m = HubMessage::Invocation(invocation(
        None,
        "Heartbeat",
        &[r#"{"nodeId":"node-1","status":"online"}"#],
    ));
    insta::assert_snapshot!("json_invocation_non_blocking", pinned(&m));
}

#[test]
fn invocation_with_headers_bytes() {
    let mut inv = invocation(Some("7"), "Send", &[r#""hi""#]);
    inv.headers = headers(&[("traceparent", "00-4bf9-01"), ("a", "b")]);
    insta::assert_snapshot!(
        "json_invocation_headers",
        pinned(&HubMessage::Invocation(inv))
    );
}

#[test]
fn invocation_with_stream_ids_bytes() {
    let mut inv = invocation(Some("2"), "Upload", &[]);
    inv.stream_ids = vec!["s1".to_owned(), "s2".to_owned()];
    insta::assert_snapshot!(
        "json_invocation_stream_ids",
        pinned(&HubMessage::Invocation(inv))
    );
}

#[test]
fn stream_item_bytes() {
    let m = HubMessage::StreamItem {
        headers: Headers::new(),
        invocation_id: "4".to_owned(),
        item: raw(r#"{"step":3,"stepCount":10}"#),
    };
    insta::assert_snapshot!("json_stream_item", pinned(&m));
}

#[test]
fn completion_void_bytes() {
    let m = completion("1", CompletionOutcome::Void);
    insta::assert_snapshot!("json_completion_void", pinned(&m));
}

#[test]
fn completion_result_bytes() {
    let m = completion("1", CompletionOutcome::Result(raw("42")));
    insta::assert_snapshot!("json_completion_result", pinned(&m));
}

#[test]
fn completion_null_result_bytes() {
    let m = completion("1", CompletionOutcome::Result(raw("null")));
    insta::assert_snapshot!("json_completion_null_result", pinned(&m));
}

#[test]
fn completion_error_bytes() {
    let m = completion("1", CompletionOutcome::Error("It didn't work!".to_owned()));
    insta::assert_snapshot!("json_completion_error", pinned(&m));
}

#[test]
fn stream_invocation_bytes() {
    let m = HubMessage::StreamInvocation(invocation(Some("4"), "Tail", &["10"]));
    insta::assert_snapshot!("json_stream_invocation", pinned(&m));
}

#[test]
fn cancel_invocation_bytes() {
    let m = HubMessage::CancelInvocation {
        headers: Headers::new(),
        invocation_id: "4".to_owned(),
    };
    insta::assert_snapshot!("json_cancel_invocation", pinned(&m));
}

#[test]
fn ping_bytes() {
    insta::assert_snapshot!("json_ping", pinned(&HubMessage::Ping));
}

#[test]
fn close_bytes() {
    let m = HubMessage::Close {
        error: None,
        allow_reconnect: None,
    };
    insta::assert_snapshot!("json_close", pinned(&m));
}

#[test]
fn close_with_error_bytes() {
    let m = HubMessage::Close {
        error: Some("Node revoked".to_owned()),
        allow_reconnect: None,
    };
    insta::assert_snapshot!("json_close_error", pinned(&m));
}

#[test]
fn close_with_error_and_reconnect_bytes() {
    let m = HubMessage::Close {
        error: Some("Server is shutting down".to_owned()),
        allow_reconnect: Some(true),
    };
    insta::assert_snapshot!("json_close_error_allow_reconnect", pinned(&m));
}

#[test]
fn ack_bytes() {
    insta::assert_snapshot!("json_ack", pinned(&HubMessage::Ack { sequence_id: 1394 }));
}

#[test]
fn sequence_bytes() {
    insta::assert_snapshot!(
        "json_sequence",
        pinned(&HubMessage::Sequence { sequence_id: 1234 })
    );
}

#[test]
fn strings_are_escaped_so_no_record_separator_appears_inside() {
    let m = completion(
        "1",
        CompletionOutcome::Error("bad \"input\" \\ \u{1e}\n\té".to_owned()),
    );
    let bytes = record(&m);
    assert_eq!(
        bytes.iter().filter(|b| **b == RECORD_SEPARATOR).count(),
        1,
        "only the terminator"
    );
    insta::assert_snapshot!("json_string_escapes", pinned(&m));
}

#[test]
fn messagepack_payloads_are_transcoded_to_json() {
    let args = Payload::encode(HubProtocol::MessagePack, &json!({"ok": true, "n": 3})).unwrap();
    let inv = Invocation {
        arguments: vec![args],
        ..invocation(None, "Progress", &[])
    };
    let bytes = record(&HubMessage::Invocation(inv));
    insta::assert_snapshot!("json_transcoded_messagepack", support::text(&bytes));
}

// ---------------------------------------------------------------------------------------------
// Encoding

#[test]
fn records_append_to_the_buffer() {
    let mut out = b"prefix".to_vec();
    encode_record(&HubMessage::Ping, &mut out).unwrap();
    encode_record(&HubMessage::Ack { sequence_id: 0 }, &mut out).unwrap();
    assert_eq!(
        support::text(&out),
        r#"prefix{"type":6}\x1e{"type":8,"sequenceId":0}\x1e"#
    );
}

#[test]
fn a_payload_that_cannot_be_transcoded_leaves_the_buffer_untouched() {
    // 0xc1 is never used in MessagePack.
    let bad = Payload::from_raw_msgpack(vec![0xc1]);
    let m = HubMessage::StreamItem {
        headers: Headers::new(),
        invocation_id: "1".to_owned(),
        item: bad,
    };
    let mut out = b"kept".to_vec();
    assert!(encode_record(&m, &mut out).is_err());
    assert_eq!(out, b"kept");
}

#[test]
fn close_keeps_an_explicit_allow_reconnect_false() {
    let m = HubMessage::Close {
        error: None,
        allow_reconnect: Some(false),
    };
    assert_eq!(pinned(&m), r#"{"type":7,"allowReconnect":false}\x1e"#);
    assert!(!m.allows_reconnect());
}

#[test]
fn extreme_sequence_ids_round_trip() {
    for id in [0, 1, u64::MAX] {
        pinned(&HubMessage::Sequence { sequence_id: id });
        pinned(&HubMessage::Ack { sequence_id: id });
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding: what a receiver accepts

#[test]
fn type_may_come_last() {
    let m = decode(r#"{"target":"Add","arguments":[40,2],"invocationId":"9","type":1}"#).unwrap();
    assert_eq!(
        m,
        HubMessage::Invocation(invocation(Some("9"), "Add", &["40", "2"]))
    );
}

#[test]
fn unknown_members_are_ignored() {
    let m = decode(
        r#"{"type":1,"x":{"deep":[1,{"y":null}]},"target":"A","arguments":[],"future":"z","n":1.5}"#,
    )
    .unwrap();
    assert_eq!(m, HubMessage::Invocation(invocation(None, "A", &[])));
}

#[test]
fn members_a_type_does_not_use_are_ignored_whatever_their_value() {
    assert_eq!(
        decode(r#"{"type":6,"target":5,"headers":1,"invocationId":[],"sequenceId":"x"}"#),
        Ok(HubMessage::Ping)
    );
    assert_eq!(
        decode(r#"{"type":8,"sequenceId":3,"headers":"h","error":1}"#),
        Ok(HubMessage::Ack { sequence_id: 3 })
    );
}

#[test]
fn whitespace_between_tokens_is_accepted_and_kept_inside_payloads() {
    let m = decode(
        " \r\n{ \"type\" : 3 ,\t\"invocationId\" : \"1\" , \"result\" : { \"a\" : [ 1 , 2 ] } } \n",
    )
    .unwrap();
    match m {
        HubMessage::Completion {
            outcome: CompletionOutcome::Result(result),
            ..
        } => assert_eq!(result.as_json(), Some(r#"{ "a" : [ 1 , 2 ] }"#)),
        other => panic!("expected a Completion with a result, got {other:?}"),
    }
    let m = decode(r#"{"type":1,"target":"T","arguments":[ 1 ,"x" , {} ]}"#).unwrap();
    let HubMessage::Invocation(inv) = m else {
        panic!("expected an Invocation")
    };
    let texts: Vec<_> = inv.arguments.iter().map(|a| a.as_json().unwrap()).collect();
    assert_eq!(texts, ["1", r#""x""#, "{}"]);
}

#[test]
fn canonical_records_re_encode_to_the_same_bytes() {
    let text = r#"{"type":1,"headers":{"k":"v"},"invocationId":"5","target":"T\n","arguments":[{"b":1,"a":[true,null]},"s",1e3]}"#;
    let m = decode(text).unwrap();
    let mut expected = text.as_bytes().to_vec();
    expected.push(RECORD_SEPARATOR);
    assert_eq!(record(&m), expected);
}

#[test]
fn null_members_count_as_absent() {
    assert_eq!(
        decode(
            r#"{"type":1,"invocationId":null,"target":"A","arguments":[],"streamIds":null,"headers":null}"#
        ),
        Ok(HubMessage::Invocation(invocation(None, "A", &[])))
    );
    assert_eq!(
        decode(r#"{"type":7,"error":null,"allowReconnect":null}"#),
        Ok(HubMessage::Close {
            error: None,
            allow_reconnect: None
        })
    );
    assert_eq!(
        decode(r#"{"type":3,"invocationId":"1","error":null}"#),
        Ok(completion("1", CompletionOutcome::Void))
    );
}

#[test]
fn a_null_result_is_a_result_and_an_absent_one_is_void() {
    assert_eq!(
        decode(r#"{"type":3,"invocationId":"1","result":null}"#),
        Ok(completion("1", CompletionOutcome::Result(raw("null"))))
    );
    assert_eq!(
        decode(r#"{"type":3,"invocationId":"1"}"#),
        Ok(completion("1", CompletionOutcome::Void))
    );
    // A null item is an item too.
    assert_eq!(
        decode(r#"{"type":2,"invocationId":"1","item":null}"#),
        Ok(HubMessage::StreamItem {
            headers: Headers::new(),
            invocation_id: "1".to_owned(),
            item: raw("null"),
        })
    );
}

#[test]
fn the_last_duplicate_member_wins() {
    assert_eq!(
        decode(r#"{"type":1,"target":"A","target":"B","arguments":[1],"arguments":[]}"#),
        Ok(HubMessage::Invocation(invocation(None, "B", &[])))
    );
    assert_eq!(
        decode(r#"{"type":99,"type":6}"#),
        Ok(HubMessage::Ping),
        "an earlier unknown type is overwritten"
    );
    assert_eq!(
        decode(r#"{"type":7,"headers":{"a":"1","a":"2"}}"#),
        Ok(HubMessage::Close {
            error: None,
            allow_reconnect: None
        })
    );
    let m = decode(r#"{"type":5,"headers":{"a":"1","a":"2"},"invocationId":"x"}"#).unwrap();
    assert_eq!(
        m,
        HubMessage::CancelInvocation {
            headers: headers(&[("a", "2")]),
            invocation_id: "x".to_owned()
        }
    );
}

#[test]
fn escaped_member_names_and_strings_are_unescaped() {
    assert_eq!(decode(r#"{"typ\u0065":6}"#), Ok(HubMessage::Ping));
    assert_eq!(
        decode(r#"{"type":1,"target":"H\u00e9\"llo","arguments":[]}"#),
        Ok(HubMessage::Invocation(invocation(None, "Hé\"llo", &[])))
    );
}

#[test]
fn headers_stream_ids_and_empty_strings_decode() {
    let m = decode(
        r#"{"type":4,"headers":{"Foo":"Bar","":""},"invocationId":"","target":"","arguments":[],"streamIds":["1",""]}"#,
    )
    .unwrap();
    assert_eq!(
        m,
        HubMessage::StreamInvocation(Invocation {
            headers: headers(&[("Foo", "Bar"), ("", "")]),
            invocation_id: Some(String::new()),
            target: String::new(),
            arguments: Vec::new(),
            stream_ids: vec!["1".to_owned(), String::new()],
        })
    );
}

#[test]
fn a_heartbeat_argument_decodes_into_its_dto() {
    use nodelink_core::wire::dto::HeartbeatDto;
    let text = r#"{"type":1,"target":"Heartbeat","arguments":[{"nodeId":"n1","status":"online","uptime":5,"platform":"linux","version":"1.0.0","cpuPercent":12.5,"memoryMb":2048}]}"#;
    let HubMessage::Invocation(inv) = decode(text).unwrap() else {
        panic!("expected an Invocation")
    };
    let dto: HeartbeatDto = inv.arguments[0].decode().unwrap();
    assert_eq!(dto.node_id, "n1");
    assert_eq!(dto.memory_mb, 2048);
}

// ---------------------------------------------------------------------------------------------
// Decoding: every invalid case and its error

#[test]
fn a_record_that_is_not_utf8_is_refused() {
    let err = decode_record(b"{\"type\":6,\"x\":\"\xff\"}").unwrap_err();
    assert_eq!(
        err,
        DecodeError::NotUtf8 {
            what: "JSON hub record"
        }
    );
    assert!(!err.is_ignorable() && !err.is_fatal());
}

#[test]
fn a_record_that_is_not_json_is_a_syntax_error() {
    for text in [
        "",
        "   ",
        "hello",
        r#"{"type":"#,
        r#"{"type":6"#,
        r#"{"type":6,}"#,
        r#"{type:6}"#,
        r#"{"type":6}x"#,
        r#"{"type":6}{"type":6}"#,
        r#"{"type":1,"target":"A","arguments":[1,]}"#,
        r#"{"type":2,"invocationId":"1","item":}"#,
        "{\"type\":6,\"x\":\"\u{1e}\"}",
    ] {
        match decode(text) {
            Err(DecodeError::Syntax { encoding, detail }) => {
                assert_eq!(encoding, "JSON");
                assert!(!detail.is_empty());
            }
            other => panic!("{text:?}: expected a syntax error, got {other:?}"),
        }
    }
}

#[test]
fn deep_nesting_never_overflows_the_stack() {
    let depth = 100_000;
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // Inside a payload the value is only delimited, never walked recursively: accepted as is.
    let text = format!(r#"{{"type":2,"invocationId":"1","item":{deep}}}"#);
    let HubMessage::StreamItem { item, .. } = decode(&text).unwrap() else {
        panic!("expected a StreamItem")
    };
    assert_eq!(item.as_json(), Some(deep.as_str()));
    // Skipped members are delimited the same way (serde_json's `ignore_value` is iterative).
    assert_eq!(
        decode(&format!(r#"{{"type":6,"x":{deep}}}"#)),
        Ok(HubMessage::Ping)
    );
    assert_eq!(
        decode(&format!(
            r#"{{"type":5,"invocationId":"1","headers":{deep}}}"#
        )),
        Err(wrong(
            "CancelInvocation",
            "headers",
            "an object whose values are strings"
        ))
    );
    // Unterminated nesting is malformed, not a crash.
    assert!(matches!(
        decode(&format!(
            r#"{{"type":2,"invocationId":"1","item":{}"#,
            "[".repeat(depth)
        )),
        Err(DecodeError::Syntax { .. })
    ));
}

#[test]
fn a_record_that_is_not_an_object_is_refused() {
    for text in ["[1]", "6", r#""type""#, "null", " true "] {
        assert_eq!(
            decode(text),
            Err(wrong("hub", "<record>", "a JSON object")),
            "{text}"
        );
    }
}

#[test]
fn a_missing_type_is_refused() {
    assert_eq!(decode("{}"), Err(missing("hub", "type")));
    assert_eq!(
        decode(r#"{"target":"A","arguments":[]}"#),
        Err(missing("hub", "type"))
    );
    assert_eq!(decode(r#"{"type":null}"#), Err(missing("hub", "type")));
}

#[test]
fn a_type_that_is_not_an_integer_is_refused() {
    for value in [r#""1""#, "1.5", "1.0", "true", "[1]", "{}"] {
        assert_eq!(
            decode(&format!(r#"{{"type":{value}}}"#)),
            Err(wrong("hub", "type", "an integer")),
            "{value}"
        );
    }
}

#[test]
fn an_unknown_type_is_ignorable() {
    for (value, expected) in [("99", 99), ("0", 0), ("-1", -1), ("10", 10)] {
        let err = decode(&format!(r#"{{"type":{value},"target":5}}"#)).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownMessageType {
                message_type: expected
            }
        );
        assert!(err.is_ignorable());
    }
    let err = decode(r#"{"type":18446744073709551615}"#).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::InvalidValue {
                message: "hub",
                field: "type",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn invalid_invocations_are_refused() {
    let cases = [
        (
            r#"{"type":1,"arguments":[]}"#,
            missing("Invocation", "target"),
        ),
        (
            r#"{"type":1,"target":5,"arguments":[]}"#,
            wrong("Invocation", "target", "a string"),
        ),
        (
            r#"{"type":1,"target":"A"}"#,
            missing("Invocation", "arguments"),
        ),
        (
            r#"{"type":1,"target":"A","arguments":null}"#,
            missing("Invocation", "arguments"),
        ),
        (
            r#"{"type":1,"target":"A","arguments":{}}"#,
            wrong("Invocation", "arguments", "an array"),
        ),
        (
            r#"{"type":1,"target":"A","arguments":"x"}"#,
            wrong("Invocation", "arguments", "an array"),
        ),
        (
            r#"{"type":1,"invocationId":1,"target":"A","arguments":[]}"#,
            wrong("Invocation", "invocationId", "a string"),
        ),
        (
            r#"{"type":1,"target":"A","arguments":[],"streamIds":"s"}"#,
            wrong("Invocation", "streamIds", "an array of strings"),
        ),
        (
            r#"{"type":1,"target":"A","arguments":[],"streamIds":["s",1]}"#,
            wrong("Invocation", "streamIds", "an array of strings"),
        ),
        (
            r#"{"type":1,"target":"A","arguments":[],"streamIds":[null]}"#,
            wrong("Invocation", "streamIds", "an array of strings"),
        ),
        (
            r#"{"type":1,"headers":[],"target":"A","arguments":[]}"#,
            wrong(
                "Invocation",
                "headers",
                "an object whose values are strings",
            ),
        ),
        (
            r#"{"type":1,"headers":{"a":1},"target":"A","arguments":[]}"#,
            wrong(
                "Invocation",
                "headers",
                "an object whose values are strings",
            ),
        ),
        (
            r#"{"type":1,"headers":{"a":"1","b":null},"target":"A","arguments":[]}"#,
            wrong(
                "Invocation",
                "headers",
                "an object whose values are strings",
            ),
        ),
        (
            r#"{"type":4,"target":"A","arguments":[]}"#,
            missing("StreamInvocation", "invocationId"),
        ),
        (
            r#"{"type":4,"invocationId":null,"target":"A","arguments":[]}"#,
            missing("StreamInvocation", "invocationId"),
        ),
        (
            r#"{"type":4,"invocationId":"1","arguments":[]}"#,
            missing("StreamInvocation", "target"),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(decode(text), Err(expected), "{text}");
    }
}

#[test]
fn invalid_stream_items_completions_and_cancels_are_refused() {
    let cases = [
        (
            r#"{"type":2,"item":1}"#,
            missing("StreamItem", "invocationId"),
        ),
        (
            r#"{"type":2,"invocationId":1,"item":1}"#,
            wrong("StreamItem", "invocationId", "a string"),
        ),
        (
            r#"{"type":2,"invocationId":"1"}"#,
            missing("StreamItem", "item"),
        ),
        (
            r#"{"type":3,"result":1}"#,
            missing("Completion", "invocationId"),
        ),
        (
            r#"{"type":3,"invocationId":"1","error":5}"#,
            wrong("Completion", "error", "a string"),
        ),
        (
            r#"{"type":3,"invocationId":"1","result":42,"error":"It didn't work!"}"#,
            DecodeError::ResultAndError,
        ),
        (
            r#"{"type":3,"invocationId":"1","error":"e","result":null}"#,
            DecodeError::ResultAndError,
        ),
        (r#"{"type":5}"#, missing("CancelInvocation", "invocationId")),
        (
            r#"{"type":5,"invocationId":true}"#,
            wrong("CancelInvocation", "invocationId", "a string"),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(decode(text), Err(expected), "{text}");
    }
}

#[test]
fn invalid_close_ack_and_sequence_are_refused() {
    let cases = [
        (
            r#"{"type":7,"error":5}"#,
            wrong("Close", "error", "a string"),
        ),
        (
            r#"{"type":7,"allowReconnect":"yes"}"#,
            wrong("Close", "allowReconnect", "true or false"),
        ),
        (
            r#"{"type":7,"allowReconnect":1}"#,
            wrong("Close", "allowReconnect", "true or false"),
        ),
        (r#"{"type":8}"#, missing("Ack", "sequenceId")),
        (r#"{"type":9}"#, missing("Sequence", "sequenceId")),
        (
            r#"{"type":9,"sequenceId":null}"#,
            missing("Sequence", "sequenceId"),
        ),
        (
            r#"{"type":8,"sequenceId":-1}"#,
            wrong("Ack", "sequenceId", "a non-negative integer"),
        ),
        (
            r#"{"type":8,"sequenceId":1.5}"#,
            wrong("Ack", "sequenceId", "a non-negative integer"),
        ),
        (
            r#"{"type":9,"sequenceId":"1"}"#,
            wrong("Sequence", "sequenceId", "a non-negative integer"),
        ),
        (
            r#"{"type":9,"sequenceId":18446744073709551616}"#,
            wrong("Sequence", "sequenceId", "a non-negative integer"),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(decode(text), Err(expected), "{text}");
    }
}

#[test]
fn errors_name_the_message_and_the_field() {
    let err = decode(r#"{"type":1,"invocationId":7,"target":"A","arguments":[]}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Invocation message: field `invocationId` must be a string"
    );
    let err = decode(r#"{"type":2,"invocationId":"1"}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "StreamItem message is missing the required field `item`"
    );
    let err = decode(r#"{"type":6"#).unwrap_err();
    assert!(err.to_string().starts_with("malformed JSON: "), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Properties

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        "(?s).{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("(?s).{0,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    arb_json().prop_map(|v| Payload::encode(HubProtocol::Json, &v).expect("a Value encodes"))
}

fn arb_text() -> impl Strategy<Value = String> {
    "(?s).{0,12}"
}

fn arb_headers() -> impl Strategy<Value = Headers> {
    prop::collection::btree_map(arb_text(), arb_text(), 0..3)
}

fn arb_invocation(id_required: bool) -> impl Strategy<Value = Invocation> {
    let id = if id_required {
        arb_text().prop_map(Some).boxed()
    } else {
        proptest::option::of(arb_text()).boxed()
    };
    (
        arb_headers(),
        id,
        arb_text(),
        prop::collection::vec(arb_payload(), 0..4),
        prop::collection::vec(arb_text(), 0..3),
    )
        .prop_map(
            |(headers, invocation_id, target, arguments, stream_ids)| Invocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids,
            },
        )
}

fn arb_message() -> impl Strategy<Value = HubMessage> {
    let outcome = prop_oneof![
        Just(CompletionOutcome::Void),
        arb_payload().prop_map(CompletionOutcome::Result),
        arb_text().prop_map(CompletionOutcome::Error),
    ];
    prop_oneof![
        arb_invocation(false).prop_map(HubMessage::Invocation),
        (arb_headers(), arb_text(), arb_payload()).prop_map(|(headers, invocation_id, item)| {
            HubMessage::StreamItem {
                headers,
                invocation_id,
                item,
            }
        }),
        (arb_headers(), arb_text(), outcome).prop_map(|(headers, invocation_id, outcome)| {
            HubMessage::Completion {
                headers,
                invocation_id,
                outcome,
            }
        }),
        arb_invocation(true).prop_map(HubMessage::StreamInvocation),
        (arb_headers(), arb_text()).prop_map(|(headers, invocation_id)| {
            HubMessage::CancelInvocation {
                headers,
                invocation_id,
            }
        }),
        Just(HubMessage::Ping),
        (
            proptest::option::of(arb_text()),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(error, allow_reconnect)| HubMessage::Close {
                error,
                allow_reconnect
            }),
        any::<u64>().prop_map(|sequence_id| HubMessage::Ack { sequence_id }),
        any::<u64>().prop_map(|sequence_id| HubMessage::Sequence { sequence_id }),
    ]
}

/// Strings made of JSON's own punctuation and the member names, to reach deep into the decoder.
fn arb_jsonish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just(" ".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("-1".to_owned()),
        Just("1.5".to_owned()),
        (0u8..12).prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "\"type\"",
            "\"headers\"",
            "\"invocationId\"",
            "\"target\"",
            "\"arguments\"",
            "\"streamIds\"",
            "\"item\"",
            "\"result\"",
            "\"error\"",
            "\"allowReconnect\"",
            "\"sequenceId\"",
            "\"x\"",
            "\"\\u001e\"",
        ])
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_message_round_trips_with_exactly_one_separator_at_the_end(m in arb_message()) {
        let bytes = record(&m);
        prop_assert_eq!(bytes.iter().filter(|b| **b == RECORD_SEPARATOR).count(), 1);
        prop_assert_eq!(bytes.last(), Some(&RECORD_SEPARATOR));
        let decoded = decode_record(&bytes[..bytes.len() - 1]);
        prop_assert_eq!(decoded.as_ref(), Ok(&m));
        // Own records are canonical: decoding and re-encoding gives the same bytes.
        prop_assert_eq!(record(&decoded.unwrap()), bytes);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_record(&bytes);
    }

    #[test]
    fn decoding_arbitrary_strings_never_panics(text in "(?s).{0,128}") {
        let _ = decode(&text);
    }

    #[test]
    fn decoding_json_like_strings_never_panics(text in arb_jsonish()) {
        let _ = decode(&text);
    }

    #[test]
    fn decoding_damaged_records_never_panics(
        m in arb_message(),
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = record(&m);
        bytes.pop();
        let _ = decode_record(&bytes[..cut.index(bytes.len() + 1)]);
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = decode_record(&bytes);
        }
    }
}
