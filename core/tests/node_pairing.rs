//! The pairing client (core/src/node/pairing.rs): POST every 3 s until approved, rejected or
//! expired, at exact instants of a virtual clock.
mod support;

#[path = "node_pairing/props.rs"]
mod props;

use std::time::{Duration, Instant};

use nodelink_core::node::http::{HttpCall, HttpError, HttpResponse, HttpResult, Method};
use nodelink_core::node::pairing::{
    PairingClient, PairingError, PairingEvent, PairingInfo, PairingState, RequestFailure,
};
use nodelink_core::rng::Rng;
use nodelink_core::wire::rest::{NodeToken, RestErrorBody, RestErrorCode, TokenError, PAIR_PATH};
use proptest::prelude::*;
use support::SimClock;

const SECRET: &str = "s_9f8e7d6c5b4a";

fn client(clock: &SimClock) -> PairingClient {
    PairingClient::new(
        clock.at(0.0),
        "gpu-node-1".to_owned(),
        SECRET.to_owned(),
        PairingInfo::default(),
    )
    .expect("a valid nodeId and secret")
}

fn answer(status: u16, body: &str) -> HttpResult {
    Ok(HttpResponse {
        status,
        body: body.as_bytes().to_vec(),
    })
}

fn pending(code: &str) -> HttpResult {
    answer(
        200,
        &format!(r#"{{"status":"pending","pairingCode":"{code}"}}"#),
    )
}

fn approved() -> HttpResult {
    answer(
        200,
        r#"{"status":"approved","token":"gpu-node-1.a1b2c3d4e5f6","gatewayUrl":"https://gw.example.com"}"#,
    )
}

fn transport() -> HttpResult {
    Err(HttpError("connection refused".to_owned()))
}

fn events(c: &mut PairingClient) -> Vec<PairingEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Takes the request that must be due now, checking that it is the pairing POST.
#[track_caller]
fn request(c: &mut PairingClient) -> HttpCall {
    let call = c.poll_request().expect("a pairing request is due");
    assert_eq!(call.method, Method::Post);
    assert_eq!(call.path, PAIR_PATH);
    assert_eq!(call.bearer, None, "pairing carries no token");
    assert_eq!(c.poll_request(), None, "never two requests in flight");
    call
}

/// Sleeps until the client's timeout, which must be `at`, and wakes it there.
#[track_caller]
fn wake(c: &mut PairingClient, clock: &SimClock, at: f64) {
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

#[test]
fn the_first_request_goes_out_at_once_with_the_seed_body_and_no_token() {
    let clock = SimClock::new();
    let mut c = PairingClient::new(
        clock.at(0.0),
        "gpu-node-1".to_owned(),
        SECRET.to_owned(),
        PairingInfo {
            name: Some("rack 3, slot 2".to_owned()),
            platform: Some("linux".to_owned()),
        },
    )
    .unwrap();
    assert_eq!(c.state(), PairingState::Pending);
    let call = request(&mut c);
    assert_eq!(
        support::text(call.body.as_deref().unwrap()),
        r#"{"nodeId":"gpu-node-1","pairingSecret":"s_9f8e7d6c5b4a","name":"rack 3, slot 2","platform":"linux"}"#
    );
    assert!(c.is_in_flight());
    // Without the extensions, the seed's exact request.
    let mut plain = client(&clock);
    let call = request(&mut plain);
    assert_eq!(
        support::text(call.body.as_deref().unwrap()),
        r#"{"nodeId":"gpu-node-1","pairingSecret":"s_9f8e7d6c5b4a"}"#
    );
}

#[test]
fn pairing_polls_every_3s_and_expires_at_15min() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    assert_eq!(c.expires_at(), clock.at(900.0));
    let first = request(&mut c);
    c.handle_response(clock.at(0.25), pending("ABC-123"))
        .unwrap();
    let mut sent = 1;
    for k in 1..300 {
        let at = 3.0 * k as f64;
        wake(&mut c, &clock, at);
        let call = request(&mut c);
        assert_eq!(call, first, "the same request every time");
        sent += 1;
        c.handle_response(clock.at(at + 0.25), pending("ABC-123"))
            .unwrap();
    }
    assert_eq!(sent, 300, "0 s, 3 s, ..., 897 s");
    // 900 s is both the next grid point and the secret's end: the expiry wins.
    wake(&mut c, &clock, 900.0);
    assert_eq!(c.poll_request(), None);
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::Code("ABC-123".to_owned()),
            PairingEvent::Expired
        ]
    );
    assert_eq!(c.state(), PairingState::Expired);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn pairing_code_event_once_per_code() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let codes = [
        "ABC-123", "ABC-123", "ABC-123", "XYZ-789", "XYZ-789", "ABC-123",
    ];
    for (k, code) in codes.iter().enumerate() {
        let at = 3.0 * k as f64;
        if k > 0 {
            wake(&mut c, &clock, at);
        }
        let _ = request(&mut c);
        c.handle_response(clock.at(at + 0.1), pending(code))
            .unwrap();
        assert_eq!(c.pairing_code(), Some(*code));
    }
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::Code("ABC-123".to_owned()),
            PairingEvent::Code("XYZ-789".to_owned()),
            PairingEvent::Code("ABC-123".to_owned()),
        ]
    );
}

