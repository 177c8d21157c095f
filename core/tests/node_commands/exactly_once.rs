//! Redelivery, remembered results, abandoned executors and CancelCommand.

use super::*;
use std::sync::Arc;

// --- Exactly once ---------------------------------------------------------------------------

#[test]
fn redelivered_command_runs_once() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("m1", "input.mouse"), &all());
    t.receive(clock.at(0.0), cmd("m2", "input.mouse"), &all());
    drain(&mut t);
    t.receive(clock.at(1.0), cmd("m1", "input.mouse"), &all());
    t.receive(clock.at(1.0), cmd("m2", "input.mouse"), &all());
    assert_eq!(
        drain(&mut t),
        vec![
            CommandAction::Event(CommandEvent::DuplicateIgnored {
                command_id: "m1".into(),
                state: CommandState::Executing
            }),
            CommandAction::Event(CommandEvent::DuplicateIgnored {
                command_id: "m2".into(),
                state: CommandState::Queued
            }),
        ]
    );
    assert_eq!(t.in_flight(), 2);
    // The deadline is the first delivery's.
    assert_eq!(t.poll_timeout(), Some(clock.at(30.0)));
}

#[test]
fn redelivered_after_finish_resends_the_stored_result() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("c1", "system.info"), &all());
    drain(&mut t);
    t.finish(clock.at(1.0), "c1", Ok(json!({"a": 1}))).unwrap();
    let first = only_result(&drain(&mut t));
    t.receive(clock.at(5.0), cmd("c1", "system.info"), &all());
    assert_eq!(
        drain(&mut t),
        vec![
            CommandAction::Result(Arc::new(first.clone())),
            CommandAction::Event(CommandEvent::ResultResent {
                command_id: "c1".into()
            }),
        ]
    );
    // A timed-out command resends its timeout.
    t.receive(clock.at(5.0), cmd("c2", "system.info"), &all());
    t.handle_timeout(clock.at(35.0));
    let timeout = only_result(&drain(&mut t));
    t.receive(clock.at(36.0), cmd("c2", "system.info"), &all());
    assert_eq!(drain(&mut t)[0], CommandAction::Result(Arc::new(timeout)));
}

#[test]
fn remembered_results_are_forgotten_after_remember_for() {
    let clock = SimClock::new();
    let mut t = table(); // remember_for: 10 min
    t.receive(clock.at(0.0), cmd("c1", "system.info"), &all());
    drain(&mut t);
    t.finish(clock.at(2.0), "c1", Ok(json!(1))).unwrap();
    drain(&mut t);
    assert_eq!(t.poll_timeout(), Some(clock.at(602.0)));
    t.handle_timeout(clock.at(601.999));
    assert_eq!(t.command_state("c1"), Some(CommandState::Finished));
    t.handle_timeout(clock.at(602.0));
    assert_eq!(t.command_state("c1"), None);
    assert_eq!(t.poll_timeout(), None);
    // Forgotten: a redelivery is a new command.
    t.receive(clock.at(603.0), cmd("c1", "system.info"), &all());
    assert_eq!(
        drain(&mut t),
        vec![execute("c1", "system.info", clock.at(633.0))]
    );
}

#[test]
fn remembered_results_are_bounded_by_count_oldest_first() {
    let clock = SimClock::new();
    let mut t = table_with(CommandLimits {
        remembered_results: 2,
        ..CommandLimits::default()
    });
    for (i, id) in ["c1", "c2", "c3"].iter().enumerate() {
        t.receive(clock.at(i as f64), cmd(id, "system.info"), &all());
        t.finish(clock.at(i as f64), id, Ok(json!(i))).unwrap();
    }
    drain(&mut t);
    assert_eq!(t.command_state("c1"), None);
    assert_eq!(t.command_state("c2"), Some(CommandState::Finished));
    assert_eq!(t.command_state("c3"), Some(CommandState::Finished));
    assert_eq!(t.poll_timeout(), Some(clock.at(601.0)));
}

#[test]
fn a_forgotten_command_whose_executor_still_runs_is_not_run_again() {
    let clock = SimClock::new();
    let mut t = table_with(CommandLimits {
        remember_for: Duration::from_secs(60),
        ..CommandLimits::default()
    });
    t.receive(clock.at(0.0), cmd("c1", "system.info"), &all());
    t.handle_timeout(clock.at(30.0));
    t.handle_timeout(clock.at(90.0)); // the timeout result is forgotten
    drain(&mut t);
    assert_eq!(t.command_state("c1"), Some(CommandState::Abandoned));
    t.receive(clock.at(91.0), cmd("c1", "system.info"), &all());
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Event(CommandEvent::DuplicateIgnored {
            command_id: "c1".into(),
            state: CommandState::Abandoned
        })]
    );
    assert_eq!(
        t.finish(clock.at(95.0), "c1", Ok(json!(1))),
        Ok(Finish::Late)
    );
    drain(&mut t);
    assert_eq!(t.command_state("c1"), None);
    t.receive(clock.at(96.0), cmd("c1", "system.info"), &all());
    assert!(matches!(
        drain(&mut t).as_slice(),
        [CommandAction::Execute(_)]
    ));
}

#[test]
fn no_memory_means_a_redelivery_after_finish_runs_again() {
    let clock = SimClock::new();
    let mut t = table_with(CommandLimits {
        remembered_results: 0,
        ..CommandLimits::default()
    });
    t.receive(clock.at(0.0), cmd("c1", "system.info"), &all());
    t.finish(clock.at(1.0), "c1", Ok(json!(1))).unwrap();
    drain(&mut t);
    assert_eq!(t.poll_timeout(), None);
    t.receive(clock.at(2.0), cmd("c1", "system.info"), &all());
    assert!(matches!(
        drain(&mut t).as_slice(),
        [CommandAction::Execute(_)]
    ));
}

// --- Cancel ---------------------------------------------------------------------------------

#[test]
fn cancel_of_executing_and_of_queued() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("m1", "input.mouse"), &all());
    t.receive(clock.at(0.0), cmd("m2", "input.mouse"), &all());
    t.receive(clock.at(0.0), cmd("m3", "input.mouse"), &all());
    drain(&mut t);
    // Queued: dropped and answered, no Cancel (no executor has it).
    t.cancel(clock.at(1.0), "m2", None);
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Result(Arc::new(failure(
            "m2",
            ErrorCode::Cancelled,
            "cancelled by the gateway",
            1000
        )))]
    );
    // Executing: stopped and answered; the group's next starts.
    t.cancel(clock.at(2.0), "m1", Some("user_cancelled"));
    assert_eq!(
        drain(&mut t),
        vec![
            cancel("m1", CancelReason::Cancelled),
            CommandAction::Result(Arc::new(failure(
                "m1",
                ErrorCode::Cancelled,
                "cancelled by the gateway: user_cancelled",
                2000
            ))),
            execute("m3", "input.mouse", clock.at(30.0)),
        ]
    );
    assert_eq!(
        t.finish(clock.at(3.0), "m1", Ok(json!(1))),
        Ok(Finish::Late)
    );
    drain(&mut t);
    // Finished or unknown: ignored.
    t.cancel(clock.at(4.0), "m1", None);
    t.cancel(clock.at(4.0), "zz", None);
    assert_eq!(
        drain(&mut t),
        vec![
            CommandAction::Event(CommandEvent::CancelIgnored {
                command_id: "m1".into(),
                state: Some(CommandState::Finished)
            }),
            CommandAction::Event(CommandEvent::CancelIgnored {
                command_id: "zz".into(),
                state: None
            }),
        ]
    );
}
