//! Progress rate limiting, shutdown and revoke, construction and getters.

use super::*;
use std::sync::Arc;

// --- Progress -------------------------------------------------------------------------------

fn progress_dto(id: &str, progress: f64) -> CommandProgressDto {
    CommandProgressDto {
        command_id: id.to_owned(),
        progress,
        step: None,
        step_count: None,
        eta_ms: None,
        message: None,
    }
}

#[test]
fn progress_is_rate_limited_and_coalesced() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("c1", "system.info"), &all());
    drain(&mut t);
    let report = Progress {
        progress: 0.1,
        step: Some(1),
        step_count: Some(10),
        eta: Some(Duration::from_millis(9_500)),
        message: Some("loading".into()),
    };
    t.progress(clock.at(0.0), "c1", report).unwrap();
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Progress(CommandProgressDto {
            command_id: "c1".into(),
            progress: 0.1,
            step: Some(1),
            step_count: Some(10),
            eta_ms: Some(9_500),
            message: Some("loading".into()),
        })]
    );
    t.progress(clock.at(0.2), "c1", Progress::fraction(0.3))
        .unwrap();
    t.progress(clock.at(0.6), "c1", Progress::fraction(0.5))
        .unwrap();
    assert_eq!(drain(&mut t), vec![]);
    assert_eq!(t.poll_timeout(), Some(clock.at(1.0)));
    t.handle_timeout(clock.at(1.0));
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Progress(progress_dto("c1", 0.5))]
    );
    assert_eq!(t.poll_timeout(), Some(clock.at(30.0)));
    // The next report at 1.5 s waits for 2.0 s; the command finishes first: dropped.
    t.progress(clock.at(1.5), "c1", Progress::fraction(0.7))
        .unwrap();
    assert_eq!(t.poll_timeout(), Some(clock.at(2.0)));
    t.finish(clock.at(1.8), "c1", Ok(json!(1))).unwrap();
    t.handle_timeout(clock.at(2.0));
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Result(Arc::new(success(
            "c1",
            json!(1),
            1800
        )))]
    );
    // After the result: ignored.
    assert_eq!(
        t.progress(clock.at(3.0), "c1", Progress::fraction(0.9)),
        Ok(())
    );
    assert_eq!(drain(&mut t), vec![]);
}

#[test]
fn a_report_after_a_quiet_interval_is_sent_at_once() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("c1", "system.info"), &all());
    drain(&mut t);
    t.progress(clock.at(0.0), "c1", Progress::fraction(0.1))
        .unwrap();
    t.progress(clock.at(1.0), "c1", Progress::fraction(0.2))
        .unwrap();
    t.progress(clock.at(5.0), "c1", Progress::fraction(0.3))
        .unwrap();
    assert_eq!(
        drain(&mut t),
        vec![
            CommandAction::Progress(progress_dto("c1", 0.1)),
            CommandAction::Progress(progress_dto("c1", 0.2)),
            CommandAction::Progress(progress_dto("c1", 0.3)),
        ]
    );
}

