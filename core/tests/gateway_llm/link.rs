//! The node's link (core/src/node/llm_link) against the gateway, frames moved between them at
//! virtual instants: both sides agree on connect, tasks, text, stops, replacement and liveness.

use std::collections::BTreeMap;

use super::*;
use nodelink_core::node::llm_link::{LlmConfig, LlmEnd, LlmEvent, LlmLink, LlmOutput};
use nodelink_core::wire::llm::{CloseCode, Task};

const URL: &str = "ws://127.0.0.1:8120/ws";

struct Node {
    link: LlmLink,
    conn: Option<ConnId>,
    tasks: Vec<Task>,
    stops: Vec<u32>,
    ends: Vec<(LlmEnd, Vec<u32>)>,
}

struct World {
    g: Gw,
    now: Instant,
    nodes: Vec<Node>,
    next_conn: u64,
    user: BTreeMap<TaskId, Vec<TaskUpdate>>,
}

impl World {
    fn new() -> World {
        let g = Gw::new();
        let now = g.at(0.0);
        World {
            g,
            now,
            nodes: Vec::new(),
            next_conn: 100,
            user: BTreeMap::new(),
        }
    }

    /// Adds a node and dials at once; returns its index.
    fn add_node(&mut self, token: &str, name: &str, max: u32) -> usize {
        let mut config = LlmConfig::new(
            URL,
            ConnectParams {
                token: token.to_owned(),
                model: MODEL.to_owned(),
                max_concurrency: max,
                name: name.to_owned(),
            },
        );
        config.max_frame_text = 4;
        let mut link = LlmLink::new(config).unwrap();
        link.connect(self.now).unwrap();
        self.nodes.push(Node {
            link,
            conn: None,
            tasks: Vec::new(),
            stops: Vec::new(),
            ends: Vec::new(),
        });
        self.settle();
        self.nodes.len() - 1
    }

