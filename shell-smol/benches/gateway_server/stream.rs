//! Case 3: one command whose result is large (100 MiB), which the node sends as parts (the
//! core's `chunk::split` under the 1 MiB field cap) and the gateway reassembles and stores.
//! Its throughput is compared with raw loopback TCP measured in the same run, round by round.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use nodelink::gateway::OperatorClient;
use nodelink_core::chunk::{split, DEFAULT_FIELD_CAP};
use nodelink_core::wire::dto::CommandResultDto;
use serde_json::{json, Value};

use super::child::{GatewayChild, ADMIN_TOKEN};
use super::node::{Heard, HubNode, ECHO};

pub struct StreamParams {
    /// Bytes of the result's one string.
    pub size: usize,
    pub rounds: usize,
    /// Parts sent before waiting for a Completion (the node runtime's
    /// `DEFAULT_RESULTS_IN_FLIGHT`).
    pub window: usize,
}

pub struct Round {
    pub tcp: Duration,
    /// First part sent -> the last part's Completion received (the gateway has reassembled
    /// and stored the result by then).
    pub gateway: Duration,
    /// `chunk::split` and record encoding, before sending (the node's cost, not timed above).
    pub prepare: Duration,
    /// The operator's GET of the finished command, whole result included.
    pub fetch: Duration,
    pub parts: usize,
}

pub struct StreamFigures {
    pub size: usize,
    pub rounds: Vec<Round>,
}

impl StreamFigures {
    fn mib_per_s(&self, took: Duration) -> f64 {
        self.size as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
    }

    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    }

    pub fn tcp_mib_s(&self) -> f64 {
        Self::median(self.rounds.iter().map(|r| self.mib_per_s(r.tcp)).collect())
    }

    pub fn gateway_mib_s(&self) -> f64 {
        Self::median(
            self.rounds
                .iter()
                .map(|r| self.mib_per_s(r.gateway))
                .collect(),
        )
    }

    /// The median over rounds of gateway throughput / TCP throughput of the same round.
    pub fn ratio(&self) -> f64 {
        Self::median(
            self.rounds
                .iter()
                .map(|r| r.tcp.as_secs_f64() / r.gateway.as_secs_f64())
                .collect(),
        )
    }
}

/// `size` bytes through one loopback TCP connection, written in 1 MiB writes.
fn raw_tcp(size: usize) -> Result<Duration, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut socket, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0;
        loop {
            match socket.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    });
    let mut socket = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let chunk = vec![b'x'; 1024 * 1024];
    let started = Instant::now();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        socket.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        left -= n;
    }
    socket
        .shutdown(Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let read = reader
        .join()
        .map_err(|_| "the reader panicked")?
        .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if read != size {
        return Err(format!("raw TCP: {read} bytes arrived of {size}"));
    }
    Ok(took)
}

/// The result's payload: printable ASCII, so its JSON is as long as it is.
fn payload(size: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..size)
        .map(|i| char::from(ALPHABET[(i * 7 + i / 61) % ALPHABET.len()]))
        .collect()
}

/// One round through the gateway: dispatch, parts out, every part's Completion back, then the
/// operator's GET of the result, checked.
async fn through_gateway(
    node: &mut HubNode,
    client: &OperatorClient,
    base: &str,
    data: &str,
    window: usize,
) -> Result<Round, String> {
    node.ping().await?;
    let sent = client
        .send(
            &node.node_id,
            ECHO,
            json!({}),
            Duration::from_secs(300),
            false,
        )
        .map_err(|e| format!("dispatch: {e}"))?;
    let command_id = sent
        .get("commandId")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no commandId in {sent}"))?
        .to_string();
    let command = loop {
        if let Heard::Execute(command) = node.next().await? {
            break command;
        }
    };
    if command.command_id != command_id {
        return Err(format!("got {}, expected {command_id}", command.command_id));
    }
    let started = Instant::now();
    let whole = CommandResultDto {
        command_id: command_id.clone(),
        ok: true,
        result: Some(json!({ "data": data })),
        error: None,
        duration_ms: Some(1),
        part_index: None,
        is_last: None,
        protocol_version: command.protocol_version.clone(),
    };
    let parts = split(&whole, DEFAULT_FIELD_CAP).map_err(|e| e.to_string())?;
    drop(whole);
    let mut records = Vec::with_capacity(parts.len());
    for part in &parts {
        records.push(node.encode("CommandResult", true, part)?);
    }
    let count = parts.len();
    drop(parts);
    let prepare = started.elapsed();

    // As the node runtime does: at most `window` parts await their Completion. (Sending all at
    // once gets the node closed as a slow reader: the gateway's driver answers a burst of parts
    // with more Completions than the connection's outbound queue holds.)
    let started = Instant::now();
    let mut records = records.into_iter();
    let mut waiting = HashSet::new();
    loop {
        while waiting.len() < window.max(1) {
            let Some((record, id)) = records.next() else {
                break;
            };
            node.send_record(record).await?;
            waiting.extend(id);
        }
        if waiting.is_empty() {
            break;
        }
        match node.next().await? {
            Heard::Completion(id, None) => {
                waiting.remove(&id);
            }
            Heard::Completion(_, Some(error)) => return Err(format!("a part refused: {error}")),
            _ => {}
        }
    }
    let gateway = started.elapsed();

    let started = Instant::now();
    let finished = fetch(base, &command_id)?;
    let fetch = started.elapsed();
    let returned = finished
        .pointer("/result/result/data")
        .and_then(Value::as_str)
        .map(str::len);
    if finished.get("ok").and_then(Value::as_bool) != Some(true) || returned != Some(data.len()) {
        let status = finished.get("status").cloned();
        return Err(format!(
            "the gateway's result: status {status:?}, {returned:?} bytes of {}",
            data.len()
        ));
    }
    Ok(Round {
        tcp: Duration::ZERO,
        gateway,
        prepare,
        fetch,
        parts: count,
    })
}

/// `GET /api/admin/commands/{id}` with a body limit above the result's size (the
/// OperatorClient caps answers at 80 MiB).
fn fetch(base: &str, command_id: &str) -> Result<Value, String> {
    let mut answer = ureq::get(&format!("{base}/api/admin/commands/{command_id}"))
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .map_err(|e| format!("GET the command: {e}"))?;
    let text = answer
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .map_err(|e| format!("reading the command: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("the command's JSON: {e}"))
}

pub fn run(params: &StreamParams) -> Result<StreamFigures, String> {
    let id = "stream-0".to_string();
    let gateway = GatewayChild::start("stream", std::slice::from_ref(&id))?;
    let client = OperatorClient::new(&gateway.url, ADMIN_TOKEN);
    let data = payload(params.size);
    smol::block_on(async {
        let mut node = HubNode::connect(gateway.addr, &id).await?;
        let mut rounds = Vec::new();
        for _ in 0..params.rounds {
            let tcp = raw_tcp(params.size)?;
            let round =
                through_gateway(&mut node, &client, &gateway.url, &data, params.window).await?;
            rounds.push(Round { tcp, ..round });
        }
        Ok(StreamFigures {
            size: params.size,
            rounds,
        })
    })
}
