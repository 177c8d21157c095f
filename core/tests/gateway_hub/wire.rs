//! The bytes the server writes that sections 2 to 5 do not already show: refusal bodies,
//! answers to invocations it cannot serve, protocol-error Close messages, a resumed socket's
//! first frame. Pinned here and shown verbatim in docs/protocol.md (core/tests/spec_sync.rs checks).

use super::*;
use nodelink_core::gateway::hub::HubServerConfig;

fn snap_text(step: &Step, conn: u64) -> String {
    step.texts(ConnId(conn)).join("\n")
}

fn snap_hex(step: &Step, conn: u64) -> String {
    step.frames(ConnId(conn))
        .iter()
        .map(|f| support::hex(f.as_bytes()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn refusal_bodies() {
    let mut sim = Sim::with(HubServerConfig {
        max_pending_negotiations: 1,
        ..HubServerConfig::default()
    });
    insta::assert_snapshot!(
        "hub_unknown_id_404",
        body(&sim.open(0.0, 1, "id=nope").unwrap_err())
    );
    let token = sim.negotiate_token(0.0, "negotiateVersion=1");
    insta::assert_snapshot!(
        "hub_too_many_negotiations_429",
        body(&sim.negotiate(0.0, "negotiateVersion=1"))
    );
    sim.open(0.0, 1, &format!("id={token}")).unwrap();
    insta::assert_snapshot!(
        "hub_id_in_use_409",
        body(&sim.open(0.0, 2, &format!("id={token}")).unwrap_err())
    );
    insta::assert_snapshot!(
        "hub_socket_number_in_use_500",
        body(&sim.open(0.0, 1, "").unwrap_err())
    );
    insta::assert_snapshot!(
        "hub_negotiate_bad_version_400",
        body(&sim.negotiate(0.0, "negotiateVersion=-1"))
    );
}

#[test]
fn handshake_refusal_of_a_version_above_2() {
    let mut sim = Sim::new();
    sim.open(0.0, 1, "").unwrap();
    let step = sim.frame(0.0, 1, handshake(HubProtocol::Json, 3));
    insta::assert_snapshot!("hub_handshake_version_refused", snap_text(&step, 1));
}

#[test]
fn answers_to_invocations_the_gateway_does_not_serve() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    let step = sim.frame(
        1.0,
        1,
        text("{\"type\":1,\"invocationId\":\"7\",\"target\":\"Reboot\",\"arguments\":[{}]}\u{1e}"),
    );
    insta::assert_snapshot!("hub_unknown_method_completion", snap_text(&step, 1));
    let step = sim.frame(
        1.0,
        1,
        text("{\"type\":4,\"invocationId\":\"8\",\"target\":\"Tail\",\"arguments\":[]}\u{1e}"),
    );
    insta::assert_snapshot!("hub_streaming_refused_completion", snap_text(&step, 1));

    sim.connected(0.0, 2, HubProtocol::MessagePack);
    let step = sim.node_sends(
        1.0,
        2,
        HubProtocol::MessagePack,
        &[invocation(
            HubProtocol::MessagePack,
            Some("7"),
            "Reboot",
            &1,
        )],
    );
    insta::assert_snapshot!("hub_unknown_method_completion_msgpack", snap_hex(&step, 2));
}

#[test]
fn protocol_error_closes() {
    let mut sim = Sim::with(HubServerConfig {
        max_record_len: 40,
        ..HubServerConfig::default()
    });
    sim.connected(0.0, 1, HubProtocol::Json);
    let step = sim.frame(1.0, 1, text(&"x".repeat(41)));
    insta::assert_snapshot!("hub_record_too_large_close", snap_text(&step, 1));
}

#[test]
fn a_resumed_socket_starts_with_sequence_and_the_replay() {
    let mut sim = Sim::new();
    let token = sim.negotiate_token(0.0, "negotiateVersion=1&useStatefulReconnect=true");
    sim.open(0.0, 1, &format!("id={token}")).unwrap();
    sim.frame(0.0, 1, handshake(HubProtocol::Json, 2));
    let call = GatewayCall::RefreshScopes(vec!["system.info".into()]);
    sim.send(1.0, 1, &call);
    sim.send(1.0, 1, &execute("cmd_1"));
    sim.node_sends(
        2.0,
        1,
        HubProtocol::Json,
        &[HubMessage::Ack { sequence_id: 1 }],
    );
    sim.closed(3.0, 1, None);
    let step = sim.open(4.0, 2, &format!("id={token}")).unwrap();
    insta::assert_snapshot!("hub_resumed_socket_first_frame", snap_text(&step, 2));
    let step = sim.node_sends(
        5.0,
        2,
        HubProtocol::Json,
        &[HubMessage::Sequence { sequence_id: 9 }],
    );
    insta::assert_snapshot!("hub_sequence_too_high_close", snap_text(&step, 2));
}
