//! Splitting a command result under the per-field cap and reassembling it (core/src/chunk.rs).
mod support;

use nodelink_core::chunk::{
    split, ChunkError, Reassembler, ReassemblyLimits, DEFAULT_FIELD_CAP, MIN_FIELD_CAP,
};
use nodelink_core::wire::dto::{CommandError, CommandResultDto, ErrorCode};
use proptest::prelude::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers

fn ok_result(value: Value) -> CommandResultDto {
    CommandResultDto {
        command_id: "cmd_1".to_owned(),
        ok: true,
        result: Some(value),
        error: None,
        duration_ms: Some(234),
        part_index: None,
        is_last: None,
        protocol_version: None,
    }
}

fn failed_result(error: CommandError) -> CommandResultDto {
    CommandResultDto {
        ok: false,
        result: None,
        error: Some(error),
        ..ok_result(Value::Null)
    }
}

fn part(index: u32, is_last: bool, result: Value) -> CommandResultDto {
    CommandResultDto {
        part_index: Some(index),
        is_last: Some(is_last),
        duration_ms: None,
        ..ok_result(result)
    }
}

/// The parts as the wire shows them, one JSON text per line.
fn lines(parts: &[CommandResultDto]) -> String {
    let texts: Vec<String> = parts
        .iter()
        .map(|part| support::text(&serde_json::to_vec(part).expect("a DTO serializes")))
        .collect();
    texts.join("\n")
}

fn json_len<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).expect("serializes").len()
}

/// Checks the invariants every split must keep.
fn assert_valid_parts(whole: &CommandResultDto, parts: &[CommandResultDto], cap: usize) {
    assert!(!parts.is_empty());
    for part in parts {
        assert_eq!(part.command_id, whole.command_id);
        assert_eq!(part.ok, whole.ok);
        let Value::Object(fields) = serde_json::to_value(part).expect("serializes") else {
            panic!("a DTO serializes to an object");
        };
        for (name, value) in &fields {
            let len = json_len(value);
            assert!(
                len <= cap,
                "field {name} of part {:?} is {len} bytes > cap {cap}",
                part.part_index
            );
        }
    }
    if parts.len() == 1 {
        assert_eq!(&parts[0], whole, "a result that fits travels unchanged");
        return;
    }
    for (at, part) in parts.iter().enumerate() {
        assert_eq!(
            part.part_index,
            Some(at as u32),
            "partIndex is contiguous from 0"
        );
        assert_eq!(
            part.is_last,
            Some(at + 1 == parts.len()),
            "exactly the final part is last"
        );
        if at > 0 {
            assert_eq!(part.duration_ms, None);
            assert_eq!(part.protocol_version, None);
            assert!(
                part.result.is_some() || part.error.is_some(),
                "every later part carries text"
            );
        }
    }
    assert_eq!(parts[0].duration_ms, whole.duration_ms);
    assert_eq!(parts[0].protocol_version, whole.protocol_version);
}

fn reassemble_in(order: impl IntoIterator<Item = CommandResultDto>) -> CommandResultDto {
    let limits = ReassemblyLimits {
        max_parts: u32::MAX,
        max_total_bytes: usize::MAX,
    };
    let mut reassembler = Reassembler::new("cmd_1", limits);
    let mut done = None;
    for part in order {
        assert!(done.is_none(), "completion comes with the final part only");
        done = reassembler.push(part).expect("valid parts reassemble");
    }
    done.expect("the parts complete the result")
}

/// Splits `whole`, checks the invariants and that reassembly (in order) is the identity.
fn split_checked(whole: &CommandResultDto, cap: usize) -> Vec<CommandResultDto> {
    let parts = split(whole, cap).expect("the result splits");
    assert_valid_parts(whole, &parts, cap);
    assert_eq!(&reassemble_in(parts.clone()), whole);
    parts
}

/// JSON-escaped cost of one character, as serde_json writes it.
fn char_cost(c: char) -> usize {
    json_len(&c.to_string()) - 2
}

