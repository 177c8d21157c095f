//! Random sequences of connects, frames, closes, submissions, stops and time: no panic, capacity
//! respected, and every task gets exactly one terminal update, after which it gets nothing.

use std::collections::BTreeMap;

use super::*;
use nodelink_core::gateway::llm::TaskView;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Connect {
        model: u8,
        name: u8,
        max: u8,
        good: bool,
    },
    Data {
        conn: u8,
        task: u8,
        bytes: Vec<u8>,
    },
    Finished {
        conn: u8,
        task: u8,
    },
    Short {
        conn: u8,
        len: u8,
    },
    Text {
        conn: u8,
        empty: bool,
    },
    Closed {
        conn: u8,
    },
    Submit {
        model: u8,
    },
    Stop {
        task: u8,
    },
    Advance {
        ms: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..2u8, 0..2u8, 1..4u8, prop::bool::weighted(0.8))
            .prop_map(|(model, name, max, good)| Op::Connect { model, name, max, good }),
        4 => (any::<u8>(), any::<u8>(), prop_oneof![
            prop::collection::vec(any::<u8>(), 1..6),
            "[a-zé日🎉]{1,4}".prop_map(String::into_bytes),
        ])
            .prop_map(|(conn, task, bytes)| Op::Data { conn, task, bytes }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(conn, task)| Op::Finished { conn, task }),
        1 => (any::<u8>(), 0..4u8).prop_map(|(conn, len)| Op::Short { conn, len }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(conn, empty)| Op::Text { conn, empty }),
        1 => (any::<u8>()).prop_map(|conn| Op::Closed { conn }),
        3 => (0..3u8).prop_map(|model| Op::Submit { model }),
        1 => (any::<u8>()).prop_map(|task| Op::Stop { task }),
        2 => (0..40_000u32).prop_map(|ms| Op::Advance { ms }),
    ]
}

const MODELS: [&str; 3] = ["m0", "m1", "nobody-serves-me"];

struct Checker {
    submitted: Vec<TaskId>,
    /// The model of each submitted task.
    models: Vec<String>,
    terminal: BTreeMap<TaskId, TaskUpdate>,
}

impl Checker {
    fn check(&mut self, g: &Gw, out: &[LlmGatewayOutput]) {
        for (task, update) in updates(out) {
            assert!(self.submitted.contains(&task), "update for unknown {task}");
            assert!(
                !self.terminal.contains_key(&task),
                "{task} got {update:?} after {:?}",
                self.terminal[&task]
            );
            if let TaskUpdate::Text(text) = &update {
                assert!(!text.is_empty());
            } else {
                self.terminal.insert(task, update);
            }
        }
        for task in &self.submitted {
            assert_eq!(
                g.gw.task(*task).is_some(),
                !self.terminal.contains_key(task),
                "{task}: live iff not ended"
            );
        }
        let nodes = g.gw.nodes();
        for node in &nodes {
            assert!(node.running.len() <= node.max_concurrency as usize);
            for task in &node.running {
                assert_eq!(
                    g.gw.task(*task),
                    Some(TaskView::Running { conn: node.conn })
                );
            }
        }
        for (task, model) in self.submitted.iter().zip(&self.models) {
            match g.gw.task(*task) {
                // A running task is on a connection the gateway holds.
                Some(TaskView::Running { conn }) => assert!(
                    nodes
                        .iter()
                        .any(|n| n.conn == conn && n.running.contains(task)),
                    "{task} runs on {conn:?}, which is gone"
                ),
                // A queued task waits only while no node of its model has a free slot.
                Some(TaskView::Queued) => assert!(
                    !nodes.iter().any(|n| n.identity.model == *model
                        && n.running.len() < n.max_concurrency as usize),
                    "{task} waits while a node of {model} has a free slot"
                ),
                None => {}
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_sequences_end_every_task_exactly_once(ops in prop::collection::vec(op(), 1..80)) {
        let mut g = Gw::new();
        let mut checker = Checker { submitted: Vec::new(), models: Vec::new(), terminal: BTreeMap::new() };
        let mut secs = 0.0;
        let mut next_conn = 0u64;
        let pick_task = |checker: &Checker, i: u8| -> TaskId {
            if checker.submitted.is_empty() || i == 255 {
                TaskId(u32::from(i) * 1000)
            } else {
                checker.submitted[usize::from(i) % checker.submitted.len()]
            }
        };
        for op in ops {
            let pick_conn = |c: u8| u64::from(c) % next_conn.max(1);
            let out = match op {
                Op::Connect { model, name, max, good } => {
                    let token = if good { "s3cr%3Dt" } else { "nope" };
                    let target = format!(
                        "/ws?token={token}&model={}&max_concurrency={max}&name=n{name}",
                        MODELS[usize::from(model)]
                    );
                    next_conn += 1;
                    g.connect(secs, next_conn - 1, &target)
                }
                Op::Data { conn, task, bytes } => {
                    let task = pick_task(&checker, task);
                    g.data(secs, pick_conn(conn), task, &bytes)
                }
                Op::Finished { conn, task } => {
                    let task = pick_task(&checker, task);
                    g.finished(secs, pick_conn(conn), task)
                }
                Op::Short { conn, len } => {
                    g.frame(secs, pick_conn(conn), WsFrame::Binary(vec![1; usize::from(len)]))
                }
                Op::Text { conn, empty } => {
                    let text = if empty { String::new() } else { "{}".to_owned() };
                    g.frame(secs, pick_conn(conn), WsFrame::Text(text))
                }
                Op::Closed { conn } => g.closed(secs, pick_conn(conn)),
                Op::Submit { model } => {
                    let (task, out) = g.submit(secs, MODELS[usize::from(model)]);
                    prop_assert!(!checker.submitted.contains(&task), "a fresh id");
                    checker.submitted.push(task);
                    checker.models.push(MODELS[usize::from(model)].to_owned());
                    out
                }
                Op::Stop { task } => {
                    let task = pick_task(&checker, task);
                    g.stop(secs, task).1
                }
                Op::Advance { ms } => {
                    secs += f64::from(ms) / 1000.0;
                    g.timeout(secs)
                }
            };
            checker.check(&g, &out);
        }
        // Every node goes away and time runs out: every task has ended, exactly once.
        for conn in 0..next_conn {
            let out = g.closed(secs, conn);
            checker.check(&g, &out);
        }
        let out = g.timeout(secs + 400.0);
        checker.check(&g, &out);
        prop_assert_eq!(checker.terminal.len(), checker.submitted.len());
        prop_assert_eq!(g.gw.live_tasks(), 0);
        prop_assert_eq!(g.next_timeout_secs(), None);
    }
}