#[test]
fn approved_pairing_yields_the_token_and_stops() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let _ = request(&mut c);
    c.handle_response(clock.at(0.1), pending("ABC-123"))
        .unwrap();
    wake(&mut c, &clock, 3.0);
    let _ = request(&mut c);
    c.handle_response(clock.at(3.2), approved()).unwrap();
    assert_eq!(
        events(&mut c),
        vec![
            PairingEvent::Code("ABC-123".to_owned()),
            PairingEvent::Approved {
                token: NodeToken::parse("gpu-node-1.a1b2c3d4e5f6").unwrap(),
                gateway_url: "https://gw.example.com".to_owned(),
            },
        ]
    );
    assert_eq!(c.state(), PairingState::Approved);
    assert!(c.state().is_terminal());
    assert_eq!(c.poll_timeout(), None, "no timer after a terminal event");
    c.handle_timeout(clock.at(6.0));
    c.handle_timeout(clock.at(900.0));
    assert_eq!(c.poll_request(), None);
    assert_eq!(events(&mut c), vec![], "no Expired after Approved");
}

#[test]
fn rejected_pairing_stops_with_its_reason() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let _ = request(&mut c);
    c.handle_response(
        clock.at(0.1),
        answer(200, r#"{"status":"rejected","reason":"unknown device"}"#),
    )
    .unwrap();
    assert_eq!(
        events(&mut c),
        vec![PairingEvent::Rejected {
            reason: Some("unknown device".to_owned())
        }]
    );
    assert_eq!(c.state(), PairingState::Rejected);
    assert_eq!((c.poll_timeout(), c.poll_request()), (None, None));

    let mut c = client(&clock);
    let _ = request(&mut c);
    c.handle_response(clock.at(0.1), answer(200, r#"{"status":"rejected"}"#))
        .unwrap();
    assert_eq!(
        events(&mut c),
        vec![PairingEvent::Rejected { reason: None }]
    );
}

#[test]
fn an_expired_answer_stops_at_once() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let _ = request(&mut c);
    c.handle_response(clock.at(0.1), answer(200, r#"{"status":"expired"}"#))
        .unwrap();
    assert_eq!(events(&mut c), vec![PairingEvent::Expired]);
    assert_eq!(c.state(), PairingState::Expired);
    assert_eq!((c.poll_timeout(), c.poll_request()), (None, None));
}

#[test]
fn transport_errors_keep_the_pairing_cadence() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let failures: Vec<(HttpResult, RequestFailure)> = vec![
        (
            transport(),
            RequestFailure::Transport(HttpError("connection refused".to_owned())),
        ),
        (
            answer(503, "<html>maintenance</html>"),
            RequestFailure::Status {
                status: 503,
                error: None,
            },
        ),
        (
            answer(401, r#"{"error":"unauthorized","message":"who are you"}"#),
            RequestFailure::Status {
                status: 401,
                error: Some(RestErrorBody::new(
                    RestErrorCode::Unauthorized,
                    "who are you",
                )),
            },
        ),
        (
            answer(302, ""),
            RequestFailure::Status {
                status: 302,
                error: None,
            },
        ),
    ];
    for (k, (result, failure)) in failures.into_iter().enumerate() {
        let at = 3.0 * k as f64;
        if k > 0 {
            wake(&mut c, &clock, at);
        }
        let _ = request(&mut c);
        c.handle_response(clock.at(at + 1.5), result).unwrap();
        assert_eq!(
            events(&mut c),
            vec![PairingEvent::RequestFailed { failure }]
        );
        assert_eq!(c.state(), PairingState::Pending);
    }
    wake(&mut c, &clock, 12.0);
    let _ = request(&mut c);
}

#[test]
fn undecodable_answers_are_failed_requests_and_polling_goes_on() {
    let clock = SimClock::new();
    let bodies = [
        r#"{"status":"on_hold"}"#,
        r#"{"status":"pending"}"#,
        r#"{"status":"approved","token":"no-dot","gatewayUrl":"https://gw"}"#,
        "not json",
        "",
    ];
    for body in bodies {
        let mut c = client(&clock);
        let _ = request(&mut c);
        c.handle_response(clock.at(0.5), answer(200, body)).unwrap();
        match events(&mut c).as_slice() {
            [PairingEvent::RequestFailed {
                failure: RequestFailure::InvalidBody { status: 200, .. },
            }] => {}
            other => panic!("{body}: {other:?}"),
        }
        wake(&mut c, &clock, 3.0);
        let _ = request(&mut c);
    }
}

#[test]
fn forbidden_keeps_the_cadence_while_another_secret_holds_the_node_id() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let _ = request(&mut c);
    c.handle_response(
        clock.at(0.1),
        answer(403, r#"{"error":"forbidden","message":"another secret"}"#),
    )
    .unwrap();
    assert_eq!(
        events(&mut c),
        vec![PairingEvent::RequestFailed {
            failure: RequestFailure::Status {
                status: 403,
                error: Some(RestErrorBody::new(
                    RestErrorCode::Forbidden,
                    "another secret"
                )),
            }
        }]
    );
    wake(&mut c, &clock, 3.0);
    let _ = request(&mut c);
}

#[test]
fn bad_request_and_conflict_refuse_the_pairing_for_good() {
    let clock = SimClock::new();
    for (status, body, error) in [
        (
            400,
            r#"{"error":"invalid_request","message":"bad nodeId"}"#,
            Some(RestErrorBody::new(
                RestErrorCode::InvalidRequest,
                "bad nodeId",
            )),
        ),
        (
            409,
            r#"{"error":"conflict","message":"nodeId taken"}"#,
            Some(RestErrorBody::new(RestErrorCode::Conflict, "nodeId taken")),
        ),
        (409, "garbage", None),
    ] {
        let mut c = client(&clock);
        let _ = request(&mut c);
        c.handle_response(clock.at(0.1), answer(status, body))
            .unwrap();
        assert_eq!(
            events(&mut c),
            vec![PairingEvent::Refused { status, error }]
        );
        assert_eq!(c.state(), PairingState::Refused);
        assert_eq!((c.poll_timeout(), c.poll_request()), (None, None));
    }
}

#[test]
fn rate_limited_pairing_waits_retry_after_ms_then_resumes_the_3s_grid() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let _ = request(&mut c);
    c.handle_response(
        clock.at(0.2),
        answer(
            429,
            r#"{"error":"rate_limited","message":"slow down","retryAfterMs":10000}"#,
        ),
    )
    .unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [PairingEvent::RequestFailed {
            failure: RequestFailure::Status { status: 429, .. }
        }]
    ));
    wake(&mut c, &clock, 10.2);
    let _ = request(&mut c);
    c.handle_response(clock.at(10.3), pending("ABC-123"))
        .unwrap();
    wake(&mut c, &clock, 13.2);
    let _ = request(&mut c);
    // A retryAfterMs shorter than the cadence does not speed it up.
    c.handle_response(
        clock.at(13.3),
        answer(429, r#"{"error":"rate_limited","retryAfterMs":1000}"#),
    )
    .unwrap();
    wake(&mut c, &clock, 16.2);
    let _ = request(&mut c);
    // Without retryAfterMs (or without a body), the cadence.
    c.handle_response(clock.at(16.3), answer(429, "")).unwrap();
    wake(&mut c, &clock, 19.2);
    let _ = request(&mut c);
}

#[test]
fn slow_answers_skip_grid_points_instead_of_bunching() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let _ = request(&mut c);
    // Answered exactly on the next grid point: the next request is due at once.
    c.handle_response(clock.at(3.0), pending("ABC-123"))
        .unwrap();
    assert_eq!(c.poll_timeout(), Some(clock.at(900.0)), "only the expiry");
    let _ = request(&mut c);
    // Answered 4.5 s after it was sent: 6 s is skipped, the next is at 9 s.
    c.handle_response(clock.at(7.5), pending("ABC-123"))
        .unwrap();
    wake(&mut c, &clock, 9.0);
    let _ = request(&mut c);
    // While a request is in flight, only the expiry is armed and timeouts hand out nothing.
    assert_eq!(c.poll_timeout(), Some(clock.at(900.0)));
    c.handle_timeout(clock.at(12.0));
    assert_eq!(c.poll_request(), None);
}