#[test]
fn progress_is_clamped_never_decreases_and_refuses_nan() {
    let clock = SimClock::new();
    let mut t = table_with(CommandLimits {
        progress_interval: Duration::ZERO,
        ..CommandLimits::default()
    });
    t.receive(clock.at(0.0), cmd("c1", "system.info"), &all());
    drain(&mut t);
    t.progress(clock.at(0.0), "c1", Progress::fraction(-0.5))
        .unwrap();
    t.progress(clock.at(0.1), "c1", Progress::fraction(0.6))
        .unwrap();
    t.progress(clock.at(0.2), "c1", Progress::fraction(0.4))
        .unwrap();
    t.progress(clock.at(0.3), "c1", Progress::fraction(f64::INFINITY))
        .unwrap();
    assert_eq!(
        t.progress(clock.at(0.4), "c1", Progress::fraction(f64::NAN)),
        Err(CommandUsageError::ProgressNotANumber {
            command_id: "c1".into()
        })
    );
    let sent: Vec<f64> = drain(&mut t)
        .into_iter()
        .map(|a| match a {
            CommandAction::Progress(p) => p.progress,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(sent, vec![0.0, 0.6, 0.6, 1.0]);
}

#[test]
fn progress_for_unknown_or_queued_commands_is_a_usage_error() {
    let clock = SimClock::new();
    let mut t = table();
    assert_eq!(
        t.progress(clock.at(0.0), "zz", Progress::fraction(0.5)),
        Err(CommandUsageError::UnknownCommand {
            command_id: "zz".into()
        })
    );
    t.receive(clock.at(0.0), cmd("m1", "input.mouse"), &all());
    t.receive(clock.at(0.0), cmd("m2", "input.mouse"), &all());
    drain(&mut t);
    assert_eq!(
        t.progress(clock.at(0.0), "m2", Progress::fraction(0.5)),
        Err(CommandUsageError::NotStarted {
            command_id: "m2".into()
        })
    );
}

#[test]
fn a_pending_progress_due_with_the_deadline_is_sent_before_the_timeout() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(
        clock.at(0.0),
        with_timeout(cmd("c1", "system.info"), 2_000),
        &all(),
    );
    drain(&mut t);
    t.progress(clock.at(1.0), "c1", Progress::fraction(0.1))
        .unwrap();
    t.progress(clock.at(1.5), "c1", Progress::fraction(0.2))
        .unwrap();
    drain(&mut t);
    t.handle_timeout(clock.at(2.0));
    let actions = drain(&mut t);
    assert_eq!(actions[0], CommandAction::Progress(progress_dto("c1", 0.2)));
    assert_eq!(actions[1], cancel("c1", CancelReason::Timeout));
    assert!(matches!(actions[2], CommandAction::Result(_)));
}

// --- Stopping -------------------------------------------------------------------------------

#[test]
fn revoke_cancels_everything_and_sends_nothing() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("m1", "input.mouse"), &all());
    t.receive(clock.at(0.0), cmd("m2", "input.mouse"), &all());
    t.receive(clock.at(0.0), cmd("s1", "system.info"), &all());
    t.receive(clock.at(0.0), cmd("s2", "system.info"), &all());
    drain(&mut t);
    // A result and a progress decided but not drained yet are withdrawn too.
    t.finish(clock.at(1.0), "s2", Ok(json!(1))).unwrap();
    t.progress(clock.at(1.0), "s1", Progress::fraction(0.5))
        .unwrap();
    t.abort_all(clock.at(1.0));
    assert_eq!(
        drain(&mut t),
        vec![
            cancel("m1", CancelReason::Shutdown),
            cancel("s1", CancelReason::Shutdown),
        ]
    );
    assert!(t.is_closed());
    assert_eq!((t.executing(), t.queued()), (0, 0));
    assert_eq!(t.poll_timeout(), None);
    t.receive(clock.at(2.0), cmd("s3", "system.info"), &all());
    t.cancel(clock.at(2.0), "m1", None);
    assert_eq!(
        t.finish(clock.at(2.0), "m1", Ok(json!(1))),
        Ok(Finish::Late)
    );
    assert_eq!(
        t.progress(clock.at(2.0), "s1", Progress::fraction(0.9)),
        Ok(())
    );
    t.handle_timeout(clock.at(100.0));
    let actions = drain(&mut t);
    assert!(
        actions.iter().all(|a| matches!(a, CommandAction::Event(_))),
        "a revoked table sends nothing: {actions:?}"
    );
    assert!(
        actions.contains(&CommandAction::Event(CommandEvent::ReceivedAfterShutdown {
            command_id: "s3".into()
        }))
    );
}

#[test]
fn shutdown_answers_every_command_cancelled() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("m1", "input.mouse"), &all());
    t.receive(clock.at(1.0), cmd("m2", "input.mouse"), &all());
    drain(&mut t);
    t.shutdown(clock.at(3.0));
    assert_eq!(
        drain(&mut t),
        vec![
            cancel("m1", CancelReason::Shutdown),
            CommandAction::Result(Arc::new(failure(
                "m1",
                ErrorCode::Cancelled,
                "the node is shutting down",
                3000
            ))),
            CommandAction::Result(Arc::new(failure(
                "m2",
                ErrorCode::Cancelled,
                "the node is shutting down",
                2000
            ))),
        ]
    );
    assert!(t.is_closed());
    t.shutdown(clock.at(4.0));
    t.abort_all(clock.at(4.0));
    assert_eq!(drain(&mut t), vec![]);
}

// --- Construction and getters ---------------------------------------------------------------

#[test]
fn command_names_are_sorted_for_the_heartbeat() {
    let t = table();
    assert_eq!(
        t.command_names(),
        vec![
            "gpu.run",
            "input.key",
            "input.mouse",
            "screen.capture",
            "system.info"
        ]
    );
    assert_eq!(t.slots(), 4);
}

#[test]
fn new_rejects_bad_specs_and_zero_slots() {
    let limits = CommandLimits::default;
    assert_eq!(
        CommandTable::new([CommandSpec::new("a"), CommandSpec::new("a")], limits()).unwrap_err(),
        CommandUsageError::DuplicateCommand { name: "a".into() }
    );
    assert_eq!(
        CommandTable::new([CommandSpec::new("")], limits()).unwrap_err(),
        CommandUsageError::EmptyCommandName
    );
    assert_eq!(
        CommandTable::new([CommandSpec::new("a").scope("screen.*")], limits()).unwrap_err(),
        CommandUsageError::InvalidScope {
            name: "a".into(),
            error: ScopeError::PatternNotAllowed {
                entry: "screen.*".into()
            }
        }
    );
    assert_eq!(
        CommandTable::new(
            [CommandSpec::new("a")],
            CommandLimits {
                slots: 0,
                ..limits()
            }
        )
        .unwrap_err(),
        CommandUsageError::ZeroSlots
    );
}

#[test]
fn a_spec_debug_does_not_try_to_print_its_hook() {
    let spec = CommandSpec::new("gpu.run").validated_by(|_| Ok(()));
    assert!(format!("{spec:?}").contains("<hook>"));
}
