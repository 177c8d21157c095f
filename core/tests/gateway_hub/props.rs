//! Random sequences of negotiations, upgrades, frames (valid, split, garbage), socket losses,
//! gateway calls and time over several connections. Invariants: no panic; design rule 8; every
//! frame sent holds whole records and a frame over the batch limit holds one; nothing is sent or
//! reported for a socket after its connection ended; every connection ends at most once, and
//! exactly once when time runs on long enough.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use nodelink_core::wire::signalr::CompletionOutcome;

const MAX_BATCH: usize = 200;

#[derive(Clone, Debug)]
enum Msg {
    Heartbeat,
    Result,
    UnknownWithId,
    Ping,
    Ack(u64),
    Sequence(u64),
    Close,
    Completion,
}

#[derive(Clone, Debug)]
enum Op {
    /// Negotiate, open and handshake in one go.
    Connect {
        stateful: bool,
        messagepack: bool,
    },
    /// Open a new socket with the token of the `socket`-th live connection (a resume or a 409).
    Reopen {
        socket: usize,
    },
    Negotiate {
        stateful: bool,
        version: u8,
    },
    /// Open a socket: without id, with the `token`-th token negotiated, or with a bad id.
    Open {
        token: Option<usize>,
        bad: bool,
    },
    Handshake {
        socket: usize,
        messagepack: bool,
        version: u32,
    },
    NodeSends {
        socket: usize,
        msgs: Vec<Msg>,
        split: Option<usize>,
    },
    Garbage {
        socket: usize,
        bytes: Vec<u8>,
        binary: bool,
    },
    SocketClosed {
        socket: usize,
        clean: bool,
    },
    Send {
        socket: usize,
        big: bool,
    },
    Complete {
        socket: usize,
    },
    Close {
        socket: usize,
        allow: bool,
    },
    Advance {
        millis: u64,
    },
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        4 => Just(Msg::Heartbeat),
        2 => Just(Msg::Result),
        1 => Just(Msg::UnknownWithId),
        2 => Just(Msg::Ping),
        1 => (0u64..6).prop_map(Msg::Ack),
        1 => (0u64..6).prop_map(Msg::Sequence),
        1 => Just(Msg::Close),
        1 => Just(Msg::Completion),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let socket = 0usize..8;
    prop_oneof![
        4 => (any::<bool>(), any::<bool>())
            .prop_map(|(stateful, messagepack)| Op::Connect { stateful, messagepack }),
        2 => socket.clone().prop_map(|socket| Op::Reopen { socket }),
        2 => (any::<bool>(), 0u8..3).prop_map(|(stateful, version)| Op::Negotiate { stateful, version }),
        3 => (proptest::option::of(0usize..4), proptest::bool::weighted(0.1))
            .prop_map(|(token, bad)| Op::Open { token, bad }),
        3 => (socket.clone(), any::<bool>(), prop_oneof![4 => Just(2u32), 4 => Just(1u32), 1 => Just(3u32)])
            .prop_map(|(socket, messagepack, version)| Op::Handshake { socket, messagepack, version }),
        6 => (socket.clone(), proptest::collection::vec(msg(), 1..4), proptest::option::of(0usize..400))
            .prop_map(|(socket, msgs, split)| Op::NodeSends { socket, msgs, split }),
        1 => (socket.clone(), proptest::collection::vec(any::<u8>(), 0..12), any::<bool>())
            .prop_map(|(socket, bytes, binary)| Op::Garbage { socket, bytes, binary }),
        2 => (socket.clone(), any::<bool>()).prop_map(|(socket, clean)| Op::SocketClosed { socket, clean }),
        3 => (socket.clone(), proptest::bool::weighted(0.2)).prop_map(|(socket, big)| Op::Send { socket, big }),
        1 => socket.clone().prop_map(|socket| Op::Complete { socket }),
        1 => (socket, any::<bool>()).prop_map(|(socket, allow)| Op::Close { socket, allow }),
        4 => prop_oneof![0u64..1_500, 1_000u64..40_000].prop_map(|millis| Op::Advance { millis }),
    ]
}

