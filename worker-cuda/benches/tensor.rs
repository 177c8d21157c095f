//! matmul GFLOP/s on the CPU path (and the GPU when present), host-device copy GB/s when
//! present, and what a command adds over the bare computation.
//!
//! `cargo bench -p nodelink-worker-cuda --bench tensor` (release build). Prints one line per
//! figure; docs/benchmarks.md keeps the numbers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nodelink_core::node::commands::{ExecuteRequest, Progress};
use nodelink_core::node::executor::{Executor, RunContext};
use nodelink_worker_cuda::gpu::Gpu;
use nodelink_worker_cuda::tensor::data::generate;
use nodelink_worker_cuda::tensor::{cpu, TensorMatmul};
use serde_json::json;

struct Quiet;
impl RunContext for Quiet {
    fn is_cancelled(&self) -> bool {
        false
    }
    fn progress(&self, _: Progress) {}
    fn stream_text(&self, _: &str) {}
}

fn request(params: serde_json::Value) -> ExecuteRequest {
    ExecuteRequest {
        command_id: "bench".into(),
        command: "tensor.matmul".into(),
        params,
        deadline: Instant::now() + Duration::from_secs(600),
        originated_by: None,
    }
}

/// The best of `runs` timings of `f`.
fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn gflops(n: usize, time: Duration) -> f64 {
    2.0 * (n as f64).powi(3) / time.as_secs_f64() / 1e9
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("cpu: {threads} threads");
    let cpu_only = TensorMatmul::new(Gpu::none("bench: CPU path"));
    for n in [128usize, 256, 512] {
        let a = generate(1, 0, n * n);
        let b = generate(1, 1, n * n);
        let bare = best(3, || {
            std::hint::black_box(cpu::matmul(&a, &b, n, n, n, &|_| true));
        });
        let params = json!({"m": n, "n": n, "k": n, "seed": 1, "device": "cpu"});
        let command = best(3, || {
            std::hint::black_box(cpu_only.run(&request(params.clone()), &Quiet).unwrap());
        });
        println!(
            "cpu matmul {n}^3: {:.2} GFLOP/s bare ({:.2} ms), command {:.2} ms (+{:.2} ms: input generation, checksum, JSON)",
            gflops(n, bare),
            bare.as_secs_f64() * 1e3,
            command.as_secs_f64() * 1e3,
            (command.saturating_sub(bare)).as_secs_f64() * 1e3,
        );
    }

    let gpu = Gpu::detect(Duration::from_secs(1));
    if !gpu.available() {
        println!("gpu: skipped ({})", gpu.probe().reason());
        return;
    }
    gpu_figures(&gpu);
}

fn gpu_figures(gpu: &Arc<Gpu>) {
    let matmul = TensorMatmul::new(Arc::clone(gpu));
    for n in [1024usize, 4096] {
        let repeat = 20;
        let out = matmul
            .run(
                &request(
                    json!({"m": n, "n": n, "k": n, "seed": 1, "device": "gpu", "repeat": repeat}),
                ),
                &Quiet,
            )
            .unwrap();
        let elapsed = out["elapsedMs"].as_f64().unwrap();
        let compute = out["computeMs"].as_f64().unwrap();
        println!(
            "gpu matmul {n}^3 x{repeat}: {:.0} GFLOP/s in the launches; command {:.1} ms of which launches {:.1} ms (the rest: generation, copies, checksum)",
            out["gflops"].as_f64().unwrap(),
            elapsed,
            compute
        );
    }
    let bytes = 256usize << 20;
    let host = vec![1.0f32; bytes / 4];
    let copies = gpu.on_lane(|g| {
        let up = best(5, || {
            let _ = std::hint::black_box(g.upload(&host));
            let _ = g.sync();
        });
        let device = g.upload(&host)?;
        g.sync()?;
        let down = best(5, || {
            let _ = std::hint::black_box(g.download(&device));
        });
        Ok((up, down))
    });
    match copies {
        Ok((_, (up, down))) => println!(
            "copy 256 MiB (pageable host memory): host->device {:.1} GB/s, device->host {:.1} GB/s",
            bytes as f64 / up.as_secs_f64() / 1e9,
            bytes as f64 / down.as_secs_f64() / 1e9
        ),
        Err(e) => println!("copy: failed: {}", e.message),
    }
}
