//! The wire codecs against raw serde on the same data, measured in the same run.
//!
//! `cargo bench -p nodelink-core --bench wire` prints one table: per message kind, the time of
//! the nodelink path (hub record -> typed DTO, or the reverse) and of the baseline (serde on the
//! bare DTO), and their ratio. Machines are shared and noisy, so the cases are interleaved round
//! by round and each figure is the median over the rounds: a ratio compares two medians taken
//! under the same conditions. Issue 3's target: decoding a Heartbeat invocation record costs at
//! most 1.3x decoding the bare HeartbeatDto.
//!
//! `--quick` runs few rounds (a smoke test); `--check` exits non-zero when the Heartbeat target
//! is missed.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock; core's library code never does

use std::hint::black_box;
use std::time::{Duration, Instant};

use nodelink_core::chunk;
use nodelink_core::wire::contract::{GatewayCall, NodeCall};
use nodelink_core::wire::dto::{
    Capabilities, CommandResultDto, ExecuteCommandDto, GpuInfo, HeartbeatDto, OriginatedBy,
};
use nodelink_core::wire::llm::{self, ChatMessage, ServerFrame, Task};
use nodelink_core::wire::signalr::framing::RecordDecoder;
use nodelink_core::wire::signalr::{json, msgpack, HubMessage, HubProtocol};
use serde_json::json;

const HEARTBEAT_TARGET: f64 = 1.3;

/// One comparison: the nodelink path and its baseline.
struct Case {
    name: &'static str,
    nodelink: Box<dyn FnMut()>,
    baseline: Box<dyn FnMut()>,
    /// Ns per iteration, one entry per round.
    nodelink_ns: Vec<f64>,
    baseline_ns: Vec<f64>,
}

impl Case {
    fn new(
        name: &'static str,
        nodelink: impl FnMut() + 'static,
        baseline: impl FnMut() + 'static,
    ) -> Case {
        Case {
            name,
            nodelink: Box::new(nodelink),
            baseline: Box::new(baseline),
            nodelink_ns: Vec::new(),
            baseline_ns: Vec::new(),
        }
    }
}

/// Runs `f` in a batch sized to take about `slice`, returns ns per iteration.
fn time_batch(f: &mut dyn FnMut(), iterations: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_nanos() as f64 / iterations as f64
}

