//! The HTTP polling client (core/src/node/polling.rs): GET commands every 2 s, POST results in
//! order until accepted, the REST heartbeat first, backoff and the end of polling, at exact
//! instants of a virtual clock.
mod support;

#[path = "node_polling/props.rs"]
mod props;

use std::time::{Duration, Instant};

use nodelink_core::node::http::{HttpCall, HttpError, HttpResponse, HttpResult, Method};
use nodelink_core::node::polling::{
    PollingClient, PollingError, PollingEvent, PollingState, RequestFailure, RequestKind,
    MAX_RETRY_DELAY,
};
use nodelink_core::wire::dto::{CommandResultDto, ExecuteCommandDto, HeartbeatDto};
use nodelink_core::wire::rest::{
    NodeToken, RejectedCommand, RestError, RestErrorBody, RestErrorCode, COMMANDS_PATH,
    DEFAULT_POLL_INTERVAL, HEARTBEAT_PATH,
};
use proptest::prelude::*;
use serde_json::json;
use support::SimClock;

const TOKEN: &str = "abc123.a1b2c3d4e5f6";
const SEED_COMMANDS: &str = r#"{"commands":[{"commandId":"cmd_xyz789","command":"screen.capture","params":{"quality":80},"timeoutMs":30000}]}"#;
const NO_COMMANDS: &str = r#"{"commands":[]}"#;

fn token() -> NodeToken {
    NodeToken::parse(TOKEN).unwrap()
}

fn client(clock: &SimClock) -> PollingClient {
    PollingClient::new(clock.at(0.0), token(), DEFAULT_POLL_INTERVAL).unwrap()
}

fn answer(status: u16, body: &str) -> HttpResult {
    Ok(HttpResponse {
        status,
        body: body.as_bytes().to_vec(),
    })
}

fn no_content() -> HttpResult {
    answer(204, "")
}

fn transport() -> HttpResult {
    Err(HttpError("connection reset".to_owned()))
}

fn heartbeat(uptime: u64) -> HeartbeatDto {
    HeartbeatDto {
        node_id: "abc123".to_owned(),
        status: "online".to_owned(),
        uptime,
        platform: "windows".to_owned(),
        version: "1.0.0".to_owned(),
        cpu_percent: 2.5,
        memory_mb: 45,
        capabilities: None,
    }
}

fn result(command_id: &str, part_index: Option<u32>) -> CommandResultDto {
    CommandResultDto {
        command_id: command_id.to_owned(),
        ok: true,
        result: Some(json!({"hostname": "build-01"})),
        error: None,
        duration_ms: Some(234),
        part_index,
        is_last: part_index.map(|_| false),
        protocol_version: None,
    }
}

fn events(c: &mut PollingClient) -> Vec<PollingEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn seed_command() -> ExecuteCommandDto {
    serde_json::from_value(json!({
        "commandId": "cmd_xyz789", "command": "screen.capture",
        "params": {"quality": 80}, "timeoutMs": 30000
    }))
    .unwrap()
}

/// Takes the request that must go out now; checks the token and that a second one waits.
#[track_caller]
fn request(c: &mut PollingClient) -> HttpCall {
    let call = c.poll_request().expect("a request goes out now");
    assert_eq!(
        call.bearer,
        Some(token()),
        "every polling request carries the token"
    );
    assert_eq!(c.poll_request(), None, "never two requests in flight");
    assert!(c.is_in_flight());
    assert_eq!(
        c.poll_timeout(),
        None,
        "no timer while a request is in flight"
    );
    call
}

#[track_caller]
fn expect_poll(c: &mut PollingClient) {
    let call = request(c);
    assert_eq!(
        (call.method, call.path.as_str()),
        (Method::Get, COMMANDS_PATH)
    );
    assert_eq!(call.body, None);
}

#[track_caller]
fn expect_post(c: &mut PollingClient, path: &str) -> String {
    let call = request(c);
    assert_eq!((call.method, call.path.as_str()), (Method::Post, path));
    support::text(call.body.as_deref().expect("a POST has a body"))
}