#[test]
fn a_late_wake_up_sends_at_once_and_the_next_request_waits_3s_on_the_grid() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let _ = request(&mut c);
    c.handle_response(clock.at(0.1), pending("ABC-123"))
        .unwrap();
    assert_eq!(c.poll_timeout(), Some(clock.at(3.0)));
    // The shell oversleeps until 4.5 s: the request goes then, not twice.
    c.handle_timeout(clock.at(4.5));
    let _ = request(&mut c);
    c.handle_response(clock.at(4.6), pending("ABC-123"))
        .unwrap();
    // 6 s would be 1.5 s after the last request: the grid's next point, 9 s, instead.
    wake(&mut c, &clock, 9.0);
    let _ = request(&mut c);
}

#[test]
fn early_and_spurious_timeouts_are_no_ops() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let _ = request(&mut c);
    c.handle_response(clock.at(0.1), pending("ABC-123"))
        .unwrap();
    for at in [0.1, 1.0, 2.999] {
        c.handle_timeout(clock.at(at));
        assert_eq!(c.poll_request(), None);
        assert_eq!(c.poll_timeout(), Some(clock.at(3.0)));
    }
    let _ = events(&mut c);
    wake(&mut c, &clock, 3.0);
    let _ = request(&mut c);
    assert_eq!(events(&mut c), vec![]);
}