/// How many iterations fill `slice`, measured once up front.
fn calibrate(f: &mut dyn FnMut(), slice: Duration) -> u64 {
    let mut n = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        let elapsed = start.elapsed();
        if elapsed >= slice / 4 || n >= 1 << 30 {
            let per = elapsed.as_nanos().max(1) as f64 / n as f64;
            return ((slice.as_nanos() as f64 / per) as u64).max(1);
        }
        n *= 4;
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn heartbeat() -> HeartbeatDto {
    HeartbeatDto {
        node_id: "abc123".to_string(),
        status: "online".to_string(),
        uptime: 3600,
        platform: "linux".to_string(),
        version: "0.1.0".to_string(),
        cpu_percent: 2.5,
        memory_mb: 45,
        capabilities: Some(Capabilities {
            commands: vec!["system.info".to_string(), "gpu.info".to_string()],
            slots: 4,
            gpus: vec![GpuInfo {
                index: 0,
                name: "NVIDIA H100 80GB HBM3".to_string(),
                memory_total_mb: 81_559,
                compute_capability: Some("9.0".to_string()),
            }],
        }),
    }
}

fn execute_command() -> ExecuteCommandDto {
    ExecuteCommandDto {
        command_id: "7f6c2a4e-4d0b-4f8e-9a51-0c2d3e4f5a6b".to_string(),
        command: "tensor.matmul".to_string(),
        params: Some(json!({"m": 512, "n": 512, "k": 512, "seed": 7})),
        timeout_ms: Some(30_000),
        originated_by: Some(OriginatedBy {
            user_id: Some("usr_abc".to_string()),
            agent_id: Some("sophon".to_string()),
            session_id: Some("sess_def".to_string()),
        }),
        protocol_version: Some("2026-04-01".to_string()),
    }
}

fn command_result(text_len: usize) -> CommandResultDto {
    CommandResultDto {
        command_id: "7f6c2a4e-4d0b-4f8e-9a51-0c2d3e4f5a6b".to_string(),
        ok: true,
        result: Some(json!({"format": "text", "text": "x".repeat(text_len)})),
        error: None,
        duration_ms: Some(234),
        part_index: None,
        is_last: None,
        protocol_version: Some("2026-04-01".to_string()),
    }
}

fn record(protocol: HubProtocol, call: &NodeCall) -> Vec<u8> {
    let message = call.to_message(protocol, None).expect("DTOs encode");
    let mut out = Vec::new();
    protocol
        .encode(&message, &mut out)
        .expect("payloads are in the right encoding");
    out
}

/// Hub record -> typed call, the way a gateway decodes what a node sends: the one-pass fast path,
/// and the general path when the fast path declines.
fn decode_json_call(record: &[u8]) -> NodeCall {
    let body = &record[..record.len() - 1]; // without the 0x1E
    if let Some(typed) = json::decode_invocation::<NodeCall>(body) {
        return typed.call;
    }
    match json::decode_record(body).expect("valid record") {
        HubMessage::Invocation(invocation) => {
            NodeCall::from_invocation(&invocation).expect("valid call")
        }
        other => panic!("not an invocation: {other:?}"),
    }
}

fn decode_msgpack_call(body: &[u8]) -> NodeCall {
    match msgpack::decode_body(body).expect("valid message") {
        HubMessage::Invocation(invocation) => {
            NodeCall::from_invocation(&invocation).expect("valid call")
        }
        other => panic!("not an invocation: {other:?}"),
    }
}

/// The MessagePack body without its length prefix (prefix is 1 to 3 bytes for these sizes).
fn msgpack_body(record: &[u8]) -> Vec<u8> {
    let mut decoder = RecordDecoder::new(usize::MAX);
    decoder.set_protocol(HubProtocol::MessagePack);
    decoder.push(record);
    decoder
        .next_record()
        .expect("framed")
        .expect("whole")
        .to_vec()
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();

    // Heartbeat, decode: the target of issue 3.
    let hb = heartbeat();
    let hb_call = NodeCall::Heartbeat(hb.clone());
    let hb_record = record(HubProtocol::Json, &hb_call);
    let hb_dto = serde_json::to_vec(&hb).expect("encodes");
    assert!(matches!(decode_json_call(&hb_record), NodeCall::Heartbeat(ref d) if *d == hb));
    assert!(
        json::decode_invocation::<NodeCall>(&hb_record[..hb_record.len() - 1]).is_some(),
        "the Heartbeat takes the one-pass path"
    );
    cases.push(Case::new(
        "Heartbeat decode, JSON record -> DTO",
        move || {
            black_box(decode_json_call(black_box(&hb_record)));
        },
        move || {
            black_box(serde_json::from_slice::<HeartbeatDto>(black_box(&hb_dto)).expect("valid"));
        },
    ));

    let hb_mp = msgpack_body(&record(HubProtocol::MessagePack, &hb_call));
    let hb_mp_dto = rmp_serde::to_vec_named(&hb).expect("encodes");
    assert!(matches!(decode_msgpack_call(&hb_mp), NodeCall::Heartbeat(ref d) if *d == hb));
    cases.push(Case::new(
        "Heartbeat decode, MessagePack -> DTO",
        move || {
            black_box(decode_msgpack_call(black_box(&hb_mp)));
        },
        move || {
            black_box(rmp_serde::from_slice::<HeartbeatDto>(black_box(&hb_mp_dto)).expect("valid"));
        },
    ));

    let hb2 = heartbeat();
    let call = NodeCall::Heartbeat(hb2.clone());
    cases.push(Case::new(
        "Heartbeat encode, DTO -> JSON record",
        move || {
            black_box(record(HubProtocol::Json, black_box(&call)));
        },
        move || {
            black_box(serde_json::to_vec(black_box(&hb2)).expect("encodes"));
        },
    ));

    // ExecuteCommand, as a node decodes it.
    let exec = execute_command();
    let exec_message = GatewayCall::ExecuteCommand(exec.clone())
        .to_message(HubProtocol::Json, None)
        .expect("encodes");
    let mut exec_record = Vec::new();
    json::encode_record(&exec_message, &mut exec_record).expect("encodes");
    let exec_dto = serde_json::to_vec(&exec).expect("encodes");
    cases.push(Case::new(
        "ExecuteCommand decode, JSON record -> DTO",
        move || {
            let body = &exec_record[..exec_record.len() - 1];
            let typed = json::decode_invocation::<GatewayCall>(black_box(body)).expect("fast path");
            black_box(typed.call);
        },
        move || {
            black_box(
                serde_json::from_slice::<ExecuteCommandDto>(black_box(&exec_dto)).expect("valid"),
            );
        },
    ));

    // A 64 KiB CommandResult, as a gateway decodes it.
    let result = command_result(64 * 1024);
    let result_record = record(HubProtocol::Json, &NodeCall::CommandResult(result.clone()));
    let result_dto = serde_json::to_vec(&result).expect("encodes");
    cases.push(Case::new(
        "CommandResult 64 KiB decode, JSON record -> DTO",
        move || {
            black_box(decode_json_call(black_box(&result_record)));
        },
        move || {
            black_box(
                serde_json::from_slice::<CommandResultDto>(black_box(&result_dto)).expect("valid"),
            );
        },
    ));

    // Chunking a 3 MiB result against serializing it once.
    let big = command_result(3 * 1024 * 1024);
    let big2 = big.clone();
    cases.push(Case::new(
        "CommandResult 3 MiB split into 1 MiB parts",
        move || {
            black_box(chunk::split(black_box(&big), chunk::DEFAULT_FIELD_CAP).expect("splits"));
        },
        move || {
            black_box(serde_json::to_vec(black_box(&big2)).expect("encodes"));
        },
    ));

    // An LLM task frame, as a node decodes it, against parsing the same text into a Value (what
    // the original Node.js server and its nodes do with JSON.parse).
    let task = Task {
        system: Some("You are a helpful assistant.".to_string()),
        max_new_tokens: Some(256),
        temperature: Some(0.7),
        created_at: Some(1_700_000_000),
        ..Task::new(
            123,
            vec![
                ChatMessage::new("user", "Explain the SignalR handshake in one paragraph."),
                ChatMessage::new("assistant", "It is a JSON record that names the protocol."),
                ChatMessage::new("user", "And the record separator?"),
            ],
        )
    };
    let task_text = ServerFrame::Task(task).encode();
    let task_text2 = task_text.clone();
    cases.push(Case::new(
        "LLM task decode, text frame -> Task",
        move || {
            black_box(llm::decode_server_text(black_box(&task_text)).expect("valid"));
        },
        move || {
            black_box(
                serde_json::from_str::<serde_json::Value>(black_box(&task_text2)).expect("valid"),
            );
        },
    ));

    // The record decoder: 100 Pings in one message, against a bare scan for 0x1E.
    let pings: Vec<u8> = b"{\"type\":6}\x1e".repeat(100);
    let pings2 = pings.clone();
    cases.push(Case::new(
        "100 Ping records in one message, framed + decoded",
        move || {
            let mut decoder = RecordDecoder::new(1 << 20);
            decoder.set_protocol(HubProtocol::Json);
            decoder.push(black_box(&pings));
            while let Some(message) = decoder.next_message().expect("valid") {
                black_box(message);
            }
        },
        move || {
            for record in black_box(&pings2).split(|&b| b == 0x1e) {
                if !record.is_empty() {
                    black_box(serde_json::from_slice::<serde_json::Value>(record).expect("valid"));
                }
            }
        },
    ));

    cases
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let check = args.iter().any(|a| a == "--check");
    let (rounds, slice) = if quick {
        (3, Duration::from_millis(5))
    } else {
        (31, Duration::from_millis(40))
    };

    let mut cases = cases();
    let iterations: Vec<(u64, u64)> = cases
        .iter_mut()
        .map(|c| {
            (
                calibrate(&mut c.nodelink, slice),
                calibrate(&mut c.baseline, slice),
            )
        })
        .collect();
    for round in 0..rounds {
        for (case, &(n_node, n_base)) in cases.iter_mut().zip(&iterations) {
            // Alternate which side goes first so that neither always runs on a warmer cache.
            if round % 2 == 0 {
                case.nodelink_ns
                    .push(time_batch(&mut case.nodelink, n_node));
                case.baseline_ns
                    .push(time_batch(&mut case.baseline, n_base));
            } else {
                case.baseline_ns
                    .push(time_batch(&mut case.baseline, n_base));
                case.nodelink_ns
                    .push(time_batch(&mut case.nodelink, n_node));
            }
        }
    }

    println!("{rounds} interleaved rounds; medians per iteration\n");
    println!(
        "| {:<50} | {:>12} | {:>12} | {:>6} |",
        "case (nodelink path vs baseline)", "nodelink", "baseline", "ratio"
    );
    println!("|{:-<52}|{:->14}|{:->14}|{:->8}|", "", "", "", "");
    let mut heartbeat_ratio = None;
    for case in &cases {
        let node = median(&case.nodelink_ns);
        let base = median(&case.baseline_ns);
        let ratio = node / base;
        if case.name.starts_with("Heartbeat decode, JSON") {
            heartbeat_ratio = Some(ratio);
        }
        println!(
            "| {:<50} | {:>12} | {:>12} | {:>5.2}x |",
            case.name,
            format_ns(node),
            format_ns(base),
            ratio
        );
    }
    println!("\nBaselines: serde_json/rmp_serde on the bare DTO; for the split, one serde_json::to_vec of the whole result;");
    println!("for the Ping records, a split on 0x1E plus serde_json::Value per record; for the LLM task, serde_json::Value.");
    let ratio = heartbeat_ratio.expect("the Heartbeat case runs");
    let verdict = if ratio <= HEARTBEAT_TARGET {
        "met"
    } else {
        "MISSED"
    };
    println!("Heartbeat JSON record decode: {ratio:.2}x the bare DTO (target <= {HEARTBEAT_TARGET}x): {verdict}");
    if check && ratio > HEARTBEAT_TARGET {
        std::process::exit(1);
    }
}

fn format_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} us", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}
