//! The LLM dialect's gateway side (core/src/gateway/llm): connecting (4001, 4002, replacement),
//! routing and queues, liveness, stops, result frames and their UTF-8, at exact instants of a
//! virtual clock; random sequences; and the node's link (core/src/node/llm_link) against it.
mod support;

#[path = "gateway_llm/connect.rs"]
mod connect;
#[path = "gateway_llm/link.rs"]
mod link;
#[path = "gateway_llm/props.rs"]
mod props;
#[path = "gateway_llm/results.rs"]
mod results;
#[path = "gateway_llm/sched.rs"]
mod sched;

use std::time::{Duration, Instant};

use nodelink_core::gateway::auth::{
    hash_secret, AuthConfig, NodeBook, NodeRecord, NodeState, UnixClock,
};
use nodelink_core::gateway::llm::{
    ChatRequest, LlmGateway, LlmGatewayConfig, LlmGatewayEvent, LlmGatewayOutput, TaskId,
    TaskUpdate, WsFrame,
};
use nodelink_core::gateway::{ConnId, Source};
use nodelink_core::wire::llm::{decode_server_text, ChatMessage, ConnectParams, ServerFrame};
use support::SimClock;

/// The Unix time at the simulation's origin.
pub const UNIX_ORIGIN: Duration = Duration::from_secs(1_700_000_000);
/// The shared token of the tests' gateway.
pub const SHARED: &str = "s3cr=t";
/// The per-node token secret of node `n1` in the tests' node book.
pub const SECRET: &str = "kP3vQ9xZ-w2Lr8Yb_5sT1uN7mHc4JdE6aF0gRiVoXyU";
pub const MODEL: &str = "llama-3-8b";

pub fn config() -> LlmGatewayConfig {
    LlmGatewayConfig {
        shared_token: Some(SHARED.to_owned()),
        ..LlmGatewayConfig::default()
    }
}

pub struct Gw {
    pub clock: SimClock,
    pub gw: LlmGateway,
    pub book: NodeBook,
}

impl Default for Gw {
    fn default() -> Self {
        Gw::new()
    }
}

impl Gw {
    pub fn new() -> Gw {
        Gw::with(config())
    }

    pub fn with(config: LlmGatewayConfig) -> Gw {
        let clock = SimClock::new();
        let mut book = NodeBook::new(
            AuthConfig::default(),
            UnixClock::new(clock.at(0.0), UNIX_ORIGIN),
        );
        book.insert(NodeRecord {
            node_id: "n1".to_owned(),
            secret_sha256: hash_secret(SECRET),
            state: NodeState::Approved,
            scopes: vec![],
            name: None,
            platform: None,
            paired_at_unix_ms: 0,
        })
        .unwrap();
        Gw {
            clock,
            gw: LlmGateway::new(config, clock.at(0.0), UNIX_ORIGIN).expect("valid config"),
            book,
        }
    }

    pub fn at(&self, secs: f64) -> Instant {
        self.clock.at(secs)
    }

    pub fn drain(&mut self) -> Vec<LlmGatewayOutput> {
        std::iter::from_fn(|| self.gw.poll_output()).collect()
    }

    pub fn connect(&mut self, secs: f64, conn: u64, target: &str) -> Vec<LlmGatewayOutput> {
        let now = self.at(secs);
        self.gw
            .handle_connect(
                now,
                ConnId(conn),
                target,
                &Source("10.0.0.9".to_owned()),
                &mut self.book,
            )
            .expect("a new ConnId");
        self.drain()
    }

    /// Connects node `name` of `model` with the shared token.
    pub fn node(
        &mut self,
        secs: f64,
        conn: u64,
        model: &str,
        name: &str,
        max: u32,
    ) -> Vec<LlmGatewayOutput> {
        let params = ConnectParams {
            token: SHARED.to_owned(),
            model: model.to_owned(),
            max_concurrency: max,
            name: name.to_owned(),
        };
        let out = self.connect(secs, conn, &format!("/ws?{}", params.to_query()));
        let accepted = |o: &LlmGatewayOutput| {
            matches!(
                o,
                LlmGatewayOutput::Event(LlmGatewayEvent::NodeAccepted { .. })
            )
        };
        assert!(out.iter().any(accepted), "accepted: {out:?}");
        out
    }

    pub fn frame(&mut self, secs: f64, conn: u64, frame: WsFrame) -> Vec<LlmGatewayOutput> {
        let now = self.at(secs);
        self.gw.handle_frame(now, ConnId(conn), frame);
        self.drain()
    }