/// The property's view of the server: what it opened and what it was told.
struct Model {
    sim: Sim,
    now: f64,
    tokens: Vec<String>,
    /// Every socket number handed to `open_socket` that was accepted, in order.
    sockets: Vec<ConnId>,
    next_socket: u64,
    /// Socket -> its connection (a number of our own), while the connection lives on it.
    live: BTreeMap<ConnId, u64>,
    /// Sockets whose connection moved away or ended: nothing may name them again.
    retired: BTreeSet<ConnId>,
    protocol: BTreeMap<ConnId, HubProtocol>,
    token_of: BTreeMap<ConnId, String>,
    connections: u64,
    ended: BTreeSet<u64>,
    connected: BTreeSet<u64>,
}

impl Model {
    /// Mostly a socket whose connection lives, sometimes any socket ever opened.
    fn socket(&self, index: usize) -> Option<ConnId> {
        if index < 6 && !self.live.is_empty() {
            return self.live.keys().nth(index % self.live.len()).copied();
        }
        self.sockets.get(index % self.sockets.len().max(1)).copied()
    }

    /// Opens a socket with `query`; whether it was accepted.
    fn open(&mut self, query: &str) -> Result<Option<ConnId>, TestCaseError> {
        let conn = ConnId(self.next_socket);
        self.next_socket += 1;
        let now = self.at();
        if self.sim.server.open_socket(now, conn, NODE, query).is_err() {
            self.step(None)?;
            return Ok(None);
        }
        self.sockets.push(conn);
        self.step(Some(conn))?;
        Ok(Some(conn))
    }

    fn at(&self) -> Instant {
        self.sim.at(self.now)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.at();
        match op.clone() {
            Op::Connect {
                stateful,
                messagepack,
            } => {
                let query = if stateful {
                    "negotiateVersion=1&useStatefulReconnect=true"
                } else {
                    "negotiateVersion=1"
                };
                let reply = self
                    .sim
                    .server
                    .negotiate(now, NODE, query, &mut self.sim.rng);
                let Some(token) = connection_token(&reply) else {
                    return self.step(None);
                };
                self.tokens.push(token.clone());
                if let Some(conn) = self.open(&format!("id={token}"))? {
                    self.token_of.insert(conn, token);
                    let protocol = if messagepack {
                        HubProtocol::MessagePack
                    } else {
                        HubProtocol::Json
                    };
                    let version = if stateful { 2 } else { 1 };
                    self.sim
                        .server
                        .handle_frame(now, conn, handshake(protocol, version));
                }
            }
            Op::Reopen { socket } => {
                let Some(old) = self.socket(socket) else {
                    return Ok(());
                };
                let Some(token) = self.token_of.get(&old).cloned() else {
                    return Ok(());
                };
                if let Some(conn) = self.open(&format!("id={token}"))? {
                    self.token_of.insert(conn, token);
                }
                return Ok(());
            }
            Op::Negotiate { stateful, version } => {
                let mut query = format!("negotiateVersion={version}");
                if stateful {
                    query.push_str("&useStatefulReconnect=true");
                }
                let reply = self
                    .sim
                    .server
                    .negotiate(now, NODE, &query, &mut self.sim.rng);
                if let Some(token) = connection_token(&reply) {
                    self.tokens.push(token);
                }
            }
            Op::Open { token, bad } => {
                let query = match (token, bad) {
                    (_, true) => "id=bogus".to_owned(),
                    (None, false) => String::new(),
                    (Some(i), false) => match self.tokens.get(i % self.tokens.len().max(1)) {
                        Some(token) => format!("id={token}"),
                        None => String::new(),
                    },
                };
                if let Some(conn) = self.open(&query)? {
                    if let Some(token) = query.strip_prefix("id=") {
                        self.token_of.insert(conn, token.to_owned());
                    }
                }
                return Ok(());
            }
            Op::Handshake {
                socket,
                messagepack,
                version,
            } => {
                let Some(conn) = self.socket(socket) else {
                    return Ok(());
                };
                let protocol = if messagepack {
                    HubProtocol::MessagePack
                } else {
                    HubProtocol::Json
                };
                self.sim
                    .server
                    .handle_frame(now, conn, handshake(protocol, version));
            }
            Op::NodeSends {
                socket,
                msgs,
                split,
            } => {
                let Some(conn) = self.socket(socket) else {
                    return Ok(());
                };
                let protocol = self
                    .protocol
                    .get(&conn)
                    .copied()
                    .unwrap_or(HubProtocol::Json);
                let mut bytes = Vec::new();
                for m in &msgs {
                    protocol.encode(&message(protocol, m), &mut bytes).unwrap();
                }
                let cut = split.map_or(bytes.len(), |at| at.min(bytes.len()));
                let (a, b) = bytes.split_at(cut);
                for part in [a, b] {
                    if !part.is_empty() {
                        self.sim
                            .server
                            .handle_frame(now, conn, WsFrame::Binary(part.to_vec()));
                    }
                }
            }
            Op::Garbage {
                socket,
                bytes,
                binary,
            } => {
                let Some(conn) = self.socket(socket) else {
                    return Ok(());
                };
                let frame = if binary {
                    WsFrame::Binary(bytes)
                } else {
                    WsFrame::Text(String::from_utf8_lossy(&bytes).into_owned())
                };
                self.sim.server.handle_frame(now, conn, frame);
            }
            Op::SocketClosed { socket, clean } => {
                let Some(conn) = self.socket(socket) else {
                    return Ok(());
                };
                let code = if clean { Some(1000) } else { None };
                self.sim.server.socket_closed(now, conn, code);
            }
            Op::Send { socket, big } => {
                let Some(conn) = self.socket(socket) else {
                    return Ok(());
                };
                let call = if big {
                    GatewayCall::RefreshScopes(vec!["x".repeat(MAX_BATCH)])
                } else {
                    execute("cmd_1")
                };
                let _ = self.sim.server.send(now, conn, &call);
            }
            Op::Complete { socket } => {
                let Some(conn) = self.socket(socket) else {
                    return Ok(());
                };
                let _ = self
                    .sim
                    .server
                    .complete(now, conn, "1".into(), CompletionOutcome::Void);
            }
            Op::Close { socket, allow } => {
                let Some(conn) = self.socket(socket) else {
                    return Ok(());
                };
                let _ = self.sim.server.close(now, conn, Some("bye".into()), allow);
            }
            Op::Advance { millis } => {
                self.advance(self.now + millis as f64 / 1000.0)?;
                return Ok(());
            }
        }
        self.step(None)
    }

