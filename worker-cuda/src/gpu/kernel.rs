//! `kernel.run`: CUDA C from the gateway, compiled with NVRTC and launched on a GPU lane.
//! Registered only when the operator allows it, and it requires the scope `gpu.kernel`.
#![allow(unsafe_code)] // launching caller-supplied code is unsafe by nature

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome, Progress};
use nodelink_core::node::executor::{invalid_params, Executor, RunContext};
use serde::Deserialize;
use serde_json::{json, Value};

use super::device::compile;
use super::Gpu;
use crate::tensor::data::{output, tensor, Data, OutputMode, MAX_ELEMENTS};
use crate::tensor::MAX_REPEAT;

/// The scope `kernel.run` requires.
pub const KERNEL_SCOPE: &str = "gpu.kernel";
/// The largest source accepted (bytes).
pub const MAX_SOURCE: usize = 1 << 20;
const MAX_ARGS: usize = 64;

/// A launch dimension: one number (x) or `[x, y, z]` (missing ones are 1).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Dim {
    One(u32),
    Many(Vec<u32>),
}

impl Dim {
    fn xyz(&self, name: &str) -> Result<(u32, u32, u32), String> {
        let v = match self {
            Dim::One(x) => vec![*x],
            Dim::Many(v) => v.clone(),
        };
        if v.is_empty() || v.len() > 3 || v.contains(&0) {
            return Err(format!("`{name}` needs 1 to 3 dimensions, each at least 1"));
        }
        Ok((
            v[0],
            v.get(1).copied().unwrap_or(1),
            v.get(2).copied().unwrap_or(1),
        ))
    }
}

/// One kernel argument, in order: a scalar or an f32 buffer.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum Arg {
    F32(f32),
    I32(i32),
    U32(u32),
    U64(u64),
    Buffer(BufferSpec),
}

/// A device buffer of f32: inline `data`, or `len` elements from `seed` (zeros without one).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BufferSpec {
    data: Option<Data>,
    len: Option<usize>,
    seed: Option<u64>,
    /// Returned after the last launch.
    #[serde(default)]
    output: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KernelParams {
    source: String,
    entry: String,
    grid: Dim,
    block: Dim,
    #[serde(default)]
    shared_mem_bytes: u32,
    #[serde(default)]
    args: Vec<Arg>,
    launches: Option<u32>,
    #[serde(default)]
    output: OutputMode,
}

struct Checked {
    p: KernelParams,
    config: LaunchConfig,
    launches: u32,
}

fn check(params: &Value) -> Result<Checked, String> {
    let p = KernelParams::deserialize(params).map_err(|e| e.to_string())?;
    if p.source.trim().is_empty() || p.source.len() > MAX_SOURCE || p.source.contains('\0') {
        return Err(format!(
            "`source` must be CUDA C of 1 to {MAX_SOURCE} bytes without NUL"
        ));
    }
    let ident = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !ident(&p.entry) {
        return Err("`entry` must be the kernel's C identifier (declare it extern \"C\")".into());
    }
    let grid = p.grid.xyz("grid")?;
    let block = p.block.xyz("block")?;
    if grid.0 > i32::MAX as u32 || grid.1 > 65_535 || grid.2 > 65_535 {
        return Err("`grid` is over the device limits (2^31-1, 65535, 65535)".into());
    }
    if u64::from(block.0) * u64::from(block.1) * u64::from(block.2) > 1024 {
        return Err("`block` has more than 1024 threads".into());
    }
    if p.args.len() > MAX_ARGS {
        return Err(format!("more than {MAX_ARGS} `args`"));
    }
    let mut total = 0usize;
    for (i, arg) in p.args.iter().enumerate() {
        if let Arg::Buffer(b) = arg {
            let len = match (&b.data, b.len) {
                (Some(Data::Values(v)), _) => v.len(),
                (Some(Data::Base64(t)), _) => t.len() / 4 * 3 / 4,
                (None, Some(len)) => len,
                (None, None) => return Err(format!("`args[{i}]`: a buffer needs `data` or `len`")),
            };
            if len == 0 {
                return Err(format!("`args[{i}]`: a buffer needs at least one element"));
            }
            total = total.saturating_add(len);
        }
    }
    if total > MAX_ELEMENTS {
        return Err(format!("the buffers hold over {MAX_ELEMENTS} elements"));
    }
    let launches = match p.launches.unwrap_or(1) {
        l @ 1..=MAX_REPEAT => l,
        l => return Err(format!("`launches`: {l} is not in 1..={MAX_REPEAT}")),
    };
    let config = LaunchConfig {
        grid_dim: grid,
        block_dim: block,
        shared_mem_bytes: p.shared_mem_bytes,
    };
    Ok(Checked {
        p,
        config,
        launches,
    })
}