/// Sleeps until the client's timeout, which must be `at`, and wakes it there.
#[track_caller]
fn wake(c: &mut PollingClient, clock: &SimClock, at: f64) {
    let timeout = c.poll_timeout().expect("a timer is armed");
    assert_eq!(
        timeout,
        clock.at(at),
        "timeout at {}s, expected {at}s",
        clock.secs(timeout)
    );
    c.handle_timeout(timeout);
    assert!(
        c.poll_timeout().is_none_or(|t| t > timeout),
        "design rule 8"
    );
}

fn failed(
    request: RequestKind,
    failure: RequestFailure,
    retry_at: Option<Instant>,
) -> PollingEvent {
    PollingEvent::RequestFailed {
        request,
        failure,
        retry_at,
    }
}

fn result_kind(id: &str, part: Option<u32>) -> RequestKind {
    RequestKind::Result {
        command_id: id.to_owned(),
        part_index: part,
    }
}

#[test]
fn polling_gets_commands_every_2s() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    assert_eq!(c.state(), PollingState::Polling);
    assert_eq!(c.poll_interval(), Duration::from_secs(2));
    expect_poll(&mut c);
    c.handle_response(clock.at(0.1), answer(200, SEED_COMMANDS))
        .unwrap();
    assert_eq!(
        events(&mut c),
        vec![PollingEvent::Commands {
            commands: vec![seed_command()],
            rejected: vec![],
            scopes: None,
        }]
    );
    for k in 1..=5 {
        let at = 2.0 * k as f64;
        wake(&mut c, &clock, at);
        expect_poll(&mut c);
        c.handle_response(clock.at(at + 0.3), answer(200, NO_COMMANDS))
            .unwrap();
        assert_eq!(
            events(&mut c),
            vec![PollingEvent::Commands {
                commands: vec![],
                rejected: vec![],
                scopes: None
            }]
        );
    }
    assert_eq!(c.poll_timeout(), Some(clock.at(12.0)));
}

#[test]
fn the_poll_interval_is_configurable() {
    let clock = SimClock::new();
    let mut c = PollingClient::new(clock.at(0.0), token(), Duration::from_millis(500)).unwrap();
    expect_poll(&mut c);
    c.handle_response(clock.at(0.0), answer(200, NO_COMMANDS))
        .unwrap();
    wake(&mut c, &clock, 0.5);
    expect_poll(&mut c);
}

#[test]
fn heartbeat_goes_before_the_next_poll() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    expect_poll(&mut c);
    c.handle_response(clock.at(0.1), answer(200, NO_COMMANDS))
        .unwrap();
    // Nothing else is due: a result goes out at once.
    c.queue_result(clock.at(1.0), result("cmd_a", None))
        .unwrap();
    let _ = expect_post(&mut c, "/api/nodes/me/commands/cmd_a/result");
    c.queue_heartbeat(clock.at(1.5), heartbeat(3600)).unwrap();
    c.queue_result(clock.at(1.6), result("cmd_b", None))
        .unwrap();
    assert!(c.has_queued_heartbeat());
    // The result's answer comes after the poll's slot (2 s): the heartbeat, then the poll, then
    // the next result.
    c.handle_response(clock.at(2.5), no_content()).unwrap();
    assert_eq!(
        expect_post(&mut c, HEARTBEAT_PATH),
        r#"{"nodeId":"abc123","status":"online","uptime":3600,"platform":"windows","version":"1.0.0","cpuPercent":2.5,"memoryMb":45}"#
    );
    c.handle_response(clock.at(2.6), no_content()).unwrap();
    expect_poll(&mut c);
    c.handle_response(clock.at(2.7), answer(200, NO_COMMANDS))
        .unwrap();
    let _ = expect_post(&mut c, "/api/nodes/me/commands/cmd_b/result");
    c.handle_response(clock.at(2.8), no_content()).unwrap();
    assert_eq!(
        events(&mut c),
        vec![
            PollingEvent::Commands {
                commands: vec![],
                rejected: vec![],
                scopes: None
            },
            PollingEvent::ResultAccepted {
                command_id: "cmd_a".to_owned(),
                part_index: None
            },
            PollingEvent::HeartbeatAccepted,
            PollingEvent::Commands {
                commands: vec![],
                rejected: vec![],
                scopes: None
            },
            PollingEvent::ResultAccepted {
                command_id: "cmd_b".to_owned(),
                part_index: None
            },
        ]
    );
    // The late poll of the 2 s slot went out at 2.6 s: the next keeps the grid, at 4 s.
    wake(&mut c, &clock, 4.0);
    expect_poll(&mut c);
}