    /// Fires every timer up to `to` at its exact instant (and a spurious call at `to`).
    fn advance(&mut self, to: f64) -> Result<(), TestCaseError> {
        loop {
            let next = self
                .sim
                .server
                .poll_timeout()
                .map(|at| self.sim.clock.secs(at));
            let at = match next {
                Some(at) if at <= to => at.max(self.now),
                _ => to,
            };
            self.now = at;
            let instant = self.at();
            self.sim.server.handle_timeout(instant);
            if let Some(next) = self.sim.server.poll_timeout() {
                prop_assert!(
                    next > instant,
                    "rule 8: poll_timeout {next:?} <= {instant:?}"
                );
            }
            self.step(None)?;
            if at >= to {
                return Ok(());
            }
        }
    }

    /// Drains and checks one step. `opened`: a socket accepted by this step's `open_socket`.
    fn step(&mut self, opened: Option<ConnId>) -> Result<(), TestCaseError> {
        let step = self.sim.drain();
        let resumed = step.events.iter().any(
            |e| matches!(e, HubServerEvent::Reconnected { conn, .. } if Some(*conn) == opened),
        );
        if let (Some(conn), false) = (opened, resumed) {
            self.connections += 1;
            self.live.insert(conn, self.connections);
        }
        for output in &step.out {
            let (conn, frame) = match output {
                HubServerOutput::Send { conn, frame } => (*conn, Some(frame)),
                HubServerOutput::CloseSocket { conn, reason, .. } => {
                    prop_assert!(reason.len() <= 123);
                    (*conn, None)
                }
            };
            prop_assert!(
                !self.retired.contains(&conn) || self.ended_in_step(&step, conn),
                "output for a socket whose connection is gone: {output:?}"
            );
            if let Some(frame) = frame {
                check_whole(frame)?;
            }
        }
        for event in &step.events {
            match event {
                HubServerEvent::Connected { conn, protocol, .. } => {
                    let id = self.live.get(conn).copied();
                    prop_assert!(id.is_some(), "Connected for an unknown socket");
                    prop_assert!(self.connected.insert(id.unwrap()), "connected twice");
                    self.protocol.insert(*conn, *protocol);
                }
                HubServerEvent::Reconnected { conn, previous, .. } => {
                    let id = self.live.remove(previous);
                    prop_assert!(id.is_some(), "resumed a connection that is not live");
                    self.live.insert(*conn, id.unwrap());
                    self.retired.insert(*previous);
                    let protocol = self.protocol[previous];
                    self.protocol.insert(*conn, protocol);
                }
                HubServerEvent::Disconnected {
                    conn, will_resume, ..
                } => {
                    prop_assert!(self.live.contains_key(conn), "disconnect of a dead socket");
                    if !will_resume {
                        let id = self.live.remove(conn).unwrap();
                        prop_assert!(self.ended.insert(id), "connection {id} ended twice");
                        self.retired.insert(*conn);
                    }
                }
                HubServerEvent::Call { conn, .. }
                | HubServerEvent::Heartbeat { conn, .. }
                | HubServerEvent::Misbehaved { conn, .. } => {
                    prop_assert!(
                        self.live.contains_key(conn) || self.ended_in_step(&step, *conn),
                        "event for a dead socket: {event:?}"
                    );
                }
            }
        }
        prop_assert_eq!(self.sim.server.connection_count(), self.live.len());
        Ok(())
    }