    pub fn data(
        &mut self,
        secs: f64,
        conn: u64,
        id: TaskId,
        bytes: &[u8],
    ) -> Vec<LlmGatewayOutput> {
        let mut frame = id.0.to_be_bytes().to_vec();
        frame.extend_from_slice(bytes);
        self.frame(secs, conn, WsFrame::Binary(frame))
    }

    pub fn finished(&mut self, secs: f64, conn: u64, id: TaskId) -> Vec<LlmGatewayOutput> {
        self.frame(secs, conn, WsFrame::Binary(id.0.to_be_bytes().to_vec()))
    }

    pub fn heartbeat(&mut self, secs: f64, conn: u64) -> Vec<LlmGatewayOutput> {
        self.frame(secs, conn, WsFrame::Text(String::new()))
    }

    pub fn closed(&mut self, secs: f64, conn: u64) -> Vec<LlmGatewayOutput> {
        let now = self.at(secs);
        self.gw.handle_closed(now, ConnId(conn));
        self.drain()
    }

    pub fn submit(&mut self, secs: f64, model: &str) -> (TaskId, Vec<LlmGatewayOutput>) {
        let now = self.at(secs);
        let task = self.gw.submit(now, model, request("hi"));
        (task, self.drain())
    }

    pub fn stop(&mut self, secs: f64, task: TaskId) -> (bool, Vec<LlmGatewayOutput>) {
        let now = self.at(secs);
        let live = self.gw.stop(now, task);
        (live, self.drain())
    }

    /// Fires the timers at `secs` and checks rule 8.
    pub fn timeout(&mut self, secs: f64) -> Vec<LlmGatewayOutput> {
        let now = self.at(secs);
        self.gw.handle_timeout(now);
        if let Some(next) = self.gw.poll_timeout() {
            assert!(
                next > now,
                "rule 8: poll_timeout must be later than {secs}s"
            );
        }
        self.drain()
    }

    pub fn next_timeout_secs(&self) -> Option<f64> {
        self.gw.poll_timeout().map(|at| self.clock.secs(at))
    }
}

pub fn request(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new("user", text)],
        ..ChatRequest::default()
    }
}

/// The tasks sent, as (conn, id), in order.
pub fn sent_tasks(out: &[LlmGatewayOutput]) -> Vec<(u64, u32)> {
    server_frames(out)
        .into_iter()
        .filter_map(|(conn, frame)| match frame {
            ServerFrame::Task(task) => Some((conn, task.id)),
            ServerFrame::Stop { .. } => None,
        })
        .collect()
}

/// The stops sent, as (conn, id), in order.
pub fn stops(out: &[LlmGatewayOutput]) -> Vec<(u64, u32)> {
    server_frames(out)
        .into_iter()
        .filter_map(|(conn, frame)| match frame {
            ServerFrame::Stop { id } => Some((conn, id)),
            ServerFrame::Task(_) => None,
        })
        .collect()
}

/// Every frame sent, decoded as the node decodes it (the gateway only sends text).
pub fn server_frames(out: &[LlmGatewayOutput]) -> Vec<(u64, ServerFrame)> {
    out.iter()
        .filter_map(|o| match o {
            LlmGatewayOutput::Send { conn, frame } => match frame {
                WsFrame::Text(text) => Some((
                    conn.0,
                    decode_server_text(text).expect("the node can decode every frame we send"),
                )),
                other => panic!("the gateway sent a non-text frame: {other:?}"),
            },
            _ => None,
        })
        .collect()
}

/// The closes, as (conn, code, reason).
pub fn closes(out: &[LlmGatewayOutput]) -> Vec<(u64, u16, String)> {
    out.iter()
        .filter_map(|o| match o {
            LlmGatewayOutput::Close { conn, code, reason } => Some((conn.0, *code, reason.clone())),
            _ => None,
        })
        .collect()
}

/// The task updates, in order.
pub fn updates(out: &[LlmGatewayOutput]) -> Vec<(TaskId, TaskUpdate)> {
    out.iter()
        .filter_map(|o| match o {
            LlmGatewayOutput::Task { task, update } => Some((*task, update.clone())),
            _ => None,
        })
        .collect()
}

pub fn events(out: &[LlmGatewayOutput]) -> Vec<LlmGatewayEvent> {
    out.iter()
        .filter_map(|o| match o {
            LlmGatewayOutput::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Fails the test when an update is anything but text.
pub fn texts(out: &[LlmGatewayOutput]) -> Vec<String> {
    updates(out)
        .into_iter()
        .map(|(_, u)| match u {
            TaskUpdate::Text(t) => t,
            other => panic!("expected text, got {other:?}"),
        })
        .collect()
}