#[test]
fn results_are_posted_in_order_and_retried_until_accepted() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    expect_poll(&mut c);
    c.handle_response(clock.at(0.0), answer(200, NO_COMMANDS))
        .unwrap();
    let _ = events(&mut c);
    c.queue_result(clock.at(0.5), result("cmd_a", Some(0)))
        .unwrap();
    c.queue_result(clock.at(0.5), result("cmd_a", Some(1)))
        .unwrap();
    c.queue_result(clock.at(0.5), result("job 42/ü?#%", None))
        .unwrap();
    assert_eq!(c.queued_results(), 3);
    let part0 = expect_post(&mut c, "/api/nodes/me/commands/cmd_a/result");
    assert_eq!(
        part0,
        r#"{"ok":true,"result":{"hostname":"build-01"},"durationMs":234,"partIndex":0,"isLast":false}"#,
        "the body without commandId"
    );
    c.handle_response(clock.at(0.6), no_content()).unwrap();
    let part1 = expect_post(&mut c, "/api/nodes/me/commands/cmd_a/result");
    c.handle_response(clock.at(0.7), answer(503, "busy"))
        .unwrap();
    assert_eq!(c.queued_results(), 2, "a failed part stays queued");
    assert_eq!(c.retry_at(), Some(clock.at(2.7)));
    assert_eq!(c.poll_request(), None, "nothing before the retry");
    // The poll was due at 2 s; the retry gate holds it until 2.7 s, then it goes first.
    wake(&mut c, &clock, 2.7);
    expect_poll(&mut c);
    c.handle_response(clock.at(2.8), answer(200, NO_COMMANDS))
        .unwrap();
    assert_eq!(
        expect_post(&mut c, "/api/nodes/me/commands/cmd_a/result"),
        part1
    );
    c.handle_response(clock.at(2.9), transport()).unwrap();
    // The retry gate opens at 4.9 s; the poll of the 4 s slot is due and goes first.
    wake(&mut c, &clock, 4.9);
    expect_poll(&mut c);
    c.handle_response(clock.at(4.9), answer(200, NO_COMMANDS))
        .unwrap();
    assert_eq!(
        expect_post(&mut c, "/api/nodes/me/commands/cmd_a/result"),
        part1
    );
    c.handle_response(clock.at(5.0), answer(200, "ignored"))
        .unwrap();
    let _ = expect_post(
        &mut c,
        "/api/nodes/me/commands/job%2042%2F%C3%BC%3F%23%25/result",
    );
    c.handle_response(clock.at(5.1), no_content()).unwrap();
    assert_eq!(c.queued_results(), 0);
    assert_eq!(
        events(&mut c),
        vec![
            PollingEvent::ResultAccepted {
                command_id: "cmd_a".to_owned(),
                part_index: Some(0)
            },
            failed(
                result_kind("cmd_a", Some(1)),
                RequestFailure::Status {
                    status: 503,
                    error: None
                },
                Some(clock.at(2.7))
            ),
            PollingEvent::Commands {
                commands: vec![],
                rejected: vec![],
                scopes: None
            },
            failed(
                result_kind("cmd_a", Some(1)),
                RequestFailure::Transport(HttpError("connection reset".to_owned())),
                Some(clock.at(4.9))
            ),
            PollingEvent::Commands {
                commands: vec![],
                rejected: vec![],
                scopes: None
            },
            PollingEvent::ResultAccepted {
                command_id: "cmd_a".to_owned(),
                part_index: Some(1)
            },
            PollingEvent::ResultAccepted {
                command_id: "job 42/ü?#%".to_owned(),
                part_index: None
            },
        ]
    );
    // The poll that went out at 2.7 s (slot 2 s) sets the next slot: 6 s.
    wake(&mut c, &clock, 6.0);
    expect_poll(&mut c);
}

