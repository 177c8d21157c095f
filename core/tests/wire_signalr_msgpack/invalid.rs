//! Invalid message bodies of the MessagePack hub codec, each with the exact error it yields.

use super::*;

#[test]
fn an_empty_body_is_malformed() {
    assert_syntax(decode(""));
}

#[test]
fn a_body_that_is_not_an_array_is_refused() {
    assert_eq!(
        decode("80"),
        Err(wrong("hub", "body", "a MessagePack array"))
    );
    assert_eq!(
        decode("06"),
        Err(wrong("hub", "body", "a MessagePack array"))
    );
}

#[test]
fn an_empty_array_misses_the_type() {
    assert_eq!(decode("90"), Err(missing("hub", "type")));
}

#[test]
fn a_type_that_is_not_an_integer_is_refused() {
    assert_eq!(decode("91 a1 31"), Err(wrong("hub", "type", "an integer")));
    assert_eq!(decode("91 c0"), Err(wrong("hub", "type", "an integer")));
}

#[test]
fn unknown_types_are_ignorable() {
    for (hex, message_type) in [
        ("91 00", 0),
        ("91 0a", 10),
        ("91 63", 99),
        ("91 ff", -1),
        ("93 0a 80 c0", 10),
        ("91 cf ff ff ff ff ff ff ff ff", i64::MAX),
    ] {
        let error = decode(hex).expect_err(hex);
        assert_eq!(error, DecodeError::UnknownMessageType { message_type });
        assert!(error.is_ignorable() && !error.is_fatal());
    }
}

#[test]
fn an_unknown_type_with_malformed_elements_is_malformed() {
    assert_syntax(decode("92 0a db ff ff ff ff"));
}

#[test]
fn bytes_after_the_array_are_malformed() {
    assert_syntax(decode("91 06 00"));
    assert_syntax(decode("93 05 80 a1 31 c0"));
}

#[test]
fn invocation_missing_target_or_arguments() {
    assert_eq!(decode("93 01 80 c0"), Err(missing("Invocation", "target")));
    assert_eq!(
        decode("94 01 80 c0 a1 54"),
        Err(missing("Invocation", "arguments"))
    );
    assert_eq!(
        decode("92 01 80"),
        Err(missing("Invocation", "invocationId"))
    );
    assert_eq!(decode("91 01"), Err(missing("Invocation", "headers")));
}

#[test]
fn invocation_target_must_be_a_non_empty_string() {
    assert_eq!(
        decode("96 01 80 c0 c0 90 90"),
        Err(wrong("Invocation", "target", "a string"))
    );
    assert_eq!(
        decode("96 01 80 c0 2a 90 90"),
        Err(wrong("Invocation", "target", "a string"))
    );
    assert_invalid(decode("96 01 80 c0 a0 90 90"), "Invocation", "target");
}

#[test]
fn invocation_target_must_be_utf8() {
    assert_invalid(decode("96 01 80 c0 a2 c3 28 90 90"), "Invocation", "target");
}

#[test]
fn invocation_id_must_be_a_string_or_nil() {
    assert_eq!(
        decode("96 01 80 2a a1 54 90 90"),
        Err(wrong("Invocation", "invocationId", "a string or nil"))
    );
}

#[test]
fn invocation_arguments_must_be_an_array() {
    assert_eq!(
        decode("96 01 80 c0 a1 54 2a 90"),
        Err(wrong("Invocation", "arguments", "an array"))
    );
    assert_eq!(
        decode("96 01 80 c0 a1 54 c0 90"),
        Err(wrong("Invocation", "arguments", "an array"))
    );
}

#[test]
fn invocation_stream_ids_must_be_an_array_of_non_empty_strings() {
    assert_eq!(
        decode("96 01 80 c0 a1 54 90 80"),
        Err(wrong("Invocation", "streamIds", "an array of strings"))
    );
    assert_eq!(
        decode("96 01 80 c0 a1 54 90 91 01"),
        Err(wrong("Invocation", "streamIds", "an array of strings"))
    );
    assert_invalid(
        decode("96 01 80 c0 a1 54 90 91 a0"),
        "Invocation",
        "streamIds",
    );
}

#[test]
fn headers_must_be_a_map_of_non_empty_strings() {
    let expected = "a map of strings to strings";
    assert_eq!(
        decode("93 05 c0 a1 31"),
        Err(wrong("CancelInvocation", "headers", expected))
    );
    assert_eq!(
        decode("93 05 90 a1 31"),
        Err(wrong("CancelInvocation", "headers", expected))
    );
    assert_eq!(
        decode("93 05 81 a1 6b 01 a1 31"),
        Err(wrong("CancelInvocation", "headers", expected))
    );
    assert_eq!(
        decode("93 05 81 01 a1 76 a1 31"),
        Err(wrong("CancelInvocation", "headers", expected))
    );
    assert_invalid(
        decode("93 05 81 a0 a1 76 a1 31"),
        "CancelInvocation",
        "headers",
    );
    assert_invalid(
        decode("93 05 81 a1 6b a0 a1 31"),
        "CancelInvocation",
        "headers",
    );
}

#[test]
fn stream_invocation_requires_an_invocation_id() {
    assert_eq!(
        decode("96 04 80 c0 a1 54 90 90"),
        Err(missing("StreamInvocation", "invocationId"))
    );
    assert_invalid(
        decode("96 04 80 a0 a1 54 90 90"),
        "StreamInvocation",
        "invocationId",
    );
}

#[test]
fn stream_item_requires_an_id_and_an_item() {
    assert_eq!(decode("93 02 80 a1 31"), Err(missing("StreamItem", "item")));
    assert_eq!(
        decode("94 02 80 c0 2a"),
        Err(missing("StreamItem", "invocationId"))
    );
    assert_eq!(
        decode("94 02 80 01 2a"),
        Err(wrong("StreamItem", "invocationId", "a string"))
    );
}

