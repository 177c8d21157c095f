//! The gateway machine alone, with 10,000 registered nodes connected over the JSON hub protocol.
//! No sockets: the bench plays the shell and the nodes with pre-encoded records and counts, on
//! one core:
//! - heartbeats: a Heartbeat invocation record on a node's connection (round-robin over every
//!   connection) through `handle_input`, then `poll_output` drained; the frames (owned strings,
//!   as a shell receives them) are built untimed, a batch of one per node at a time;
//! - dispatch + result round trips: `Gateway::dispatch` to a node (round-robin), outputs drained
//!   (the ExecuteCommand frame), then that node's CommandResult record in and outputs drained
//!   (its Completion and the `Finished` output).
//!
//! Set-up (not timed, reported): the node records are restored (approved, SHA-256 of the
//! secret), then each node negotiates (`POST /hubs/node/negotiate`, Bearer), upgrades
//! (`GET /hubs/node?id=`), sends its handshake and its `Hello` as a real node does.
//!
//! `cargo bench -p nodelink-core --bench gateway` (`--quick` for a smoke run; `--only heartbeat`
//! or `--only dispatch` runs one case, and `--ops N` sets the operations per round, for a
//! profiler). The two cases are interleaved round by
//! round and each figure is the median over the rounds; the bench's own work per operation (the
//! heartbeat frame's copy, not timed; the request's building and the result record's filling,
//! timed with the round trip) is measured apart and printed. The clock stands still
//! (one `now`): no timer comes due, as in a burst. Issue 5's targets: at least 1,000,000
//! heartbeats/s and 200,000 round trips/s.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock; core's library code never does

use std::hint::black_box;
use std::time::{Duration, Instant};

use nodelink_core::gateway::auth::{hash_secret, NodeRecord, NodeState};
use nodelink_core::gateway::dispatch::DispatchRequest;
use nodelink_core::gateway::{
    ConnId, Gateway, GatewayConfig, GatewayInput, GatewayOutput, HttpRequest, Source, StoreRecord,
    HUB_PATH,
};
use nodelink_core::node::http::Method;
use nodelink_core::node::WsFrame;
use nodelink_core::wire::contract::NodeCall;
use nodelink_core::wire::dto::{
    Capabilities, CommandResultDto, GpuInfo, HeartbeatDto, HelloDto, PROTOCOL_VERSION,
};
use nodelink_core::wire::signalr::handshake::HandshakeRequest;
use nodelink_core::wire::signalr::negotiate::NegotiateResponse;
use nodelink_core::wire::signalr::HubProtocol;
use serde_json::json;

const NODES: usize = 10_000;
const HEARTBEAT_TARGET: f64 = 1_000_000.0;
const ROUND_TRIP_TARGET: f64 = 200_000.0;
/// Heartbeat frames built (untimed) per batch fed. Small, so that each frame is as fresh in the
/// cache as one a shell has just read from its socket (a batch of 10,000 frames, 3.5 MB, would
/// be fed cold).
const HEARTBEAT_BATCH: usize = 64;
const COMMAND: &str = "system.info";

/// Placeholders the record templates are encoded with (JSON strings that encode as themselves).
const INVOCATION_MARK: &str = "@@INVOCATION@@";
const COMMAND_MARK: &str = "@@COMMAND@@";

/// One node as the bench plays it.
struct BenchNode {
    id: String,
    conn: ConnId,
    /// Its Heartbeat invocation record, encoded once.
    heartbeat: String,
    /// The next invocationId it uses (its Hello used 1).
    next_invocation: u64,
}

/// The gateway with every node connected, and what the timed loops need.
struct Bench {
    gateway: Gateway,
    now: Instant,
    nodes: Vec<BenchNode>,
    /// The CommandResult record cut at its placeholders: text, slot, text, slot, text.
    result_template: Template,
    peak_connections: usize,
    /// Outputs drained and operations done, per case: (outputs, operations).
    heartbeat_outputs: (usize, usize),
    /// The heartbeat frames of the next batch (kept for their capacity).
    frames: Vec<(ConnId, WsFrame)>,
    round_trip_outputs: (usize, usize),
}