/// For a result `{"t": s}`, checks every part's slice is as long as the cap allows.
fn assert_slices_are_maximal(s: &str, parts: &[CommandResultDto], cap: usize) {
    let mut consumed = 0;
    for part in parts {
        let Some(Value::Object(map)) = &part.result else {
            panic!("each part carries t")
        };
        let Some(Value::String(slice)) = map.get("t") else {
            panic!("each part carries t")
        };
        assert!(s[consumed..].starts_with(slice.as_str()));
        consumed += slice.len();
        if let Some(next) = s[consumed..].chars().next() {
            let used = json_len(part.result.as_ref().expect("has result"));
            assert!(
                used + char_cost(next) > cap,
                "part {:?} could take {next:?}",
                part.part_index
            );
        }
    }
    assert_eq!(consumed, s.len());
}

// ---------------------------------------------------------------------------------------------
// Worked examples (pinned in docs/protocol.md, section 6.4)

#[test]
fn result_that_fits_is_one_message_without_part_fields() {
    let whole = ok_result(json!({"text": "hello"}));
    let parts = split_checked(&whole, 64);
    assert_eq!(parts.len(), 1);
    insta::assert_snapshot!("chunk_fits_one_message_cap_64", lines(&parts));
}

#[test]
fn long_string_is_cut_across_parts_at_cap_64() {
    let mut whole = ok_result(json!({
        "text": "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs."
    }));
    whole.protocol_version = Some("2026-04-01".to_owned());
    let parts = split_checked(&whole, 64);
    assert_eq!(parts.len(), 2);
    insta::assert_snapshot!("chunk_long_string_cap_64", lines(&parts));
}

#[test]
fn nested_objects_and_arrays_mirror_only_the_continuing_paths() {
    let whole = ok_result(json!({
        "count": 2,
        "files": [
            {"name": "a.txt", "body": "alpha alpha alpha alpha alpha alpha alpha alpha alpha"},
            {"name": "b.txt", "body": "bravo bravo bravo bravo bravo bravo bravo bravo bravo bravo bravo"}
        ]
    }));
    // The skeleton alone is 65 bytes: {"count":2,"files":[{"body":"","name":""},{..}]}.
    assert_eq!(
        split(&whole, 64),
        Err(ChunkError::CapTooSmall {
            field: "result",
            needed: 65,
            cap: 64
        })
    );
    let parts = split_checked(&whole, 96);
    assert!(parts.len() >= 3);
    insta::assert_snapshot!("chunk_nested_cap_96", lines(&parts));
}

#[test]
fn long_error_message_and_details_are_cut_and_keep_the_code() {
    let whole = failed_result(CommandError {
        code: ErrorCode::InternalError,
        message: "renderer crashed while drawing page 3".to_owned(),
        details: Some(json!({"exitCode": 139, "stderr": "segfault at 0x0\ncore dumped\n"})),
        retry_after_ms: None,
    });
    let parts = split_checked(&whole, 96);
    for part in &parts {
        assert_eq!(
            part.error.as_ref().map(|e| &e.code),
            Some(&ErrorCode::InternalError)
        );
    }
    insta::assert_snapshot!("chunk_error_cap_96", lines(&parts));
}

#[test]
fn escapes_and_multibyte_text_are_cut_between_characters() {
    let whole = ok_result(json!("Say \"hi\" \\ tab\t bell\u{7} 日本語 🎉🎉 done"));
    let parts = split_checked(&whole, 32);
    insta::assert_snapshot!("chunk_escapes_multibyte_cap_32", lines(&parts));
}

#[test]
fn many_medium_strings_whose_sum_exceeds_the_cap_are_packed_greedily() {
    let whole = ok_result(json!({"a": "a".repeat(40), "b": "b".repeat(40), "c": "c".repeat(40)}));
    let parts = split_checked(&whole, 64);
    // 120 bytes of text, a 22-byte skeleton in part 0 and ~8 bytes of path per later part.
    assert_eq!(parts.len(), 3);
    insta::assert_snapshot!("chunk_medium_strings_cap_64", lines(&parts));
}

// ---------------------------------------------------------------------------------------------
// Cutting

#[test]
fn multibyte_text_is_cut_on_a_boundary_at_every_cap() {
    let s = "aé日🎉".repeat(12) + "z";
    let whole = ok_result(json!({"t": s}));
    for cap in MIN_FIELD_CAP..=160 {
        let parts = split_checked(&whole, cap);
        assert_slices_are_maximal(&s, &parts, cap);
    }
}