/// `kernel.run`. See docs/executors.md for params and result.
#[derive(Clone, Debug)]
pub struct KernelRun {
    gpu: Arc<Gpu>,
}

impl KernelRun {
    pub fn new(gpu: Arc<Gpu>) -> Self {
        Self { gpu }
    }
}

impl Executor for KernelRun {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("kernel.run")
            .scope(KERNEL_SCOPE)
            .validated_by(|p| check(p).map(|_| ()))
    }

    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        let started = Instant::now();
        let Checked {
            p,
            config,
            launches,
        } = check(&request.params).map_err(invalid_params)?;
        if !self.gpu.available() || !self.gpu.probe().has_nvrtc() {
            let mut e = self.gpu.unsupported("kernel.run");
            if self.gpu.available() {
                e.message = "kernel.run needs NVRTC (libnvrtc), which is not installed".into();
            }
            return Err(e);
        }
        // Host copies of the buffers first: bad inline data is invalid_params, not a GPU error.
        let mut host = Vec::new();
        for (i, arg) in p.args.iter().enumerate() {
            if let Arg::Buffer(b) = arg {
                let len = match (&b.data, b.len) {
                    (Some(Data::Base64(t)), None) => crate::tensor::data::decode_f32(t)
                        .map_err(|e| invalid_params(format!("`args[{i}]`: {e}")))?
                        .len(),
                    (Some(Data::Values(v)), None) => v.len(),
                    (_, Some(len)) => len,
                    (None, None) => 0,
                };
                let values = match (&b.data, b.seed) {
                    (None, None) => vec![0.0; len],
                    _ => tensor(
                        &format!("args[{i}]"),
                        b.data.as_ref(),
                        b.seed,
                        i as u64,
                        len,
                    )
                    .map_err(invalid_params)?,
                };
                host.push((i, b.output, values));
            }
        }
        let (lane, (compile_ms, kernel_ms, outputs)) = self
            .gpu
            .on_lane(|g| {
                let t = Instant::now();
                let module = compile(&g.ctx, &p.source, "kernel.cu")?;
                let function = module
                    .load_function(&p.entry)
                    .map_err(|e| format!("no kernel `{}` in the module: {e}", p.entry))?;
                let compile_ms = t.elapsed().as_secs_f64() * 1e3;
                let mut buffers: Vec<CudaSlice<f32>> = Vec::with_capacity(host.len());
                for (_, _, values) in &host {
                    buffers.push(g.upload(values)?);
                }
                g.sync()?;
                let t = Instant::now();
                for launch in 0..launches {
                    if context.is_cancelled() {
                        return Ok(None);
                    }
                    if launch > 0 {
                        let mut progress =
                            Progress::fraction(f64::from(launch) / f64::from(launches));
                        progress.step = Some(launch);
                        progress.step_count = Some(launches);
                        context.progress(progress);
                    }
                    let mut builder = g.stream.launch_builder(&function);
                    let mut next_buffer = buffers.iter();
                    for arg in &p.args {
                        match arg {
                            Arg::F32(v) => builder.arg(v),
                            Arg::I32(v) => builder.arg(v),
                            Arg::U32(v) => builder.arg(v),
                            Arg::U64(v) => builder.arg(v),
                            Arg::Buffer(_) => match next_buffer.next() {
                                Some(buffer) => builder.arg(buffer),
                                None => return Err("buffer arguments out of step".into()),
                            },
                        };
                    }
                    // SAFETY: the caller (holding the gpu.kernel scope) vouches that the kernel's
                    // signature matches `args` and stays inside its buffers; a fault is reported by
                    // the driver as an error on this context.
                    unsafe { builder.launch(config) }.map_err(|e| format!("launch: {e}"))?;
                    g.sync()?;
                }
                let kernel_ms = t.elapsed().as_secs_f64() * 1e3;
                let mut outputs = Vec::new();
                for ((arg, wanted, _), buffer) in host.iter().zip(&buffers) {
                    if *wanted {
                        outputs.push((*arg, g.download(buffer)?));
                    }
                }
                Ok(Some((compile_ms, kernel_ms, outputs)))
            })
            .and_then(|(lane, out)| out.map(|o| (lane, o)).ok_or_else(crate::cancelled))?;
        let mut returned = Vec::new();
        for (arg, values) in outputs {
            let mut out = output(&values, p.output).map_err(invalid_params)?;
            if let Some(o) = out.as_object_mut() {
                o.insert("arg".into(), json!(arg));
            }
            returned.push(out);
        }
        if context.is_cancelled() {
            return Err(crate::cancelled());
        }
        Ok(json!({
            "device": format!("cuda:{lane}"),
            "lane": lane,
            "entry": p.entry,
            "launches": launches,
            "compileMs": compile_ms,
            "kernelMs": kernel_ms,
            "elapsedMs": started.elapsed().as_secs_f64() * 1e3,
            "outputs": returned,
        }))
    }
}