/// A record encoded once with placeholders, filled in per operation without `format!`.
struct Template {
    pieces: Vec<(String, Option<Slot>)>,
    len: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Invocation,
    Command,
}

impl Template {
    fn new(record: &str) -> Template {
        let mut marks: Vec<(usize, Slot, usize)> = [
            (INVOCATION_MARK, Slot::Invocation),
            (COMMAND_MARK, Slot::Command),
        ]
        .into_iter()
        .map(|(mark, slot)| {
            let at = record.find(mark).expect("the template has the placeholder");
            (at, slot, mark.len())
        })
        .collect();
        marks.sort_by_key(|(at, _, _)| *at);
        let mut pieces = Vec::new();
        let mut from = 0;
        for (at, slot, len) in marks {
            pieces.push((record[from..at].to_string(), Some(slot)));
            from = at + len;
        }
        pieces.push((record[from..].to_string(), None));
        let len = pieces.iter().map(|(text, _)| text.len()).sum();
        Template { pieces, len }
    }

    /// The record with these values, in one allocation of the exact size.
    fn fill(&self, invocation: u64, command_id: &str) -> String {
        let mut digits = [0u8; 20];
        let invocation = decimal(invocation, &mut digits);
        let mut out = String::with_capacity(self.len + invocation.len() + command_id.len());
        for (text, slot) in &self.pieces {
            out.push_str(text);
            match slot {
                Some(Slot::Invocation) => out.push_str(invocation),
                Some(Slot::Command) => out.push_str(command_id),
                None => {}
            }
        }
        out
    }
}

/// `value` in decimal, written into `buffer`.
fn decimal(mut value: u64, buffer: &mut [u8; 20]) -> &str {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[at..]).expect("ASCII digits")
}

fn encode(call: &NodeCall, invocation_id: Option<&str>) -> String {
    let message = call
        .to_message(HubProtocol::Json, invocation_id.map(str::to_string))
        .expect("encodable");
    let mut record = Vec::new();
    HubProtocol::Json
        .encode(&message, &mut record)
        .expect("encodable");
    String::from_utf8(record).expect("JSON records are text")
}

fn capabilities() -> Capabilities {
    Capabilities {
        commands: vec![COMMAND.to_string(), "gpu.info".to_string()],
        slots: 4,
        gpus: vec![GpuInfo {
            index: 0,
            name: "NVIDIA H100 80GB HBM3".to_string(),
            memory_total_mb: 81_559,
            compute_capability: Some("9.0".to_string()),
        }],
    }
}

fn heartbeat_record(node_id: &str) -> String {
    encode(
        &NodeCall::Heartbeat(HeartbeatDto {
            node_id: node_id.to_string(),
            status: "online".to_string(),
            uptime: 3600,
            platform: "linux".to_string(),
            version: "0.1.0".to_string(),
            cpu_percent: 2.5,
            memory_mb: 45,
            capabilities: Some(capabilities()),
        }),
        None,
    )
}

fn result_template() -> Template {
    let record = encode(
        &NodeCall::CommandResult(CommandResultDto {
            command_id: COMMAND_MARK.to_string(),
            ok: true,
            result: Some(json!({"hostname": "bench", "cpus": 16})),
            error: None,
            duration_ms: Some(3),
            part_index: None,
            is_last: None,
            protocol_version: Some(PROTOCOL_VERSION.to_string()),
        }),
        Some(INVOCATION_MARK),
    );
    Template::new(&record)
}

/// Feeds one input and returns every output it caused.
fn exchange(gateway: &mut Gateway, now: Instant, input: GatewayInput) -> Vec<GatewayOutput> {
    gateway.handle_input(now, input);
    std::iter::from_fn(|| gateway.poll_output()).collect()
}

