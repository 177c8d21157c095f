//! Random fault schedules against one node (design.md section 4): whatever the order of
//! commands, drops, partitions, gateway closes, scope refreshes and revokes, a node runs no
//! command twice, gives every command it ran exactly one terminal result (resends are the same
//! result; a refusal such as `busy` answers one dispatch and is not remembered), sends nothing after a revoke, and never asks to be woken in the past (the simulator
//! asserts that rule on every timeout).
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use nodelink_core::node::commands::{CommandLimits, CommandSpec};
use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeEvent, NodeState, Transport};
use nodelink_core::wire::contract::GatewayCall;
use nodelink_core::wire::dto::{CancelCommandDto, CommandResultDto, ErrorCode, ExecuteCommandDto};
use nodelink_core::wire::rest::NodeToken;
use nodelink_core::wire::signalr::HubProtocol;
use proptest::prelude::*;
use support::sim::{Behaviour, Sim};

#[derive(Clone, Debug)]
enum Step {
    Advance(u64),
    Execute { id: u8, command: u8 },
    Cancel(u8),
    DropSocket,
    Partition(bool),
    GatewayClose(bool),
    RefreshScopes(bool),
    Revoke,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u64..8_000).prop_map(Step::Advance),
        6 => (0u8..12, 0u8..3).prop_map(|(id, command)| Step::Execute { id, command }),
        1 => (0u8..12).prop_map(Step::Cancel),
        1 => Just(Step::DropSocket),
        1 => any::<bool>().prop_map(Step::Partition),
        1 => any::<bool>().prop_map(Step::GatewayClose),
        1 => any::<bool>().prop_map(Step::RefreshScopes),
        1 => Just(Step::Revoke).prop_filter("rare", |_| true),
    ]
}

const COMMANDS: [&str; 3] = ["fast", "slow", "hang"];

fn config(protocol: HubProtocol) -> NodeConfig {
    let mut config = NodeConfig::new(
        "https://gw.example.com",
        Dialect::Hub {
            protocol,
            transport: Transport::WebSocket,
        },
        Identity::Paired(NodeToken::parse("node1.secret").expect("valid")),
    );
    config.commands = COMMANDS
        .iter()
        .map(|name| CommandSpec::new(*name).scope("work"))
        .collect();
    config.limits = CommandLimits {
        slots: 3,
        ..CommandLimits::default()
    };
    config
}

fn run(steps: Vec<Step>, protocol: HubProtocol, seed: u8) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(config(protocol), seed);
    sim.behaviours.insert(
        "fast".to_string(),
        Behaviour::Finish(Duration::from_millis(5), Ok(serde_json::json!({"v": 1}))),
    );
    sim.behaviours.insert(
        "slow".to_string(),
        Behaviour::Finish(Duration::from_secs(12), Ok(serde_json::json!({"v": 2}))),
    );
    sim.behaviours.insert("hang".to_string(), Behaviour::Hang);
    sim.run_for(Duration::from_secs(1));
    for step in steps {
        match step {
            Step::Advance(ms) => sim.run_for(Duration::from_millis(ms)),
            Step::Execute { id, command } => {
                sim.try_gateway_call(GatewayCall::ExecuteCommand(ExecuteCommandDto {
                    command_id: format!("c{id}"),
                    command: COMMANDS[usize::from(command)].to_string(),
                    params: None,
                    timeout_ms: Some(20_000),
                    originated_by: None,
                    protocol_version: None,
                }));
            }
            Step::Cancel(id) => {
                sim.try_gateway_call(GatewayCall::CancelCommand(CancelCommandDto {
                    command_id: format!("c{id}"),
                    reason: None,
                }));
            }
            Step::DropSocket => sim.drop_socket(),
            Step::Partition(true) => sim.partition(),
            Step::Partition(false) => sim.heal(),
            Step::GatewayClose(allow) => sim.gateway_close(Some("bye"), Some(allow)),
            Step::RefreshScopes(grant) => {
                let scopes = if grant {
                    vec!["work".to_string()]
                } else {
                    vec![]
                };
                sim.try_gateway_call(GatewayCall::RefreshScopes(scopes));
            }
            Step::Revoke => {
                sim.try_gateway_call(GatewayCall::RevokeAccess {
                    reason: "test".to_string(),
                });
            }
        }
    }
    // Heal, and give every deadline, backoff and resend time to play out.
    sim.heal();
    sim.run_for(Duration::from_secs(240));

    // No command ran twice.
    let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, id) in &sim.executed {
        *runs.entry(id.as_str()).or_default() += 1;
    }
    for (id, count) in &runs {
        prop_assert_eq!(*count, 1, "{} ran {} times", id, count);
    }
    let revoked_at = sim
        .events
        .iter()
        .find(|(_, e)| matches!(e, NodeEvent::TokenRevoked { .. }))
        .map(|(at, _)| *at);
    match revoked_at {
        None => {
            prop_assert_eq!(sim.node.state(), NodeState::Ready);
            // Every command the node ran reached the gateway with one terminal result; resends
            // carry the same result.
            // Refusals at admission (`busy`, `not_authorized`) answer one dispatch each and are
            // not remembered, so a gateway may dispatch the same id again: they are not the
            // command's end.
            let refusal = |r: &CommandResultDto| {
                r.error
                    .as_ref()
                    .is_some_and(|e| matches!(e.code, ErrorCode::Busy | ErrorCode::NotAuthorized))
            };
            for id in runs.keys() {
                let results: Vec<_> = sim
                    .results_for(id)
                    .into_iter()
                    .filter(|r| !refusal(r))
                    .collect();
                prop_assert!(!results.is_empty(), "{} ran but no result arrived", id);
                let first = results[0];
                prop_assert!(
                    results.iter().all(|r| *r == first),
                    "{} got different results",
                    id
                );
            }
        }
        Some(at) => {
            prop_assert_eq!(sim.node.state(), NodeState::Revoked);
            prop_assert!(sim.node.token().is_none());
            prop_assert!(
                sim.results
                    .iter()
                    .all(|(sent, _)| *sent <= at + sim.latency),
                "a result after the revoke"
            );
            prop_assert!(
                sim.http_requests.iter().all(|(sent, _, _)| *sent <= at),
                "a request after the revoke"
            );
            prop_assert_eq!(sim.node.poll_timeout(), None);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_fault_schedules_keep_the_invariants(
        steps in prop::collection::vec(step(), 1..40),
        msgpack in any::<bool>(),
        seed in any::<u8>(),
    ) {
        let protocol = if msgpack { HubProtocol::MessagePack } else { HubProtocol::Json };
        run(steps, protocol, seed)?;
    }
}
