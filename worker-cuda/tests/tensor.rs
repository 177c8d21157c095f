//! The tensor commands' CPU path against straightforward references, and their params checks.

mod support;

use std::sync::Arc;
use std::time::Duration;

use nodelink_core::node::executor::Executor;
use nodelink_core::wire::dto::{CommandError, ErrorCode};
use nodelink_worker_cuda::gpu::Gpu;
use nodelink_worker_cuda::tensor::data::{decode_f32, encode_f32, generate};
use nodelink_worker_cuda::tensor::{cpu, TensorMatmul, TensorReduce, TensorSaxpy};
use serde_json::{json, Value};
use support::{request, FakeContext};

fn cpu_only() -> Arc<Gpu> {
    Gpu::none("test: CPU path")
}

fn run(executor: &dyn Executor, params: Value) -> Result<Value, CommandError> {
    let context = FakeContext::new();
    let spec = executor.spec();
    executor.run(&request(&spec.name, params), &*context)
}

fn values(result: &Value) -> Vec<f32> {
    decode_f32(result["values"].as_str().expect("values")).unwrap()
}

fn assert_close(got: &[f32], want: &[f64], k: usize) {
    assert_eq!(got.len(), want.len());
    // f32 accumulation over k terms of magnitude <= 1: error grows about like k * eps.
    let tolerance = 1e-5 * (k as f64).max(1.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= tolerance * w.abs().max(1.0),
            "element {i}: {g} vs {w}"
        );
    }
}

#[test]
fn matmul_matches_the_reference_at_edge_sizes() {
    let matmul = TensorMatmul::new(cpu_only());
    for (m, n, k) in [
        (1, 1, 1),
        (1, 7, 3),
        (5, 1, 9),
        (17, 33, 65),
        (64, 64, 64),
        (3, 129, 2),
    ] {
        let out = run(
            &matmul,
            json!({"m": m, "n": n, "k": k, "seed": 42, "output": "values"}),
        )
        .unwrap();
        assert_eq!(out["device"], "cpu");
        assert_eq!(out["lane"], Value::Null);
        let a = generate(42, 0, m * k);
        let b = generate(42, 1, k * n);
        assert_close(&values(&out), &cpu::matmul_reference(&a, &b, m, n, k), k);
    }
}

#[test]
fn matmul_takes_inline_inputs_as_json_or_base64() {
    let matmul = TensorMatmul::new(cpu_only());
    // [1 2; 3 4] * [5 6; 7 8] = [19 22; 43 50]
    let out = run(
        &matmul,
        json!({"m": 2, "n": 2, "k": 2, "a": [1, 2, 3, 4], "b": encode_f32(&[5.0, 6.0, 7.0, 8.0]), "output": "values"}),
    )
    .unwrap();
    assert_eq!(values(&out), [19.0, 22.0, 43.0, 50.0]);
    let checksum = run(
        &matmul,
        json!({"m": 2, "n": 2, "k": 2, "a": [1, 2, 3, 4], "b": [5, 6, 7, 8]}),
    )
    .unwrap();
    assert_eq!(checksum["checksum"]["sum"], 134.0);
    assert_eq!(checksum["checksum"]["max"], 50.0);
    assert_eq!(
        checksum["checksum"]["head"],
        json!([19.0, 22.0, 43.0, 50.0])
    );
    assert!(checksum.get("values").is_none());
}

#[test]
fn matmul_bad_params_are_invalid_params() {
    let matmul = TensorMatmul::new(cpu_only());
    let spec = matmul.spec();
    let validate = spec.validate.as_ref().unwrap();
    for params in [
        json!({"m": 0, "n": 1, "k": 1, "seed": 1}),
        json!({"m": 1, "n": 1}),
        json!({"m": 1, "n": 1, "k": 1, "seed": 1, "repeat": 0}),
        json!({"m": 1, "n": 1, "k": 1, "seed": 1, "repeat": 100000}),
        json!({"m": 100000, "n": 100000, "k": 1, "seed": 1}),
        json!({"m": 1, "n": 1, "k": 1, "seed": 1, "device": "tpu"}),
        json!({"m": 1, "n": 1, "k": 1, "seed": 1, "typo": true}),
    ] {
        assert!(validate(&params).is_err(), "{params} passed");
        let e = run(&matmul, params).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParams);
    }
    // Shapes that only the data can contradict: refused at run time, still invalid_params.
    for params in [
        json!({"m": 2, "n": 2, "k": 2, "a": [1, 2, 3], "b": [1, 2, 3, 4]}),
        json!({"m": 1, "n": 1, "k": 1, "a": [1]}),
        json!({"m": 1, "n": 1, "k": 1, "a": "not base64!", "b": [1]}),
    ] {
        assert_eq!(
            run(&matmul, params).unwrap_err().code,
            ErrorCode::InvalidParams
        );
    }
}

