//! Host built-ins: `system.info`, `system.stats`, `system.execute`, and the heartbeat's sampler.
//!
//! Numbers come from `/proc` and getrusage (see [`facts`]); what a platform cannot tell is `null`
//! in the result rather than an error, so the same command works on every node.

mod execute;
pub mod facts;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome};
use nodelink_core::node::executor::{param, Executor, RunContext};
use nodelink_core::node::HostStats;
use serde_json::{json, Value};

pub use execute::{SystemExecute, DEFAULT_OUTPUT_CAP, MAX_OUTPUT_CAP, SYSTEM_EXECUTE_SCOPE};

/// The version every built-in reports (`nodelinkVersion`): the workspace's version.
pub const NODELINK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Measures this process's CPU use between two calls.
///
/// `cpu_percent` is the node process's CPU time over the wall time between calls, as a share of
/// the whole machine (all logical CPUs = 100), as the heartbeat's `cpuPercent` asks; `memory_mb`
/// is the process's resident set (`VmRSS`), as the heartbeat's `memoryMb` ("the node process's
/// memory use") asks. The first sample has no earlier one and reports 0.0.
#[derive(Debug, Default)]
pub struct StatsSampler {
    last: Option<(Instant, Duration)>,
}

impl StatsSampler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn sample(&mut self) -> HostStats {
        let now = Instant::now();
        let cpu = facts::process_cpu_time();
        let cpu_percent = match (self.last, cpu) {
            (Some((then, used_then)), Some(used_now)) => {
                process_percent(now - then, used_now.saturating_sub(used_then))
            }
            _ => 0.0,
        };
        if let Some(cpu) = cpu {
            self.last = Some((now, cpu));
        }
        HostStats {
            cpu_percent,
            memory_mb: facts::process_rss_mb().unwrap_or(0),
        }
    }
}

/// `used` CPU time over `wall` time, as a share of all logical CPUs, 0 to 100.
fn process_percent(wall: Duration, used: Duration) -> f64 {
    let capacity = wall.as_secs_f64() * facts::logical_cpus() as f64;
    if capacity <= 0.0 {
        return 0.0;
    }
    (used.as_secs_f64() * 100.0 / capacity).clamp(0.0, 100.0)
}

static SAMPLER: Mutex<StatsSampler> = Mutex::new(StatsSampler { last: None });

/// The node process's stats for a heartbeat: CPU % since the previous call of this function
/// (0.0 on the first), and its resident memory in MB. See [`StatsSampler`].
pub fn sample_stats() -> HostStats {
    match SAMPLER.lock() {
        Ok(mut sampler) => sampler.sample(),
        Err(poisoned) => poisoned.into_inner().sample(),
    }
}

/// `system.info`: what this host is. No params, no scope.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemInfo;

impl Executor for SystemInfo {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("system.info")
    }

    fn run(&self, _request: &ExecuteRequest, _context: &dyn RunContext) -> Outcome {
        let memory = facts::memory();
        Ok(json!({
            "hostname": facts::hostname(),
            "os": std::env::consts::OS,
            "osFamily": std::env::consts::FAMILY,
            "osVersion": facts::os_pretty_name(),
            "kernel": facts::kernel_release(),
            "arch": std::env::consts::ARCH,
            "cpus": facts::logical_cpus(),
            "cpuModel": facts::cpu_model(),
            "memoryTotalMb": memory.map(|m| m.total_mb),
            "uptimeSeconds": facts::uptime().map(|u| u.as_secs()),
            "nodelinkVersion": NODELINK_VERSION,
            "pid": std::process::id(),
        }))
    }
}

/// The default and largest CPU sampling window of `system.stats`.
pub const DEFAULT_SAMPLE_MS: u64 = 250;
pub const MAX_SAMPLE_MS: u64 = 5_000;

/// `system.stats`: how busy this host is now. Params: `sampleMs` (0 to 5000, default 250), the
/// window over which CPU % is measured. No scope.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemStats;

fn sample_ms(params: &Value) -> Result<u64, String> {
    let ms = param::<u64>(params, "sampleMs")
        .map_err(|e| e.message)?
        .unwrap_or(DEFAULT_SAMPLE_MS);
    if ms > MAX_SAMPLE_MS {
        return Err(format!(
            "`sampleMs`: {ms} is over the maximum {MAX_SAMPLE_MS}"
        ));
    }
    Ok(ms)
}

impl Executor for SystemStats {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("system.stats").validated_by(|params| sample_ms(params).map(|_| ()))
    }

    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        let window = Duration::from_millis(
            sample_ms(&request.params).map_err(nodelink_core::node::executor::invalid_params)?,
        );
        let start = Instant::now();
        let host_before = facts::cpu_times();
        let process_before = facts::process_cpu_time();
        while start.elapsed() < window {
            if context.is_cancelled() {
                return Err(crate::cancelled());
            }
            std::thread::sleep((window - start.elapsed()).min(Duration::from_millis(20)));
        }
        let wall = start.elapsed();
        let cpu_percent = match (host_before, facts::cpu_times()) {
            (Some(before), Some(after)) => after.percent_since(&before),
            _ => None,
        };
        let process_cpu = match (process_before, facts::process_cpu_time()) {
            (Some(before), Some(after)) if !wall.is_zero() => {
                Some(process_percent(wall, after.saturating_sub(before)))
            }
            _ => None,
        };
        let memory = facts::memory();
        Ok(json!({
            "cpuPercent": cpu_percent,
            "sampleMs": u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
            "cpus": facts::logical_cpus(),
            "memoryUsedMb": memory.map(|m| m.used_mb()),
            "memoryAvailableMb": memory.map(|m| m.available_mb),
            "memoryTotalMb": memory.map(|m| m.total_mb),
            "swapUsedMb": memory.map(|m| m.swap_total_mb.saturating_sub(m.swap_free_mb)),
            "swapTotalMb": memory.map(|m| m.swap_total_mb),
            "loadAverage": facts::load_average(),
            "uptimeSeconds": facts::uptime().map(|u| u.as_secs()),
            "process": {
                "pid": std::process::id(),
                "rssMb": facts::process_rss_mb(),
                "cpuPercent": process_cpu,
            },
        }))
    }
}
