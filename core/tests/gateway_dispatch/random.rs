//! Random operation sequences over several nodes, with restarts from the persisted records,
//! against the invariants: every command ends exactly once (result, timeout, cancelled,
//! not_authorized, approval_rejected, internal_error), nothing is sent for a command after its
//! end nor to another node than its own, online is never reported for a node silent for 90 s,
//! and design rule 8 holds.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const NODES: [&str; 3] = ["n0", "n1", "n2"];

#[derive(Clone, Debug)]
enum Op {
    Connect {
        node: usize,
    },
    Disconnect {
        node: usize,
        stale: bool,
    },
    Heartbeat {
        node: usize,
        slots: Option<u32>,
    },
    Lease {
        node: usize,
        max: usize,
    },
    Dispatch {
        node: usize,
        critical: bool,
        scoped: bool,
        timeout_ms: Option<u64>,
    },
    Approve {
        pick: usize,
        reject: bool,
    },
    Cancel {
        pick: usize,
    },
    Result {
        pick: usize,
        kind: u8,
        wrong_node: bool,
    },
    Progress {
        pick: usize,
    },
    SetScopes {
        node: usize,
        allow: bool,
    },
    Revoke {
        node: usize,
    },
    Restart {
        nodes_first: bool,
    },
    Advance {
        ms: u64,
    },
    AdvanceToNextTimeout,
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES.len();
    prop_oneof![
        3 => node.clone().prop_map(|node| Op::Connect { node }),
        2 => (node.clone(), any::<bool>()).prop_map(|(node, stale)| Op::Disconnect { node, stale }),
        4 => (node.clone(), prop::option::of(0u32..3))
            .prop_map(|(node, slots)| Op::Heartbeat { node, slots }),
        3 => (node.clone(), 1usize..4).prop_map(|(node, max)| Op::Lease { node, max }),
        8 => (
            node.clone(),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.3),
            prop_oneof![Just(None), Just(Some(500)), Just(Some(5_000)), Just(Some(60_000))],
        )
            .prop_map(|(node, critical, scoped, timeout_ms)| Op::Dispatch {
                node,
                critical,
                scoped,
                timeout_ms
            }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, reject)| Op::Approve { pick, reject }),
        2 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        8 => (any::<usize>(), 0u8..7, prop::bool::weighted(0.1))
            .prop_map(|(pick, kind, wrong_node)| Op::Result { pick, kind, wrong_node }),
        1 => any::<usize>().prop_map(|pick| Op::Progress { pick }),
        1 => (node.clone(), any::<bool>()).prop_map(|(node, allow)| Op::SetScopes { node, allow }),
        1 => node.prop_map(|node| Op::Revoke { node }),
        1 => any::<bool>().prop_map(|nodes_first| Op::Restart { nodes_first }),
        5 => (0u64..20_000).prop_map(|ms| Op::Advance { ms }),
        3 => Just(Op::AdvanceToNextTimeout),
    ]
}

fn config() -> DispatchConfig {
    DispatchConfig {
        max_queued_per_node: 3,
        default_slots: 2,
        cancel_wait: Duration::from_secs(3),
        lease_for: Duration::from_secs(10),
        finished_memory: Duration::from_secs(60),
        finished_max: 20,
        ..DispatchConfig::default()
    }
}

/// What the test knows independently of the dispatcher.
struct Model {
    clock: SimClock,
    now: Instant,
    d: Dispatcher,
    rng: nodelink_core::rng::Rng,
    log: Vec<DispatchRecord>,
    next_conn: u64,
    conns: BTreeMap<String, u64>,
    registered: BTreeSet<String>,
    scoped: BTreeSet<String>,
    last_contact: BTreeMap<String, Instant>,
    reported_online: BTreeSet<String>,
    /// Every command created, with its node; in creation order.
    created: Vec<(String, String)>,
    owner: BTreeMap<String, String>,
    finished: BTreeMap<String, usize>,
}

impl Model {
    fn new() -> Self {
        let clock = SimClock::new();
        let now = clock.at(0.0);
        Self {
            clock,
            now,
            d: Dispatcher::new(config(), now, UNIX_ORIGIN),
            rng: nodelink_core::rng::Rng::from_seed([3; 32]),
            log: Vec::new(),
            next_conn: 0,
            conns: BTreeMap::new(),
            registered: BTreeSet::new(),
            scoped: BTreeSet::new(),
            last_contact: BTreeMap::new(),
            reported_online: BTreeSet::new(),
            created: Vec::new(),
            owner: BTreeMap::new(),
            finished: BTreeMap::new(),
        }
    }

    /// A created command; mostly one that has not ended (`pick % 4 != 0`).
    fn pick(&self, pick: usize) -> Option<(String, String)> {
        let live: Vec<&(String, String)> = self
            .created
            .iter()
            .filter(|(id, _)| !self.finished.contains_key(id))
            .collect();
        if pick % 4 != 0 && !live.is_empty() {
            return Some(live[pick / 4 % live.len()].clone());
        }
        (!self.created.is_empty()).then(|| self.created[pick % self.created.len()].clone())
    }

