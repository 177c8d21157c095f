//! Properties over random sequences of inputs and answers.

use super::*;

#[derive(Clone, Debug)]
enum Step {
    /// Answer the request in flight after `delay_ms`, or sleep until the next timeout.
    Answer { delay_ms: u64, reply: Reply },
    /// A spurious wake-up `delay_ms` later.
    Spurious { delay_ms: u64 },
}

#[derive(Clone, Debug)]
enum Reply {
    Pending(u8),
    Approved,
    Rejected,
    Expired,
    Transport,
    Status(u16, Vec<u8>),
    Body(Vec<u8>),
}

impl Reply {
    fn result(&self) -> HttpResult {
        match self {
            Reply::Pending(code) => pending(&format!("ABC-{code:03}")),
            Reply::Approved => approved(),
            Reply::Rejected => answer(200, r#"{"status":"rejected"}"#),
            Reply::Expired => answer(200, r#"{"status":"expired"}"#),
            Reply::Transport => transport(),
            Reply::Status(status, body) => Ok(HttpResponse {
                status: *status,
                body: body.clone(),
            }),
            Reply::Body(body) => Ok(HttpResponse {
                status: 200,
                body: body.clone(),
            }),
        }
    }
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        8 => (0u8..3).prop_map(Reply::Pending),
        1 => Just(Reply::Approved),
        1 => Just(Reply::Rejected),
        1 => Just(Reply::Expired),
        3 => Just(Reply::Transport),
        3 => (
            prop_oneof![Just(429u16), Just(400), Just(403), Just(409), Just(500), 100u16..600],
            prop_oneof![
                Just(br#"{"error":"rate_limited","retryAfterMs":4500}"#.to_vec()),
                Just(br#"{"error":"rate_limited","retryAfterMs":18446744073709551615}"#.to_vec()),
                proptest::collection::vec(any::<u8>(), 0..40),
            ],
        )
            .prop_map(|(s, b)| Reply::Status(s, b)),
        2 => proptest::collection::vec(any::<u8>(), 0..60).prop_map(Reply::Body),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u64..8_000, reply()).prop_map(|(delay_ms, reply)| Step::Answer { delay_ms, reply }),
        1 => (0u64..5_000).prop_map(|delay_ms| Step::Spurious { delay_ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_answers_keep_one_request_in_flight_and_the_3s_cadence(
        steps in proptest::collection::vec(step(), 1..400),
    ) {
        let clock = SimClock::new();
        let mut c = client(&clock);
        let mut now = clock.at(0.0);
        let mut in_flight = false;
        let mut sends: Vec<Instant> = Vec::new();
        let mut terminal = 0;
        let drain = |c: &mut PairingClient, now: Instant, in_flight: &mut bool,
                         sends: &mut Vec<Instant>, terminal: &mut usize| {
            if let Some(call) = c.poll_request() {
                prop_assert!(!*in_flight, "two requests in flight");
                prop_assert_eq!(call.path.as_str(), PAIR_PATH);
                prop_assert!(*terminal == 0, "a request after a terminal event");
                prop_assert!(now < c.expires_at(), "a request after the secret expired");
                if let Some(last) = sends.last() {
                    prop_assert!(now.duration_since(*last) >= Duration::from_secs(3),
                        "requests {}s apart", clock.secs(now) - clock.secs(*last));
                }
                sends.push(now);
                *in_flight = true;
            }
            prop_assert_eq!(c.poll_request(), None);
            while let Some(event) = c.poll_event() {
                prop_assert!(*terminal == 0, "an event after a terminal event: {:?}", event);
                if !matches!(event, PairingEvent::Code(_) | PairingEvent::RequestFailed { .. }) {
                    *terminal += 1;
                }
            }
            if *terminal > 0 {
                prop_assert!(c.state().is_terminal());
                prop_assert_eq!(c.poll_timeout(), None);
            }
            Ok(())
        };
        drain(&mut c, now, &mut in_flight, &mut sends, &mut terminal)?;
        for step in steps {
            match step {
                Step::Answer { delay_ms, reply } if in_flight => {
                    now += Duration::from_millis(delay_ms);
                    c.handle_response(now, reply.result()).unwrap();
                    in_flight = false;
                }
                Step::Answer { .. } => match c.poll_timeout() {
                    Some(at) => {
                        prop_assert!(at >= now);
                        now = at;
                        c.handle_timeout(now);
                        prop_assert!(c.poll_timeout().is_none_or(|t| t > now), "rule 8");
                    }
                    None => break,
                },
                Step::Spurious { delay_ms } => {
                    now += Duration::from_millis(delay_ms);
                    c.handle_timeout(now);
                    prop_assert!(c.poll_timeout().is_none_or(|t| t > now), "rule 8");
                }
            }
            drain(&mut c, now, &mut in_flight, &mut sends, &mut terminal)?;
        }
        prop_assert!(terminal <= 1);
        prop_assert_eq!(in_flight, c.is_in_flight());
    }
}
