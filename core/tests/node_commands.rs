//! The command table (core/src/node/commands): admission, serialization groups, deadlines,
//! cancellation, exactly-once results and progress, at exact instants of a virtual clock.
mod support;

#[path = "node_commands/exactly_once.rs"]
mod exactly_once;
#[path = "node_commands/progress_and_stop.rs"]
mod progress_and_stop;
#[path = "node_commands/random.rs"]
mod random;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodelink_core::node::commands::{
    CancelReason, CommandAction, CommandEvent, CommandLimits, CommandSpec, CommandState,
    CommandTable, CommandUsageError, ExecuteRequest, Finish, Progress,
};
use nodelink_core::scope::{ScopeError, ScopeSet};
use nodelink_core::wire::dto::{
    CommandError, CommandProgressDto, CommandResultDto, ErrorCode, ExecuteCommandDto, OriginatedBy,
};
use serde_json::{json, Value};
use support::SimClock;

fn specs() -> Vec<CommandSpec> {
    vec![
        CommandSpec::new("system.info"),
        CommandSpec::new("screen.capture").scope("screen.capture"),
        CommandSpec::new("input.mouse")
            .scope("input.control")
            .serialized_by("input"),
        CommandSpec::new("input.key")
            .scope("input.control")
            .serialized_by("input"),
        CommandSpec::new("gpu.run").validated_by(|params| match params.get("n") {
            Some(Value::Number(_)) => Ok(()),
            _ => Err("params.n must be a number".to_owned()),
        }),
    ]
}

fn table_with(limits: CommandLimits) -> CommandTable {
    CommandTable::new(specs(), limits).expect("the test specs are valid")
}

fn table() -> CommandTable {
    table_with(CommandLimits::default())
}

fn all() -> ScopeSet {
    ScopeSet::all()
}

fn cmd(id: &str, command: &str) -> ExecuteCommandDto {
    ExecuteCommandDto {
        command_id: id.to_owned(),
        command: command.to_owned(),
        params: None,
        timeout_ms: None,
        originated_by: None,
        protocol_version: None,
    }
}

fn with_timeout(mut dto: ExecuteCommandDto, ms: u64) -> ExecuteCommandDto {
    dto.timeout_ms = Some(ms);
    dto
}

fn drain(table: &mut CommandTable) -> Vec<CommandAction> {
    std::iter::from_fn(|| table.poll_action()).collect()
}

fn execute(id: &str, command: &str, deadline: Instant) -> CommandAction {
    CommandAction::Execute(ExecuteRequest {
        command_id: id.to_owned(),
        command: command.to_owned(),
        params: json!({}),
        deadline,
        originated_by: None,
    })
}

fn failure(id: &str, code: ErrorCode, message: &str, duration_ms: u64) -> CommandResultDto {
    CommandResultDto {
        command_id: id.to_owned(),
        ok: false,
        result: None,
        error: Some(CommandError {
            code,
            message: message.to_owned(),
            details: None,
            retry_after_ms: None,
        }),
        duration_ms: Some(duration_ms),
        part_index: None,
        is_last: None,
        protocol_version: None,
    }
}

fn success(id: &str, result: Value, duration_ms: u64) -> CommandResultDto {
    CommandResultDto {
        command_id: id.to_owned(),
        ok: true,
        result: Some(result),
        error: None,
        duration_ms: Some(duration_ms),
        part_index: None,
        is_last: None,
        protocol_version: None,
    }
}

fn cancel(id: &str, reason: CancelReason) -> CommandAction {
    CommandAction::Cancel {
        command_id: id.to_owned(),
        reason,
    }
}

/// The single result among `actions`.
fn only_result(actions: &[CommandAction]) -> CommandResultDto {
    let results: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            CommandAction::Result(r) => Some(CommandResultDto::clone(r)),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 1, "expected one result in {actions:?}");
    results[0].clone()
}

fn code(result: &CommandResultDto) -> ErrorCode {
    result.error.as_ref().expect("a failure").code.clone()
}

// --- Deadlines ------------------------------------------------------------------------------