#[test]
fn escaping_heavy_text_is_measured_escaped_at_every_cap() {
    let s = "\"\\\n\u{1}\u{1f}x\t\u{7f}".repeat(10);
    let whole = ok_result(json!({"t": s}));
    for cap in MIN_FIELD_CAP..=160 {
        let parts = split_checked(&whole, cap);
        assert_slices_are_maximal(&s, &parts, cap);
    }
}

#[test]
fn strings_in_arrays_of_arrays_reassemble() {
    let whole = ok_result(json!([
        ["x".repeat(70), 1, null, "short"],
        {"deep": {"er": ["y".repeat(90), true]}},
        "z".repeat(100)
    ]));
    for cap in [45, 64, 100, 200] {
        split_checked(&whole, cap);
    }
}

#[test]
fn a_large_result_splits_at_the_default_cap() {
    let whole = ok_result(json!({"log": "0123456789abcdef".repeat(200_000)}));
    let parts = split_checked(&whole, DEFAULT_FIELD_CAP);
    assert_eq!(parts.len(), 4);
}

// ---------------------------------------------------------------------------------------------
// split errors

#[test]
fn cap_below_the_minimum_is_rejected() {
    let whole = ok_result(json!("x"));
    assert_eq!(
        split(&whole, 31),
        Err(ChunkError::CapBelowMinimum { cap: 31, min: 32 })
    );
}

#[test]
fn skeleton_over_the_cap_is_a_typed_error() {
    let whole = ok_result(json!([1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000]));
    assert_eq!(
        split(&whole, 32),
        Err(ChunkError::CapTooSmall {
            field: "result",
            needed: 41,
            cap: 32
        })
    );
}

#[test]
fn error_skeleton_over_the_cap_is_a_typed_error() {
    let whole = failed_result(CommandError {
        code: ErrorCode::Other("a_code_longer_than_the_whole_field_cap".to_owned()),
        message: "m".to_owned(),
        details: None,
        retry_after_ms: None,
    });
    assert_eq!(
        split(&whole, 48),
        Err(ChunkError::CapTooSmall {
            field: "error",
            needed: 62,
            cap: 48
        })
    );
}

#[test]
fn path_to_a_continuing_string_over_the_cap_is_a_typed_error() {
    // Part 0 fits ([""x13] is 40 bytes) but a later part needs 12 nulls before the slice.
    let mut items = vec![json!(""); 12];
    items.push(json!("x".repeat(100)));
    let whole = ok_result(Value::Array(items));
    assert_eq!(
        split(&whole, 64),
        Err(ChunkError::CapTooSmall {
            field: "result",
            needed: 65,
            cap: 64
        })
    );
}

#[test]
fn command_id_over_the_cap_is_a_typed_error() {
    let mut whole = ok_result(json!("x"));
    whole.command_id = "c".repeat(40);
    assert_eq!(
        split(&whole, 32),
        Err(ChunkError::CapTooSmall {
            field: "commandId",
            needed: 42,
            cap: 32
        })
    );
}

#[test]
fn a_result_that_is_already_a_part_is_not_split_again() {
    assert_eq!(
        split(&part(0, true, json!("x")), 64),
        Err(ChunkError::AlreadyChunked)
    );
}

// ---------------------------------------------------------------------------------------------
// Reassembler

fn reassembler() -> Reassembler {
    Reassembler::new("cmd_1", ReassemblyLimits::default())
}

#[test]
fn default_limits_are_4096_parts_and_64_mib() {
    let limits = ReassemblyLimits::default();
    assert_eq!(
        (limits.max_parts, limits.max_total_bytes),
        (4096, 64 * 1024 * 1024)
    );
}

#[test]
fn unchunked_result_passes_straight_through() {
    let whole = ok_result(json!({"text": "hello"}));
    assert_eq!(reassembler().push(whole.clone()), Ok(Some(whole)));
}

#[test]
fn parts_arriving_out_of_order_complete_on_the_last_missing_one() {
    let mut r = reassembler();
    assert_eq!(r.push(part(2, true, json!({"t": "c"}))), Ok(None));
    assert_eq!(r.push(part(0, false, json!({"t": "a", "n": 1}))), Ok(None));
    let mut whole = ok_result(json!({"t": "abc", "n": 1}));
    whole.duration_ms = None;
    assert_eq!(r.push(part(1, false, json!({"t": "b"}))), Ok(Some(whole)));
    assert_eq!(
        r.push(part(1, false, json!({"t": "b"}))),
        Err(ChunkError::AlreadyComplete)
    );
}

