//! Result frames: text per frame, characters cut across frames, invalid UTF-8, odd frames, and
//! the task frames the gateway sends.

use super::*;
use nodelink_core::gateway::llm::{NodeFrameError, TaskError};
use nodelink_core::wire::llm::{ChatMessage, Task, TaskState};

/// A gateway with one node (conn 1, two slots) running one task.
fn running() -> (Gw, TaskId) {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "n", 2);
    let (t, out) = g.submit(0.0, MODEL);
    assert_eq!(sent_tasks(&out), vec![(1, t.0)]);
    (g, t)
}

#[test]
fn text_streams_frame_by_frame_then_done() {
    let (mut g, t) = running();
    assert_eq!(texts(&g.data(1.0, 1, t, "Hello".as_bytes())), vec!["Hello"]);
    assert_eq!(
        texts(&g.data(1.1, 1, t, ", 世界".as_bytes())),
        vec![", 世界"]
    );
    let out = g.finished(1.2, 1, t);
    assert_eq!(updates(&out), vec![(t, TaskUpdate::Done)]);
    assert!(stops(&out).is_empty(), "a finished task is not stopped");
    assert_eq!(g.gw.task(t), None);
    assert!(g.gw.nodes()[0].running.is_empty());
}

/// Every 2- and 3-piece cut of a text full of multibyte characters gives the user the same text,
/// in whole characters (no U+FFFD), never an empty piece.
#[test]
fn multibyte_text_split_at_every_byte_offset() {
    let text = "aé日🎉ß本\u{10FFFF}z";
    let bytes = text.as_bytes();
    let n = bytes.len();
    for i in 0..=n {
        for j in i..=n {
            let (mut g, t) = running();
            let mut got = String::new();
            for piece in [&bytes[..i], &bytes[i..j], &bytes[j..]] {
                if piece.is_empty() {
                    continue; // an empty data frame would read as finished
                }
                for out in texts(&g.data(1.0, 1, t, piece)) {
                    assert!(!out.is_empty(), "cut at {i},{j}");
                    got.push_str(&out);
                }
            }
            assert_eq!(got, text, "cut at {i},{j}");
            assert!(!got.contains('\u{FFFD}'));
            assert_eq!(updates(&g.finished(1.0, 1, t)), vec![(t, TaskUpdate::Done)]);
        }
    }
}

#[test]
fn a_character_cut_across_frames_is_carried_not_broken() {
    let (mut g, t) = running();
    // 日 is e6 97 a5: the first frame ends after e6 97.
    assert_eq!(texts(&g.data(1.0, 1, t, b"a\xe6\x97")), vec!["a"]);
    assert_eq!(texts(&g.data(1.1, 1, t, b"\xa5b")), vec!["日b"]);
    // A frame holding nothing but the start of a character gives the user nothing yet.
    assert!(g.data(1.2, 1, t, b"\xf0").is_empty());
    assert_eq!(texts(&g.data(1.3, 1, t, b"\x9f\x8e\x89")), vec!["🎉"]);
}

#[test]
fn invalid_utf8_fails_the_task_and_stops_it() {
    let (mut g, t) = running();
    g.data(1.0, 1, t, b"ok");
    let out = g.data(1.1, 1, t, b"a\xffb");
    assert_eq!(stops(&out), vec![(1, t.0)]);
    assert_eq!(
        updates(&out),
        vec![(t, TaskUpdate::Failed(TaskError::InvalidUtf8))]
    );
    assert!(events(&out).contains(&LlmGatewayEvent::PeerMisbehaved {
        conn: ConnId(1),
        error: NodeFrameError::InvalidUtf8 { id: t.0 }
    }));
    // A carried start that the next frame does not continue is invalid too.
    let (mut g, t) = running();
    g.data(1.0, 1, t, b"\xe6");
    let out = g.data(1.1, 1, t, b"x");
    assert_eq!(
        updates(&out),
        vec![(t, TaskUpdate::Failed(TaskError::InvalidUtf8))]
    );
}