#[test]
fn command_times_out_at_30s_with_timeout_code() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("c1", "system.info"), &all());
    assert_eq!(
        drain(&mut t),
        vec![execute("c1", "system.info", clock.at(30.0))]
    );
    assert_eq!(t.poll_timeout(), Some(clock.at(30.0)));
    t.handle_timeout(clock.at(29.999));
    assert_eq!(drain(&mut t), vec![]);
    t.handle_timeout(clock.at(30.0));
    assert_eq!(
        drain(&mut t),
        vec![
            cancel("c1", CancelReason::Timeout),
            CommandAction::Result(Arc::new(failure(
                "c1",
                ErrorCode::Timeout,
                "command timed out after 30000 ms",
                30_000
            ))),
        ]
    );
    assert_eq!(t.executing(), 0);
    assert_eq!(t.command_state("c1"), Some(CommandState::Finished));
}

#[test]
fn timeout_ms_overrides_the_default() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(
        clock.at(1.0),
        with_timeout(cmd("c1", "system.info"), 5_000),
        &all(),
    );
    assert_eq!(
        drain(&mut t),
        vec![execute("c1", "system.info", clock.at(6.0))]
    );
    assert_eq!(t.poll_timeout(), Some(clock.at(6.0)));
    t.handle_timeout(clock.at(6.0));
    let result = only_result(&drain(&mut t));
    assert_eq!(code(&result), ErrorCode::Timeout);
    assert_eq!(
        result.error.unwrap().message,
        "command timed out after 5000 ms"
    );
    assert_eq!(result.duration_ms, Some(5_000));
}

#[test]
fn timeout_ms_is_clamped_to_max_timeout() {
    let clock = SimClock::new();
    let mut t = table_with(CommandLimits {
        max_timeout: Duration::from_secs(3600),
        ..CommandLimits::default()
    });
    t.receive(
        clock.at(0.0),
        with_timeout(cmd("c1", "system.info"), u64::MAX),
        &all(),
    );
    assert_eq!(
        drain(&mut t),
        vec![execute("c1", "system.info", clock.at(3600.0))]
    );
}

#[test]
fn zero_timeout_ms_is_answered_timeout_without_running() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(
        clock.at(2.0),
        with_timeout(cmd("c1", "system.info"), 0),
        &all(),
    );
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Result(Arc::new(failure(
            "c1",
            ErrorCode::Timeout,
            "timeoutMs is 0: the deadline has passed before the command could start",
            0
        )))]
    );
    assert!(!t.is_known("c1"));
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn late_finish_after_timeout_is_dropped() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("c1", "system.info"), &all());
    t.handle_timeout(clock.at(30.0));
    drain(&mut t);
    assert_eq!(
        t.finish(clock.at(31.0), "c1", Ok(json!(1))),
        Ok(Finish::Late)
    );
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Event(CommandEvent::LateFinishDropped {
            command_id: "c1".into()
        })]
    );
    // The executor's late outcome is taken once; a second one is a repeat.
    assert_eq!(
        t.finish(clock.at(32.0), "c1", Ok(json!(1))),
        Ok(Finish::Repeated)
    );
}

#[test]
fn handle_timeout_before_any_deadline_is_a_noop() {
    let clock = SimClock::new();
    let mut t = table();
    t.handle_timeout(clock.at(5.0));
    assert_eq!(drain(&mut t), vec![]);
    t.receive(clock.at(5.0), cmd("c1", "system.info"), &all());
    drain(&mut t);
    t.handle_timeout(clock.at(5.0));
    t.handle_timeout(clock.at(20.0));
    assert_eq!(drain(&mut t), vec![]);
    assert_eq!(t.poll_timeout(), Some(clock.at(35.0)));
}

// --- Finishing ------------------------------------------------------------------------------

#[test]
fn finish_answers_with_duration_since_arrival_and_echoes_the_protocol_version() {
    let clock = SimClock::new();
    let mut t = table();
    let mut dto = cmd("c1", "system.info");
    dto.protocol_version = Some("2025-10-01".into());
    dto.params = Some(json!({"verbose": true}));
    dto.originated_by = Some(OriginatedBy {
        user_id: Some("usr_abc".into()),
        ..OriginatedBy::default()
    });
    t.receive(clock.at(10.0), dto, &all());
    match drain(&mut t).as_slice() {
        [CommandAction::Execute(req)] => {
            assert_eq!(req.params, json!({"verbose": true}));
            assert_eq!(
                req.originated_by.as_ref().unwrap().user_id.as_deref(),
                Some("usr_abc")
            );
        }
        other => panic!("expected one Execute, got {other:?}"),
    }
    assert_eq!(
        t.finish(clock.at(10.234), "c1", Ok(json!({"hostname": "build-01"}))),
        Ok(Finish::Answered)
    );
    let mut expected = success("c1", json!({"hostname": "build-01"}), 234);
    expected.protocol_version = Some("2025-10-01".into());
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Result(Arc::new(expected))]
    );
    assert_eq!(t.executing(), 0);
}

