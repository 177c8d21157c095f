//! The GPU paths. Without a CUDA device these check the clean refusals and print why the device
//! tests were skipped; on a GPU machine they compare the device with the CPU reference.

mod support;

use std::sync::Arc;
use std::time::Duration;

use nodelink_core::node::executor::Executor;
use nodelink_core::wire::dto::ErrorCode;
use nodelink_worker_cuda::gpu::{probe, Gpu, GpuInfoCommand, KernelRun};
use nodelink_worker_cuda::tensor::data::{decode_f32, generate};
use nodelink_worker_cuda::tensor::{cpu, TensorMatmul, TensorReduce, TensorSaxpy};
use nodelink_worker_cuda::{builtin_executors, gpu_inventory, BuiltinOptions};
use serde_json::{json, Value};
use support::{request, FakeContext};

fn run(
    executor: &dyn Executor,
    params: Value,
) -> Result<Value, nodelink_core::wire::dto::CommandError> {
    let context = FakeContext::new();
    executor.run(&request(&executor.spec().name, params), &*context)
}

/// The machine's GPUs, or `None` after printing why the device checks are skipped.
fn device() -> Option<Arc<Gpu>> {
    let gpu = Gpu::detect(Duration::from_millis(500));
    if gpu.available() {
        Some(gpu)
    } else {
        println!("SKIPPED (no CUDA device): {}", gpu.probe().reason());
        None
    }
}

const SCALE: &str = r#"
extern "C" __global__ void scale(float* x, float by, unsigned long long n) {
    unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    if (i < n) x[i] *= by;
}"#;

#[test]
fn the_probe_never_panics_and_agrees_with_the_inventory() {
    let found = probe();
    let inventory = gpu_inventory();
    assert_eq!(inventory.len(), found.devices.len());
    if found.devices.is_empty() {
        assert!(found.unavailable.is_some(), "no device and no reason");
        println!("no GPU here: {}", found.reason());
    }
    for (gpu, device) in inventory.iter().zip(&found.devices) {
        assert_eq!(gpu.name, device.name);
        assert!(gpu.memory_total_mb > 0);
    }
}

