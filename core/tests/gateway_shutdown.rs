//! `Gateway::shutdown`: every hub connection gets a Close with allowReconnect, and its node comes
//! back (here to the same gateway, which stands for the restarted one).
mod support;

use std::time::Duration;

use nodelink_core::gateway::{GatewayConfig, GatewayEvent, GatewayOutput};
use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeState, Transport, WsFrame};
use nodelink_core::wire::signalr::HubProtocol;
use support::world::{World, GATEWAY_URL};

fn connected_world() -> World {
    let mut world = World::new(GatewayConfig::new(GATEWAY_URL));
    let config = NodeConfig::new(
        GATEWAY_URL,
        Dialect::Hub {
            protocol: HubProtocol::Json,
            transport: Transport::WebSocket,
        },
        Identity::Unpaired {
            node_id: Some("n1".to_string()),
        },
    );
    world.add_node("n1", config, 3);
    assert!(world.run_until(Duration::from_secs(5), |w| !w
        .gateway
        .pending_pairings(w.now)
        .is_empty()));
    let code = world.gateway.pending_pairings(world.now)[0].code.clone();
    let now = world.now;
    world
        .gateway
        .approve_pairing(now, &code, &[])
        .expect("a pending code");
    assert!(
        world.run_until(Duration::from_secs(10), |w| w.nodes[0].node.state()
            == NodeState::Ready)
    );
    world
}

#[test]
fn shutdown_sends_close_with_allow_reconnect_then_closes_the_socket() {
    let mut world = connected_world();
    let now = world.now;
    world.gateway.shutdown(now, "gateway shutting down");
    let outputs: Vec<GatewayOutput> = std::iter::from_fn(|| world.gateway.poll_output()).collect();
    let close_at = outputs
        .iter()
        .position(|o| {
            matches!(o, GatewayOutput::Send { frame: WsFrame::Text(text), .. }
                if text.contains("\"type\":7")
                    && text.contains("\"allowReconnect\":true")
                    && text.contains("gateway shutting down"))
        })
        .expect("a Close message with allowReconnect");
    let socket_at = outputs
        .iter()
        .position(|o| matches!(o, GatewayOutput::CloseSocket { code: 1000, .. }))
        .expect("the socket is closed");
    assert!(close_at < socket_at, "the Close message goes out first");
    assert_eq!(world.gateway.connection_count(), 0);
}

#[test]
fn nodes_reconnect_after_a_shutdown() {
    let mut world = connected_world();
    let connects = |w: &World| {
        w.gateway_events
            .iter()
            .filter(|(_, e)| matches!(e, GatewayEvent::NodeConnected { .. }))
            .count()
    };
    assert_eq!(connects(&world), 1);
    let now = world.now;
    world.gateway.shutdown(now, "gateway shutting down");
    world.drain();
    assert!(
        world.run_until(Duration::from_secs(60), |w| connects(w) == 2
            && w.nodes[0].node.state() == NodeState::Ready)
    );
}