#[test]
fn single_part_set_completes_without_part_fields() {
    let mut whole = ok_result(json!("x"));
    whole.duration_ms = None;
    assert_eq!(
        reassembler().push(part(0, true, json!("x"))),
        Ok(Some(whole))
    );
}

#[test]
fn identical_duplicate_part_is_ignored() {
    let mut r = reassembler();
    assert_eq!(r.push(part(0, false, json!("a"))), Ok(None));
    assert_eq!(r.push(part(0, false, json!("a"))), Ok(None));
    assert_eq!(r.buffered_parts(), 1);
    assert!(matches!(r.push(part(1, true, json!("b"))), Ok(Some(_))));
}

#[test]
fn differing_duplicate_part_is_rejected_and_poisons() {
    let mut r = reassembler();
    r.push(part(0, false, json!("a"))).expect("first part");
    assert_eq!(
        r.push(part(0, false, json!("b"))),
        Err(ChunkError::DuplicatePart { part_index: 0 })
    );
    assert_eq!(
        r.push(part(1, true, json!("b"))),
        Err(ChunkError::AlreadyFailed)
    );
}

#[test]
fn mismatched_command_id_is_rejected() {
    let mut other = part(0, false, json!("a"));
    other.command_id = "cmd_2".to_owned();
    assert_eq!(
        reassembler().push(other),
        Err(ChunkError::CommandIdMismatch {
            expected: "cmd_1".into(),
            found: "cmd_2".into()
        })
    );
}

#[test]
fn missing_part_index_after_parts_is_rejected() {
    let mut r = reassembler();
    r.push(part(0, false, json!("a"))).expect("first part");
    assert_eq!(
        r.push(ok_result(json!("b"))),
        Err(ChunkError::MissingPartIndex)
    );
}

#[test]
fn is_last_without_part_index_is_rejected() {
    let mut lone = ok_result(json!("a"));
    lone.is_last = Some(true);
    assert_eq!(reassembler().push(lone), Err(ChunkError::MissingPartIndex));
}

#[test]
fn second_is_last_is_rejected() {
    let mut r = reassembler();
    r.push(part(3, true, json!("d"))).expect("last part");
    assert_eq!(
        r.push(part(2, true, json!("c"))),
        Err(ChunkError::SecondLast {
            last_index: 3,
            part_index: 2
        })
    );
}

#[test]
fn part_beyond_the_last_index_is_rejected() {
    let mut r = reassembler();
    r.push(part(1, true, json!("b"))).expect("last part");
    assert_eq!(
        r.push(part(2, false, json!("c"))),
        Err(ChunkError::BeyondLast {
            part_index: 2,
            last_index: 1
        })
    );
}

#[test]
fn last_part_below_an_already_buffered_index_is_rejected() {
    let mut r = reassembler();
    r.push(part(5, false, json!("f"))).expect("a part");
    assert_eq!(
        r.push(part(2, true, json!("c"))),
        Err(ChunkError::BeyondLast {
            part_index: 5,
            last_index: 2
        })
    );
}

#[test]
fn part_index_at_the_part_limit_is_rejected() {
    let mut r = Reassembler::new(
        "cmd_1",
        ReassemblyLimits {
            max_parts: 4,
            ..Default::default()
        },
    );
    r.push(part(3, false, json!("d")))
        .expect("index 3 is below 4");
    assert_eq!(
        r.push(part(4, true, json!("e"))),
        Err(ChunkError::TooManyParts {
            part_index: 4,
            max_parts: 4
        })
    );
}

#[test]
fn parts_over_the_byte_limit_are_rejected() {
    let limits = ReassemblyLimits {
        max_total_bytes: 20,
        ..Default::default()
    };
    let mut r = Reassembler::new("cmd_1", limits);
    r.push(part(0, false, json!("0123456789")))
        .expect("12 bytes");
    assert_eq!(r.buffered_bytes(), 12);
    assert_eq!(
        r.push(part(1, false, json!("0123456789"))),
        Err(ChunkError::TooManyBytes {
            max_total_bytes: 20
        })
    );
    assert_eq!(
        r.buffered_parts(),
        0,
        "a failed reassembler frees its buffers"
    );
}

