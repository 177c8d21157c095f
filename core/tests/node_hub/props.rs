//! Random input sequences: the link never panics, never busy-loops a shell (design rule 8),
//! never sends a split record, sends nothing but Hello/Ping/Close before Ready, reports exactly
//! one Ended per connect, keeps the result window, and never loses or duplicates a result part.
use super::*;

use proptest::prelude::*;

/// A record the gateway might send (or garbage).
#[derive(Clone, Debug)]
enum Rec {
    HandshakeOk,
    HandshakeRejected,
    HelloAck,
    HelloLegacy,
    Ack(u8),
    AckId(String),
    Refuse(u8),
    Execute(u8),
    Cancel,
    Refresh,
    Revoke,
    Ping,
    Close(bool),
    UnknownTarget(bool),
    StreamItem,
    UnknownType,
    Garbage(Vec<u8>),
}

fn rec_bytes(protocol: HubProtocol, rec: &Rec, out: &mut Vec<u8>) {
    let message = match rec {
        Rec::HandshakeOk => return out.extend_from_slice(b"{}\x1e"),
        Rec::HandshakeRejected => return out.extend_from_slice(b"{\"error\":\"no\"}\x1e"),
        Rec::UnknownType => {
            return match protocol {
                HubProtocol::Json => out.extend_from_slice(b"{\"type\":42}\x1e"),
                HubProtocol::MessagePack => out.extend_from_slice(&[0x02, 0x91, 0x2a]),
            }
        }
        Rec::Garbage(bytes) => return out.extend_from_slice(bytes),
        Rec::HelloAck => hello_ack(protocol, "1", "2026-04-01"),
        Rec::HelloLegacy => completion("1", CompletionOutcome::Error("nope".to_owned())),
        Rec::Ack(id) => void_completion(&id.to_string()),
        Rec::AckId(id) => void_completion(id),
        Rec::Refuse(id) => completion(&id.to_string(), CompletionOutcome::Error("bad".to_owned())),
        Rec::Execute(n) => execute(protocol, &format!("cmd_{n}")),
        Rec::Cancel => GatewayCall::CancelCommand(nodelink_core::wire::dto::CancelCommandDto {
            command_id: "cmd_1".to_owned(),
            reason: None,
        })
        .to_message(protocol, None)
        .unwrap(),
        Rec::Refresh => GatewayCall::RefreshScopes(vec!["a".to_owned()])
            .to_message(protocol, None)
            .unwrap(),
        Rec::Revoke => GatewayCall::RevokeAccess {
            reason: "r".to_owned(),
        }
        .to_message(protocol, None)
        .unwrap(),
        Rec::Ping => HubMessage::Ping,
        Rec::Close(allow) => HubMessage::Close {
            error: Some("bye".to_owned()),
            allow_reconnect: Some(*allow),
        },
        Rec::UnknownTarget(with_id) => {
            HubMessage::Invocation(nodelink_core::wire::signalr::Invocation {
                headers: Headers::new(),
                invocation_id: with_id.then(|| "77".to_owned()),
                target: "Nope".to_owned(),
                arguments: vec![],
                stream_ids: vec![],
            })
        }
        Rec::StreamItem => HubMessage::StreamItem {
            headers: Headers::new(),
            invocation_id: "2".to_owned(),
            item: Payload::encode(protocol, &1).unwrap(),
        },
    };
    protocol.encode(&message, out).unwrap();
}

fn rec() -> impl Strategy<Value = Rec> {
    prop_oneof![
        3 => Just(Rec::HandshakeOk),
        1 => Just(Rec::HandshakeRejected),
        3 => Just(Rec::HelloAck),
        1 => Just(Rec::HelloLegacy),
        3 => (1u8..8).prop_map(Rec::Ack),
        1 => (1u8..8).prop_map(Rec::Refuse),
        2 => (0u8..4).prop_map(Rec::Execute),
        1 => Just(Rec::Cancel),
        1 => Just(Rec::Refresh),
        1 => Just(Rec::Revoke),
        2 => Just(Rec::Ping),
        1 => any::<bool>().prop_map(Rec::Close),
        1 => any::<bool>().prop_map(Rec::UnknownTarget),
        1 => Just(Rec::StreamItem),
        1 => Just(Rec::UnknownType),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(Rec::Garbage),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Connect,
    Negotiate(u16),
    NegotiateError,
    Opened,
    WsFailed(Option<u16>),
    WsClosed,
    /// Records concatenated, then cut at these offsets into frames.
    Frames(Vec<Rec>, Vec<usize>),
    Heartbeat,
    Result,
    Close,
    Take,
    /// Advance by this many milliseconds and call handle_timeout (often early or late).
    Advance(u64),
    /// Jump to poll_timeout() and call handle_timeout there.
    Tick,
    /// What a well-behaved gateway and shell do next in the current state (connect, answer
    /// negotiate, open, accept the handshake, answer Hello; when ready, acknowledge the oldest
    /// part), so that random runs spend time in every state.
    Step,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Connect),
        2 => prop_oneof![Just(200u16), Just(200), Just(401), Just(500)].prop_map(Op::Negotiate),
        1 => Just(Op::NegotiateError),
        2 => Just(Op::Opened),
        1 => prop_oneof![Just(None), Just(Some(403u16)), Just(Some(404))].prop_map(Op::WsFailed),
        1 => Just(Op::WsClosed),
        6 => (
            proptest::collection::vec(rec(), 1..5),
            proptest::collection::vec(0usize..400, 0..4)
        )
            .prop_map(|(recs, cuts)| Op::Frames(recs, cuts)),
        2 => Just(Op::Heartbeat),
        3 => Just(Op::Result),
        1 => Just(Op::Close),
        1 => Just(Op::Take),
        2 => (0u64..40_000).prop_map(Op::Advance),
        3 => Just(Op::Tick),
        10 => Just(Op::Step),
    ]
}