#[test]
fn without_a_gpu_the_gpu_device_and_huge_jobs_are_platform_unsupported() {
    let matmul = TensorMatmul::new(cpu_only());
    let e = run(
        &matmul,
        json!({"m": 2, "n": 2, "k": 2, "seed": 1, "device": "gpu"}),
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::PlatformUnsupported);
    assert!(e.message.contains("test: CPU path"), "{}", e.message);
    let e = run(&matmul, json!({"m": 8192, "n": 8192, "k": 8192, "seed": 1})).unwrap_err();
    assert_eq!(e.code, ErrorCode::PlatformUnsupported);
    assert!(
        e.message.contains("too big for the CPU path"),
        "{}",
        e.message
    );
    let saxpy = TensorSaxpy::new(cpu_only());
    let e = run(
        &saxpy,
        json!({"alpha": 1, "n": 4, "seed": 1, "device": "gpu"}),
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::PlatformUnsupported);
}

#[test]
fn matmul_is_cancelled_between_launches_and_reports_progress() {
    let matmul = TensorMatmul::new(cpu_only());
    let context = FakeContext::new();
    // Cancel once two launches have reported progress (bounded: the test fails, not hangs).
    let watcher = std::sync::Arc::clone(&context);
    std::thread::spawn(move || {
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while watcher.progress_reports().len() < 2 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        watcher.cancel();
    });
    let started = std::time::Instant::now();
    let e = matmul
        .run(
            &request(
                "tensor.matmul",
                json!({"m": 64, "n": 64, "k": 64, "seed": 3, "repeat": 1000}),
            ),
            &*context,
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(20));
    let progress = context.progress_reports();
    assert!(progress.len() >= 2, "cancelled before any progress");
    assert!(progress.len() < 999, "the cancel did not stop the launches");
    assert!(progress.iter().all(|p| p.step_count == Some(1000)));
    assert!(progress.windows(2).all(|w| w[0].progress <= w[1].progress));
}

#[test]
fn saxpy_matches_the_reference() {
    let saxpy = TensorSaxpy::new(cpu_only());
    for n in [1usize, 2, 255, 256, 257, 10_000] {
        let out = run(
            &saxpy,
            json!({"alpha": -0.5, "n": n, "seed": 9, "repeat": 3, "output": "values"}),
        )
        .unwrap();
        let x = generate(9, 0, n);
        let mut y: Vec<f64> = generate(9, 1, n).into_iter().map(f64::from).collect();
        for _ in 0..3 {
            for (y, &x) in y.iter_mut().zip(&x) {
                *y += -0.5 * f64::from(x);
            }
        }
        assert_close(&values(&out), &y, 3);
        assert_eq!(out["n"], n);
    }
    let inline = run(
        &saxpy,
        json!({"alpha": 2, "x": [1, 2, 3], "y": [10, 20, 30], "output": "values"}),
    )
    .unwrap();
    assert_eq!(values(&inline), [12.0, 24.0, 36.0]);
}

#[test]
fn saxpy_bad_params_are_invalid_params() {
    let saxpy = TensorSaxpy::new(cpu_only());
    for params in [
        json!({"n": 4, "seed": 1}),
        json!({"alpha": 1, "seed": 1}),
        json!({"alpha": 1, "n": 4, "seed": 1, "op": "sum"}),
        json!({"alpha": 1, "x": [1, 2], "y": [1]}),
        json!({"alpha": 1, "x": [1, 2]}),
    ] {
        assert_eq!(
            run(&saxpy, params.clone()).unwrap_err().code,
            ErrorCode::InvalidParams,
            "{params}"
        );
    }
}

#[test]
fn reduce_sum_and_max_match_the_reference() {
    let reduce = TensorReduce::new(cpu_only());
    for n in [1usize, 3, 256, 257, 100_003] {
        let x = generate(5, 0, n);
        let sum = run(&reduce, json!({"op": "sum", "n": n, "seed": 5})).unwrap();
        let want: f64 = x.iter().map(|&v| f64::from(v)).sum();
        assert!(
            (sum["value"].as_f64().unwrap() - want).abs() < 1e-9,
            "{sum}"
        );
        let max = run(&reduce, json!({"op": "max", "n": n, "seed": 5})).unwrap();
        let want = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(max["value"].as_f64().unwrap(), f64::from(want));
        assert_eq!(max["n"], n);
    }
    let inline = run(&reduce, json!({"op": "max", "x": [-5, -2, -9]})).unwrap();
    assert_eq!(inline["value"], -2.0);
    assert_eq!(inline["device"], "cpu");
}

#[test]
fn reduce_bad_params_are_invalid_params() {
    let reduce = TensorReduce::new(cpu_only());
    for params in [
        json!({"n": 4, "seed": 1}),
        json!({"op": "mean", "n": 4, "seed": 1}),
        json!({"op": "sum", "x": []}),
        json!({"op": "sum", "n": 4}),
        json!({"op": "sum", "n": 4, "seed": 1, "alpha": 2}),
    ] {
        assert_eq!(
            run(&reduce, params.clone()).unwrap_err().code,
            ErrorCode::InvalidParams,
            "{params}"
        );
    }
}
