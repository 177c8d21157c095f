//! The SignalR MessagePack hub protocol codec (core/src/wire/signalr/msgpack.rs).
mod support;

use nodelink_core::wire::signalr::framing::read_varint;
use nodelink_core::wire::signalr::msgpack::{decode_body, encode, encode_body, MAX_PAYLOAD_DEPTH};
use nodelink_core::wire::signalr::{
    CompletionOutcome, DecodeError, Headers, HubMessage, HubProtocol, Invocation, Payload,
};
use proptest::prelude::*;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Parses "96 01 80" into bytes.
fn bytes(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|pair| u8::from_str_radix(pair, 16).expect("test hex is valid"))
        .collect()
}

fn msgpack(value: serde_json::Value) -> Payload {
    Payload::encode(HubProtocol::MessagePack, &value).expect("a JSON value encodes")
}

fn raw(hex: &str) -> Payload {
    Payload::from_raw_msgpack(bytes(hex))
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The whole frame (length prefix and body) as pinned in snapshots and in the spec.
fn frame(message: &HubMessage) -> String {
    let mut out = Vec::new();
    encode(message, &mut out).expect("encodes");
    support::hex(&out)
}

fn decode(hex: &str) -> Result<HubMessage, DecodeError> {
    decode_body(&bytes(hex))
}

fn invocation(id: Option<&str>, target: &str, arguments: Vec<Payload>) -> Invocation {
    Invocation {
        headers: Headers::new(),
        invocation_id: id.map(str::to_owned),
        target: target.to_owned(),
        arguments,
        stream_ids: Vec::new(),
    }
}

fn send_42_hi(id: Option<&str>) -> Invocation {
    invocation(id, "Send", vec![msgpack(json!(42)), msgpack(json!("hi"))])
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

fn assert_syntax(result: Result<HubMessage, DecodeError>) {
    match result {
        Err(DecodeError::Syntax { encoding, detail }) => {
            assert_eq!(encoding, "MessagePack");
            assert!(!detail.is_empty());
        }
        other => panic!("expected a Syntax error, got {other:?}"),
    }
}

fn assert_invalid(result: Result<HubMessage, DecodeError>, message: &str, field: &str) {
    match result {
        Err(DecodeError::InvalidValue {
            message: m,
            field: f,
            ..
        }) => assert_eq!((m, f), (message, field)),
        other => panic!("expected InvalidValue for {message}.{field}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Golden vectors from HubProtocol.md

#[test]
fn golden_vectors_of_the_hub_protocol_spec_decode_and_reencode() {
    let data = include_str!("data/signalr_msgpack_golden.txt");
    let mut seen = 0;
    for line in data.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(" | ").collect();
        let [name, body_hex, debug, reencoded] = fields[..] else {
            panic!("malformed golden line: {line}");
        };
        let body = bytes(body_hex);
        let message = decode_body(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(format!("{message:?}"), debug, "{name}: decoded form");

        let expected = if reencoded == "=" {
            body.clone()
        } else {
            bytes(reencoded)
        };
        let mut out = Vec::new();
        encode_body(&message, &mut out).expect("encodes");
        assert_eq!(support::hex(&out), support::hex(&expected), "{name}: body");

        // With the prefix: the VarInt of the length, then the same body.
        let mut framed = Vec::new();
        encode(&message, &mut framed).expect("encodes");
        assert_eq!(read_varint(&framed), Ok(Some((expected.len() as u32, 1))));
        assert_eq!(&framed[1..], &expected[..], "{name}: framed");
        seen += 1;
    }
    assert_eq!(
        seen, 14,
        "every example of HubProtocol.md is in the data file"
    );
}

// ---------------------------------------------------------------------------------------------
// Snapshots: the exact frame of every message kind

#[test]
fn snapshot_invocation() {
    let message = HubMessage::Invocation(send_42_hi(Some("1")));
    insta::assert_snapshot!("msgpack_invocation", frame(&message));
}

#[test]
fn snapshot_invocation_non_blocking() {
    let message = HubMessage::Invocation(send_42_hi(None));
    insta::assert_snapshot!("msgpack_invocation_non_blocking", frame(&message));
}

#[test]
fn snapshot_invocation_with_headers() {
    let mut inv = send_42_hi(Some("1"));
    inv.headers = headers(&[("a", "b")]);
    let message = HubMessage::Invocation(inv);
    insta::assert_snapshot!("msgpack_invocation_headers", frame(&message));
}

#[test]
fn snapshot_invocation_with_stream_ids() {
    let mut inv = invocation(Some("1"), "Upload", vec![]);
    inv.stream_ids = vec!["2".to_owned()];
    let message = HubMessage::Invocation(inv);
    insta::assert_snapshot!("msgpack_invocation_stream_ids", frame(&message));
}

#[test]
fn snapshot_invocation_with_a_json_payload_transcoded() {
    let argument = Payload::encode(HubProtocol::Json, &json!({"n": 1})).expect("encodes");
    let message = HubMessage::Invocation(invocation(None, "Hb", vec![argument]));
    insta::assert_snapshot!("msgpack_invocation_json_payload", frame(&message));
}

#[test]
fn snapshot_stream_invocation() {
    let message =
        HubMessage::StreamInvocation(invocation(Some("1"), "Tail", vec![msgpack(json!(5))]));
    insta::assert_snapshot!("msgpack_stream_invocation", frame(&message));
}

#[test]
fn snapshot_stream_item() {
    let message = HubMessage::StreamItem {
        headers: Headers::new(),
        invocation_id: "1".to_owned(),
        item: msgpack(json!("tok")),
    };
    insta::assert_snapshot!("msgpack_stream_item", frame(&message));
}

#[test]
fn snapshot_completion_void() {
    let message = HubMessage::Completion {
        headers: Headers::new(),
        invocation_id: "1".to_owned(),
        outcome: CompletionOutcome::Void,
    };
    insta::assert_snapshot!("msgpack_completion_void", frame(&message));
}

#[test]
fn snapshot_completion_result() {
    let message = HubMessage::Completion {
        headers: Headers::new(),
        invocation_id: "1".to_owned(),
        outcome: CompletionOutcome::Result(msgpack(json!({"ok": true}))),
    };
    insta::assert_snapshot!("msgpack_completion_result", frame(&message));
}

#[test]
fn snapshot_completion_null_result() {
    let message = HubMessage::Completion {
        headers: Headers::new(),
        invocation_id: "1".to_owned(),
        outcome: CompletionOutcome::Result(msgpack(json!(null))),
    };
    insta::assert_snapshot!("msgpack_completion_null_result", frame(&message));
}

#[test]
fn snapshot_completion_error() {
    let message = HubMessage::Completion {
        headers: Headers::new(),
        invocation_id: "1".to_owned(),
        outcome: CompletionOutcome::Error("boom".to_owned()),
    };
    insta::assert_snapshot!("msgpack_completion_error", frame(&message));
}

#[test]
fn snapshot_cancel_invocation() {
    let message = HubMessage::CancelInvocation {
        headers: Headers::new(),
        invocation_id: "1".to_owned(),
    };
    insta::assert_snapshot!("msgpack_cancel_invocation", frame(&message));
}

#[test]
fn snapshot_ping() {
    insta::assert_snapshot!("msgpack_ping", frame(&HubMessage::Ping));
}

#[test]
fn snapshot_close_without_error() {
    let message = HubMessage::Close {
        error: None,
        allow_reconnect: None,
    };
    insta::assert_snapshot!("msgpack_close", frame(&message));
}

#[test]
fn snapshot_close_with_error() {
    let message = HubMessage::Close {
        error: Some("revoked".to_owned()),
        allow_reconnect: None,
    };
    insta::assert_snapshot!("msgpack_close_error", frame(&message));
}

#[test]
fn snapshot_close_allowing_reconnect() {
    let message = HubMessage::Close {
        error: Some("restart".to_owned()),
        allow_reconnect: Some(true),
    };
    insta::assert_snapshot!("msgpack_close_allow_reconnect", frame(&message));
}

#[test]
fn snapshot_close_as_dotnet_writes_it() {
    let message = HubMessage::Close {
        error: None,
        allow_reconnect: Some(false),
    };
    insta::assert_snapshot!("msgpack_close_dotnet", frame(&message));
}

#[test]
fn snapshot_ack() {
    let message = HubMessage::Ack { sequence_id: 1394 };
    insta::assert_snapshot!("msgpack_ack", frame(&message));
}

#[test]
fn snapshot_sequence() {
    let message = HubMessage::Sequence { sequence_id: 7 };
    insta::assert_snapshot!("msgpack_sequence", frame(&message));
}

// ---------------------------------------------------------------------------------------------
// Encoding details

#[test]
fn encode_appends_after_what_is_already_in_the_buffer() {
    let mut out = vec![0xaa];
    encode(&HubMessage::Ping, &mut out).expect("encodes");
    encode(&HubMessage::Ping, &mut out).expect("encodes");
    assert_eq!(out, [0xaa, 0x02, 0x91, 0x06, 0x02, 0x91, 0x06]);
}

#[test]
fn a_body_of_128_bytes_or_more_gets_a_two_byte_prefix() {
    let message =
        HubMessage::Invocation(invocation(None, "T", vec![msgpack(json!("x".repeat(200)))]));
    let mut body = Vec::new();
    encode_body(&message, &mut body).expect("encodes");
    let mut framed = Vec::new();
    encode(&message, &mut framed).expect("encodes");
    assert!(body.len() >= 128);
    assert_eq!(read_varint(&framed), Ok(Some((body.len() as u32, 2))));
    assert_eq!(&framed[2..], &body[..]);
}

#[test]
fn an_empty_invocation_id_is_written_as_nil_like_dotnet() {
    let message = HubMessage::Invocation(invocation(Some(""), "T", vec![]));
    let mut body = Vec::new();
    encode_body(&message, &mut body).expect("encodes");
    assert_eq!(support::hex(&body), "96 01 80 c0 a1 54 90 90");
}

#[test]
fn ack_ids_take_the_smallest_integer_format() {
    for (id, hex) in [
        (0u64, "92 08 00"),
        (127, "92 08 7f"),
        (128, "92 08 cc 80"),
        (65_535, "92 08 cd ff ff"),
        (65_536, "92 08 ce 00 01 00 00"),
        (u64::MAX, "92 08 cf ff ff ff ff ff ff ff ff"),
    ] {
        let mut body = Vec::new();
        encode_body(&HubMessage::Ack { sequence_id: id }, &mut body).expect("encodes");
        assert_eq!(support::hex(&body), hex);
        assert_eq!(decode(hex), Ok(HubMessage::Ack { sequence_id: id }));
    }
}

#[test]
fn long_strings_use_str8_and_str16() {
    let target = "t".repeat(40);
    let message = HubMessage::Invocation(invocation(None, &target, vec![]));
    let mut body = Vec::new();
    encode_body(&message, &mut body).expect("encodes");
    assert_eq!(&body[4..6], &[0xd9, 40]);
    assert_eq!(decode_body(&body), Ok(message));

    let error = "e".repeat(300);
    let message = HubMessage::Close {
        error: Some(error),
        allow_reconnect: None,
    };
    let mut body = Vec::new();
    encode_body(&message, &mut body).expect("encodes");
    assert_eq!(&body[2..5], &[0xda, 0x01, 0x2c]);
    assert_eq!(decode_body(&body), Ok(message));
}

// ---------------------------------------------------------------------------------------------
// Decoding: what is accepted

#[test]
fn payloads_keep_their_exact_bytes_including_ext_and_bin() {
    // An ext (timestamp, type -1), a bin, a float64 and a nested map, as four arguments.
    let hex = "96 01 80 c0 a1 54 94 d6 ff 00 00 00 01 c4 02 aa bb cb 3f f0 00 00 00 00 00 00 \
               81 a1 6b 92 c0 c3 90";
    let message = decode(hex).expect("decodes");
    let HubMessage::Invocation(inv) = &message else {
        panic!("not an invocation: {message:?}");
    };
    let args: Vec<String> = inv
        .arguments
        .iter()
        .map(|p| support::hex(p.as_msgpack().expect("held as MessagePack")))
        .collect();
    assert_eq!(
        args,
        [
            "d6 ff 00 00 00 01",
            "c4 02 aa bb",
            "cb 3f f0 00 00 00 00 00 00",
            "81 a1 6b 92 c0 c3"
        ]
    );
    let mut body = Vec::new();
    encode_body(&message, &mut body).expect("encodes");
    assert_eq!(body, bytes(hex));
}

#[test]
fn payload_strings_are_carried_without_utf8_validation() {
    let message = decode("94 02 80 a1 31 a2 ff fe").expect("decodes");
    assert_eq!(
        message,
        HubMessage::StreamItem {
            headers: Headers::new(),
            invocation_id: "1".to_owned(),
            item: raw("a2 ff fe"),
        }
    );
}

#[test]
fn an_invocation_of_five_elements_has_no_stream_ids() {
    let message = decode("95 01 80 c0 a1 54 91 2a").expect("decodes");
    assert_eq!(
        message,
        HubMessage::Invocation(invocation(None, "T", vec![raw("2a")]))
    );
}

#[test]
fn an_empty_invocation_id_means_no_id() {
    let message = decode("96 01 80 a0 a1 54 90 90").expect("decodes");
    assert_eq!(
        message,
        HubMessage::Invocation(invocation(None, "T", vec![]))
    );
}

#[test]
fn extra_trailing_elements_are_ignored() {
    assert_eq!(decode("93 06 80 91 c0"), Ok(HubMessage::Ping));
    assert_eq!(
        decode("97 01 80 c0 a1 54 90 90 a3 6e 65 77"),
        Ok(HubMessage::Invocation(invocation(None, "T", vec![])))
    );
    assert_eq!(
        decode("95 03 80 a1 31 02 2a"),
        Ok(HubMessage::Completion {
            headers: Headers::new(),
            invocation_id: "1".to_owned(),
            outcome: CompletionOutcome::Void,
        })
    );
    assert_eq!(
        decode("94 07 c0 c2 c0"),
        Ok(HubMessage::Close {
            error: None,
            allow_reconnect: Some(false),
        })
    );
}

#[test]
fn the_type_may_use_any_integer_format() {
    assert_eq!(decode("91 cc 06"), Ok(HubMessage::Ping));
    assert_eq!(
        decode("91 d3 00 00 00 00 00 00 00 06"),
        Ok(HubMessage::Ping)
    );
}

#[test]
fn headers_are_decoded_and_a_repeated_key_keeps_the_last_value() {
    let message = decode("93 05 82 a1 6b a1 31 a1 6b a1 32 a1 31").expect("decodes");
    assert_eq!(
        message,
        HubMessage::CancelInvocation {
            headers: headers(&[("k", "2")]),
            invocation_id: "1".to_owned(),
        }
    );
}

#[test]
fn an_empty_close_error_is_still_an_error() {
    assert_eq!(
        decode("92 07 a0"),
        Ok(HubMessage::Close {
            error: Some(String::new()),
            allow_reconnect: None,
        })
    );
}

#[test]
fn a_payload_nested_exactly_to_the_limit_is_accepted() {
    let mut body = bytes("94 02 80 a1 31");
    body.extend(std::iter::repeat_n(0x91, MAX_PAYLOAD_DEPTH));
    body.push(0xc0);
    assert!(decode_body(&body).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Decoding: invalid bodies, each with its exact error

#[path = "wire_signalr_msgpack/invalid.rs"]
mod invalid;

// ---------------------------------------------------------------------------------------------
// Properties

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        "[a-zé ]{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn payload() -> impl Strategy<Value = Payload> {
    json_value().prop_map(msgpack)
}

fn id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9-]{1,40}"
}

fn header_map() -> impl Strategy<Value = Headers> {
    prop::collection::btree_map("[a-z]{1,8}", "[ -~]{1,12}", 0..3)
}

fn invocation_strategy(id_required: bool) -> impl Strategy<Value = Invocation> {
    let invocation_id = if id_required {
        id().prop_map(Some).boxed()
    } else {
        prop::option::of(id()).boxed()
    };
    (
        header_map(),
        invocation_id,
        "[A-Za-z]{1,40}",
        prop::collection::vec(payload(), 0..4),
        prop::collection::vec(id(), 0..3),
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

fn hub_message() -> impl Strategy<Value = HubMessage> {
    let outcome = prop_oneof![
        Just(CompletionOutcome::Void),
        payload().prop_map(CompletionOutcome::Result),
        "[ -~]{0,300}".prop_map(CompletionOutcome::Error),
    ];
    prop_oneof![
        invocation_strategy(false).prop_map(HubMessage::Invocation),
        invocation_strategy(true).prop_map(HubMessage::StreamInvocation),
        (header_map(), id(), payload()).prop_map(|(headers, invocation_id, item)| {
            HubMessage::StreamItem {
                headers,
                invocation_id,
                item,
            }
        }),
        (header_map(), id(), outcome).prop_map(|(headers, invocation_id, outcome)| {
            HubMessage::Completion {
                headers,
                invocation_id,
                outcome,
            }
        }),
        (header_map(), id()).prop_map(|(headers, invocation_id)| {
            HubMessage::CancelInvocation {
                headers,
                invocation_id,
            }
        }),
        Just(HubMessage::Ping),
        (
            prop::option::of("[ -~]{0,40}"),
            prop::option::of(any::<bool>())
        )
            .prop_map(|(error, allow_reconnect)| HubMessage::Close {
                error,
                allow_reconnect,
            }),
        any::<u64>().prop_map(|sequence_id| HubMessage::Ack { sequence_id }),
        any::<u64>().prop_map(|sequence_id| HubMessage::Sequence { sequence_id }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_message_round_trips(message in hub_message()) {
        let mut body = Vec::new();
        encode_body(&message, &mut body).expect("encodes");
        prop_assert_eq!(decode_body(&body), Ok(message.clone()));

        let mut framed = Vec::new();
        encode(&message, &mut framed).expect("encodes");
        let (len, prefix) = read_varint(&framed).expect("valid prefix").expect("complete prefix");
        prop_assert_eq!(len as usize, body.len());
        prop_assert_eq!(&framed[prefix..], &body[..]);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_body(&body);
    }

    #[test]
    fn decode_never_panics_on_corrupted_messages(
        message in hub_message(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut body = Vec::new();
        encode_body(&message, &mut body).expect("encodes");
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        // Whatever decodes re-encodes to something that decodes to the same message.
        if let Ok(decoded) = decode_body(&body) {
            let mut again = Vec::new();
            encode_body(&decoded, &mut again).expect("encodes");
            prop_assert_eq!(decode_body(&again), Ok(decoded));
        }
        let _ = decode_body(&body[..cut.index(body.len() + 1)]);
    }
}
