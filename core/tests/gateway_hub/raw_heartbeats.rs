//! Raw heartbeats (`HubServer::set_raw_heartbeats`): the usual JSON Heartbeat arrives as text with
//! its slots; its capabilities are decoded when they change; anything else is as without it.

use super::*;
use nodelink_core::gateway::hub::{HubPeerError, RawHeartbeat};
use nodelink_core::wire::contract::NodeCall;
use nodelink_core::wire::dto::Capabilities;

fn with_slots(slots: serde_json::Value) -> serde_json::Value {
    let mut dto = serde_json::to_value(heartbeat_dto()).unwrap();
    dto["capabilities"] = serde_json::json!({"commands": ["system.info"], "slots": slots});
    dto
}

fn raw(step: &Step) -> Vec<RawHeartbeat> {
    step.events
        .iter()
        .filter_map(|e| match e {
            HubServerEvent::Heartbeat { heartbeat, .. } => Some(heartbeat.clone()),
            _ => None,
        })
        .collect()
}

fn raw_sim(protocol: HubProtocol) -> Sim {
    let mut sim = Sim::new();
    sim.server.set_raw_heartbeats(true);
    sim.connected(0.0, 1, protocol);
    sim
}

#[test]
fn a_json_heartbeat_arrives_as_text_with_its_slots() {
    let mut sim = raw_sim(HubProtocol::Json);
    let step = sim.node_sends(1.0, 1, HubProtocol::Json, &[heartbeat(HubProtocol::Json)]);
    let [beat]: [RawHeartbeat; 1] = raw(&step).try_into().expect("one raw heartbeat");
    assert_eq!(step.events.len(), 1, "{step:?}");
    assert_eq!(beat.slots(), None, "no capabilities");
    assert_eq!(beat.decode().unwrap(), heartbeat_dto());
    assert_eq!(
        beat.json(),
        serde_json::to_string(&heartbeat_dto()).unwrap()
    );

    // Capabilities: decoded the first time, remembered while the same, decoded again on change.
    for (secs, slots) in [(2.0, 4), (3.0, 4), (4.0, 8), (5.0, 4)] {
        let message = invocation(
            HubProtocol::Json,
            None,
            "Heartbeat",
            &with_slots(slots.into()),
        );
        let step = sim.node_sends(secs, 1, HubProtocol::Json, &[message]);
        let [beat]: [RawHeartbeat; 1] = raw(&step).try_into().expect("one raw heartbeat");
        assert_eq!(beat.slots(), Some(slots));
        let capabilities: Capabilities =
            serde_json::from_value(with_slots(slots.into())["capabilities"].clone()).unwrap();
        assert_eq!(beat.decode().unwrap().capabilities, Some(capabilities));
    }
}

#[test]
fn other_heartbeats_take_the_general_path() {
    // Bad capabilities are reported as without raw heartbeats, naming the argument.
    let mut sim = raw_sim(HubProtocol::Json);
    let bad = invocation(
        HubProtocol::Json,
        None,
        "Heartbeat",
        &with_slots("four".into()),
    );
    let step = sim.node_sends(1.0, 1, HubProtocol::Json, std::slice::from_ref(&bad));
    let mut plain = Sim::new();
    plain.connected(0.0, 1, HubProtocol::Json);
    let expected = plain.node_sends(1.0, 1, HubProtocol::Json, &[bad]);
    assert!(matches!(
        &step.events[..],
        [HubServerEvent::Misbehaved {
            error: HubPeerError::Contract(_),
            ..
        }]
    ));
    assert_eq!(step.events, expected.events);

    // An escape in a string: decoded, as a Call.
    let mut dto = heartbeat_dto();
    dto.status = "on\"line".to_owned();
    let escaped = invocation(HubProtocol::Json, None, "Heartbeat", &dto);
    let step = sim.node_sends(2.0, 1, HubProtocol::Json, &[escaped]);
    assert!(
        matches!(&step.events[..], [HubServerEvent::Call { call: NodeCall::Heartbeat(d), .. }] if *d == dto),
        "{step:?}"
    );

    // MessagePack: decoded, as a Call.
    let mut sim = raw_sim(HubProtocol::MessagePack);
    let message = heartbeat(HubProtocol::MessagePack);
    let step = sim.node_sends(1.0, 1, HubProtocol::MessagePack, &[message]);
    assert!(
        matches!(&step.events[..], [HubServerEvent::Call { call: NodeCall::Heartbeat(d), .. }] if *d == heartbeat_dto()),
        "{step:?}"
    );
}