#[test]
fn a_failed_outcome_is_sent_as_is_and_a_null_result_is_omitted() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("c1", "system.info"), &all());
    t.receive(clock.at(0.0), cmd("c2", "system.info"), &all());
    drain(&mut t);
    let error = CommandError {
        code: ErrorCode::PlatformUnsupported,
        message: "screen.region not supported under Wayland".into(),
        details: Some(json!({})),
        retry_after_ms: None,
    };
    t.finish(clock.at(1.0), "c1", Err(error.clone())).unwrap();
    t.finish(clock.at(2.0), "c2", Ok(Value::Null)).unwrap();
    let results: Vec<_> = drain(&mut t);
    assert_eq!(
        results,
        vec![
            CommandAction::Result(Arc::new(CommandResultDto {
                error: Some(error),
                ..failure("c1", ErrorCode::InternalError, "", 1000)
            })),
            CommandAction::Result(Arc::new(CommandResultDto {
                result: None,
                ..success("c2", Value::Null, 2000)
            })),
        ]
    );
}

#[test]
fn finish_of_unknown_or_queued_commands_is_a_usage_error() {
    let clock = SimClock::new();
    let mut t = table();
    assert_eq!(
        t.finish(clock.at(0.0), "nope", Ok(json!(1))),
        Err(CommandUsageError::UnknownCommand {
            command_id: "nope".into()
        })
    );
    t.receive(clock.at(0.0), cmd("m1", "input.mouse"), &all());
    t.receive(clock.at(0.0), cmd("m2", "input.mouse"), &all());
    drain(&mut t);
    assert_eq!(
        t.finish(clock.at(1.0), "m2", Ok(json!(1))),
        Err(CommandUsageError::NotStarted {
            command_id: "m2".into()
        })
    );
    assert_eq!(drain(&mut t), vec![]);
    t.finish(clock.at(1.0), "m1", Ok(json!(1))).unwrap();
    drain(&mut t);
    assert_eq!(
        t.finish(clock.at(2.0), "m1", Ok(json!(2))),
        Ok(Finish::Repeated)
    );
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Event(CommandEvent::RepeatedFinishIgnored {
            command_id: "m1".into()
        })]
    );
}

// --- Serialization groups -------------------------------------------------------------------

#[test]
fn same_serialization_key_runs_one_at_a_time_in_arrival_order() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("m1", "input.mouse"), &all());
    t.receive(clock.at(0.5), cmd("k1", "input.key"), &all());
    t.receive(clock.at(1.0), cmd("m2", "input.mouse"), &all());
    t.receive(clock.at(1.0), cmd("s1", "system.info"), &all()); // no key: runs at once
    assert_eq!(
        drain(&mut t),
        vec![
            execute("m1", "input.mouse", clock.at(30.0)),
            execute("s1", "system.info", clock.at(31.0)),
        ]
    );
    assert_eq!((t.executing(), t.queued(), t.in_flight()), (2, 2, 4));
    assert_eq!(t.command_state("k1"), Some(CommandState::Queued));

    t.finish(clock.at(2.0), "m1", Ok(json!("m1"))).unwrap();
    assert_eq!(
        drain(&mut t),
        vec![
            CommandAction::Result(Arc::new(success("m1", json!("m1"), 2000))),
            // Its deadline still counts from its arrival at 0.5 s.
            execute("k1", "input.key", clock.at(30.5)),
        ]
    );
    t.finish(clock.at(3.0), "k1", Ok(json!("k1"))).unwrap();
    assert_eq!(
        drain(&mut t),
        vec![
            CommandAction::Result(Arc::new(success("k1", json!("k1"), 2500))),
            execute("m2", "input.mouse", clock.at(31.0)),
        ]
    );
    t.finish(clock.at(4.0), "m2", Ok(json!("m2"))).unwrap();
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Result(Arc::new(success(
            "m2",
            json!("m2"),
            3000
        )))]
    );
    assert_eq!((t.executing(), t.queued()), (1, 0));
}

