//! `tensor.matmul`, `tensor.reduce` and `tensor.saxpy`: f32 work on a GPU lane (cuBLAS, NVRTC
//! built-ins) or on the CPU path, with inputs inline or generated from a seed.

pub mod cpu;
pub mod data;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome, Progress};
use nodelink_core::node::executor::{command_error, invalid_params, Executor, RunContext};
use nodelink_core::wire::dto::{CommandError, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use self::data::{output, tensor, Data, DeviceChoice, OutputMode, MAX_ELEMENTS};
use crate::gpu::Gpu;

/// The most launches one command may ask for with `repeat`.
pub const MAX_REPEAT: u32 = 1000;
/// `auto` runs a matmul under this many multiply-adds on the CPU (64^3): a transfer costs more.
pub const GPU_MATMUL_THRESHOLD: u64 = 1 << 18;
/// `auto` runs saxpy/reduce under this many elements on the CPU.
pub const GPU_VECTOR_THRESHOLD: usize = 1 << 20;
/// The largest matmul the CPU path takes (multiply-adds over all repeats; seconds of work).
pub const CPU_MAX_MACS: u64 = 1 << 33;

fn parse<T: DeserializeOwned>(params: &Value) -> Result<T, String> {
    T::deserialize(params).map_err(|e| e.to_string())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Where a command runs, decided from the `device` param, the probe and the job's size.
fn use_gpu(
    gpu: &Gpu,
    choice: DeviceChoice,
    big: bool,
    library: bool,
    what: &str,
) -> Result<bool, CommandError> {
    match choice {
        DeviceChoice::Cpu => Ok(false),
        DeviceChoice::Gpu if !gpu.available() => Err(gpu.unsupported(what)),
        DeviceChoice::Gpu => Ok(true),
        DeviceChoice::Auto => Ok(gpu.available() && library && big),
    }
}

fn cancelled_or(context: &dyn RunContext, value: Option<Value>) -> Outcome {
    match value {
        Some(v) if !context.is_cancelled() => Ok(v),
        _ => Err(crate::cancelled()),
    }
}

fn placed(lane: Option<usize>) -> Value {
    match lane {
        Some(i) => json!({"device": format!("cuda:{i}"), "lane": i}),
        None => json!({"device": "cpu", "lane": null}),
    }
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

fn repeat_of(repeat: Option<u32>) -> Result<u32, String> {
    match repeat.unwrap_or(1) {
        0 => Err("`repeat` must be at least 1".into()),
        r if r > MAX_REPEAT => Err(format!("`repeat`: {r} is over the maximum {MAX_REPEAT}")),
        r => Ok(r),
    }
}

/// Reports progress of launch `i` of `repeat` and says whether to go on.
fn launch_gate(context: &dyn RunContext, repeat: u32) -> impl Fn(u32) -> bool + '_ {
    move |i| {
        if repeat > 1 && i > 0 {
            let mut p = Progress::fraction(f64::from(i) / f64::from(repeat));
            p.step = Some(i);
            p.step_count = Some(repeat);
            context.progress(p);
        }
        !context.is_cancelled()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MatmulParams {
    m: usize,
    n: usize,
    k: usize,
    a: Option<Data>,
    b: Option<Data>,
    seed: Option<u64>,
    #[serde(default)]
    output: OutputMode,
    #[serde(default)]
    device: DeviceChoice,
    repeat: Option<u32>,
}

impl MatmulParams {
    fn check(params: &Value) -> Result<(Self, u32, u64), String> {
        let p: Self = parse(params)?;
        if p.m == 0 || p.n == 0 || p.k == 0 {
            return Err("`m`, `n` and `k` must be at least 1".into());
        }
        for (name, x, y) in [("a", p.m, p.k), ("b", p.k, p.n), ("c", p.m, p.n)] {
            if x.checked_mul(y).is_none_or(|e| e > MAX_ELEMENTS) {
                return Err(format!(
                    "`{name}` ({x} x {y}) is over {MAX_ELEMENTS} elements"
                ));
            }
        }
        let repeat = repeat_of(p.repeat)?;
        let macs = (p.m as u64) * (p.n as u64) * (p.k as u64);
        Ok((p, repeat, macs))
    }
}

/// `tensor.matmul`: row-major `C = A * B` (A `m x k`, B `k x n`), cuBLAS on a GPU lane or the
/// CPU path. See docs/executors.md for params and result.
#[derive(Clone, Debug)]
pub struct TensorMatmul {
    gpu: Arc<Gpu>,
}

impl TensorMatmul {
    pub fn new(gpu: Arc<Gpu>) -> Self {
        Self { gpu }
    }
}

impl Executor for TensorMatmul {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("tensor.matmul").validated_by(|p| MatmulParams::check(p).map(|_| ()))
    }

    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        let started = Instant::now();
        let (p, repeat, macs) = MatmulParams::check(&request.params).map_err(invalid_params)?;
        let (m, n, k) = (p.m, p.n, p.k);
        let big = macs >= GPU_MATMUL_THRESHOLD;
        let gpu_path = use_gpu(
            &self.gpu,
            p.device,
            big,
            self.gpu.probe().has_cublas(),
            "tensor.matmul on the GPU",
        )?;
        if !gpu_path && macs.saturating_mul(u64::from(repeat)) > CPU_MAX_MACS {
            return Err(command_error(
                ErrorCode::PlatformUnsupported,
                format!(
                    "{m}x{k} * {k}x{n} ({repeat} times) is too big for the CPU path (over {CPU_MAX_MACS} multiply-adds) and {}",
                    if self.gpu.available() { "`device` is `cpu`".to_owned() } else { format!("there is no GPU: {}", self.gpu.probe().reason()) }
                ),
            ));
        }
        let a = tensor("a", p.a.as_ref(), p.seed, 0, m * k).map_err(invalid_params)?;
        let b = tensor("b", p.b.as_ref(), p.seed, 1, k * n).map_err(invalid_params)?;
        let gate = launch_gate(context, repeat);
        let (lane, c, compute) = if gpu_path {
            let (lane, out) = self
                .gpu
                .on_lane(|g| g.matmul(&a, &b, (m, n, k), repeat, &gate))?;
            let Some((c, spent)) = out else {
                return Err(crate::cancelled());
            };
            (Some(lane), c, spent)
        } else {
            let compute_start = Instant::now();
            let mut c = Vec::new();
            for i in 0..repeat {
                if !gate(i) {
                    return Err(crate::cancelled());
                }
                let rows = |done: usize| {
                    if repeat == 1 && m >= 64 {
                        context.progress(Progress::fraction(done as f64 / m as f64));
                    }
                    !context.is_cancelled()
                };
                c = cpu::matmul(&a, &b, m, n, k, &rows).ok_or_else(crate::cancelled)?;
            }
            (None, c, compute_start.elapsed())
        };
        let flops = 2.0 * macs as f64 * f64::from(repeat);
        let result = json!({
            "m": m, "n": n, "k": k, "repeat": repeat,
            "computeMs": ms(compute),
            "gflops": if compute.is_zero() { Value::Null } else { json!(flops / compute.as_secs_f64() / 1e9) },
            "elapsedMs": ms(started.elapsed()),
        });
        let out = output(&c, p.output).map_err(invalid_params)?;
        cancelled_or(context, Some(merge(merge(placed(lane), result), out)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VectorParams {
    /// saxpy: the scalar `a` of `y = a*x + y`; reduce: the operation.
    alpha: Option<f32>,
    op: Option<String>,
    x: Option<Data>,
    y: Option<Data>,
    n: Option<usize>,
    seed: Option<u64>,
    #[serde(default)]
    output: OutputMode,
    #[serde(default)]
    device: DeviceChoice,
    repeat: Option<u32>,
}

impl VectorParams {
    /// The vector length: `n`, else the inline `x`'s length.
    fn len(&self) -> Result<usize, String> {
        let inline = match &self.x {
            Some(Data::Values(v)) => Some(v.len()),
            Some(Data::Base64(t)) => Some(t.len() / 4 * 3 / 4), // checked exactly on decode
            None => None,
        };
        match (self.n, inline) {
            (Some(n), _) if n > MAX_ELEMENTS => Err(format!("`n`: {n} is over {MAX_ELEMENTS}")),
            (Some(n), _) => Ok(n),
            (None, Some(len)) => Ok(len),
            (None, None) => Err("give `x` or `n` with a `seed`".into()),
        }
    }

    fn inputs(&self, with_y: bool) -> Result<(Vec<f32>, Vec<f32>), String> {
        let n = match (&self.x, self.n) {
            (Some(Data::Base64(t)), None) => data::decode_f32(t).map(|v| v.len())?,
            _ => self.len()?,
        };
        let x = tensor("x", self.x.as_ref(), self.seed, 0, n)?;
        let y = if with_y {
            tensor("y", self.y.as_ref(), self.seed, 1, n)?
        } else {
            Vec::new()
        };
        Ok((x, y))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReduceOp {
    Sum,
    Max,
}

fn check_saxpy(params: &Value) -> Result<(VectorParams, u32), String> {
    let p: VectorParams = parse(params)?;
    if p.alpha.is_none() {
        return Err("`alpha` (the scalar of y = alpha*x + y) is required".into());
    }
    if p.op.is_some() {
        return Err("`op` belongs to tensor.reduce".into());
    }
    p.len()?;
    let repeat = repeat_of(p.repeat)?;
    Ok((p, repeat))
}

fn check_reduce(params: &Value) -> Result<(VectorParams, ReduceOp), String> {
    let p: VectorParams = parse(params)?;
    let op = match p.op.as_deref() {
        Some("sum") => ReduceOp::Sum,
        Some("max") => ReduceOp::Max,
        Some(other) => return Err(format!("`op`: {other:?} is not one of \"sum\", \"max\"")),
        None => return Err("`op` (\"sum\" or \"max\") is required".into()),
    };
    if p.alpha.is_some() || p.y.is_some() || p.repeat.is_some() || p.output != OutputMode::Checksum
    {
        return Err("tensor.reduce takes `op`, `x` or `n` + `seed`, and `device`".into());
    }
    if p.len()? == 0 {
        return Err("the input is empty: there is nothing to reduce".into());
    }
    Ok((p, op))
}

/// `tensor.saxpy`: `y = alpha * x + y` (`repeat` times), NVRTC built-in on a GPU lane or the CPU.
#[derive(Clone, Debug)]
pub struct TensorSaxpy {
    gpu: Arc<Gpu>,
}

impl TensorSaxpy {
    pub fn new(gpu: Arc<Gpu>) -> Self {
        Self { gpu }
    }
}

impl Executor for TensorSaxpy {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("tensor.saxpy").validated_by(|p| check_saxpy(p).map(|_| ()))
    }

    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        let started = Instant::now();
        let (p, repeat) = check_saxpy(&request.params).map_err(invalid_params)?;
        let alpha = p.alpha.unwrap_or(0.0);
        let (x, mut y) = p.inputs(true).map_err(invalid_params)?;
        let big = x.len() >= GPU_VECTOR_THRESHOLD;
        let gpu_path = use_gpu(
            &self.gpu,
            p.device,
            big,
            self.gpu.probe().has_nvrtc(),
            "tensor.saxpy on the GPU",
        )?;
        let gate = launch_gate(context, repeat);
        let (lane, compute) = if gpu_path {
            let (lane, out) = self
                .gpu
                .on_lane(|g| g.saxpy(alpha, &x, &y, repeat, &gate))?;
            let Some((result, spent)) = out else {
                return Err(crate::cancelled());
            };
            y = result;
            (Some(lane), spent)
        } else {
            let t = Instant::now();
            for i in 0..repeat {
                if !gate(i) {
                    return Err(crate::cancelled());
                }
                cpu::saxpy(alpha, &x, &mut y);
            }
            (None, t.elapsed())
        };
        let result = json!({
            "n": x.len(), "alpha": alpha, "repeat": repeat,
            "computeMs": ms(compute), "elapsedMs": ms(started.elapsed()),
        });
        let out = output(&y, p.output).map_err(invalid_params)?;
        cancelled_or(context, Some(merge(merge(placed(lane), result), out)))
    }
}

/// `tensor.reduce`: the sum (accumulated in f64 on the CPU path and across GPU blocks) or the
/// max of a vector.
#[derive(Clone, Debug)]
pub struct TensorReduce {
    gpu: Arc<Gpu>,
}

impl TensorReduce {
    pub fn new(gpu: Arc<Gpu>) -> Self {
        Self { gpu }
    }
}

impl Executor for TensorReduce {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("tensor.reduce").validated_by(|p| check_reduce(p).map(|_| ()))
    }

    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        let started = Instant::now();
        let (p, op) = check_reduce(&request.params).map_err(invalid_params)?;
        let (x, _) = p.inputs(false).map_err(invalid_params)?;
        if x.is_empty() {
            return Err(invalid_params(
                "the input is empty: there is nothing to reduce",
            ));
        }
        let big = x.len() >= GPU_VECTOR_THRESHOLD;
        let gpu_path = use_gpu(
            &self.gpu,
            p.device,
            big,
            self.gpu.probe().has_nvrtc(),
            "tensor.reduce on the GPU",
        )?;
        if context.is_cancelled() {
            return Err(crate::cancelled());
        }
        let op_code = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
        };
        let (lane, values, compute) = if gpu_path {
            let (lane, (partials, spent)) = self.gpu.on_lane(|g| g.reduce_partials(&x, op_code))?;
            (Some(lane), partials, spent)
        } else {
            (None, x.clone(), Duration::ZERO)
        };
        let t = Instant::now();
        let value = match op {
            ReduceOp::Sum => json!(finite(cpu::sum(&values))),
            ReduceOp::Max => json!(cpu::max(&values).map(f64::from).and_then(finite)),
        };
        let compute = compute + t.elapsed();
        let result = json!({
            "op": match op { ReduceOp::Sum => "sum", ReduceOp::Max => "max" },
            "n": x.len(),
            "value": value,
            "computeMs": ms(compute),
            "elapsedMs": ms(started.elapsed()),
        });
        cancelled_or(context, Some(merge(placed(lane), result)))
    }
}

/// A JSON number, or `None` (null) for NaN and infinities, which JSON cannot carry.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}