#[test]
fn refused_results_are_dropped_and_never_posted_again() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    expect_poll(&mut c);
    c.handle_response(clock.at(0.0), answer(200, NO_COMMANDS))
        .unwrap();
    let _ = events(&mut c);
    let refusals = [
        (400, r#"{"error":"invalid_request","message":"bad body"}"#),
        (404, r#"{"error":"not_found","message":"no such command"}"#),
        (409, r#"{"error":"conflict","message":"timed out"}"#),
        (413, "too large"),
    ];
    for (k, _) in refusals.iter().enumerate() {
        c.queue_result(clock.at(0.5), result(&format!("cmd_{k}"), None))
            .unwrap();
    }
    for (k, (status, body)) in refusals.into_iter().enumerate() {
        let _ = expect_post(&mut c, &format!("/api/nodes/me/commands/cmd_{k}/result"));
        c.handle_response(clock.at(0.5), answer(status, body))
            .unwrap();
        assert_eq!(
            events(&mut c),
            vec![PollingEvent::ResultRefused {
                command_id: format!("cmd_{k}"),
                part_index: None,
                status,
                error: RestErrorBody::from_json(body.as_bytes()).ok(),
            }]
        );
        assert_eq!(
            c.retry_at(),
            None,
            "a refusal is not a failure to back off from"
        );
    }
    assert_eq!(c.queued_results(), 0);
    assert_eq!(c.poll_request(), None);
    assert_eq!(c.poll_timeout(), Some(clock.at(2.0)));
}

#[test]
fn revoked_stops_polling() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    expect_poll(&mut c);
    c.handle_response(clock.at(0.0), answer(200, NO_COMMANDS))
        .unwrap();
    c.queue_result(clock.at(1.0), result("cmd_a", None))
        .unwrap();
    c.queue_result(clock.at(1.0), result("cmd_b", None))
        .unwrap();
    let _ = expect_post(&mut c, "/api/nodes/me/commands/cmd_a/result");
    c.queue_heartbeat(clock.at(1.0), heartbeat(1)).unwrap();
    c.handle_response(
        clock.at(1.1),
        answer(403, r#"{"error":"revoked","message":"admin_revoked"}"#),
    )
    .unwrap();
    assert_eq!(
        events(&mut c)[1..],
        [PollingEvent::Revoked {
            reason: "admin_revoked".to_owned()
        }]
    );
    assert_eq!(c.state(), PollingState::Revoked);
    assert!(c.state().is_finished());
    assert_eq!((c.poll_request(), c.poll_timeout()), (None, None));
    c.handle_timeout(clock.at(100.0));
    assert_eq!((c.poll_request(), c.poll_timeout()), (None, None));
    assert!(!c.has_queued_heartbeat());
    assert_eq!(
        c.queue_heartbeat(clock.at(101.0), heartbeat(2)),
        Err(PollingError::Ended)
    );
    assert_eq!(
        c.queue_result(clock.at(101.0), result("cmd_c", None)),
        Err(PollingError::Ended)
    );
    // Nothing is lost: the node may report them elsewhere, but sends nothing after a revoke.
    assert_eq!(
        c.take_queued_results(),
        vec![result("cmd_a", None), result("cmd_b", None)]
    );
}

#[test]
fn unauthorized_and_forbidden_stop_polling() {
    let clock = SimClock::new();
    let cases = [
        (
            401,
            r#"{"error":"unauthorized","message":"unknown node token"}"#,
            PollingState::Unauthorized,
            PollingEvent::Unauthorized {
                error: Some(RestErrorBody::new(
                    RestErrorCode::Unauthorized,
                    "unknown node token",
                )),
            },
        ),
        (
            401,
            "",
            PollingState::Unauthorized,
            PollingEvent::Unauthorized { error: None },
        ),
        (
            403,
            r#"{"error":"forbidden","message":"not approved"}"#,
            PollingState::Forbidden,
            PollingEvent::Forbidden {
                error: Some(RestErrorBody::new(RestErrorCode::Forbidden, "not approved")),
            },
        ),
        (
            403,
            "<html>",
            PollingState::Forbidden,
            PollingEvent::Forbidden { error: None },
        ),
    ];
    for (status, body, state, event) in cases {
        let mut c = client(&clock);
        c.queue_heartbeat(clock.at(0.0), heartbeat(1)).unwrap();
        let _ = expect_post(&mut c, HEARTBEAT_PATH);
        c.handle_response(clock.at(0.2), answer(status, body))
            .unwrap();
        assert_eq!(events(&mut c), vec![event]);
        assert_eq!(c.state(), state);
        assert_eq!((c.poll_request(), c.poll_timeout()), (None, None));
    }
}

#[test]
fn failures_back_off_from_the_interval_doubling_up_to_30s() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let mut now = 0.0;
    expect_poll(&mut c);
    for (n, delay) in [2.0, 4.0, 8.0, 16.0, 30.0, 30.0].into_iter().enumerate() {
        now += 0.5;
        c.handle_response(clock.at(now), transport()).unwrap();
        assert_eq!(c.consecutive_failures(), n as u32 + 1);
        now += delay;
        wake(&mut c, &clock, now);
        expect_poll(&mut c);
    }
    // An answer resets the backoff.
    c.handle_response(clock.at(now + 0.5), answer(200, NO_COMMANDS))
        .unwrap();
    assert_eq!(c.consecutive_failures(), 0);
    c.queue_result(clock.at(now + 0.5), result("cmd_a", None))
        .unwrap();
    let _ = expect_post(&mut c, "/api/nodes/me/commands/cmd_a/result");
    c.handle_response(clock.at(now + 1.0), answer(502, ""))
        .unwrap();
    assert_eq!(c.retry_at(), Some(clock.at(now + 3.0)));
    assert_eq!(MAX_RETRY_DELAY, Duration::from_secs(30));

    // With a poll interval above 30 s, the interval is the cap.
    let mut slow = PollingClient::new(clock.at(0.0), token(), Duration::from_secs(60)).unwrap();
    expect_poll(&mut slow);
    slow.handle_response(clock.at(0.0), transport()).unwrap();
    wake(&mut slow, &clock, 60.0);
    expect_poll(&mut slow);
    slow.handle_response(clock.at(60.0), transport()).unwrap();
    wake(&mut slow, &clock, 120.0);
}

#[test]
fn rate_limited_requests_wait_retry_after_ms() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    expect_poll(&mut c);
    let body = r#"{"error":"rate_limited","message":"poll at most every 2 s","retryAfterMs":5000}"#;
    c.handle_response(clock.at(0.1), answer(429, body)).unwrap();
    assert_eq!(
        events(&mut c),
        vec![failed(
            RequestKind::Poll,
            RequestFailure::Status {
                status: 429,
                error: RestErrorBody::from_json(body.as_bytes()).ok()
            },
            Some(clock.at(5.1))
        )]
    );
    wake(&mut c, &clock, 5.1);
    expect_poll(&mut c);
    // A shorter retryAfterMs does not undercut the backoff (second failure: 4 s).
    c.handle_response(
        clock.at(5.2),
        answer(429, r#"{"error":"rate_limited","retryAfterMs":100}"#),
    )
    .unwrap();
    wake(&mut c, &clock, 9.2);
    expect_poll(&mut c);
    // 408 is retried too.
    c.handle_response(clock.at(9.3), answer(408, "")).unwrap();
    wake(&mut c, &clock, 17.3);
    expect_poll(&mut c);
}

#[test]
fn an_undecodable_poll_answer_is_retried() {
    let clock = SimClock::new();
    for body in [
        r#"{"commands":"none"}"#,
        "{}",
        "",
        r#"{"commands":[],"scopes":"all"}"#,
    ] {
        let mut c = client(&clock);
        expect_poll(&mut c);
        c.handle_response(clock.at(0.5), answer(200, body)).unwrap();
        match events(&mut c).as_slice() {
            [PollingEvent::RequestFailed {
                request: RequestKind::Poll,
                failure:
                    RequestFailure::InvalidBody {
                        status: 200,
                        error: RestError::InvalidBody { .. },
                    },
                retry_at: Some(at),
            }] => assert_eq!(*at, clock.at(2.5)),
            other => panic!("{body}: {other:?}"),
        }
        wake(&mut c, &clock, 2.5);
        expect_poll(&mut c);
    }
}

#[test]
fn one_malformed_command_does_not_hide_the_others_and_scopes_are_passed_on() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    expect_poll(&mut c);
    let body = r#"{"commands":[{"commandId":"bad","params":{}},{"commandId":"cmd_xyz789","command":"screen.capture","params":{"quality":80},"timeoutMs":30000}],"scopes":["screen.capture","system.info"]}"#;
    c.handle_response(clock.at(0.1), answer(200, body)).unwrap();
    match events(&mut c).as_slice() {
        [PollingEvent::Commands {
            commands,
            rejected,
            scopes,
        }] => {
            assert_eq!(commands, &vec![seed_command()]);
            assert!(matches!(
                rejected.as_slice(),
                [RejectedCommand { index: 0, command_id: Some(id), .. }] if id == "bad"
            ));
            assert_eq!(
                scopes.as_deref(),
                Some(&["screen.capture".to_owned(), "system.info".to_owned()][..])
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_the_latest_heartbeat_is_kept() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    c.queue_heartbeat(clock.at(0.0), heartbeat(1)).unwrap();
    c.queue_heartbeat(clock.at(0.0), heartbeat(2)).unwrap();
    assert!(expect_post(&mut c, HEARTBEAT_PATH).contains(r#""uptime":2,"#));
    // A newer heartbeat queued while one is in flight replaces it when that one fails.
    c.queue_heartbeat(clock.at(0.1), heartbeat(3)).unwrap();
    c.handle_response(clock.at(0.2), transport()).unwrap();
    wake(&mut c, &clock, 2.2);
    assert!(expect_post(&mut c, HEARTBEAT_PATH).contains(r#""uptime":3,"#));
    // Without a newer one, the failed heartbeat itself is retried (before the due poll).
    c.handle_response(clock.at(2.3), answer(500, "")).unwrap();
    wake(&mut c, &clock, 6.3);
    assert!(expect_post(&mut c, HEARTBEAT_PATH).contains(r#""uptime":3,"#));
    c.handle_response(clock.at(6.4), no_content()).unwrap();
    expect_poll(&mut c);
    assert_eq!(
        events(&mut c).last(),
        Some(&PollingEvent::HeartbeatAccepted)
    );
}

#[test]
fn a_refused_heartbeat_or_poll_is_dropped_and_the_poll_keeps_its_slot() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    c.queue_heartbeat(clock.at(0.0), heartbeat(1)).unwrap();
    let _ = expect_post(&mut c, HEARTBEAT_PATH);
    let invalid = r#"{"error":"invalid_request","message":"cpuPercent"}"#;
    c.handle_response(clock.at(0.1), answer(400, invalid))
        .unwrap();
    expect_poll(&mut c);
    c.handle_response(clock.at(0.2), answer(404, "")).unwrap();
    assert_eq!(
        events(&mut c),
        vec![
            failed(
                RequestKind::Heartbeat,
                RequestFailure::Status {
                    status: 400,
                    error: RestErrorBody::from_json(invalid.as_bytes()).ok()
                },
                None
            ),
            failed(
                RequestKind::Poll,
                RequestFailure::Status {
                    status: 404,
                    error: None
                },
                None
            ),
        ]
    );
    assert!(!c.has_queued_heartbeat());
    // The poll of the 0 s slot went out at 0.1 s, behind the heartbeat: the next is at 2 s.
    wake(&mut c, &clock, 2.0);
    expect_poll(&mut c);
}

#[test]
fn slow_answers_and_late_wake_ups_skip_poll_slots() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    expect_poll(&mut c);
    // Answered after its next slot: the next slot on the grid that is not in the past.
    c.handle_response(clock.at(2.5), answer(200, NO_COMMANDS))
        .unwrap();
    wake(&mut c, &clock, 4.0);
    expect_poll(&mut c);
    c.handle_response(clock.at(4.1), answer(200, NO_COMMANDS))
        .unwrap();
    // Woken late, at 6.7 s: the poll of the 6 s slot goes then, and the next keeps the grid: 8 s.
    c.handle_timeout(clock.at(6.7));
    expect_poll(&mut c);
    c.handle_response(clock.at(6.8), answer(200, NO_COMMANDS))
        .unwrap();
    wake(&mut c, &clock, 8.0);
    expect_poll(&mut c);
    // Answered exactly on the next slot: the next poll goes at once.
    c.handle_response(clock.at(12.0), answer(200, NO_COMMANDS))
        .unwrap();
    expect_poll(&mut c);
}

#[test]
fn early_and_spurious_timeouts_are_no_ops() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    expect_poll(&mut c);
    c.handle_response(clock.at(0.1), answer(200, NO_COMMANDS))
        .unwrap();
    for at in [0.1, 1.0, 1.999] {
        c.handle_timeout(clock.at(at));
        assert_eq!(c.poll_request(), None);
        assert_eq!(c.poll_timeout(), Some(clock.at(2.0)));
    }
    // While a request is in flight a timeout hands out nothing.
    wake(&mut c, &clock, 2.0);
    expect_poll(&mut c);
    c.handle_timeout(clock.at(9.0));
    assert_eq!(c.poll_request(), None);
}

#[test]
fn stop_ends_requests_and_hands_back_unaccepted_results() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    expect_poll(&mut c);
    c.handle_response(clock.at(0.0), answer(200, NO_COMMANDS))
        .unwrap();
    let _ = events(&mut c);
    c.queue_result(clock.at(0.5), result("cmd_a", Some(0)))
        .unwrap();
    c.queue_result(clock.at(0.5), result("cmd_a", Some(1)))
        .unwrap();
    c.queue_heartbeat(clock.at(0.5), heartbeat(9)).unwrap();
    let _ = expect_post(&mut c, HEARTBEAT_PATH);
    c.handle_response(clock.at(0.6), no_content()).unwrap();
    let _ = expect_post(&mut c, "/api/nodes/me/commands/cmd_a/result");
    c.stop();
    c.stop();
    assert_eq!(c.state(), PollingState::Stopped);
    assert_eq!((c.poll_request(), c.poll_timeout()), (None, None));
    assert_eq!(c.queued_results(), 2, "the part in flight counts");
    assert_eq!(
        c.take_queued_results(),
        vec![result("cmd_a", Some(0)), result("cmd_a", Some(1))]
    );
    assert_eq!(c.take_queued_results(), vec![]);
    // The answer to the part in flight is taken and changes nothing.
    c.handle_response(clock.at(0.7), no_content()).unwrap();
    assert_eq!(events(&mut c), vec![PollingEvent::HeartbeatAccepted]);
    assert_eq!(
        c.queue_result(clock.at(1.0), result("cmd_b", None)),
        Err(PollingError::Stopped)
    );
    assert_eq!(
        c.queue_heartbeat(clock.at(1.0), heartbeat(10)),
        Err(PollingError::Stopped)
    );
    c.handle_timeout(clock.at(2.0));
    assert_eq!((c.poll_request(), c.poll_timeout()), (None, None));
}

#[test]
fn a_part_in_flight_at_stop_is_reported_if_accepted_and_kept_otherwise() {
    let clock = SimClock::new();
    for (reply, accepted) in [
        (no_content(), true),
        (answer(503, ""), false),
        (transport(), false),
    ] {
        let mut c = client(&clock);
        expect_poll(&mut c);
        c.handle_response(clock.at(0.0), answer(200, NO_COMMANDS))
            .unwrap();
        let _ = events(&mut c);
        c.queue_result(clock.at(0.5), result("cmd_a", None))
            .unwrap();
        c.queue_result(clock.at(0.5), result("cmd_b", None))
            .unwrap();
        let _ = expect_post(&mut c, "/api/nodes/me/commands/cmd_a/result");
        c.stop();
        c.handle_response(clock.at(0.6), reply).unwrap();
        assert_eq!((c.poll_request(), c.poll_timeout()), (None, None));
        if accepted {
            assert_eq!(
                events(&mut c),
                vec![PollingEvent::ResultAccepted {
                    command_id: "cmd_a".to_owned(),
                    part_index: None
                }]
            );
            assert_eq!(c.take_queued_results(), vec![result("cmd_b", None)]);
        } else {
            assert_eq!(events(&mut c), vec![]);
            assert_eq!(
                c.take_queued_results(),
                vec![result("cmd_a", None), result("cmd_b", None)]
            );
        }
    }
}

#[test]
fn results_taken_back_while_polling_are_not_reported_again() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    expect_poll(&mut c);
    c.handle_response(clock.at(0.0), answer(200, NO_COMMANDS))
        .unwrap();
    let _ = events(&mut c);
    c.queue_result(clock.at(0.5), result("cmd_a", None))
        .unwrap();
    let _ = expect_post(&mut c, "/api/nodes/me/commands/cmd_a/result");
    assert_eq!(c.take_queued_results(), vec![result("cmd_a", None)]);
    c.handle_response(clock.at(0.6), answer(503, "")).unwrap();
    assert_eq!(events(&mut c), vec![]);
    assert_eq!(c.queued_results(), 0);
    assert_eq!(c.poll_timeout(), Some(clock.at(2.0)));
}

#[test]
fn caller_misuse_is_an_error() {
    let clock = SimClock::new();
    assert_eq!(
        PollingClient::new(clock.at(0.0), token(), Duration::ZERO).map(|_| ()),
        Err(PollingError::ZeroInterval)
    );
    let mut c = client(&clock);
    assert_eq!(
        c.handle_response(clock.at(0.0), no_content()),
        Err(PollingError::NoRequestInFlight)
    );
    assert_eq!(
        c.queue_result(clock.at(0.0), result("", None)),
        Err(PollingError::UnpostableCommandId(RestError::EmptyCommandId))
    );
    for id in [".", ".."] {
        assert_eq!(
            c.queue_result(clock.at(0.0), result(id, None)),
            Err(PollingError::UnpostableCommandId(
                RestError::DotSegmentCommandId {
                    command_id: id.to_owned()
                }
            ))
        );
    }
    assert_eq!(c.queued_results(), 0);
}

#[test]
fn debug_output_never_shows_the_token_secret() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    assert!(!format!("{c:?}").contains("a1b2c3d4e5f6"));
    let call = c.poll_request().unwrap();
    assert!(!format!("{call:?}").contains("a1b2c3d4e5f6"));
    assert_eq!(c.token(), &token());
}