    fn check_sent(&self, node: &str, id: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            self.owner.get(id).map(String::as_str),
            Some(node),
            "{} sent to {}",
            id,
            node
        );
        prop_assert!(!self.finished.contains_key(id), "{} sent after its end", id);
        Ok(())
    }

    /// Drains the outputs, checking each.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        while let Some(output) = self.d.poll_output() {
            match output {
                DispatchOutput::Execute {
                    node,
                    conn,
                    execute,
                } => {
                    prop_assert_eq!(
                        self.conns.get(&*node),
                        Some(&conn.0),
                        "sent on a stale connection"
                    );
                    self.check_sent(&node, &execute.record.command_id)?
                }
                DispatchOutput::Send { node, conn, call } => {
                    prop_assert_eq!(
                        self.conns.get(&*node),
                        Some(&conn.0),
                        "sent on a stale connection"
                    );
                    match *call {
                        GatewayCall::ExecuteCommand(dto) => {
                            self.check_sent(&node, &dto.command_id)?
                        }
                        GatewayCall::CancelCommand(dto) => {
                            self.check_sent(&node, &dto.command_id)?
                        }
                        other => prop_assert!(false, "unexpected call {:?}", other),
                    }
                }
                DispatchOutput::Finished {
                    command_id, node, ..
                } => {
                    prop_assert_eq!(
                        self.owner.get(&*command_id).map(String::as_str),
                        Some(&*node)
                    );
                    let count = self.finished.entry(command_id.to_string()).or_default();
                    *count += 1;
                    prop_assert_eq!(*count, 1, "{} finished twice", command_id);
                }
                DispatchOutput::NodeOnline { node } => {
                    self.reported_online.insert(node);
                }
                DispatchOutput::NodeOffline { node, at } => {
                    self.reported_online.remove(&node);
                    if let Some(last) = self.last_contact.get(&node) {
                        prop_assert_eq!(at, *last + Duration::from_secs(90));
                    }
                }
                DispatchOutput::Persist(record) => self.log.push(record),
                DispatchOutput::Status { .. } | DispatchOutput::Event(_) => {}
            }
        }
        Ok(())
    }

    fn advance_to(&mut self, end: Instant) -> Result<(), TestCaseError> {
        while let Some(at) = self.d.poll_timeout() {
            if at > end {
                break;
            }
            let at = at.max(self.now);
            self.now = at;
            self.d.handle_timeout(at);
            prop_assert!(self.d.poll_timeout().is_none_or(|next| next > at), "rule 8");
            self.drain()?;
        }
        self.now = end;
        self.d.handle_timeout(end);
        self.drain()
    }

    fn check_online(&self) -> Result<(), TestCaseError> {
        for node in NODES {
            let expected = self
                .last_contact
                .get(node)
                .is_some_and(|last| *last + Duration::from_secs(90) > self.now);
            prop_assert_eq!(
                self.d.is_online(self.now, node),
                expected,
                "is_online({})",
                node
            );
            if self.reported_online.contains(node) {
                prop_assert!(expected, "{} reported online but silent for 90 s", node);
            }
        }
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let now = self.now;
        match op {
            Op::Connect { node } => {
                let node = NODES[node];
                self.next_conn += 1;
                self.conns.insert(node.to_owned(), self.next_conn);
                self.registered.insert(node.to_owned());
                self.last_contact.insert(node.to_owned(), now);
                self.d.node_connected(now, node, hub(self.next_conn), None);
            }
            Op::Disconnect { node, stale } => {
                let node = NODES[node];
                let conn = self.conns.get(node).copied().unwrap_or(0);
                if stale {
                    self.d.node_disconnected(now, node, ConnId(conn + 1000));
                } else {
                    self.conns.remove(node);
                    self.d.node_disconnected(now, node, ConnId(conn));
                }
            }
            Op::Heartbeat { node, slots } => {
                let node = NODES[node];
                self.registered.insert(node.to_owned());
                self.last_contact.insert(node.to_owned(), now);
                self.d.heartbeat(now, node, &heartbeat(node, slots));
            }
            Op::Lease { node, max } => {
                let node = NODES[node];
                self.registered.insert(node.to_owned());
                self.conns.remove(node);
                let lease = self.d.lease(now, node, max);
                prop_assert!(lease.len() <= max);
                for dto in &lease {
                    self.check_sent(node, &dto.command_id)?;
                }
            }
            Op::Dispatch {
                node,
                critical,
                scoped,
                timeout_ms,
            } => {
                let node = NODES[node];
                let mut request = request(node);
                request.critical = critical;
                request.timeout = timeout_ms.map(Duration::from_millis);
                if scoped {
                    request.required_scope = Some("x.run".to_owned());
                }
                match self.d.dispatch(now, &mut self.rng, request) {
                    Ok(id) => {
                        prop_assert!(self.registered.contains(node));
                        prop_assert!(!scoped || self.scoped.contains(node));
                        self.owner.insert(id.clone(), node.to_owned());
                        self.created.push((id, node.to_owned()));
                    }
                    Err(DispatchError::UnknownNode { .. }) => {
                        prop_assert!(!self.registered.contains(node))
                    }
                    Err(DispatchError::NotAuthorized { .. }) => {
                        prop_assert!(scoped && !self.scoped.contains(node))
                    }
                    Err(DispatchError::QueueFull { .. }) => {}
                    Err(other) => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            Op::Approve { pick, reject } => {
                if let Some((id, _)) = self.pick(pick) {
                    let _ = if reject {
                        self.d.reject(now, &id, Some("no"))
                    } else {
                        self.d.approve(now, &id)
                    };
                }
            }
            Op::Cancel { pick } => {
                if let Some((id, _)) = self.pick(pick) {
                    let outcome = self.d.cancel(now, &id, None);
                    prop_assert_eq!(outcome.is_err(), self.finished.contains_key(&id));
                }
            }
            Op::Result {
                pick,
                kind,
                wrong_node,
            } => {
                let Some((id, owner)) = self.pick(pick) else {
                    return Ok(());
                };
                let node = if wrong_node {
                    "n-other"
                } else {
                    owner.as_str()
                };
                let result = match kind {
                    0 | 1 => ok(&id),
                    2 => failed(&id, ErrorCode::Busy, Some(1_500)),
                    3 => failed(&id, ErrorCode::PlatformUnsupported, None),
                    4 => part(&id, 0, false, "a"),
                    5 => part(&id, 1, true, "b"),
                    _ => part(&id, 1, true, "c"),
                };
                let ack = self.d.result(now, node, result);
                if wrong_node {
                    prop_assert_eq!(ack, ResultAck::Refuse(Refusal::NotFound));
                }
            }
            Op::Progress { pick } => {
                if let Some((id, owner)) = self.pick(pick) {
                    let report = nodelink_core::wire::dto::CommandProgressDto {
                        command_id: id,
                        progress: 0.5,
                        step: None,
                        step_count: None,
                        eta_ms: None,
                        message: None,
                    };
                    self.d.progress(now, &owner, report);
                }
            }
            Op::SetScopes { node, allow } => {
                let node = NODES[node];
                self.registered.insert(node.to_owned());
                let set = if allow { scopes(&["x.*"]) } else { scopes(&[]) };
                if allow {
                    self.scoped.insert(node.to_owned());
                } else {
                    self.scoped.remove(node);
                }
                self.d.set_scopes(now, node, set);
            }
            Op::Revoke { node } => {
                let node = NODES[node];
                let revoked = self.d.revoke(now, node);
                prop_assert_eq!(revoked.is_ok(), self.registered.contains(node));
                self.registered.remove(node);
                self.scoped.remove(node);
                self.conns.remove(node);
                self.last_contact.remove(node);
                self.reported_online.remove(node);
            }
            Op::Restart { nodes_first } => {
                let mut records: Vec<DispatchRecord> = self
                    .log
                    .iter()
                    .map(|r| serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap())
                    .collect();
                if nodes_first {
                    // A store with a table of nodes and one of commands.
                    let is_node = |r: &DispatchRecord| {
                        matches!(
                            r,
                            DispatchRecord::Node(_) | DispatchRecord::NodeRemoved { .. }
                        )
                    };
                    let (mut nodes, commands): (Vec<_>, Vec<_>) =
                        records.into_iter().partition(|r| is_node(r));
                    nodes.extend(commands);
                    records = nodes;
                }
                self.d = Dispatcher::new(config(), now, UNIX_ORIGIN + (now - self.clock.origin));
                self.d
                    .restore(now, records)
                    .expect("a fresh dispatcher restores");
                self.conns.clear();
                self.last_contact.clear();
                self.reported_online.clear();
            }
            Op::Advance { ms } => {
                let end = now + Duration::from_millis(ms);
                self.drain()?;
                self.advance_to(end)?;
            }
            Op::AdvanceToNextTimeout => {
                if let Some(at) = self.d.poll_timeout() {
                    self.drain()?;
                    self.advance_to(at.max(now))?;
                }
            }
        }
        self.drain()?;
        self.check_online()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn every_command_ends_exactly_once_and_nothing_goes_astray(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        let mut model = Model::new();
        for op in ops {
            model.step(op)?;
        }
        // Long enough for every deadline, grace, cancel wait and lease.
        let end = model.now + Duration::from_secs(3 * 24 * 3600);
        model.advance_to(end)?;
        for (id, _) in &model.created {
            prop_assert_eq!(model.finished.get(id), Some(&1), "{} did not end exactly once", id);
        }
        prop_assert_eq!(model.d.command_count(), 0, "every outcome is forgotten in the end");
    }
}