/// Builds the gateway and connects every node the way a real node does. Returns the bench and
/// how long it took.
fn set_up(count: usize) -> (Bench, Duration) {
    let started = Instant::now();
    let now = started;
    let mut gateway = Gateway::new(
        GatewayConfig::new("https://gw.example.com"),
        now,
        Duration::from_secs(1_764_000_000),
        [7; 32],
    )
    .expect("a valid configuration");
    let ids: Vec<(String, String)> = (0..count)
        .map(|i| {
            (
                format!("node-{i:05}"),
                format!("secret-{i:05}-0123456789abcdef"),
            )
        })
        .collect();
    let records = ids.iter().map(|(id, secret)| {
        StoreRecord::Node(Box::new(NodeRecord {
            node_id: id.clone(),
            secret_sha256: hash_secret(secret),
            state: NodeState::Approved,
            scopes: vec![COMMAND.to_string()],
            name: None,
            platform: Some("linux".to_string()),
            paired_at_unix_ms: 1_764_000_000_000,
        }))
    });
    gateway.restore(now, records).expect("the records restore");
    while gateway.poll_output().is_some() {}

    let mut next_conn = 0;
    let mut conn = || {
        next_conn += 1;
        ConnId(next_conn)
    };
    let mut nodes = Vec::with_capacity(count);
    let mut peak_connections = 0;
    for (i, (id, secret)) in ids.iter().enumerate() {
        let source = Source(format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff));
        let bearer = Some(format!("Bearer {id}.{secret}"));
        // Negotiate.
        let outputs = exchange(
            &mut gateway,
            now,
            GatewayInput::Http {
                conn: conn(),
                source: source.clone(),
                request: HttpRequest {
                    method: Method::Post,
                    target: format!("{HUB_PATH}/negotiate?negotiateVersion=1"),
                    authorization: bearer.clone(),
                    body: Vec::new(),
                },
            },
        );
        let token = outputs
            .iter()
            .find_map(|output| match output {
                GatewayOutput::Reply { reply, .. } => {
                    assert_eq!(reply.status, 200, "negotiate of {id}");
                    match NegotiateResponse::decode(&reply.body) {
                        Ok(NegotiateResponse::Connection(c)) => Some(c.websocket_id().to_string()),
                        other => panic!("negotiate of {id}: {other:?}"),
                    }
                }
                _ => None,
            })
            .expect("a negotiate reply");
        // Upgrade.
        let socket = conn();
        let outputs = exchange(
            &mut gateway,
            now,
            GatewayInput::Upgrade {
                conn: socket,
                source,
                request: HttpRequest {
                    method: Method::Get,
                    target: format!("{HUB_PATH}?id={token}"),
                    authorization: bearer,
                    body: Vec::new(),
                },
            },
        );
        assert!(
            outputs
                .iter()
                .any(|o| matches!(o, GatewayOutput::Upgrade { result: Ok(()), .. })),
            "upgrade of {id}: {outputs:?}"
        );
        // Handshake, then Hello (its answer, and RefreshScopes, are not looked at).
        let mut handshake = Vec::new();
        HandshakeRequest::new(HubProtocol::Json, 1).encode(&mut handshake);
        let handshake = String::from_utf8(handshake).expect("JSON handshake");
        let hello = encode(
            &NodeCall::Hello(HelloDto {
                node_id: id.clone(),
                protocol_versions: vec![PROTOCOL_VERSION.to_string()],
                capabilities: Some(capabilities()),
            }),
            Some("1"),
        );
        for record in [handshake, hello] {
            let outputs = exchange(
                &mut gateway,
                now,
                GatewayInput::Frame {
                    conn: socket,
                    frame: WsFrame::Text(record),
                },
            );
            assert!(
                !outputs
                    .iter()
                    .any(|o| matches!(o, GatewayOutput::CloseSocket { .. })),
                "{id} was not closed: {outputs:?}"
            );
        }
        peak_connections = peak_connections.max(gateway.connection_count());
        nodes.push(BenchNode {
            id: id.clone(),
            conn: socket,
            heartbeat: heartbeat_record(id),
            next_invocation: 2,
        });
    }
    let views = gateway.nodes(now);
    assert_eq!(views.len(), count);
    assert!(
        views.iter().all(|v| v.online && v.connected),
        "every node is online and connected"
    );
    assert_eq!(gateway.connection_count(), count);
    let bench = Bench {
        gateway,
        now,
        nodes,
        result_template: result_template(),
        peak_connections,
        heartbeat_outputs: (0, 0),
        frames: Vec::new(),
        round_trip_outputs: (0, 0),
    };
    (bench, started.elapsed())
}

