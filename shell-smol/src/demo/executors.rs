//! The demo's commands: small executors that show one behaviour each, with counters the demo
//! reads to check what really ran. They are also what `nodelink node run --demo-commands`
//! offers (the end-to-end tests drive the binary with them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome, Progress};
use nodelink_core::node::executor::{command_error, param, Executor, ExecutorSet, RunContext};
use nodelink_core::wire::dto::{CommandError, ErrorCode};
use serde_json::{json, Value};

/// Bytes of `demo.blob`'s result: over the 1 MiB field cap, so it travels in parts.
pub const BLOB_BYTES: usize = 3 * 1024 * 1024;

/// What the demo's executors did, for the demo to check.
#[derive(Debug, Default)]
pub struct DemoCounters {
    pub gpu_runs: AtomicUsize,
    pub sleeps_started: AtomicUsize,
    pub sleeps_cancelled: AtomicUsize,
    pub echo_runs: AtomicUsize,
}

/// Registers every demo executor, sharing `counters`.
pub fn demo_executors(counters: &Arc<DemoCounters>) -> ExecutorSet {
    let mut set = ExecutorSet::new();
    set.register(SystemInfo);
    set.register(Echo(counters.clone()));
    set.register(Blob);
    set.register(Sleep(counters.clone()));
    set.register(GpuBusyOnce(counters.clone()));
    set.register(Secret);
    set
}

/// Adds the demo executors to `set` (`nodelink node run --demo-commands`).
pub fn register_demo_executors(set: &mut ExecutorSet) {
    let counters = Arc::new(DemoCounters::default());
    let demo = demo_executors(&counters);
    for name in demo.names().map(str::to_owned).collect::<Vec<_>>() {
        if let Some(executor) = demo.get(&name) {
            // A real built-in of the same name (system.info) wins.
            if set.get(&name).is_none() {
                set.register_shared(executor.clone());
            }
        }
    }
}

/// `system.info` until the lead wires worker-cuda's built-in: what std knows about the host.
struct SystemInfo;
impl Executor for SystemInfo {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("system.info").scope("system.info")
    }
    fn run(&self, _: &ExecuteRequest, _: &dyn RunContext) -> Outcome {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Ok(json!({
            "hostname": hostname,
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "nodelinkVersion": env!("CARGO_PKG_VERSION"),
            "demo": true,
        }))
    }
}

/// `demo.echo`: answers its params.
struct Echo(Arc<DemoCounters>);
impl Executor for Echo {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("demo.echo").scope("demo.echo")
    }
    fn run(&self, request: &ExecuteRequest, _: &dyn RunContext) -> Outcome {
        self.0.echo_runs.fetch_add(1, Ordering::SeqCst);
        Ok(request.params.clone())
    }
}

/// `demo.blob {bytes?}`: a result of `bytes` (default 3 MiB) of text, sent in parts.
struct Blob;
impl Executor for Blob {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("demo.blob").scope("demo.blob")
    }
    fn run(&self, request: &ExecuteRequest, _: &dyn RunContext) -> Outcome {
        let bytes = param::<usize>(&request.params, "bytes")?.unwrap_or(BLOB_BYTES);
        if bytes > 64 * 1024 * 1024 {
            return Err(command_error(
                ErrorCode::InvalidParams,
                "bytes: at most 64 MiB",
            ));
        }
        Ok(json!({ "bytes": bytes, "data": blob(bytes) }))
    }
}

/// The blob's text: a repeating alphabet, so a receiver can check every byte.
pub fn blob(bytes: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..bytes)
        .map(|i| ALPHABET[i % ALPHABET.len()] as char)
        .collect()
}

/// `demo.sleep {ms}`: sleeps, reporting progress, until done or cancelled.
struct Sleep(Arc<DemoCounters>);
impl Executor for Sleep {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("demo.sleep")
            .scope("demo.sleep")
            .validated_by(|params| match params.get("ms") {
                Some(Value::Number(n)) if n.as_u64().is_some() => Ok(()),
                None => Ok(()),
                _ => Err("`ms` must be a whole number of milliseconds".into()),
            })
    }
    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        self.0.sleeps_started.fetch_add(1, Ordering::SeqCst);
        let ms = param::<u64>(&request.params, "ms")?.unwrap_or(1000);
        let total = Duration::from_millis(ms);
        let start = Instant::now();
        while start.elapsed() < total {
            if context.is_cancelled() {
                self.0.sleeps_cancelled.fetch_add(1, Ordering::SeqCst);
                return Err(command_error(ErrorCode::Cancelled, "stopped"));
            }
            let done = start.elapsed().as_secs_f64() / total.as_secs_f64();
            context.progress(Progress::fraction(done.min(1.0)));
            std::thread::sleep(Duration::from_millis(10).min(total));
        }
        Ok(json!({ "sleptMs": ms }))
    }
}

/// `demo.gpu`: answers `busy` (retry in `retryMs`, default 300) on its first run, then works:
/// the gateway must retry it.
struct GpuBusyOnce(Arc<DemoCounters>);
impl Executor for GpuBusyOnce {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("demo.gpu").scope("demo.gpu")
    }
    fn run(&self, request: &ExecuteRequest, _: &dyn RunContext) -> Outcome {
        let run = self.0.gpu_runs.fetch_add(1, Ordering::SeqCst);
        if run == 0 {
            let retry = param::<u64>(&request.params, "retryMs")?.unwrap_or(300);
            return Err(CommandError {
                code: ErrorCode::Busy,
                message: "the GPU is busy".into(),
                details: None,
                retry_after_ms: Some(retry),
            });
        }
        Ok(json!({ "run": run + 1, "kernel": "done" }))
    }
}

/// `demo.secret`: needs the scope `demo.secret`, which the demo never grants.
struct Secret;
impl Executor for Secret {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("demo.secret").scope("demo.secret")
    }
    fn run(&self, _: &ExecuteRequest, _: &dyn RunContext) -> Outcome {
        Ok(json!({ "secret": 42 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    struct Flag(AtomicBool);
    impl RunContext for Flag {
        fn is_cancelled(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
        fn progress(&self, _: Progress) {}
        fn stream_text(&self, _: &str) {}
    }

    fn request(command: &str, params: Value) -> ExecuteRequest {
        ExecuteRequest {
            command_id: "c1".into(),
            command: command.into(),
            params,
            deadline: Instant::now(),
            originated_by: None,
        }
    }

    #[test]
    fn gpu_is_busy_once_then_works_and_sleep_stops_when_cancelled() {
        let counters = Arc::new(DemoCounters::default());
        let set = demo_executors(&counters);
        let context = Flag(AtomicBool::new(false));
        let first = set
            .run(&request("demo.gpu", json!({})), &context)
            .unwrap_err();
        assert_eq!(first.code, ErrorCode::Busy);
        assert_eq!(first.retry_after_ms, Some(300));
        assert!(set.run(&request("demo.gpu", json!({})), &context).is_ok());
        context.0.store(true, Ordering::SeqCst);
        let stopped = set
            .run(&request("demo.sleep", json!({"ms": 10_000})), &context)
            .unwrap_err();
        assert_eq!(stopped.code, ErrorCode::Cancelled);
        assert_eq!(counters.sleeps_cancelled.load(Ordering::SeqCst), 1);
        let blob = set
            .run(&request("demo.blob", json!({"bytes": 100})), &context)
            .unwrap();
        assert_eq!(blob["data"].as_str().unwrap().len(), 100);
    }
}
