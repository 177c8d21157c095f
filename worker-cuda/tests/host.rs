//! system.info, system.stats and the heartbeat sampler: documented fields with sane values.

mod support;

use std::time::{Duration, Instant};

use nodelink_core::node::executor::Executor;
use nodelink_core::wire::dto::ErrorCode;
use nodelink_worker_cuda::host::{self, StatsSampler, SystemInfo, SystemStats};
use nodelink_worker_cuda::{builtin_executors, BuiltinOptions};
use serde_json::json;
use support::{request, FakeContext};

#[test]
fn system_info_has_the_documented_fields() {
    let context = FakeContext::new();
    let info = SystemInfo
        .run(&request("system.info", json!({})), &*context)
        .unwrap();
    for key in [
        "hostname",
        "os",
        "osFamily",
        "osVersion",
        "kernel",
        "arch",
        "cpus",
        "cpuModel",
        "memoryTotalMb",
        "uptimeSeconds",
        "nodelinkVersion",
        "pid",
    ] {
        assert!(info.get(key).is_some(), "missing {key} in {info}");
    }
    assert_eq!(info["os"], std::env::consts::OS);
    assert_eq!(info["arch"], std::env::consts::ARCH);
    assert_eq!(info["nodelinkVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["pid"], std::process::id());
    assert!(info["cpus"].as_u64().unwrap() >= 1);
    if cfg!(target_os = "linux") {
        assert!(!info["hostname"].as_str().unwrap().is_empty());
        assert!(info["memoryTotalMb"].as_u64().unwrap() > 0);
        assert!(info["uptimeSeconds"].as_u64().is_some());
        assert!(info["kernel"].as_str().is_some());
    }
}

#[test]
fn system_stats_measures_over_its_window() {
    let context = FakeContext::new();
    let started = Instant::now();
    let stats = SystemStats
        .run(&request("system.stats", json!({"sampleMs": 60})), &*context)
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert!(stats["sampleMs"].as_u64().unwrap() >= 60);
    assert!(stats["process"]["pid"].as_u64().is_some());
    if cfg!(target_os = "linux") {
        let cpu = stats["cpuPercent"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&cpu), "{cpu}");
        let used = stats["memoryUsedMb"].as_u64().unwrap();
        let total = stats["memoryTotalMb"].as_u64().unwrap();
        assert!(used > 0 && used <= total, "{used} of {total}");
        assert!(stats["memoryAvailableMb"].as_u64().unwrap() <= total);
        assert_eq!(stats["loadAverage"].as_array().unwrap().len(), 3);
        assert!(stats["process"]["rssMb"].as_u64().unwrap() > 0);
        let process = stats["process"]["cpuPercent"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&process));
    }
}

#[test]
fn system_stats_refuses_a_bad_window_and_stops_when_cancelled() {
    let spec = SystemStats.spec();
    let validate = spec.validate.as_ref().unwrap();
    assert!(validate(&json!({})).is_ok());
    assert!(validate(&json!({"sampleMs": 5001}))
        .unwrap_err()
        .contains("5000"));
    assert!(validate(&json!({"sampleMs": "soon"}))
        .unwrap_err()
        .contains("sampleMs"));
    let context = FakeContext::new();
    let refused = SystemStats
        .run(&request("system.stats", json!({"sampleMs": -1})), &*context)
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidParams);

    context.cancel_after(Duration::from_millis(50));
    let started = Instant::now();
    let stopped = SystemStats
        .run(
            &request("system.stats", json!({"sampleMs": 5000})),
            &*context,
        )
        .unwrap_err();
    assert_eq!(stopped.code, ErrorCode::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn sampler_reports_this_process_cpu_and_rss() {
    let mut sampler = StatsSampler::new();
    let wall = Instant::now();
    let first = sampler.sample();
    assert_eq!(first.cpu_percent, 0.0, "no earlier sample");
    // Burn 100 ms of CPU time (not wall time: the CI machine may be shared).
    let burn = Duration::from_millis(100);
    let cpu_start = host::facts::process_cpu_time();
    let mut x = 0u64;
    if let Some(cpu_start) = cpu_start {
        while host::facts::process_cpu_time().unwrap() - cpu_start < burn {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    }
    let second = sampler.sample();
    let wall = wall.elapsed();
    if cpu_start.is_some() {
        // At least `burn` of CPU within `wall`, over all logical CPUs (other threads only add).
        let cpus = std::thread::available_parallelism().unwrap().get() as f64;
        let floor = 0.9 * 100.0 * burn.as_secs_f64() / (wall.as_secs_f64() * cpus);
        assert!(
            second.cpu_percent >= floor && second.cpu_percent <= 100.0,
            "{} (floor {floor})",
            second.cpu_percent
        );
    }
    if cfg!(target_os = "linux") {
        assert!(second.memory_mb > 0);
    }
    // The global sampler answers too, with the same units.
    let global = host::sample_stats();
    assert!((0.0..=100.0).contains(&global.cpu_percent));
}

#[test]
fn builtins_register_system_execute_only_when_allowed() {
    let plain = builtin_executors(&BuiltinOptions::default());
    assert!(plain.get("system.info").is_some());
    assert!(plain.get("system.stats").is_some());
    assert!(plain.get("system.execute").is_none());
    let context = FakeContext::new();
    let refused = plain
        .run(
            &request("system.execute", json!({"program": "/bin/echo"})),
            &*context,
        )
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::PlatformUnsupported);

    let allowed = builtin_executors(&BuiltinOptions {
        allow_system_execute: true,
        ..BuiltinOptions::default()
    });
    let spec = allowed.get("system.execute").unwrap().spec();
    assert_eq!(spec.required_scope.as_deref(), Some("system.execute"));
}
