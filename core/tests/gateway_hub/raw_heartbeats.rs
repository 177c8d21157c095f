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