/// What the test knows from the outputs alone.
#[derive(Default)]
struct Model {
    ready: bool,
    connects: usize,
    ends: usize,
    /// Between an Ended and the next connect nothing may be sent.
    idle: bool,
    submitted: usize,
    settled: usize,
    /// Invocation ids of the result parts sent on this connection, not yet acknowledged by Step.
    sent_parts: Vec<String>,
}

fn check_outputs(
    protocol: HubProtocol,
    model: &mut Model,
    outputs: &[HubOutput],
) -> Result<(), TestCaseError> {
    for output in outputs {
        match output {
            HubOutput::Send(frame) => {
                prop_assert!(!model.idle, "sent after Ended: {frame:?}");
                if frame.as_bytes().starts_with(b"{\"protocol\"") {
                    prop_assert!(matches!(frame, WsFrame::Text(_)));
                    continue;
                }
                let messages = decode_frame(protocol, frame).map_err(TestCaseError::fail)?;
                for message in &messages {
                    if let HubMessage::Invocation(inv) = message {
                        if inv.target == "CommandResult" {
                            model.sent_parts.extend(inv.invocation_id.clone());
                        }
                    }
                }
                if !model.ready {
                    for message in &messages {
                        let allowed = match message {
                            HubMessage::Invocation(inv) => inv.target == "Hello",
                            HubMessage::Ping | HubMessage::Close { .. } => true,
                            _ => false,
                        };
                        prop_assert!(allowed, "sent before Ready: {message:?}");
                    }
                }
            }
            HubOutput::Event(HubEvent::Ready { .. }) => {
                prop_assert!(!model.ready);
                model.ready = true;
            }
            HubOutput::Event(HubEvent::Ended(_)) => {
                model.ends += 1;
                model.ready = false;
                model.sent_parts.clear();
                model.idle = true;
            }
            HubOutput::Event(HubEvent::Call(call)) => {
                prop_assert!(
                    model.ready || matches!(call, GatewayCall::RevokeAccess { .. }),
                    "a call before Ready: {call:?}"
                );
            }
            HubOutput::Event(
                HubEvent::ResultAcknowledged { .. } | HubEvent::ResultRefused { .. },
            ) => model.settled += 1,
            _ => {}
        }
    }
    Ok(())
}

/// The gateway sends `recs`, their bytes cut at `cuts` into frames.
fn feed(
    sim: &mut Sim,
    model: &mut Model,
    protocol: HubProtocol,
    now: Instant,
    recs: &[Rec],
    cuts: &[usize],
) -> Result<(), TestCaseError> {
    let mut bytes = Vec::new();
    for rec in recs {
        rec_bytes(protocol, rec, &mut bytes);
    }
    let mut cuts: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|c| *c > 0 && *c < bytes.len())
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut start = 0;
    for end in cuts.into_iter().chain([bytes.len()]) {
        let piece = bytes[start..end].to_vec();
        start = end;
        let frame = match String::from_utf8(piece) {
            Ok(text) if protocol == HubProtocol::Json => WsFrame::Text(text),
            Ok(text) => WsFrame::Binary(text.into_bytes()),
            Err(e) => WsFrame::Binary(e.into_bytes()),
        };
        sim.link.handle_frame(now, frame);
        let outputs = sim.drain();
        check_outputs(protocol, model, &outputs)?;
    }
    Ok(())
}

