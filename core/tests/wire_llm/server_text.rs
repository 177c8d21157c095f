//! Decoding server text frames: tasks, stops, and every way they can be wrong.

use super::*;

fn task_error(text: &str) -> ServerFrameError {
    decode_server_text(text).expect_err("the frame is invalid")
}

fn invalid_value(e: &ServerFrameError, field: &str, id: Option<u32>) -> bool {
    matches!(e, ServerFrameError::InvalidValue { field: f, id: i, .. } if f == field && *i == id)
}

fn wrong_type(e: &ServerFrameError, field: &str, id: Option<u32>) -> bool {
    matches!(e, ServerFrameError::WrongType { field: f, id: i, .. } if f == field && *i == id)
}

fn missing(e: &ServerFrameError, frame: &str, field: &str, id: Option<u32>) -> bool {
    matches!(e, ServerFrameError::MissingField { frame: fr, field: f, id: i }
        if *fr == frame && f == field && *i == id)
}

#[test]
fn task_decodes_the_minimal_frame_with_defaults() {
    let frame = r#"{"id":7,"messages":[{"role":"user","content":"hi"}]}"#;
    let Ok(ServerFrame::Task(task)) = decode_server_text(frame) else {
        panic!("a task");
    };
    assert_eq!(task, minimal_task());
    assert_eq!(task.effective_max_new_tokens(), 50);
    assert_eq!(task.effective_temperature(), 0.0);
}

#[test]
fn task_ignores_unknown_fields_and_reads_null_as_absent() {
    let frame = r#"{"state":0,"id":7,"system":null,"node":{"name":"x","currentTasks":{}},
        "messages":[{"role":"user","content":"hi","ts":1}],"max_new_tokens":null,
        "temperature":null,"created_at":null,"future":[1,2]}"#;
    assert_eq!(
        decode_server_text(frame),
        Ok(ServerFrame::Task(minimal_task()))
    );
}