#[test]
fn completion_requires_an_id_and_a_result_kind() {
    assert_eq!(
        decode("92 03 80"),
        Err(missing("Completion", "invocationId"))
    );
    assert_eq!(
        decode("93 03 80 a1 31"),
        Err(missing("Completion", "resultKind"))
    );
    assert_eq!(
        decode("94 03 80 a1 31 a1 32"),
        Err(wrong("Completion", "resultKind", "an integer"))
    );
}

#[test]
fn completion_result_kind_outside_1_to_3_is_invalid() {
    for hex in [
        "94 03 80 a1 31 00",
        "94 03 80 a1 31 04",
        "94 03 80 a1 31 ff",
    ] {
        assert_invalid(decode(hex), "Completion", "resultKind");
    }
}

#[test]
fn completion_error_and_result_must_be_present_when_announced() {
    assert_eq!(
        decode("94 03 80 a1 31 01"),
        Err(missing("Completion", "error"))
    );
    assert_eq!(
        decode("94 03 80 a1 31 03"),
        Err(missing("Completion", "result"))
    );
    assert_eq!(
        decode("95 03 80 a1 31 01 c0"),
        Err(wrong("Completion", "error", "a string"))
    );
}

#[test]
fn cancel_invocation_requires_an_id() {
    assert_eq!(
        decode("92 05 80"),
        Err(missing("CancelInvocation", "invocationId"))
    );
    assert_invalid(decode("93 05 80 a0"), "CancelInvocation", "invocationId");
}

#[test]
fn close_fields_have_their_types() {
    assert_eq!(decode("91 07"), Err(missing("Close", "error")));
    assert_eq!(
        decode("92 07 2a"),
        Err(wrong("Close", "error", "a string or nil"))
    );
    assert_eq!(
        decode("93 07 c0 c0"),
        Err(wrong("Close", "allowReconnect", "a boolean"))
    );
    assert_eq!(
        decode("93 07 c0 01"),
        Err(wrong("Close", "allowReconnect", "a boolean"))
    );
}

#[test]
fn ack_and_sequence_ids_are_non_negative_integers() {
    assert_eq!(decode("91 08"), Err(missing("Ack", "sequenceId")));
    assert_eq!(decode("91 09"), Err(missing("Sequence", "sequenceId")));
    assert_eq!(
        decode("92 08 a1 31"),
        Err(wrong("Ack", "sequenceId", "a non-negative integer"))
    );
    assert_eq!(
        decode("92 09 cb 3f f0 00 00 00 00 00 00"),
        Err(wrong("Sequence", "sequenceId", "a non-negative integer"))
    );
    assert_invalid(decode("92 08 ff"), "Ack", "sequenceId");
    assert_invalid(decode("92 09 d0 80"), "Sequence", "sequenceId");
}

#[test]
fn a_huge_declared_string_length_is_refused_without_allocating() {
    // str32 announcing 4 GiB - 1 with one byte present, in the target and in a payload.
    assert_syntax(decode("96 01 80 c0 db ff ff ff ff 54 90 90"));
    assert_syntax(decode("94 02 80 a1 31 db ff ff ff ff 54"));
    assert_syntax(decode("94 02 80 a1 31 c6 ff ff ff ff 00"));
    assert_syntax(decode("94 02 80 a1 31 c9 ff ff ff ff 01 00"));
}

#[test]
fn a_huge_declared_element_count_is_refused_without_looping() {
    assert_syntax(decode("dd ff ff ff ff 06"));
    assert_syntax(decode("96 01 80 c0 a1 54 dd ff ff ff ff 90"));
    assert_syntax(decode("96 01 80 c0 a1 54 90 dd ff ff ff ff"));
    assert_syntax(decode("93 05 df ff ff ff ff a1 31"));
    assert_syntax(decode("94 02 80 a1 31 df ff ff ff ff"));
}

#[test]
fn truncated_bodies_are_malformed() {
    let full = bytes("96 01 81 a1 6b a1 76 a1 31 a1 54 91 92 2a a2 68 69 91 a1 32");
    assert!(decode_body(&full).is_ok());
    for cut in 0..full.len() {
        let result = decode_body(&full[..cut]);
        assert!(
            matches!(
                result,
                Err(DecodeError::Syntax { .. } | DecodeError::MissingField { .. })
            ),
            "cut at {cut}: {result:?}"
        );
    }
}

#[test]
fn the_reserved_marker_is_malformed() {
    assert_syntax(decode("94 02 80 a1 31 c1"));
    assert_syntax(decode("94 02 80 a1 31 91 c1"));
}

#[test]
fn a_payload_nested_beyond_the_limit_is_invalid() {
    let mut body = bytes("94 02 80 a1 31");
    body.extend(std::iter::repeat_n(0x91, MAX_PAYLOAD_DEPTH + 1));
    body.push(0xc0);
    assert_invalid(decode_body(&body), "StreamItem", "item");
}

#[test]
fn a_very_deep_payload_does_not_overflow_the_stack() {
    let mut body = bytes("94 02 80 a1 31");
    body.extend(std::iter::repeat_n(0x91, 1_000_000));
    body.push(0xc0);
    assert_invalid(decode_body(&body), "StreamItem", "item");
}

#[test]
fn errors_name_the_message_and_field() {
    let error = decode("96 01 80 c0 a1 54 dd ff ff ff ff 90").expect_err("malformed");
    let text = error.to_string();
    assert!(
        text.contains("Invocation") && text.contains("arguments"),
        "{text}"
    );
    assert!(!error.is_fatal() && !error.is_ignorable());
}
