//! The gateway's dispatcher (core/src/gateway/dispatch): the registry, queues, capacity,
//! deadlines, busy retries, approval, cancellation, results and their reassembly, polling
//! leases and restarts, at exact instants of a virtual clock.
mod support;

#[path = "gateway_dispatch/commands.rs"]
mod commands;
#[path = "gateway_dispatch/polling_restore.rs"]
mod polling_restore;
#[path = "gateway_dispatch/random.rs"]
mod random;
#[path = "gateway_dispatch/registry.rs"]
mod registry;
#[path = "gateway_dispatch/results.rs"]
mod results;

use std::time::{Duration, Instant};

use nodelink_core::gateway::dispatch::{
    CancelOutcome, CommandStatus, DispatchConfig, DispatchError, DispatchEvent, DispatchOutput,
    DispatchRecord, DispatchRequest, Dispatcher, PeerInput, Refusal, ResultAck, Transport,
};
use nodelink_core::gateway::ConnId;
use nodelink_core::rng::Rng;
use nodelink_core::scope::ScopeSet;
use nodelink_core::wire::contract::GatewayCall;
use nodelink_core::wire::dto::{
    Capabilities, CommandError, CommandResultDto, ErrorCode, ExecuteCommandDto, HeartbeatDto,
};
use serde_json::json;
use support::SimClock;

/// The wall clock at the simulation's origin: 2023-11-14T22:13:20Z.
const UNIX_ORIGIN: Duration = Duration::from_secs(1_700_000_000);

/// A dispatcher, its clock and its RNG.
struct Gw {
    clock: SimClock,
    d: Dispatcher,
    rng: Rng,
}

impl Gw {
    fn new() -> Self {
        Self::with(DispatchConfig::default())
    }

    fn with(config: DispatchConfig) -> Self {
        let clock = SimClock::new();
        Self {
            clock,
            d: Dispatcher::new(config, clock.at(0.0), UNIX_ORIGIN),
            rng: Rng::from_seed([7; 32]),
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.clock.at(secs)
    }

    /// Every output queued so far.
    fn drain(&mut self) -> Vec<DispatchOutput> {
        std::iter::from_fn(|| self.d.poll_output()).collect()
    }

    /// Runs every timer up to `secs`, in order, checking design rule 8 on the way.
    fn run_until(&mut self, secs: f64) {
        let end = self.at(secs);
        while let Some(at) = self.d.poll_timeout() {
            if at > end {
                break;
            }
            self.d.handle_timeout(at);
            assert!(
                self.d.poll_timeout().is_none_or(|next| next > at),
                "rule 8: poll_timeout after handle_timeout({}) is not later",
                self.clock.secs(at)
            );
        }
        self.d.handle_timeout(end);
    }

    /// `node` connects over the hub as connection `conn`.
    fn connect(&mut self, secs: f64, node: &str, conn: u64) {
        self.d.node_connected(self.at(secs), node, hub(conn), None);
    }

    fn heartbeat(&mut self, secs: f64, node: &str) {
        self.d
            .heartbeat(self.at(secs), node, &heartbeat(node, None));
    }

    fn dispatch(&mut self, secs: f64, request: DispatchRequest) -> String {
        self.d
            .dispatch(self.at(secs), &mut self.rng, request)
            .expect("the request is valid")
    }

    fn status(&self, id: &str) -> CommandStatus {
        self.d.status(id).expect("the command is known")
    }
}

fn hub(conn: u64) -> Transport {
    Transport::Hub {
        conn: ConnId(conn),
        protocol_version: Some("2026-04-01".into()),
    }
}

fn heartbeat(node: &str, slots: Option<u32>) -> HeartbeatDto {
    HeartbeatDto {
        node_id: node.to_owned(),
        status: "online".to_owned(),
        uptime: 1,
        platform: "linux".to_owned(),
        version: "0.1.0".to_owned(),
        cpu_percent: 1.0,
        memory_mb: 10,
        capabilities: slots.map(|slots| Capabilities {
            commands: vec![],
            slots,
            gpus: vec![],
        }),
    }
}

fn request(node: &str) -> DispatchRequest {
    DispatchRequest::new(node, "system.info")
}

fn ok(id: &str) -> CommandResultDto {
    CommandResultDto {
        command_id: id.to_owned(),
        ok: true,
        result: Some(json!({"hostname": "build-01"})),
        error: None,
        duration_ms: Some(5),
        part_index: None,
        is_last: None,
        protocol_version: None,
    }
}

fn failed(id: &str, code: ErrorCode, retry_after_ms: Option<u64>) -> CommandResultDto {
    CommandResultDto {
        command_id: id.to_owned(),
        ok: false,
        result: None,
        error: Some(CommandError {
            code,
            message: "m".to_owned(),
            details: None,
            retry_after_ms,
        }),
        duration_ms: Some(0),
        part_index: None,
        is_last: None,
        protocol_version: None,
    }
}

fn part(id: &str, index: u32, is_last: bool, text: &str) -> CommandResultDto {
    CommandResultDto {
        command_id: id.to_owned(),
        ok: true,
        result: Some(json!({ "text": text })),
        error: None,
        duration_ms: (index == 0).then_some(7),
        part_index: Some(index),
        is_last: Some(is_last),
        protocol_version: None,
    }
}

/// The `ExecuteCommand`s among `outputs`, as (node, conn, dto).
fn executes(outputs: &[DispatchOutput]) -> Vec<(String, u64, ExecuteCommandDto)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            DispatchOutput::Execute {
                node,
                conn,
                execute,
            } => Some((node.to_string(), conn.0, execute.to_dto())),
            _ => None,
        })
        .collect()
}

/// The ids of the `ExecuteCommand`s among `outputs`.
fn sent_ids(outputs: &[DispatchOutput]) -> Vec<String> {
    executes(outputs)
        .into_iter()
        .map(|(_, _, dto)| dto.command_id)
        .collect()
}

/// The `Finished` outputs, as (id, ok, error code).
fn finished(outputs: &[DispatchOutput]) -> Vec<(String, bool, Option<ErrorCode>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            DispatchOutput::Finished {
                command_id,
                outcome,
                ..
            } => Some((
                command_id.to_string(),
                outcome.result.ok,
                outcome.result.error.as_ref().map(|e| e.code.clone()),
            )),
            _ => None,
        })
        .collect()
}

/// The persisted records among `outputs`.
fn records(outputs: &[DispatchOutput]) -> Vec<DispatchRecord> {
    outputs
        .iter()
        .filter_map(|o| match o {
            DispatchOutput::Persist(record) => Some(record.clone()),
            _ => None,
        })
        .collect()
}

fn scopes(entries: &[&str]) -> ScopeSet {
    ScopeSet::parse(entries.iter().copied()).expect("valid scopes")
}