#[test]
fn queued_command_times_out_before_it_starts() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(
        clock.at(0.0),
        with_timeout(cmd("m1", "input.mouse"), 60_000),
        &all(),
    );
    t.receive(
        clock.at(1.0),
        with_timeout(cmd("m2", "input.mouse"), 5_000),
        &all(),
    );
    drain(&mut t);
    assert_eq!(t.poll_timeout(), Some(clock.at(6.0)));
    t.handle_timeout(clock.at(6.0));
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Result(Arc::new(failure(
            "m2",
            ErrorCode::Timeout,
            "command timed out after 5000 ms before it could start",
            5000
        )))]
    );
    assert_eq!((t.executing(), t.queued()), (1, 0));
    t.finish(clock.at(7.0), "m1", Ok(json!(1))).unwrap();
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Result(Arc::new(success(
            "m1",
            json!(1),
            7000
        )))]
    );
}

#[test]
fn a_queued_command_past_its_deadline_is_timed_out_when_its_turn_comes() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("m1", "input.mouse"), &all());
    t.receive(
        clock.at(0.0),
        with_timeout(cmd("m2", "input.mouse"), 1_000),
        &all(),
    );
    t.receive(clock.at(0.0), cmd("m3", "input.mouse"), &all());
    drain(&mut t);
    // The host feeds the finish before it got round to the timer at 1 s.
    t.finish(clock.at(2.0), "m1", Ok(json!(1))).unwrap();
    assert_eq!(
        drain(&mut t),
        vec![
            CommandAction::Result(Arc::new(success("m1", json!(1), 2000))),
            CommandAction::Result(Arc::new(failure(
                "m2",
                ErrorCode::Timeout,
                "command timed out after 1000 ms before it could start",
                2000
            ))),
            execute("m3", "input.mouse", clock.at(30.0)),
        ]
    );
    t.handle_timeout(clock.at(2.0));
    assert_eq!(drain(&mut t), vec![]);
}

// --- Admission ------------------------------------------------------------------------------

#[test]
fn busy_when_all_slots_taken_with_retry_after() {
    let clock = SimClock::new();
    let mut t = table_with(CommandLimits {
        slots: 2,
        ..CommandLimits::default()
    });
    t.receive(clock.at(0.0), cmd("m1", "input.mouse"), &all());
    t.receive(clock.at(0.0), cmd("m2", "input.mouse"), &all()); // queued: holds a slot
    drain(&mut t);
    let mut dto = cmd("c3", "system.info");
    dto.protocol_version = Some("2026-04-01".into());
    t.receive(clock.at(1.0), dto.clone(), &all());
    let mut busy = failure("c3", ErrorCode::Busy, "all 2 slots in use", 0);
    busy.error.as_mut().unwrap().retry_after_ms = Some(5000);
    busy.protocol_version = Some("2026-04-01".into());
    assert_eq!(drain(&mut t), vec![CommandAction::Result(Arc::new(busy))]);
    // The same bytes as the example in docs/protocol.md 5.2.
    let t_busy = failure("cmd_1", ErrorCode::Busy, "all 2 slots in use", 0);
    let mut t_busy = t_busy;
    t_busy.error.as_mut().unwrap().retry_after_ms = Some(5000);
    t_busy.protocol_version = Some("2026-04-01".into());
    assert_eq!(
        serde_json::to_string(&t_busy).unwrap(),
        r#"{"commandId":"cmd_1","ok":false,"error":{"code":"busy","message":"all 2 slots in use","retryAfterMs":5000},"durationMs":0,"protocolVersion":"2026-04-01"}"#
    );
    // A rejected command is not remembered: once a slot is free, the redelivery runs.
    assert!(!t.is_known("c3"));
    t.finish(clock.at(2.0), "m1", Ok(json!(1))).unwrap();
    drain(&mut t);
    assert_eq!(t.in_flight(), 1);
    t.receive(clock.at(3.0), dto, &all());
    match drain(&mut t).as_slice() {
        [CommandAction::Execute(req)] => assert_eq!(req.command_id, "c3"),
        other => panic!("expected the redelivery to run, got {other:?}"),
    }
}

#[test]
fn unknown_command_is_platform_unsupported() {
    let clock = SimClock::new();
    let mut t = table();
    // Even with no scopes at all: an unknown command has no scope to check.
    t.receive(clock.at(0.0), cmd("c1", "screen.region"), &ScopeSet::new());
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Result(Arc::new(failure(
            "c1",
            ErrorCode::PlatformUnsupported,
            "unknown command \"screen.region\": this node has no executor for it (no scope was checked)",
            0
        )))]
    );
}

