//! Tasks, results and stops; what a misbehaving server gets.

use nodelink_core::node::llm_link::{LlmEvent, LlmOutput, LlmProtocolError, LlmState, WsFrame};
use nodelink_core::wire::llm::{ServerFrameError, TaskState};

use crate::*;

// ---------------------------------------------------------------------------------------------
// Tasks and results

#[test]
fn task_then_text_then_finish_frames() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    let frame = r#"{"state":0,"id":123,"system":"You are Buddy.","messages":[{"role":"user","content":"hi"}],"max_new_tokens":50,"temperature":0.5,"created_at":1700000000,"node":{}}"#;
    let out = sim.text(1.0, frame);
    let LlmOutput::Event(LlmEvent::Task(task)) = &out[0] else {
        panic!("expected a task, got {out:?}");
    };
    assert_eq!(out.len(), 1);
    assert_eq!(task.id, 123);
    assert_eq!(task.system.as_deref(), Some("You are Buddy."));
    assert!(sim.link.is_active(123));
    assert_eq!(sim.link.active_tasks().collect::<Vec<_>>(), vec![123]);

    sim.link.send_text(sim.at(1.5), 123, "Hello");
    sim.link.send_text(sim.at(1.6), 123, "");
    sim.link.send_text(sim.at(1.7), 123, ", 日本");
    sim.link.finish(sim.at(2.0), 123);
    let out = sim.drain();
    assert_eq!(
        out,
        vec![data(123, "Hello"), data(123, ", 日本"), finished(123)]
    );
    assert_eq!(
        out[2],
        binary(vec![0x00, 0x00, 0x00, 0x7b]),
        "finished frame: the id alone"
    );
    assert!(!sim.link.is_active(123));
    // After finish, nothing more for that id.
    sim.link.send_text(sim.at(3.0), 123, "late");
    sim.link.finish(sim.at(3.0), 123);
    assert_eq!(sim.drain(), vec![]);
}

#[test]
fn multibyte_text_is_never_cut_across_frames() {
    // 1-, 2-, 3- and 4-byte characters, so every budget meets every kind of boundary.
    let text = "aü日🎉 Grüße 🎉 日本語 z𝄞ß";
    for max in 4..=text.len() + 1 {
        let mut config = config();
        config.max_frame_text = max;
        let mut sim = Sim::new(config);
        sim.open_at(0.0);
        sim.task(0.0, 9);
        sim.link.send_text(sim.at(1.0), 9, text);
        let mut joined = String::new();
        for out in sim.drain() {
            let LlmOutput::Send(WsFrame::Binary(bytes)) = out else {
                panic!("max {max}: unexpected {out:?}");
            };
            assert_eq!(bytes[..4], 9u32.to_be_bytes());
            let piece = std::str::from_utf8(&bytes[4..])
                .unwrap_or_else(|e| panic!("max {max}: a character was cut: {e}"));
            assert!(!piece.is_empty(), "max {max}: empty data frame");
            assert!(piece.len() <= max, "max {max}: {} bytes", piece.len());
            // As long as possible: the next character would not have fit.
            let rest = &text[joined.len() + piece.len()..];
            if let Some(next) = rest.chars().next() {
                assert!(
                    piece.len() + next.len_utf8() > max,
                    "max {max}: short piece"
                );
            }
            joined.push_str(piece);
        }
        assert_eq!(joined, text, "max {max}");
    }
}

#[test]
fn text_longer_than_16_kib_is_split_into_16_kib_frames() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.task(0.0, 1);
    let text = "x".repeat(40 * 1024);
    sim.link.send_text(sim.at(1.0), 1, &text);
    let sizes: Vec<usize> = sim
        .drain()
        .into_iter()
        .map(|out| match out {
            LlmOutput::Send(WsFrame::Binary(bytes)) => bytes.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes, vec![4 + 16384, 4 + 16384, 4 + 8192]);
}