fn run(protocol: HubProtocol, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut config = config(protocol);
    config.results_in_flight = 2;
    config.max_batch_len = 300;
    let mut sim = Sim::with(config);
    let mut now = sim.at(0.0);
    let mut model = Model {
        idle: true,
        ..Model::default()
    };
    let mut n = 0u32;
    for op in ops {
        match op {
            Op::Connect => {
                if sim.link.connect(now).is_ok() {
                    model.connects += 1;
                    model.idle = false;
                }
            }
            Op::Negotiate(status) => {
                let body = if status == 200 { NEGOTIATE_V1 } else { "{}" };
                let response = HttpResponse {
                    status,
                    body: body.as_bytes().to_vec(),
                };
                sim.link.handle_http_response(now, Ok(response));
            }
            Op::NegotiateError => sim
                .link
                .handle_http_response(now, Err(HttpError("refused".to_owned()))),
            Op::Opened => sim.link.handle_ws_opened(now),
            Op::WsFailed(status) => sim.link.handle_ws_failed(now, status, "x".to_owned()),
            Op::WsClosed => sim.link.handle_ws_closed(now, Some(1006), String::new()),
            Op::Step => {
                let recs = match sim.link.state() {
                    HubState::Idle => {
                        sim.link.connect(now).unwrap();
                        model.connects += 1;
                        model.idle = false;
                        vec![]
                    }
                    HubState::Negotiating => {
                        let response = HttpResponse {
                            status: 200,
                            body: NEGOTIATE_V1.as_bytes().to_vec(),
                        };
                        sim.link.handle_http_response(now, Ok(response));
                        vec![]
                    }
                    HubState::OpeningSocket => {
                        sim.link.handle_ws_opened(now);
                        vec![]
                    }
                    HubState::Handshaking => vec![Rec::HandshakeOk],
                    HubState::AwaitingHello => vec![Rec::HelloAck],
                    HubState::Ready if !model.sent_parts.is_empty() => {
                        vec![Rec::AckId(model.sent_parts.remove(0))]
                    }
                    HubState::Ready => vec![Rec::Ping],
                };
                if !recs.is_empty() {
                    feed(&mut sim, &mut model, protocol, now, &recs, &[])?;
                }
            }
            Op::Frames(recs, cuts) => feed(&mut sim, &mut model, protocol, now, &recs, &cuts)?,
            Op::Heartbeat => {
                let result = sim.link.send_call(now, NodeCall::Heartbeat(heartbeat()));
                prop_assert_eq!(result.is_err(), sim.link.state() == HubState::Idle);
            }
            Op::Result => {
                n += 1;
                sim.link
                    .send_result(now, part(&format!("cmd_{n}"), None))
                    .unwrap();
                model.submitted += 1;
            }
            Op::Close => sim.link.close(now, "bye"),
            Op::Take => model.settled += sim.link.take_unacknowledged().len(),
            Op::Advance(ms) => {
                now += std::time::Duration::from_millis(ms);
                sim.link.handle_timeout(now);
                let after = sim.link.poll_timeout();
                prop_assert!(after.is_none_or(|t| t > now), "rule 8 broken");
            }
            Op::Tick => {
                if let Some(at) = sim.link.poll_timeout() {
                    now = now.max(at);
                    sim.link.handle_timeout(now);
                    let after = sim.link.poll_timeout();
                    prop_assert!(after.is_none_or(|t| t > now), "rule 8 broken");
                }
            }
        }
        let outputs = sim.drain();
        check_outputs(protocol, &mut model, &outputs)?;
        let state = sim.link.state();
        let open = usize::from(state != HubState::Idle);
        prop_assert_eq!(model.ends + open, model.connects, "one Ended per connect");
        prop_assert_eq!(model.ready, sim.link.is_ready());
        prop_assert!(sim.link.results_in_flight() <= 2);
        prop_assert_eq!(
            model.submitted,
            model.settled + sim.link.results_in_flight() + sim.link.results_queued(),
            "a result part was lost or duplicated"
        );
        if state == HubState::Idle {
            prop_assert_eq!(sim.link.poll_timeout(), None);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_inputs_keep_the_invariants_json(ops in proptest::collection::vec(op(), 1..60)) {
        run(HubProtocol::Json, ops)?;
    }

    #[test]
    fn random_inputs_keep_the_invariants_messagepack(ops in proptest::collection::vec(op(), 1..60)) {
        run(HubProtocol::MessagePack, ops)?;
    }
}

/// Random ops reach every state often enough to matter: a fixed happy path through the same
/// driver, so a regression in the driver itself shows.
#[test]
fn the_property_driver_reaches_ready_and_settles_parts() {
    for protocol in BOTH {
        let ops = vec![
            Op::Connect,
            Op::Negotiate(200),
            Op::Opened,
            Op::Frames(vec![Rec::HandshakeOk], vec![]),
            Op::Result,
            Op::Frames(vec![Rec::HelloAck], vec![]),
            Op::Result,
            Op::Result,
            Op::Frames(vec![Rec::Ack(2), Rec::Refuse(3)], vec![3]),
            Op::Tick,
            Op::WsClosed,
            Op::Take,
        ];
        run(protocol, ops).unwrap();
    }
}
