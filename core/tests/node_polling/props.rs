//! Properties over random sequences of inputs and answers.

use super::*;

#[derive(Clone, Debug)]
enum Step {
    QueueHeartbeat,
    QueueResult {
        command: u8,
        part: Option<u32>,
    },
    /// Answer the request in flight after `delay_ms`, or sleep until the next timeout.
    Answer {
        delay_ms: u64,
        reply: Reply,
    },
    Spurious {
        delay_ms: u64,
    },
    Take,
    Stop,
}

#[derive(Clone, Debug)]
enum Reply {
    Ok(&'static str),
    Transport,
    Status(u16, Vec<u8>),
    Body(u16, Vec<u8>),
}

impl Reply {
    fn result(&self) -> HttpResult {
        match self {
            Reply::Ok(body) => answer(200, body),
            Reply::Transport => transport(),
            Reply::Status(status, body) | Reply::Body(status, body) => Ok(HttpResponse {
                status: *status,
                body: body.clone(),
            }),
        }
    }
}

fn reply() -> impl Strategy<Value = Reply> {
    let error_body = prop_oneof![
        Just(br#"{"error":"rate_limited","retryAfterMs":3000}"#.to_vec()),
        Just(br#"{"error":"rate_limited","retryAfterMs":18446744073709551615}"#.to_vec()),
        Just(br#"{"error":"revoked","message":"admin_revoked"}"#.to_vec()),
        Just(br#"{"error":"not_found"}"#.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..30),
    ];
    prop_oneof![
        6 => prop_oneof![Just(NO_COMMANDS), Just(SEED_COMMANDS)].prop_map(Reply::Ok),
        3 => Just(Reply::Transport),
        3 => (
            prop_oneof![Just(429u16), Just(400), Just(404), Just(500), Just(503), 100u16..600],
            error_body,
        )
            .prop_map(|(s, b)| Reply::Status(s, b)),
        1 => (200u16..300, proptest::collection::vec(any::<u8>(), 0..60))
            .prop_map(|(s, b)| Reply::Body(s, b)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::QueueHeartbeat),
        3 => (0u8..4, proptest::option::of(0u32..3))
            .prop_map(|(command, part)| Step::QueueResult { command, part }),
        8 => (0u64..6_000, reply()).prop_map(|(delay_ms, reply)| Step::Answer { delay_ms, reply }),
        2 => (0u64..4_000).prop_map(|delay_ms| Step::Spurious { delay_ms }),
        1 => Just(Step::Take),
        1 => Just(Step::Stop),
    ]
}

/// The model the client is checked against.
struct Model {
    interval: Duration,
    in_flight: Option<HttpCall>,
    first_poll: Option<Instant>,
    polls: u32,
    gate: Option<Instant>,
    /// The `durationMs` tags of the results not yet accepted, refused or taken, oldest first.
    outstanding: Vec<u64>,
    /// The tag of the result in flight, if it is still outstanding.
    result_in_flight: Option<u64>,
    latest_heartbeat: u64,
    finished: bool,
}

fn tag(call: &HttpCall) -> u64 {
    let body: serde_json::Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
    body["durationMs"].as_u64().unwrap()
}

impl Model {
    fn drain(&mut self, c: &mut PollingClient, now: Instant) -> Result<(), TestCaseError> {
        // The events of the last input first: they are about the request answered then.
        while let Some(event) = c.poll_event() {
            match event {
                PollingEvent::ResultAccepted { .. } | PollingEvent::ResultRefused { .. } => {
                    let t = self.result_in_flight.take();
                    prop_assert!(t.is_some());
                    prop_assert_eq!(self.outstanding.first().copied(), t);
                    self.outstanding.remove(0);
                }
                PollingEvent::RequestFailed { retry_at, .. } => {
                    if let Some(at) = retry_at {
                        prop_assert!(at > now);
                        self.gate = Some(at);
                    }
                }
                PollingEvent::Unauthorized { .. }
                | PollingEvent::Forbidden { .. }
                | PollingEvent::Revoked { .. } => {
                    prop_assert!(!self.finished);
                    self.finished = true;
                }
                PollingEvent::Commands { .. } | PollingEvent::HeartbeatAccepted => {}
            }
        }
        if let Some(call) = c.poll_request() {
            prop_assert!(self.in_flight.is_none(), "two requests in flight");
            prop_assert!(!self.finished, "a request after stop or the end");
            prop_assert!(
                self.gate.is_none_or(|g| now >= g),
                "a request before retry_at"
            );
            prop_assert_eq!(call.bearer.clone(), Some(token()));
            if call.path == COMMANDS_PATH {
                // Polls keep a grid from the first: the k-th never before first + k * interval
                // (no catch-up burst, never faster than the cadence).
                let first = *self.first_poll.get_or_insert(now);
                prop_assert!(
                    now >= first + self.interval * self.polls,
                    "poll {} came before its slot",
                    self.polls
                );
                self.polls += 1;
            } else if call.path == HEARTBEAT_PATH {
                let body: HeartbeatDto =
                    serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
                prop_assert_eq!(
                    body.uptime,
                    self.latest_heartbeat,
                    "not the latest heartbeat"
                );
            } else {
                let t = tag(&call);
                prop_assert_eq!(self.outstanding.first(), Some(&t), "results out of order");
                self.result_in_flight = Some(t);
            }
            self.in_flight = Some(call);
        }
        prop_assert_eq!(c.poll_request(), None);
        prop_assert_eq!(c.queued_results(), self.outstanding.len());
        if self.finished {
            prop_assert!(c.state().is_finished());
            prop_assert_eq!(c.poll_timeout(), None);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_sequences_keep_one_request_in_flight_the_cadence_and_every_result(
        steps in proptest::collection::vec(step(), 1..300),
    ) {
        let clock = SimClock::new();
        let mut c = client(&clock);
        let mut now = clock.at(0.0);
        let mut m = Model {
            interval: DEFAULT_POLL_INTERVAL,
            in_flight: None,
            first_poll: None,
            polls: 0,
            gate: None,
            outstanding: Vec::new(),
            result_in_flight: None,
            latest_heartbeat: 0,
            finished: false,
        };
        let mut next_tag = 0u64;
        m.drain(&mut c, now)?;
        for step in steps {
            match step {
                Step::QueueHeartbeat => {
                    m.latest_heartbeat += 1;
                    let queued = c.queue_heartbeat(now, heartbeat(m.latest_heartbeat));
                    prop_assert_eq!(queued.is_ok(), !m.finished);
                }
                Step::QueueResult { command, part } => {
                    next_tag += 1;
                    let mut dto = result(&format!("cmd {command}"), part);
                    dto.duration_ms = Some(next_tag);
                    let queued = c.queue_result(now, dto);
                    prop_assert_eq!(queued.is_ok(), !m.finished);
                    if queued.is_ok() {
                        m.outstanding.push(next_tag);
                    }
                }
                Step::Answer { delay_ms, reply } if m.in_flight.is_some() => {
                    now += Duration::from_millis(delay_ms);
                    c.handle_response(now, reply.result()).unwrap();
                    m.in_flight = None;
                }
                Step::Answer { .. } => match c.poll_timeout() {
                    Some(at) => {
                        prop_assert!(at > now);
                        now = at;
                        c.handle_timeout(now);
                        prop_assert!(c.poll_timeout().is_none_or(|t| t > now), "rule 8");
                    }
                    None => prop_assert!(m.finished, "idle without a timer"),
                },
                Step::Spurious { delay_ms } => {
                    now += Duration::from_millis(delay_ms);
                    c.handle_timeout(now);
                    prop_assert!(c.poll_timeout().is_none_or(|t| t > now), "rule 8");
                }
                Step::Take => {
                    let taken: Vec<u64> = c.take_queued_results().iter().map(|r| r.duration_ms.unwrap()).collect();
                    prop_assert_eq!(&taken, &m.outstanding, "results lost or duplicated");
                    m.outstanding.clear();
                    m.result_in_flight = None;
                }
                Step::Stop => {
                    c.stop();
                    m.finished = true;
                }
            }
            m.drain(&mut c, now)?;
        }
        let taken: Vec<u64> = c.take_queued_results().iter().map(|r| r.duration_ms.unwrap()).collect();
        prop_assert_eq!(taken, m.outstanding, "results lost or duplicated");
    }
}