#[test]
fn gpu_info_reports_devices_or_why_there_are_none() {
    let info = run(
        &GpuInfoCommand::new(Gpu::detect(Duration::from_secs(1))),
        json!({}),
    )
    .unwrap();
    let devices = info["devices"].as_array().unwrap();
    assert_eq!(info["lanes"], devices.len());
    if info["available"] == true {
        for d in devices {
            assert!(d["name"].as_str().is_some_and(|n| !n.is_empty()));
            assert!(d["memoryTotalMb"].as_u64().unwrap() > 0);
            assert!(d["memoryFreeMb"].as_u64().unwrap() <= d["memoryTotalMb"].as_u64().unwrap());
            assert!(d["computeCapability"].as_str().is_some());
        }
        assert!(info["driverVersion"].as_str().is_some());
    } else {
        assert!(devices.is_empty());
        assert!(info["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
    let none = run(
        &GpuInfoCommand::new(Gpu::none("disabled in a test")),
        json!({}),
    )
    .unwrap();
    assert_eq!(none["available"], false);
    assert_eq!(none["reason"], "disabled in a test");
}

#[test]
fn kernel_run_needs_its_scope_and_a_gpu() {
    let plain = builtin_executors(&BuiltinOptions::default());
    assert!(plain.get("kernel.run").is_none());
    let allowed = builtin_executors(&BuiltinOptions {
        allow_kernel_run: true,
        ..BuiltinOptions::default()
    });
    let spec = allowed.get("kernel.run").unwrap().spec();
    assert_eq!(spec.required_scope.as_deref(), Some("gpu.kernel"));
    let validate = spec.validate.as_ref().unwrap();
    let good = json!({"source": SCALE, "entry": "scale", "grid": 1, "block": [4],
        "args": [{"buffer": {"data": [1, 2, 3, 4], "output": true}}, {"f32": 2.0}, {"u64": 4}]});
    assert!(validate(&good).is_ok());
    for bad in [
        json!({"source": "", "entry": "scale", "grid": 1, "block": 1}),
        json!({"source": SCALE, "entry": "not an identifier", "grid": 1, "block": 1}),
        json!({"source": SCALE, "entry": "scale", "grid": 0, "block": 1}),
        json!({"source": SCALE, "entry": "scale", "grid": 1, "block": [64, 64]}),
        json!({"source": SCALE, "entry": "scale", "grid": 1, "block": 1, "args": [{"f16": 1}]}),
        json!({"source": SCALE, "entry": "scale", "grid": 1, "block": 1, "args": [{"buffer": {}}]}),
        json!({"source": SCALE, "entry": "scale", "grid": 1, "block": 1, "args": [{"buffer": {"len": 0}}]}),
    ] {
        assert!(validate(&bad).is_err(), "{bad} passed");
    }
    let refused = run(&KernelRun::new(Gpu::none("no GPU in this test")), good).unwrap_err();
    assert_eq!(refused.code, ErrorCode::PlatformUnsupported);
    assert!(refused.message.contains("no GPU in this test"));
}

#[test]
fn gpu_matmul_matches_the_cpu_reference() {
    let Some(gpu) = device() else { return };
    let matmul = TensorMatmul::new(gpu);
    for (m, n, k) in [(1, 1, 1), (17, 33, 65), (256, 128, 512)] {
        let out = run(
            &matmul,
            json!({"m": m, "n": n, "k": k, "seed": 11, "device": "gpu", "output": "values"}),
        )
        .unwrap();
        assert!(
            out["device"].as_str().unwrap().starts_with("cuda:"),
            "{out}"
        );
        let c = decode_f32(out["values"].as_str().unwrap()).unwrap();
        let want = cpu::matmul_reference(&generate(11, 0, m * k), &generate(11, 1, k * n), m, n, k);
        for (g, w) in c.iter().zip(&want) {
            // TF32 is off by default for cuBLAS SGEMM; allow f32 rounding over k terms.
            assert!((f64::from(*g) - w).abs() <= 1e-4 * k as f64, "{g} vs {w}");
        }
    }
}

#[test]
fn gpu_saxpy_reduce_and_kernel_run_match_the_cpu() {
    let Some(gpu) = device() else { return };
    let n = 1_000_003usize;
    let saxpy = run(
        &TensorSaxpy::new(Arc::clone(&gpu)),
        json!({"alpha": 0.25, "n": n, "seed": 4, "device": "gpu", "output": "values"}),
    )
    .unwrap();
    let got = decode_f32(saxpy["values"].as_str().unwrap()).unwrap();
    let mut want = generate(4, 1, n);
    cpu::saxpy(0.25, &generate(4, 0, n), &mut want);
    assert_eq!(got, want, "fma on both sides gives identical results");

    let reduce = TensorReduce::new(Arc::clone(&gpu));
    let x = generate(6, 0, n);
    let sum = run(
        &reduce,
        json!({"op": "sum", "n": n, "seed": 6, "device": "gpu"}),
    )
    .unwrap();
    assert!(
        (sum["value"].as_f64().unwrap() - cpu::sum(&x)).abs() < 1e-2,
        "{sum}"
    );
    let max = run(
        &reduce,
        json!({"op": "max", "n": n, "seed": 6, "device": "gpu"}),
    )
    .unwrap();
    assert_eq!(
        max["value"].as_f64().unwrap(),
        f64::from(cpu::max(&x).unwrap())
    );

    let kernel = run(
        &KernelRun::new(gpu),
        json!({"source": SCALE, "entry": "scale", "grid": 1, "block": 4, "launches": 2,
            "output": "values",
            "args": [{"buffer": {"data": [1, 2, 3, 4], "output": true}}, {"f32": 3.0}, {"u64": 4}]}),
    )
    .unwrap();
    let out = decode_f32(kernel["outputs"][0]["values"].as_str().unwrap()).unwrap();
    assert_eq!(out, [9.0, 18.0, 27.0, 36.0]);
    assert_eq!(kernel["outputs"][0]["arg"], 0);
}

#[test]
fn gpu_lanes_answer_busy_when_all_are_taken() {
    let Some(gpu) = device() else { return };
    let held: Vec<_> = (0..gpu.lanes().len())
        .map(|_| gpu.lanes().acquire().unwrap())
        .collect();
    let e = run(
        &TensorMatmul::new(Arc::clone(&gpu)),
        json!({"m": 2, "n": 2, "k": 2, "seed": 1, "device": "gpu"}),
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Busy);
    assert_eq!(e.retry_after_ms, Some(500));
    drop(held);
}