    fn ended_in_step(&self, step: &Step, conn: ConnId) -> bool {
        step.events.iter().any(|e| {
            matches!(e, HubServerEvent::Disconnected { conn: c, .. }
                | HubServerEvent::Reconnected { previous: c, .. } if *c == conn)
        })
    }
}

/// The `?id=` of a successful negotiate answer.
fn connection_token(reply: &HttpReply) -> Option<String> {
    (reply.status == 200).then(|| {
        let c = connection(reply);
        c.connection_token.unwrap_or(c.connection_id)
    })
}

fn message(protocol: HubProtocol, m: &Msg) -> HubMessage {
    match m {
        Msg::Heartbeat => heartbeat(protocol),
        Msg::Result => invocation(
            protocol,
            Some("5"),
            "CommandResult",
            &serde_json::json!({"commandId": "cmd_1", "ok": true}),
        ),
        Msg::UnknownWithId => invocation(protocol, Some("6"), "Nope", &1),
        Msg::Ping => HubMessage::Ping,
        Msg::Ack(n) => HubMessage::Ack { sequence_id: *n },
        Msg::Sequence(n) => HubMessage::Sequence { sequence_id: *n },
        Msg::Close => HubMessage::Close {
            error: None,
            allow_reconnect: None,
        },
        Msg::Completion => HubMessage::Completion {
            headers: Headers::new(),
            invocation_id: "1".into(),
            outcome: CompletionOutcome::Void,
        },
    }
}

/// A frame holds whole records: JSON and handshake records in Text frames (0x1E-terminated),
/// MessagePack messages in Binary ones; a frame over the batch limit holds exactly one.
fn check_whole(frame: &WsFrame) -> Result<(), TestCaseError> {
    let mut decoder = RecordDecoder::new(usize::MAX);
    if let WsFrame::Binary(_) = frame {
        decoder.set_protocol(HubProtocol::MessagePack);
    }
    decoder.push(frame.as_bytes());
    let mut records = 0;
    while decoder
        .next_record()
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .is_some()
    {
        records += 1;
    }
    prop_assert_eq!(decoder.buffered_len(), 0, "a split record: {:?}", frame);
    prop_assert!(records >= 1);
    prop_assert!(
        frame.as_bytes().len() <= MAX_BATCH || records == 1,
        "{:?}",
        frame
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut model = Model {
            sim: Sim::with(HubServerConfig {
                max_batch_len: MAX_BATCH,
                reconnect_buffer_bytes: 600,
                ..HubServerConfig::default()
            }),
            now: 0.0,
            tokens: Vec::new(),
            sockets: Vec::new(),
            next_socket: 1,
            live: BTreeMap::new(),
            retired: BTreeSet::new(),
            protocol: BTreeMap::new(),
            token_of: BTreeMap::new(),
            connections: 0,
            ended: BTreeSet::new(),
            connected: BTreeSet::new(),
        };
        for op in &ops {
            model.apply(op)?;
        }
        // Left alone, every connection ends (handshake or client timeout, reconnect window) and
        // every negotiated id is forgotten.
        model.advance(model.now + 600.0)?;
        prop_assert!(model.live.is_empty(), "still live: {:?}", model.live);
        prop_assert_eq!(model.ended.len() as u64, model.connections);
        prop_assert_eq!(model.sim.server.connection_count(), 0);
        prop_assert_eq!(model.sim.server.pending_negotiations(), 0);
        prop_assert_eq!(model.sim.server.poll_timeout(), None);
    }
}