    /// Moves outputs between the sides until both are quiet.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].link.poll_output() {
                    moved = true;
                    self.on_node_output(i, out);
                }
            }
            while let Some(out) = self.g.gw.poll_output() {
                moved = true;
                self.on_gateway_output(out);
            }
            if !moved {
                return;
            }
        }
    }

    fn on_node_output(&mut self, i: usize, out: LlmOutput) {
        let now = self.now;
        match out {
            LlmOutput::OpenWebSocket { url } => {
                let target = url.strip_prefix("ws://127.0.0.1:8120").unwrap().to_owned();
                let conn = ConnId(self.next_conn);
                self.next_conn += 1;
                self.nodes[i].conn = Some(conn);
                // The upgrade succeeds; the gateway decides, then the node learns it is open.
                self.g
                    .gw
                    .handle_connect(
                        now,
                        conn,
                        &target,
                        &Source("127.0.0.1".into()),
                        &mut self.g.book,
                    )
                    .unwrap();
                self.nodes[i].link.handle_ws_opened(now);
            }
            LlmOutput::Send(frame) => {
                let conn = self.nodes[i].conn.unwrap();
                self.g.gw.handle_frame(now, conn, frame);
            }
            LlmOutput::Close { .. } => {
                if let Some(conn) = self.nodes[i].conn.take() {
                    self.g.gw.handle_closed(now, conn);
                }
            }
            LlmOutput::Event(LlmEvent::Task(task)) => self.nodes[i].tasks.push(task),
            LlmOutput::Event(LlmEvent::Stop { id }) => self.nodes[i].stops.push(id),
            LlmOutput::Event(LlmEvent::Ended {
                end, active_tasks, ..
            }) => self.nodes[i].ends.push((end, active_tasks)),
            LlmOutput::Event(_) => {}
        }
    }

    fn on_gateway_output(&mut self, out: LlmGatewayOutput) {
        let now = self.now;
        match out {
            LlmGatewayOutput::Send { conn, frame } => {
                if let Some(node) = self.node_of(conn) {
                    node.link.handle_frame(now, frame);
                }
            }
            LlmGatewayOutput::Close { conn, code, reason } => {
                if let Some(node) = self.node_of(conn) {
                    node.conn = None;
                    node.link.handle_ws_closed(now, Some(code), reason);
                }
            }
            LlmGatewayOutput::Task { task, update } => {
                self.user.entry(task).or_default().push(update)
            }
            LlmGatewayOutput::Event(_) => {}
        }
    }

    fn node_of(&mut self, conn: ConnId) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.conn == Some(conn))
    }

    /// Runs both sides' timers up to `secs`.
    fn advance(&mut self, secs: f64) {
        let to = self.g.at(secs);
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.link.poll_timeout())
                .chain(self.g.gw.poll_timeout())
                .min()
                .filter(|at| *at <= to);
            let Some(at) = next else { break };
            self.now = at;
            for node in &mut self.nodes {
                node.link.handle_timeout(at);
            }
            self.g.gw.handle_timeout(at);
            self.settle();
        }
        self.now = to;
    }

    fn submit(&mut self) -> TaskId {
        let task = self.g.gw.submit(self.now, MODEL, request("hi"));
        self.settle();
        task
    }

    fn user_text(&self, task: TaskId) -> String {
        self.user[&task]
            .iter()
            .filter_map(|u| match u {
                TaskUpdate::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_task_round_trips_through_the_node_link() {
    let mut w = World::new();
    let n = w.add_node(SHARED, "rig", 2);
    assert_eq!(w.g.gw.nodes().len(), 1);
    let t = w.submit();
    assert_eq!(w.nodes[n].tasks.len(), 1);
    let task = w.nodes[n].tasks[0].clone();
    assert_eq!(task.id, t.0);
    assert_eq!(task.messages, vec![ChatMessage::new("user", "hi")]);
    // Frames of at most 4 bytes of text: every multibyte character gets a frame of its own.
    let text = "Grüße 🎉 日本語";
    let now = w.now;
    w.nodes[n].link.send_text(now, task.id, text);
    w.nodes[n].link.finish(now, task.id);
    w.settle();
    assert_eq!(w.user_text(t), text);
    assert_eq!(w.user[&t].last(), Some(&TaskUpdate::Done));
    assert!(w.g.gw.nodes()[0].running.is_empty());
}

#[test]
fn heartbeats_keep_an_idle_node_connected() {
    let mut w = World::new();
    w.add_node(SHARED, "rig", 1);
    w.advance(120.0);
    assert_eq!(w.g.gw.nodes().len(), 1);
    assert!(w.nodes[0].ends.is_empty());
    // A node whose heartbeats stop (its link is gone) is dropped 30 s after its last frame.
    let link_last_beat = 120.0;
    w.nodes[0].conn = None; // frames from now on are lost
    w.nodes.clear();
    w.g.gw.handle_timeout(w.g.at(link_last_beat + 29.9));
    assert_eq!(w.g.gw.nodes().len(), 1);
    w.g.gw.handle_timeout(w.g.at(link_last_beat + 30.0));
    assert!(w.g.gw.nodes().is_empty());
}

#[test]
fn a_stop_reaches_the_node_and_later_text_goes_nowhere() {
    let mut w = World::new();
    let n = w.add_node(SHARED, "rig", 1);
    let t = w.submit();
    let now = w.now;
    w.nodes[n].link.send_text(now, t.0, "partial");
    w.settle();
    assert!(w.g.gw.stop(now, t));
    w.settle();
    assert_eq!(w.nodes[n].stops, vec![t.0]);
    assert!(!w.nodes[n].link.is_active(t.0));
    w.nodes[n].link.send_text(now, t.0, "more");
    w.settle();
    // Frames of at most 4 bytes of text: "part", "ial".
    assert_eq!(w.user_text(t), "partial");
    assert_eq!(w.user[&t].len(), 3);
    assert_eq!(w.user[&t].last(), Some(&TaskUpdate::Stopped));
    // The slot is free: the next task goes to the node.
    let u = w.submit();
    assert_eq!(w.nodes[n].tasks.last().map(|task| task.id), Some(u.0));
}

#[test]
fn a_reconnecting_node_replaces_its_old_connection_and_gets_its_task_again() {
    let mut w = World::new();
    let a = w.add_node(SHARED, "rig", 1);
    let t = w.submit();
    assert_eq!(w.nodes[a].tasks.len(), 1);
    // The same identity dials again (a second link stands in for the node's next connection).
    let b = w.add_node(SHARED, "rig", 1);
    assert_eq!(w.nodes[a].ends.len(), 1);
    let (end, active) = &w.nodes[a].ends[0];
    assert_eq!(
        end,
        &LlmEnd::Replaced {
            code: CloseCode::Bye,
            reason: "Bye".into()
        }
    );
    assert_eq!(active, &vec![t.0]);
    assert_eq!(
        w.nodes[b].tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![t.0]
    );
    let now = w.now;
    w.nodes[b].link.send_text(now, t.0, "again");
    w.nodes[b].link.finish(now, t.0);
    w.settle();
    assert_eq!(w.user_text(t), "again");
    assert_eq!(w.user[&t].last(), Some(&TaskUpdate::Done));
}

#[test]
fn a_node_with_a_bad_token_is_rejected_and_told_so() {
    let mut w = World::new();
    let n = w.add_node("wrong", "rig", 1);
    assert!(w.g.gw.nodes().is_empty());
    assert!(matches!(
        &w.nodes[n].ends[..],
        [(
            LlmEnd::Rejected {
                code: CloseCode::InvalidToken,
                ..
            },
            _
        )]
    ));
}
