//! Random fault schedules with several real nodes against the real gateway: whatever the order of
//! dispatches, cancels, cut-off nodes and gateway restarts, every dispatched command ends exactly
//! once, no node runs a command twice, and a node silent for more than 90 s is never reported
//! online. The world asserts rule 8 for every machine on every timeout.
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use nodelink_core::gateway::dispatch::DispatchRequest;
use nodelink_core::gateway::GatewayConfig;
use nodelink_core::node::commands::CommandSpec;
use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeState, Transport};
use nodelink_core::wire::signalr::HubProtocol;
use proptest::prelude::*;
use support::world::{Exec, World, GATEWAY_URL};

const NODES: usize = 3;
const COMMANDS: [&str; 3] = ["fast", "slow", "hang"];

#[derive(Clone, Debug)]
enum Step {
    Advance(u64),
    Dispatch { node: usize, command: usize },
    Cancel(usize),
    Cut { node: usize, cut: bool },
    RestartGateway,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (100u64..20_000).prop_map(Step::Advance),
        5 => (0..NODES, 0..COMMANDS.len()).prop_map(|(node, command)| Step::Dispatch { node, command }),
        1 => (0usize..64).prop_map(Step::Cancel),
        2 => (0..NODES, any::<bool>()).prop_map(|(node, cut)| Step::Cut { node, cut }),
        1 => Just(Step::RestartGateway),
    ]
}

fn world(msgpack: bool) -> World {
    let mut world = World::new(GatewayConfig::new(GATEWAY_URL));
    for i in 0..NODES {
        let mut config = NodeConfig::new(
            GATEWAY_URL,
            Dialect::Hub {
                protocol: if msgpack {
                    HubProtocol::MessagePack
                } else {
                    HubProtocol::Json
                },
                transport: Transport::WebSocket,
            },
            Identity::Unpaired {
                node_id: Some(format!("n{i}")),
            },
        );
        config.commands = COMMANDS.iter().map(|c| CommandSpec::new(*c)).collect();
        let index = world.add_node(&format!("n{i}"), config, i as u8 + 1);
        world.nodes[index].execs.insert(
            "fast".to_string(),
            Exec::Finish(Duration::from_millis(20), vec![Ok(serde_json::json!(1))]),
        );
        world.nodes[index].execs.insert(
            "slow".to_string(),
            Exec::Finish(Duration::from_secs(8), vec![Ok(serde_json::json!(2))]),
        );
        world.nodes[index]
            .execs
            .insert("hang".to_string(), Exec::Hang);
    }
    assert!(world.run_until(Duration::from_secs(5), |w| w
        .gateway
        .pending_pairings(w.now)
        .len()
        == NODES));
    for pending in world.gateway.pending_pairings(world.now) {
        let now = world.now;
        world
            .gateway
            .approve_pairing(now, &pending.code, &[])
            .expect("pending");
    }
    assert!(world.run_until(Duration::from_secs(20), |w| w
        .nodes
        .iter()
        .all(|n| n.node.state() == NodeState::Ready)));
    world
}

/// A node reported online has been heard from within the last 90 s.
fn check_online(world: &World) -> Result<(), TestCaseError> {
    let now_ms =
        1_764_000_000_000 + world.now.duration_since(world.clock.origin).as_millis() as u64;
    for view in world.gateway.nodes(world.now) {
        if view.online {
            let last = view.last_contact_unix_ms.unwrap_or(0);
            prop_assert!(
                now_ms.saturating_sub(last) <= 90_000,
                "{} online, silent for {} ms",
                view.node_id,
                now_ms - last
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random_fault_schedules_end_every_command_exactly_once(
        steps in prop::collection::vec(step(), 1..30),
        msgpack in any::<bool>(),
    ) {
        let mut world = world(msgpack);
        let mut dispatched: Vec<String> = Vec::new();
        for step in steps {
            match step {
                Step::Advance(ms) => world.run_for(Duration::from_millis(ms)),
                Step::Dispatch { node, command } => {
                    let now = world.now;
                    let request = DispatchRequest::new(format!("n{node}"), COMMANDS[command])
                        .timeout(Duration::from_secs(40));
                    if let Ok(id) = world.gateway.dispatch(now, request) {
                        dispatched.push(id);
                    }
                    world.drain();
                }
                Step::Cancel(pick) => {
                    if !dispatched.is_empty() {
                        let id = dispatched[pick % dispatched.len()].clone();
                        let now = world.now;
                        let _ = world.gateway.cancel(now, &id, Some("test"));
                        world.drain();
                    }
                }
                Step::Cut { node, cut } => world.nodes[node].cut = cut,
                Step::RestartGateway => world.restart_gateway(),
            }
            check_online(&world)?;
        }
        for node in &mut world.nodes {
            node.cut = false;
        }
        // Every deadline (40 s + grace), backoff and reconnect plays out.
        world.run_for(Duration::from_secs(240));
        check_online(&world)?;
        for id in &dispatched {
            prop_assert_eq!(world.finished_count(id), 1, "{} ended {} times", id, world.finished_count(id));
        }
        for node in &world.nodes {
            let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
            for (_, id) in &node.executed {
                *runs.entry(id.as_str()).or_default() += 1;
            }
            for (id, count) in runs {
                prop_assert_eq!(count, 1, "{} ran {} times on {}", id, count, node.name);
            }
        }
    }
}