#[test]
fn a_recycled_buffer_holds_the_next_heartbeat_alone() {
    // Longer, shorter, then longer again than the buffer handed back.
    let mut sim = raw_sim(HubProtocol::Json);
    for (secs, slots) in [(1.0, 1_234_567), (2.0, 1), (3.0, 99)] {
        let dto = with_slots(slots.into());
        let message = invocation(HubProtocol::Json, None, "Heartbeat", &dto);
        let step = sim.node_sends(secs, 1, HubProtocol::Json, &[message]);
        let [beat]: [RawHeartbeat; 1] = raw(&step).try_into().expect("one raw heartbeat");
        assert_eq!(beat.json(), serde_json::to_string(&dto).unwrap());
        assert_eq!(beat.slots(), Some(slots));
        sim.server.recycle_heartbeat(beat);
    }
}

/// The frames, fed to a gateway hub with raw heartbeats (`raw`) or without: the events of each.
fn feed(raw: bool, config: HubServerConfig, frames: &[WsFrame]) -> Vec<Vec<HubServerEvent>> {
    let mut sim = Sim::with(config);
    sim.server.set_raw_heartbeats(raw);
    sim.connected(0.0, 1, HubProtocol::Json);
    let mut events = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        events.push(sim.frame(1.0 + i as f64, 1, frame.clone()).events);
    }
    events
}

#[test]
fn a_heartbeat_is_taken_from_its_frame_only_when_the_frame_is_that_record() {
    let WsFrame::Text(record) = frame_of(HubProtocol::Json, &[heartbeat(HubProtocol::Json)]) else {
        unreachable!("JSON frames are text")
    };
    let beats = |events: &[HubServerEvent]| {
        events
            .iter()
            .filter(|e| matches!(e, HubServerEvent::Heartbeat { .. }))
            .count()
    };
    // A frame of exactly one record (the frame path), as Binary, split, or two in one frame
    // (the decoder's path): a raw heartbeat for each record all the same.
    let (head, tail) = record.split_at(20);
    for (frames, expected) in [
        (vec![text(&record)], vec![1]),
        (vec![WsFrame::Binary(record.clone().into_bytes())], vec![1]),
        (vec![text(head), text(tail)], vec![0, 1]),
        (vec![text(&record.repeat(2))], vec![2]),
        (vec![text(head), text(tail), text(&record)], vec![0, 1, 1]),
    ] {
        let events = feed(true, HubServerConfig::default(), &frames);
        let counted: Vec<usize> = events.iter().map(|e| beats(e)).collect();
        assert_eq!(counted, expected, "{frames:?}: {events:?}");
        assert!(events
            .iter()
            .flatten()
            .all(|e| matches!(e, HubServerEvent::Heartbeat { .. })));
    }
    // After a partial record, a heartbeat's frame continues that record: no heartbeat, the
    // same error as without raw heartbeats.
    let frames = [text("{\"type\":1,"), text(&record)];
    let events = feed(true, HubServerConfig::default(), &frames);
    assert_eq!(events, feed(false, HubServerConfig::default(), &frames));
    assert!(matches!(
        &events[1][..],
        [HubServerEvent::Misbehaved {
            error: HubPeerError::Decode(_),
            ..
        }]
    ));
    // A heartbeat longer than the record limit ends the connection, as without raw heartbeats.
    let config = HubServerConfig {
        max_record_len: record.len() - 2,
        ..HubServerConfig::default()
    };
    let frames = [text(&record)];
    let events = feed(true, config.clone(), &frames);
    assert_eq!(events, feed(false, config, &frames));
    assert!(matches!(
        events[0].last(),
        Some(HubServerEvent::Disconnected { .. })
    ));
}