#[test]
fn a_task_finished_inside_a_character_fails_without_a_stop() {
    let (mut g, t) = running();
    assert_eq!(texts(&g.data(1.0, 1, t, b"ab\xe6\x97")), vec!["ab"]);
    let out = g.finished(1.1, 1, t);
    assert_eq!(
        updates(&out),
        vec![(t, TaskUpdate::Failed(TaskError::InvalidUtf8))]
    );
    assert!(stops(&out).is_empty());
    assert!(g.gw.nodes()[0].running.is_empty());
}

#[test]
fn odd_frames_are_reported_and_count_as_life() {
    let (mut g, t) = running();
    for len in 0..4 {
        let out = g.frame(20.0, 1, WsFrame::Binary(vec![0; len]));
        assert_eq!(
            events(&out),
            vec![LlmGatewayEvent::PeerMisbehaved {
                conn: ConnId(1),
                error: NodeFrameError::TooShort { len }
            }]
        );
    }
    // A text frame that is not the heartbeat (JSON with fields the dialect does not define).
    let out = g.frame(
        25.0,
        1,
        WsFrame::Text(r#"{"id":1,"extra":true}"#.to_owned()),
    );
    assert_eq!(
        events(&out),
        vec![LlmGatewayEvent::PeerMisbehaved {
            conn: ConnId(1),
            error: NodeFrameError::UnexpectedText { len: 21 }
        }]
    );
    // Alive until 30 s after that last frame.
    assert!(g.timeout(54.999).is_empty());
    assert_eq!(closes(&g.timeout(55.0)), vec![(1, 4000, "Bye".to_owned())]);
    assert_eq!(
        g.gw.task(t),
        Some(nodelink_core::gateway::llm::TaskView::Queued)
    );
}

fn task_frame(out: &[LlmGatewayOutput]) -> String {
    match out
        .iter()
        .find(|o| matches!(o, LlmGatewayOutput::Send { .. }))
    {
        Some(LlmGatewayOutput::Send {
            frame: WsFrame::Text(text),
            ..
        }) => support::text(text.as_bytes()),
        other => panic!("no task frame: {other:?}"),
    }
}

#[test]
fn the_task_frame_with_defaults() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "n", 1);
    let (t, out) = g.submit(12.0, MODEL);
    let frame = task_frame(&out);
    insta::assert_snapshot!("gwllm_task_defaults", frame);
    // What the node reads: every field the original nodes need.
    let ServerFrame::Task(task) = decode_server_text(&frame).unwrap() else {
        panic!()
    };
    assert_eq!(
        task,
        Task {
            state: TaskState::Pending,
            id: t.0,
            system: Some(String::new()),
            messages: vec![ChatMessage::new("user", "hi")],
            max_new_tokens: Some(50),
            temperature: Some(0.0),
            created_at: Some(1_700_000_012),
        }
    );
}

#[test]
fn the_task_frame_with_everything() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "n", 1);
    let now = g.at(0.0);
    g.gw.submit(
        now,
        MODEL,
        ChatRequest {
            system: Some("You are Buddy.".to_owned()),
            messages: vec![
                ChatMessage::new("user", "hi"),
                ChatMessage::new("assistant", "Hello! How can I help?"),
                ChatMessage::new("user", "Say \"hi\" in 日本語"),
            ],
            max_new_tokens: Some(200),
            temperature: Some(0.7),
        },
    );
    insta::assert_snapshot!("gwllm_task_full", task_frame(&g.drain()));
}

#[test]
fn a_temperature_json_cannot_carry_is_sent_as_the_default() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "n", 1);
    let now = g.at(0.0);
    g.gw.submit(
        now,
        MODEL,
        ChatRequest {
            temperature: Some(f64::NAN),
            ..request("hi")
        },
    );
    let frame = task_frame(&g.drain());
    assert!(frame.contains(r#""temperature":0,"#), "{frame}");
}