#[test]
fn later_part_with_different_ok_is_rejected() {
    let mut r = reassembler();
    r.push(part(0, false, json!("a"))).expect("first part");
    let mut flipped = part(1, true, json!("b"));
    flipped.ok = false;
    assert_eq!(
        r.push(flipped),
        Err(ChunkError::OkMismatch { part_index: 1 })
    );
}

#[test]
fn later_part_with_different_error_code_is_rejected() {
    let error = |code, message: &str| CommandError {
        code,
        message: message.to_owned(),
        details: None,
        retry_after_ms: None,
    };
    let mut first = part(0, false, Value::Null);
    (first.ok, first.result, first.error) = (false, None, Some(error(ErrorCode::Timeout, "a")));
    let mut second = part(1, true, Value::Null);
    (second.ok, second.result, second.error) = (false, None, Some(error(ErrorCode::Busy, "b")));
    let mut r = reassembler();
    r.push(first).expect("first part");
    assert_eq!(
        r.push(second),
        Err(ChunkError::ErrorCodeMismatch { part_index: 1 })
    );
}

fn push_pair(first: Value, second: Value) -> Result<Option<CommandResultDto>, ChunkError> {
    let mut r = reassembler();
    r.push(part(0, false, first)).expect("first part");
    r.push(part(1, true, second))
}

#[test]
fn later_part_key_missing_from_part_0_is_rejected() {
    assert_eq!(
        push_pair(json!({"a": "x"}), json!({"a~b/c": "y"})),
        Err(ChunkError::UnknownPath {
            part_index: 1,
            path: "/result/a~0b~1c".into()
        })
    );
}

#[test]
fn later_part_array_longer_than_part_0s_is_rejected() {
    assert_eq!(
        push_pair(json!({"a": ["x"]}), json!({"a": [null, "y"]})),
        Err(ChunkError::UnknownPath {
            part_index: 1,
            path: "/result/a/1".into()
        })
    );
}

#[test]
fn later_part_result_without_a_result_in_part_0_is_rejected() {
    let mut first = part(0, false, Value::Null);
    first.result = None;
    let mut r = reassembler();
    r.push(first).expect("first part");
    assert_eq!(
        r.push(part(1, true, json!("y"))),
        Err(ChunkError::UnknownPath {
            part_index: 1,
            path: "/result".into()
        })
    );
}

#[test]
fn later_part_string_where_part_0_has_a_number_is_rejected() {
    assert_eq!(
        push_pair(json!({"a": [1, "x"]}), json!({"a": ["y"]})),
        Err(ChunkError::NotAString {
            part_index: 1,
            path: "/result/a/0".into()
        })
    );
}

#[test]
fn later_part_number_is_rejected() {
    assert_eq!(
        push_pair(json!({"a": "x"}), json!({"a": 5})),
        Err(ChunkError::ShapeMismatch {
            part_index: 1,
            path: "/result/a".into()
        })
    );
}

#[test]
fn later_part_object_where_part_0_has_a_string_is_rejected() {
    assert_eq!(
        push_pair(json!({"a": "x"}), json!({"a": {"b": "y"}})),
        Err(ChunkError::ShapeMismatch {
            part_index: 1,
            path: "/result/a".into()
        })
    );
}

#[test]
fn nulls_in_later_parts_add_nothing() {
    let mut whole = ok_result(json!({"a": ["x", 2, "z"], "b": null}));
    whole.duration_ms = None;
    assert_eq!(
        push_pair(
            json!({"a": ["x", 2, ""], "b": null}),
            json!({"a": [null, null, "z"], "b": null})
        ),
        Ok(Some(whole))
    );
}

#[test]
fn error_messages_name_the_message_the_field_and_the_expectation() {
    let err = ChunkError::UnknownPath {
        part_index: 2,
        path: "/result/a".into(),
    };
    assert_eq!(
        err.to_string(),
        "CommandResult part 2: /result/a does not exist in part 0"
    );
}

// ---------------------------------------------------------------------------------------------
// Properties