impl Bench {
    fn note_connections(&mut self) {
        self.peak_connections = self.peak_connections.max(self.gateway.connection_count());
    }

    /// `count` heartbeats, round-robin over the nodes; the elapsed time. Each batch of frames is
    /// built first, untimed (a shell receives its frames already owned), then fed by
    /// [`Bench::heartbeats`].
    fn beat_rounds(&mut self, count: usize) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut batch = std::mem::take(&mut self.frames);
        let mut done = 0;
        while done < count {
            let n = HEARTBEAT_BATCH.min(count - done);
            self.build_heartbeat_frames(done, n, &mut batch);
            elapsed += self.heartbeats(&mut batch);
            done += n;
        }
        self.frames = batch;
        self.heartbeat_outputs.1 += count;
        self.note_connections();
        elapsed
    }

    /// The frames of heartbeats `from..from + n` (round-robin over the nodes), untimed.
    #[inline(never)]
    fn build_heartbeat_frames(
        &mut self,
        from: usize,
        n: usize,
        batch: &mut Vec<(ConnId, WsFrame)>,
    ) {
        batch.clear();
        batch.extend((from..from + n).map(|k| {
            let node = &self.nodes[k % self.nodes.len()];
            (node.conn, WsFrame::Text(node.heartbeat.clone()))
        }));
    }

    /// Feeds a batch of heartbeat frames, outputs drained; the elapsed time. Never inlined, so
    /// that a profiler can count it alone
    /// (`valgrind --tool=callgrind --toggle-collect='*Bench*heartbeats*'`).
    #[inline(never)]
    fn heartbeats(&mut self, batch: &mut Vec<(ConnId, WsFrame)>) -> Duration {
        let now = self.now;
        let mut outputs = 0usize;
        let mut closed = 0usize;
        let started = Instant::now();
        for (conn, frame) in batch.drain(..) {
            self.gateway
                .handle_input(now, GatewayInput::Frame { conn, frame });
            while let Some(output) = self.gateway.poll_output() {
                outputs += 1;
                closed += usize::from(matches!(output, GatewayOutput::CloseSocket { .. }));
                black_box(output);
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(closed, 0, "no connection was closed by a heartbeat");
        self.heartbeat_outputs.0 += outputs;
        elapsed
    }

    /// `count` dispatch + result round trips, round-robin over the nodes; the elapsed time.
    /// Never inlined, as `heartbeats`.
    #[inline(never)]
    fn round_trips(&mut self, count: usize) -> Duration {
        let now = self.now;
        let mut executes = 0usize;
        let mut finished = 0usize;
        let mut outputs = 0usize;
        let started = Instant::now();
        for k in 0..count {
            let i = k % self.nodes.len();
            let node = &self.nodes[i];
            let command_id = self
                .gateway
                .dispatch(now, DispatchRequest::new(node.id.clone(), COMMAND))
                .expect("the node takes the command");
            while let Some(output) = self.gateway.poll_output() {
                outputs += 1;
                if let GatewayOutput::Send { conn, frame } = &output {
                    executes += usize::from(*conn == node.conn);
                    if k < 16 {
                        // The first few are checked whole: the command goes out to its node.
                        let text = String::from_utf8_lossy(frame.as_bytes());
                        assert!(text.contains("ExecuteCommand") && text.contains(&*command_id));
                    }
                }
                black_box(output);
            }
            let node = &mut self.nodes[i];
            let record = self.result_template.fill(node.next_invocation, &command_id);
            node.next_invocation += 1;
            let conn = node.conn;
            self.gateway.handle_input(
                now,
                GatewayInput::Frame {
                    conn,
                    frame: WsFrame::Text(record),
                },
            );
            while let Some(output) = self.gateway.poll_output() {
                outputs += 1;
                if let GatewayOutput::Finished {
                    command_id: id,
                    outcome,
                    ..
                } = &output
                {
                    finished += usize::from(**id == *command_id && outcome.result.ok);
                }
                black_box(output);
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(
            executes, count,
            "every command went out on its node's connection"
        );
        assert_eq!(
            finished, count,
            "every command finished with the node's result"
        );
        self.round_trip_outputs.0 += outputs;
        self.round_trip_outputs.1 += count;
        self.note_connections();
        elapsed
    }
}

impl Bench {
    /// The bench's own work per operation, without the gateway: the frame copies, the result
    /// record's filling, the request's building. Ns per heartbeat and per round trip.
    fn harness_ns(&mut self, count: usize) -> (f64, f64) {
        let started = Instant::now();
        for k in 0..count {
            let node = &self.nodes[k % self.nodes.len()];
            black_box(WsFrame::Text(black_box(&node.heartbeat).clone()));
        }
        let beat = started.elapsed().as_nanos() as f64 / count as f64;
        let command_id = "0b7e6c1a-3f2d-4e5b-8a9c-1d2e3f4a5b6c".to_string();
        let started = Instant::now();
        for k in 0..count {
            let node = &self.nodes[k % self.nodes.len()];
            black_box(DispatchRequest::new(node.id.clone(), COMMAND));
            let record = self.result_template.fill(black_box(k as u64), &command_id);
            black_box(WsFrame::Text(record));
        }
        let trip = started.elapsed().as_nanos() as f64 / count as f64;
        (beat, trip)
    }
}

/// A short name for an output, for the summary of what one operation produces.
fn kind(output: &GatewayOutput) -> &'static str {
    match output {
        GatewayOutput::Reply { .. } => "Reply",
        GatewayOutput::Upgrade { .. } => "Upgrade",
        GatewayOutput::Send { .. } => "Send",
        GatewayOutput::CloseSocket { .. } => "CloseSocket",
        GatewayOutput::Persist(_) => "Persist",
        GatewayOutput::Finished { .. } => "Finished",
        GatewayOutput::Event(_) => "Event",
    }
}

/// "2 Persist, 1 Send" for a list of kinds, in order of first appearance.
fn summary(kinds: &[&'static str]) -> String {
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for kind in kinds {
        match counted.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => counted.push((kind, 1)),
        }
    }
    if counted.is_empty() {
        return "none".to_string();
    }
    counted
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Bench {
    /// What one heartbeat and one round trip (on node 0) put out, untimed.
    fn describe(&mut self) -> (String, String, String) {
        let now = self.now;
        let node = &self.nodes[0];
        self.gateway.handle_input(
            now,
            GatewayInput::Frame {
                conn: node.conn,
                frame: WsFrame::Text(node.heartbeat.clone()),
            },
        );
        let beat: Vec<_> = std::iter::from_fn(|| self.gateway.poll_output())
            .map(|o| kind(&o))
            .collect();
        let command_id = self
            .gateway
            .dispatch(now, DispatchRequest::new(node.id.clone(), COMMAND))
            .expect("the node takes the command");
        let out: Vec<_> = std::iter::from_fn(|| self.gateway.poll_output())
            .map(|o| kind(&o))
            .collect();
        let node = &mut self.nodes[0];
        let record = self.result_template.fill(node.next_invocation, &command_id);
        node.next_invocation += 1;
        self.gateway.handle_input(
            now,
            GatewayInput::Frame {
                conn: node.conn,
                frame: WsFrame::Text(record),
            },
        );
        let back: Vec<_> = std::iter::from_fn(|| self.gateway.poll_output())
            .map(|o| kind(&o))
            .collect();
        (summary(&beat), summary(&out), summary(&back))
    }
}

/// Rates per second over the rounds, sorted.
struct Figures {
    name: &'static str,
    unit: &'static str,
    per_round: usize,
    target: f64,
    rates: Vec<f64>,
}

impl Figures {
    fn median(&self) -> f64 {
        self.rates[self.rates.len() / 2]
    }

    fn row(&self) -> String {
        let median = self.median();
        let verdict = if median >= self.target {
            "met"
        } else {
            "MISSED"
        };
        format!(
            "{:<26} {:>10.0} {:>10.0} {:>10.0} {:>9.0} {:>10.0}  {verdict}",
            format!("{} ({})", self.name, self.unit),
            median,
            self.rates[0],
            self.rates[self.rates.len() - 1],
            1e9 / median,
            self.target,
        )
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only heartbeat` or `--only dispatch`: one case alone (for a profiler).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    let run_beats = only.is_none_or(|o| o == "heartbeat");
    let run_trips = only.is_none_or(|o| o == "dispatch");
    let (rounds, mut heartbeats, mut round_trips) = if quick {
        (3, 200_000, 40_000)
    } else {
        (9, 2_000_000, 400_000)
    };
    // `--ops N`: N heartbeats and N round trips per round (short runs under a profiler).
    if let Some(ops) = args
        .iter()
        .position(|a| a == "--ops")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok())
    {
        (heartbeats, round_trips) = (ops.max(1), ops.max(1));
    }
    let (mut bench, set_up_time) = set_up(NODES);
    // Warm-up: every node once each way.
    bench.beat_rounds(NODES);
    bench.round_trips(NODES);
    let (beat_kinds, dispatch_kinds, result_kinds) = bench.describe();
    let mut harness = (Vec::new(), Vec::new());
    let mut beat = Figures {
        name: "heartbeat",
        unit: "/s",
        per_round: heartbeats,
        target: HEARTBEAT_TARGET,
        rates: Vec::new(),
    };
    let mut trip = Figures {
        name: "dispatch + result",
        unit: "/s",
        per_round: round_trips,
        target: ROUND_TRIP_TARGET,
        rates: Vec::new(),
    };
    // Interleaved rounds: both cases see the same machine conditions.
    for _ in 0..rounds {
        if run_beats {
            let elapsed = bench.beat_rounds(heartbeats);
            beat.rates.push(heartbeats as f64 / elapsed.as_secs_f64());
        }
        if run_trips {
            let elapsed = bench.round_trips(round_trips);
            trip.rates.push(round_trips as f64 / elapsed.as_secs_f64());
        }
        let (beat_ns, trip_ns) = bench.harness_ns(heartbeats / 10);
        harness.0.push(beat_ns);
        harness.1.push(trip_ns);
    }
    harness.0.sort_by(f64::total_cmp);
    harness.1.sort_by(f64::total_cmp);

    println!(
        "gateway machine: {NODES} approved nodes connected over the JSON hub protocol, one core"
    );
    println!(
        "set-up (restore, then negotiate + upgrade + handshake + Hello per node): {:.2} s, {:.1} us per node; peak connections {}",
        set_up_time.as_secs_f64(),
        set_up_time.as_secs_f64() * 1e6 / NODES as f64,
        bench.peak_connections
    );
    println!(
        "{rounds} rounds of {} heartbeats and {} round trips, interleaved",
        beat.per_round, trip.per_round
    );
    println!(
        "the bench's own work: {:.0} ns per heartbeat frame copy (untimed, not included), {:.0} ns per round trip's request + result record (included below)",
        harness.0[harness.0.len() / 2],
        harness.1[harness.1.len() / 2]
    );
    println!("outputs of one heartbeat: {beat_kinds}");
    println!("outputs of one dispatch: {dispatch_kinds}; of its result: {result_kinds}");
    for (name, (outputs, ops)) in [
        ("heartbeat", bench.heartbeat_outputs),
        ("round trip", bench.round_trip_outputs),
    ] {
        if ops > 0 {
            println!(
                "  {name}: {:.2} outputs per operation over {ops} operations",
                outputs as f64 / ops as f64
            );
        }
    }
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>9} {:>10}  verdict",
        "operation", "median", "min", "max", "ns/op", "target"
    );
    for figures in [&mut beat, &mut trip] {
        if !figures.rates.is_empty() {
            figures.rates.sort_by(f64::total_cmp);
            println!("{}", figures.row());
        }
    }
}