#[test]
fn stop_ends_the_task_and_nothing_more_is_sent() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.task(1.0, 42);
    sim.link.send_text(sim.at(2.0), 42, "partial");
    assert_eq!(sim.drain(), vec![data(42, "partial")]);
    assert_eq!(
        sim.text(3.0, r#"{"id":42,"stop":true}"#),
        vec![LlmOutput::Event(LlmEvent::Stop { id: 42 })]
    );
    assert!(!sim.link.is_active(42));
    // The executor's late output and its finish are dropped: the server expects nothing.
    sim.link.send_text(sim.at(3.1), 42, "more");
    sim.link.finish(sim.at(3.2), 42);
    assert_eq!(sim.drain(), vec![]);
    // A second stop for the same task is ignored silently.
    assert_eq!(sim.text(4.0, r#"{"id":42,"stop":true}"#), vec![]);
}

#[test]
fn stop_drops_result_frames_queued_but_not_yet_drained() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.task(1.0, 1);
    sim.task(1.0, 2);
    sim.link.send_text(sim.at(2.0), 1, "one");
    sim.link.send_text(sim.at(2.0), 2, "two");
    sim.link.send_text(sim.at(2.0), 1, "uno");
    sim.link.handle_frame(
        sim.at(2.5),
        WsFrame::Text(r#"{"id":1,"stop":true}"#.to_owned()),
    );
    assert_eq!(
        sim.drain(),
        vec![LlmOutput::Event(LlmEvent::Stop { id: 1 }), data(2, "two")]
    );
}

#[test]
fn stop_for_an_unknown_task_is_ignored_silently() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    assert_eq!(sim.text(1.0, r#"{"id":77,"stop":true}"#), vec![]);
}

#[test]
fn a_task_id_can_be_used_again_after_its_task_ended() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.task(1.0, 3);
    sim.link.finish(sim.at(2.0), 3);
    assert_eq!(sim.drain(), vec![finished(3)]);
    assert_eq!(sim.task(3.0, 3), vec![task_event(3)]);
}

#[test]
fn results_for_a_task_never_received_are_ignored() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.link.send_text(sim.at(1.0), 8, "text");
    sim.link.finish(sim.at(1.0), 8);
    assert_eq!(sim.drain(), vec![]);
}

// ---------------------------------------------------------------------------------------------
// A misbehaving server

#[test]
fn undecodable_task_with_an_id_is_answered_finished() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    // Seed 001's array of strings: the id is readable.
    let out = sim.text(1.0, r#"{"state":0,"id":5,"messages":["message1"]}"#);
    let [LlmOutput::Event(LlmEvent::PeerMisbehaved(LlmProtocolError::Undecodable {
        error,
        answered: true,
    })), frame] = out.as_slice()
    else {
        panic!("{out:?}");
    };
    assert_eq!(error.id(), Some(5));
    assert!(matches!(error, ServerFrameError::WrongType { .. }));
    assert_eq!(frame, &finished(5));
    assert!(!sim.link.is_active(5));
}

#[test]
fn undecodable_frame_without_an_id_is_only_reported() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    for text in [
        "not json",
        "[1,2]",
        r#"{"messages":[]}"#,
        r#"{"id":-1,"messages":[]}"#,
    ] {
        let out = sim.text(1.0, text);
        assert!(
            matches!(
                out.as_slice(),
                [LlmOutput::Event(LlmEvent::PeerMisbehaved(
                    LlmProtocolError::Undecodable {
                        answered: false,
                        ..
                    }
                ))]
            ),
            "{text}: {out:?}"
        );
    }
}

#[test]
fn undecodable_frame_naming_an_active_task_leaves_it_alone() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.task(1.0, 5);
    let out = sim.text(2.0, r#"{"id":5,"stop":"yes"}"#);
    assert!(matches!(
        out.as_slice(),
        [LlmOutput::Event(LlmEvent::PeerMisbehaved(
            LlmProtocolError::Undecodable {
                answered: false,
                ..
            }
        ))]
    ));
    assert!(sim.link.is_active(5));
}

#[test]
fn a_task_that_is_not_pending_is_not_run_and_is_answered_finished() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    assert_eq!(
        sim.text(1.0, r#"{"state":1,"id":6,"messages":[]}"#),
        vec![
            misbehaved(LlmProtocolError::TaskNotPending {
                id: 6,
                state: TaskState::Running,
                answered: true
            }),
            finished(6)
        ]
    );
}

#[test]
fn a_duplicate_of_an_active_task_is_reported_and_ignored() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.task(1.0, 4);
    assert_eq!(
        sim.task(2.0, 4),
        vec![misbehaved(LlmProtocolError::DuplicateTask { id: 4 })]
    );
    assert_eq!(
        sim.text(2.0, r#"{"state":2,"id":4,"messages":[]}"#),
        vec![misbehaved(LlmProtocolError::DuplicateTask { id: 4 })]
    );
    assert!(sim.link.is_active(4));
}

#[test]
fn a_task_beyond_max_concurrency_is_refused_with_its_finished_frame() {
    let mut sim = Sim::new(config()); // max_concurrency 2
    sim.open_at(0.0);
    assert_eq!(sim.task(1.0, 1), vec![task_event(1)]);
    assert_eq!(sim.task(1.0, 2), vec![task_event(2)]);
    assert_eq!(
        sim.task(1.0, 3),
        vec![
            misbehaved(LlmProtocolError::OverConcurrency { id: 3, max: 2 }),
            finished(3)
        ]
    );
    sim.link.finish(sim.at(2.0), 1);
    assert_eq!(sim.drain(), vec![finished(1)]);
    assert_eq!(sim.task(3.0, 3), vec![task_event(3)]);
}

#[test]
fn binary_from_server_is_misbehaviour() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.link
        .handle_frame(sim.at(1.0), WsFrame::Binary(vec![0, 0, 0, 1, b'x']));
    assert_eq!(
        sim.drain(),
        vec![misbehaved(LlmProtocolError::BinaryFrame { len: 5 })]
    );
    assert_eq!(sim.link.state(), LlmState::Open);
}

#[test]
fn an_empty_text_frame_from_the_server_is_ignored_silently() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    assert_eq!(sim.text(1.0, ""), vec![]);
}

#[test]
fn a_server_ping_is_a_sign_of_life_and_nothing_else() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.link.handle_frame(sim.at(1.0), WsFrame::Ping(vec![1]));
    assert_eq!(sim.drain(), vec![]);
}