#[test]
fn task_accepts_every_state() {
    for (n, state) in [
        (0, TaskState::Pending),
        (1, TaskState::Running),
        (2, TaskState::Finished),
    ] {
        let frame = format!(r#"{{"state":{n},"id":7,"messages":[]}}"#);
        let Ok(ServerFrame::Task(task)) = decode_server_text(&frame) else {
            panic!("a task");
        };
        assert_eq!(task.state, state);
        assert_eq!(task.state.as_u8(), n);
    }
}

#[test]
fn task_id_is_read_by_value_like_json_parse() {
    for (spelling, id) in [
        ("123", 123),
        ("123.0", 123),
        ("1.23e2", 123),
        ("1e3", 1000),
        ("-0", 0),
        ("0", 0),
        ("4294967295", u32::MAX),
        ("4294967295.0", u32::MAX),
    ] {
        let frame = format!(r#"{{"id":{spelling},"messages":[]}}"#);
        assert_eq!(
            decode_server_text(&frame).map(|f| f.id()),
            Ok(id),
            "{spelling}"
        );
    }
}

#[test]
fn task_id_negative_is_invalid() {
    let err = task_error(r#"{"id":-1,"messages":[]}"#);
    assert!(invalid_value(&err, "id", None), "{err:?}");
    assert_eq!(
        err.to_string(),
        "task frame: field `id` is invalid: -1 is out of range; expected a whole number from 0 to 4294967295"
    );
}

#[test]
fn task_id_beyond_u32_is_invalid() {
    for spelling in ["4294967296", "4294967296.0", "1e10", "18446744073709551616"] {
        let err = task_error(&format!(r#"{{"id":{spelling},"messages":[]}}"#));
        assert!(invalid_value(&err, "id", None), "{spelling}: {err:?}");
    }
}

#[test]
fn task_id_with_a_fraction_is_invalid() {
    let err = task_error(r#"{"id":1.5,"messages":[]}"#);
    assert!(invalid_value(&err, "id", None), "{err:?}");
    assert!(err.to_string().contains("1.5 is not a whole number"));
}

#[test]
fn task_id_as_a_string_is_a_wrong_type() {
    let err = task_error(r#"{"id":"123","messages":[]}"#);
    assert_eq!(
        err,
        ServerFrameError::WrongType {
            frame: "task",
            field: "id".to_owned(),
            expected: "a number",
            found: "a string",
            id: None,
        }
    );
}

#[test]
fn task_without_id_is_missing_a_field() {
    let err = task_error(r#"{"messages":[]}"#);
    assert!(missing(&err, "task", "id", None), "{err:?}");
    assert_eq!(
        err.to_string(),
        "task frame is missing the required field `id`"
    );
}

#[test]
fn task_unknown_state_is_invalid_and_keeps_the_id() {
    let err = task_error(r#"{"state":3,"id":9,"messages":[]}"#);
    assert!(invalid_value(&err, "state", Some(9)), "{err:?}");
    assert_eq!(err.id(), Some(9));
    assert!(err.to_string().contains("unknown state 3"));
}

#[test]
fn task_state_as_a_string_is_a_wrong_type() {
    let err = task_error(r#"{"state":"0","id":9,"messages":[]}"#);
    assert!(wrong_type(&err, "state", Some(9)), "{err:?}");
}

#[test]
fn task_without_messages_is_missing_a_field() {
    let err = task_error(r#"{"id":9}"#);
    assert!(missing(&err, "task", "messages", Some(9)), "{err:?}");
}

#[test]
fn task_messages_not_an_array_is_a_wrong_type() {
    let err = task_error(r#"{"id":9,"messages":"hi"}"#);
    assert!(wrong_type(&err, "messages", Some(9)), "{err:?}");
}

#[test]
fn task_messages_as_strings_like_the_seed_doc_is_a_wrong_type() {
    let err = task_error(r#"{"id":9,"messages":["message1","message2"]}"#);
    assert!(wrong_type(&err, "messages[0]", Some(9)), "{err:?}");
    assert!(err
        .to_string()
        .contains("must be an object with string fields `role` and `content`, found a string"));
}

#[test]
fn task_message_without_role_is_missing_a_field() {
    let err = task_error(r#"{"id":9,"messages":[{"role":"user","content":"a"},{"content":"b"}]}"#);
    assert!(
        missing(&err, "task", "messages[1].role", Some(9)),
        "{err:?}"
    );
}

#[test]
fn task_message_content_not_a_string_is_a_wrong_type() {
    let err = task_error(r#"{"id":9,"messages":[{"role":"user","content":5}]}"#);
    assert_eq!(
        err.to_string(),
        "task frame: field `messages[0].content` must be a string, found a number"
    );
    assert!(wrong_type(&err, "messages[0].content", Some(9)));
}

#[test]
fn task_system_not_a_string_is_a_wrong_type() {
    let err = task_error(r#"{"id":9,"system":["a"],"messages":[]}"#);
    assert!(wrong_type(&err, "system", Some(9)), "{err:?}");
}

#[test]
fn task_max_new_tokens_negative_is_invalid() {
    // The original server's parseInt lets "-5" through.
    let err = task_error(r#"{"id":9,"messages":[],"max_new_tokens":-5}"#);
    assert!(invalid_value(&err, "max_new_tokens", Some(9)), "{err:?}");
}

#[test]
fn task_max_new_tokens_beyond_u32_is_invalid() {
    let err = task_error(r#"{"id":9,"messages":[],"max_new_tokens":100000000000000000000}"#);
    assert!(invalid_value(&err, "max_new_tokens", Some(9)), "{err:?}");
}

#[test]
fn task_temperature_as_a_string_is_a_wrong_type() {
    let err = task_error(r#"{"id":9,"messages":[],"temperature":"0.5"}"#);
    assert!(wrong_type(&err, "temperature", Some(9)), "{err:?}");
}

#[test]
fn task_created_at_in_milliseconds_still_fits_but_a_fraction_is_invalid() {
    let frame = r#"{"id":9,"messages":[],"created_at":1700000000123}"#;
    let Ok(ServerFrame::Task(task)) = decode_server_text(frame) else {
        panic!("a task");
    };
    assert_eq!(task.created_at, Some(1_700_000_000_123));
    let err = task_error(r#"{"id":9,"messages":[],"created_at":1700000000.5}"#);
    assert!(invalid_value(&err, "created_at", Some(9)), "{err:?}");
    let err = task_error(r#"{"id":9,"messages":[],"created_at":9007199254740992}"#);
    assert!(invalid_value(&err, "created_at", Some(9)), "{err:?}");
}

#[test]
fn stop_decodes_and_ignores_other_fields() {
    assert_eq!(
        decode_server_text(r#"{"id":123,"stop":true}"#),
        Ok(ServerFrame::Stop { id: 123 })
    );
    assert_eq!(
        decode_server_text(r#"{"stop":true,"reason":"client went away","id":5,"messages":[]}"#),
        Ok(ServerFrame::Stop { id: 5 })
    );
}

#[test]
fn stop_without_id_is_missing_a_field() {
    let err = task_error(r#"{"stop":true}"#);
    assert!(missing(&err, "stop", "id", None), "{err:?}");
}

#[test]
fn stop_not_true_is_a_wrong_type_with_the_id() {
    for stop in ["false", "1", "null", "\"yes\""] {
        let err = task_error(&format!(r#"{{"id":5,"stop":{stop}}}"#));
        assert!(wrong_type(&err, "stop", Some(5)), "{stop}: {err:?}");
    }
}

#[test]
fn stop_id_out_of_range_is_invalid() {
    let err = task_error(r#"{"id":4294967296,"stop":true}"#);
    assert!(invalid_value(&err, "id", None), "{err:?}");
}

#[test]
fn server_text_malformed_json_is_reported() {
    let err = task_error(r#"{"id":1,"messages":[}"#);
    assert!(
        matches!(&err, ServerFrameError::Malformed { detail } if detail.contains("line 1")),
        "{err:?}"
    );
    assert_eq!(err.id(), None);
}

#[test]
fn server_text_empty_is_its_own_error() {
    assert_eq!(task_error(""), ServerFrameError::Empty);
}

#[test]
fn server_text_not_an_object_is_reported() {
    assert_eq!(
        task_error("[1,2]"),
        ServerFrameError::NotAnObject { found: "an array" }
    );
    assert_eq!(
        task_error("42"),
        ServerFrameError::NotAnObject { found: "a number" }
    );
}