#[test]
fn local_expiry_with_a_request_in_flight_ignores_its_answer() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    let _ = request(&mut c);
    // The gateway never answers until after the 15 minutes.
    c.handle_timeout(clock.at(900.0));
    assert_eq!(events(&mut c), vec![PairingEvent::Expired]);
    assert!(c.is_in_flight());
    assert_eq!(c.poll_timeout(), None);
    c.handle_response(clock.at(901.0), approved()).unwrap();
    assert_eq!(
        events(&mut c),
        vec![],
        "the late answer is taken and ignored"
    );
    assert!(!c.is_in_flight());
    assert_eq!(
        c.handle_response(clock.at(902.0), approved()),
        Err(PairingError::NoRequestInFlight)
    );
}

#[test]
fn an_answer_read_at_or_after_the_15_minutes_is_ignored() {
    let clock = SimClock::new();
    for at in [900.0, 900.5] {
        // A shell that woke late and reads the answer before the timer: the same outcome.
        let mut c = client(&clock);
        let _ = request(&mut c);
        c.handle_response(clock.at(at), approved()).unwrap();
        assert_eq!(events(&mut c), vec![PairingEvent::Expired]);
        assert_eq!(c.state(), PairingState::Expired);
        assert!(!c.is_in_flight());
        assert_eq!((c.poll_request(), c.poll_timeout()), (None, None));
    }
    // Just before: read.
    let mut c = client(&clock);
    let _ = request(&mut c);
    c.handle_response(clock.at(899.999), approved()).unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [PairingEvent::Approved { .. }]
    ));
}