fn arb_string() -> impl Strategy<Value = String> {
    let tricky = vec![
        '"', '\\', '\n', '\t', '\u{1}', '\u{1f}', '\u{7f}', 'a', 'é', '日', '🎉',
    ];
    prop_oneof![
        prop::collection::vec(any::<char>(), 0..160).prop_map(String::from_iter),
        prop::collection::vec(prop::sample::select(tricky), 0..160).prop_map(String::from_iter),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        arb_string().prop_map(Value::String),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\"\\\\é]{0,5}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn arb_error() -> impl Strategy<Value = CommandError> {
    let code = prop_oneof![
        Just(ErrorCode::InternalError),
        "[a-z_]{1,20}".prop_map(ErrorCode::Other)
    ];
    (
        code,
        arb_string(),
        proptest::option::of(arb_json()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(code, message, details, retry_after_ms)| CommandError {
            code,
            message,
            details,
            retry_after_ms,
        })
}

fn arb_result() -> impl Strategy<Value = CommandResultDto> {
    (
        any::<bool>(),
        proptest::option::of(arb_json()),
        proptest::option::of(arb_error()),
        proptest::option::of(any::<u64>()),
        proptest::option::of("[0-9-]{10}"),
    )
        .prop_map(
            |(ok, result, error, duration_ms, protocol_version)| CommandResultDto {
                command_id: "cmd_1".to_owned(),
                ok,
                result,
                error,
                duration_ms,
                part_index: None,
                is_last: None,
                protocol_version,
            },
        )
}

/// The JSON length of `value` with every string emptied (computed independently of the crate).
fn skeleton(value: &Value) -> usize {
    fn empty(value: &Value) -> Value {
        match value {
            Value::String(_) => json!(""),
            Value::Array(items) => Value::Array(items.iter().map(empty).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), empty(v))).collect())
            }
            other => other.clone(),
        }
    }
    json_len(&empty(value))
}

/// A deterministic shuffle driven by `seed`.
fn shuffled<T>(mut items: Vec<T>, mut seed: u64) -> Vec<T> {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (seed >> 33) as usize % (i + 1));
    }
    items
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn split_then_reassemble_is_the_identity(
        whole in arb_result(),
        extra in 0usize..400,
        seed in any::<u64>(),
    ) {
        let result_skeleton = whole.result.as_ref().map_or(0, skeleton);
        let error_skeleton = whole.error.as_ref().map_or(0, |e| {
            let mut stub = e.clone();
            stub.message.clear();
            stub.details = None;
            json_len(&stub) + e.details.as_ref().map_or(0, skeleton)
        });
        // A later part's path costs at most 5/3 of the skeleton (nulls instead of ""), plus a char.
        let cap = 64.max(2 * result_skeleton.max(error_skeleton) + 16) + extra;
        let parts = split(&whole, cap).expect("a cap of twice the skeleton always suffices");
        assert_valid_parts(&whole, &parts, cap);
        prop_assert_eq!(&reassemble_in(parts.clone()), &whole);
        prop_assert_eq!(&reassemble_in(shuffled(parts, seed)), &whole);
    }

    #[test]
    fn split_at_any_cap_either_keeps_the_cap_or_says_it_is_too_small(
        whole in arb_result(),
        cap in 32usize..200,
    ) {
        match split(&whole, cap) {
            Ok(parts) => {
                assert_valid_parts(&whole, &parts, cap);
                prop_assert_eq!(&reassemble_in(parts), &whole);
            }
            Err(ChunkError::CapTooSmall { needed, cap: reported, .. }) => {
                prop_assert_eq!(reported, cap);
                prop_assert!(needed > cap);
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn reassembler_never_panics_on_arbitrary_parts(
        parts in prop::collection::vec(
            (0u32..6, proptest::option::of(any::<bool>()), proptest::option::of(arb_json()), any::<bool>()),
            1..8,
        ),
    ) {
        let mut r = Reassembler::new("cmd_1", ReassemblyLimits { max_parts: 5, max_total_bytes: 4096 });
        for (index, is_last, result, ok) in parts {
            let mut p = part(index, is_last.unwrap_or(false), Value::Null);
            (p.is_last, p.result, p.ok) = (is_last, result, ok);
            let _ = r.push(p);
        }
    }
}