#[test]
fn missing_scope_is_not_authorized() {
    let clock = SimClock::new();
    let mut t = table();
    let scopes = ScopeSet::parse(["input.*"]).unwrap();
    t.receive(clock.at(0.0), cmd("c1", "screen.capture"), &scopes);
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Result(Arc::new(failure(
            "c1",
            ErrorCode::NotAuthorized,
            "command \"screen.capture\" needs scope \"screen.capture\", which this node does not hold",
            0
        )))]
    );
    // A pattern covers the scope; a command without a scope needs none.
    t.receive(clock.at(0.0), cmd("c2", "input.key"), &scopes);
    t.receive(clock.at(0.0), cmd("c3", "system.info"), &ScopeSet::new());
    let actions = drain(&mut t);
    assert!(matches!(
        actions.as_slice(),
        [CommandAction::Execute(_), CommandAction::Execute(_)]
    ));
}

#[test]
fn invalid_params_carry_the_hook_message() {
    let clock = SimClock::new();
    let mut t = table();
    // No params: the hook sees {}.
    t.receive(clock.at(0.0), cmd("c1", "gpu.run"), &all());
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Result(Arc::new(failure(
            "c1",
            ErrorCode::InvalidParams,
            "params.n must be a number",
            0
        )))]
    );
    let mut ok = cmd("c2", "gpu.run");
    ok.params = Some(json!({"n": 3}));
    t.receive(clock.at(0.0), ok, &all());
    assert!(matches!(
        drain(&mut t).as_slice(),
        [CommandAction::Execute(_)]
    ));
}

#[test]
fn an_unsupported_protocol_version_is_invalid_params_before_anything_else() {
    let clock = SimClock::new();
    let mut t = table();
    let mut dto = cmd("c1", "no.such.command");
    dto.protocol_version = Some("2027-01-01".into());
    t.receive(clock.at(0.0), dto, &ScopeSet::new());
    let mut expected = failure(
        "c1",
        ErrorCode::InvalidParams,
        "protocolVersion \"2027-01-01\" is not one this node speaks (2026-04-01, 2025-10-01)",
        0,
    );
    expected.protocol_version = Some("2027-01-01".into());
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Result(Arc::new(expected))]
    );
}

#[test]
fn checks_run_in_order_scope_before_params_before_busy() {
    let clock = SimClock::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let specs = vec![
        CommandSpec::new("a.hooked")
            .scope("a.run")
            .validated_by(move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
                Err("bad".to_owned())
            }),
        CommandSpec::new("a.plain"),
    ];
    let mut t = CommandTable::new(
        specs,
        CommandLimits {
            slots: 1,
            ..CommandLimits::default()
        },
    )
    .unwrap();
    t.receive(clock.at(0.0), cmd("c0", "a.plain"), &all()); // takes the only slot
    drain(&mut t);
    t.receive(clock.at(0.0), cmd("c1", "a.hooked"), &ScopeSet::new());
    assert_eq!(code(&only_result(&drain(&mut t))), ErrorCode::NotAuthorized);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no hook without the scope");
    t.receive(clock.at(0.0), cmd("c2", "a.hooked"), &all());
    assert_eq!(code(&only_result(&drain(&mut t))), ErrorCode::InvalidParams);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    t.receive(clock.at(0.0), with_timeout(cmd("c3", "a.plain"), 0), &all());
    assert_eq!(code(&only_result(&drain(&mut t))), ErrorCode::Timeout);
    t.receive(clock.at(0.0), cmd("c4", "a.plain"), &all());
    assert_eq!(code(&only_result(&drain(&mut t))), ErrorCode::Busy);
}

#[test]
fn an_empty_command_id_is_an_event_and_gets_no_result() {
    let clock = SimClock::new();
    let mut t = table();
    t.receive(clock.at(0.0), cmd("", "system.info"), &all());
    assert_eq!(
        drain(&mut t),
        vec![CommandAction::Event(CommandEvent::InvalidCommand {
            reason: "ExecuteCommand \"system.info\" has an empty commandId: there is nothing to answer to"
                .into()
        })]
    );
    assert_eq!(t.in_flight(), 0);
}