#[test]
fn an_answer_without_a_request_is_a_usage_error() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    assert_eq!(
        c.handle_response(clock.at(0.0), pending("ABC-123")),
        Err(PairingError::NoRequestInFlight)
    );
    let _ = request(&mut c);
    c.handle_response(clock.at(0.1), pending("ABC-123"))
        .unwrap();
    assert_eq!(
        c.handle_response(clock.at(0.2), pending("ABC-123")),
        Err(PairingError::NoRequestInFlight)
    );
    assert_eq!(
        events(&mut c),
        vec![PairingEvent::Code("ABC-123".to_owned())]
    );
}

#[test]
fn new_refuses_a_bad_node_id_and_an_empty_secret() {
    let clock = SimClock::new();
    let new = |id: &str, secret: &str| {
        PairingClient::new(
            clock.at(0.0),
            id.to_owned(),
            secret.to_owned(),
            PairingInfo::default(),
        )
        .map(|_| ())
    };
    assert_eq!(
        new("", SECRET),
        Err(PairingError::InvalidNodeId(TokenError::EmptyNodeId))
    );
    assert_eq!(
        new("a.b", SECRET),
        Err(PairingError::InvalidNodeId(TokenError::InvalidNodeIdChar {
            at: 1,
            found: '.'
        }))
    );
    assert_eq!(new("abc123", ""), Err(PairingError::EmptySecret));
    assert_eq!(new("abc123", SECRET), Ok(()));
}

#[test]
fn generated_secrets_are_s_and_64_hex_digits_from_the_seed() {
    let mut rng = Rng::from_seed([7; 32]);
    let a = PairingClient::generate_secret(&mut rng);
    let b = PairingClient::generate_secret(&mut rng);
    assert_eq!(a.len(), 66);
    assert!(a.starts_with("s_"));
    assert!(a[2..]
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_ne!(a, b);
    let mut again = Rng::from_seed([7; 32]);
    assert_eq!(PairingClient::generate_secret(&mut again), a);
}

#[test]
fn debug_output_never_shows_the_secret() {
    let clock = SimClock::new();
    let mut c = client(&clock);
    assert!(!format!("{c:?}").contains("9f8e7d6c5b4a"));
    let _ = request(&mut c);
    c.handle_response(clock.at(0.1), approved()).unwrap();
    let shown = format!("{:?}", events(&mut c));
    assert!(!shown.contains("a1b2c3d4e5f6"), "{shown}");
}

#[test]
fn failures_display_what_went_wrong() {
    let status = RequestFailure::Status {
        status: 429,
        error: Some(RestErrorBody::new(RestErrorCode::RateLimited, "slow down")),
    };
    assert_eq!(status.to_string(), "HTTP 429 rate_limited: slow down");
    assert_eq!(status.status(), Some(429));
    let bare = RequestFailure::Status {
        status: 503,
        error: None,
    };
    assert_eq!(bare.to_string(), "HTTP 503");
    let transport = RequestFailure::Transport(HttpError("reset".to_owned()));
    assert_eq!(transport.to_string(), "HTTP request failed: reset");
    assert_eq!(transport.status(), None);
    assert_eq!(transport.retry_after(), None);
}
