//! The code that talks to cudarc. Only reached through a lane, and only after the probe saw the
//! libraries each step needs; every entry point is wrapped in `catch_unwind` by its caller.
#![allow(unsafe_code)] // kernel launches and cuBLAS calls are `unsafe` in cudarc

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};

use super::probe::probe;

/// The built-in kernels (saxpy, reduce), compiled with NVRTC once per lane.
const BUILTIN_KERNELS: &str = r#"
extern "C" __global__ void nl_saxpy(float a, const float* x, float* y, unsigned long long n) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         i < n; i += stride) {
        y[i] = fmaf(a, x[i], y[i]);
    }
}

__device__ float nl_combine(float acc, float v, int op) {
    if (op == 0) return acc + v;
    if (acc != acc || v != v) return __int_as_float(0x7fc00000);
    return fmaxf(acc, v);
}

// One partial result per block (blockDim.x must be 256); the host combines the partials.
extern "C" __global__ void nl_reduce(const float* x, float* partial, unsigned long long n, int op) {
    __shared__ float s[256];
    float acc = op == 0 ? 0.0f : __int_as_float(0xff800000);
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         i < n; i += stride) {
        acc = nl_combine(acc, x[i], op);
    }
    s[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) s[threadIdx.x] = nl_combine(s[threadIdx.x], s[threadIdx.x + w], op);
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}
"#;

/// Threads per block of the built-in kernels (nl_reduce's shared array has this size).
const THREADS: u32 = 256;
/// The most blocks a built-in launch uses (grid-stride loops cover the rest).
const MAX_BLOCKS: u32 = 4096;

/// One GPU's objects, owned by its lane.
pub struct GpuLane {
    pub ordinal: usize,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    blas: Option<CudaBlas>,
    builtins: Option<(CudaFunction, CudaFunction)>,
}

pub type GpuResult<T> = Result<T, String>;

fn err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl GpuLane {
    /// Creates the context and stream of GPU `ordinal`.
    pub fn open(ordinal: usize) -> GpuResult<Self> {
        let ctx = CudaContext::new(ordinal).map_err(err("cuCtxCreate"))?;
        let stream = ctx.new_stream().map_err(err("cuStreamCreate"))?;
        Ok(Self {
            ordinal,
            ctx,
            stream,
            blas: None,
            builtins: None,
        })
    }

    /// (free, total) device memory in bytes.
    pub fn memory(&self) -> GpuResult<(usize, usize)> {
        self.ctx.mem_get_info().map_err(err("cuMemGetInfo"))
    }

    fn blas(&mut self) -> GpuResult<&CudaBlas> {
        if !probe().has_cublas() {
            return Err("cuBLAS (libcublas) is not installed".into());
        }
        if self.blas.is_none() {
            let blas = CudaBlas::new(Arc::clone(&self.stream))
                .map_err(|e| format!("cublasCreate: {e}"))?;
            self.blas = Some(blas);
        }
        self.blas
            .as_ref()
            .ok_or_else(|| "cuBLAS handle missing".into())
    }

    fn builtins(&mut self) -> GpuResult<(CudaFunction, CudaFunction)> {
        if self.builtins.is_none() {
            let module = compile(&self.ctx, BUILTIN_KERNELS, "nodelink_builtins.cu")?;
            let saxpy = module.load_function("nl_saxpy").map_err(err("nl_saxpy"))?;
            let reduce = module
                .load_function("nl_reduce")
                .map_err(err("nl_reduce"))?;
            self.builtins = Some((saxpy, reduce));
        }
        self.builtins
            .clone()
            .ok_or_else(|| "built-in kernels missing".into())
    }

    pub fn upload(&self, data: &[f32]) -> GpuResult<CudaSlice<f32>> {
        self.stream
            .clone_htod(data)
            .map_err(err("copy to the device"))
    }

    pub fn download(&self, data: &CudaSlice<f32>) -> GpuResult<Vec<f32>> {
        self.stream
            .clone_dtoh(data)
            .map_err(err("copy from the device"))
    }

    pub fn sync(&self) -> GpuResult<()> {
        self.stream.synchronize().map_err(err("stream synchronize"))
    }

    /// Row-major `C = A * B` through cuBLAS, `repeat` times (each a launch; `keep_going(i)` is
    /// asked before launch `i`). Returns C and the time spent in the launches.
    pub fn matmul(
        &mut self,
        a: &[f32],
        b: &[f32],
        (m, n, k): (usize, usize, usize),
        repeat: u32,
        keep_going: &dyn Fn(u32) -> bool,
    ) -> GpuResult<Option<(Vec<f32>, Duration)>> {
        let dims = |v: usize| i32::try_from(v).map_err(|_| format!("dimension {v} is too large"));
        let (mi, ni, ki) = (dims(m)?, dims(n)?, dims(k)?);
        let da = self.upload(a)?;
        let db = self.upload(b)?;
        let mut dc = self
            .stream
            .alloc_zeros::<f32>(m * n)
            .map_err(err("device allocation"))?;
        self.sync()?;
        // cuBLAS is column-major: row-major C = A*B is column-major C^T = B^T * A^T, so B goes
        // first, with the dimensions swapped.
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_N,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: ni,
            n: mi,
            k: ki,
            alpha: 1.0f32,
            lda: ni.max(1),
            ldb: ki.max(1),
            beta: 0.0f32,
            ldc: ni.max(1),
        };
        let started = Instant::now();
        for i in 0..repeat {
            if !keep_going(i) {
                return Ok(None);
            }
            let blas = self.blas()?;
            // SAFETY: the buffers hold exactly k*n, m*k and m*n floats, as cfg says.
            unsafe { blas.gemm(cfg, &db, &da, &mut dc) }.map_err(|e| format!("sgemm: {e}"))?;
            self.sync()?;
        }
        let spent = started.elapsed();
        Ok(Some((self.download(&dc)?, spent)))
    }

    /// `y = alpha * x + y`, `repeat` times, with the NVRTC-compiled built-in.
    pub fn saxpy(
        &mut self,
        alpha: f32,
        x: &[f32],
        y: &[f32],
        repeat: u32,
        keep_going: &dyn Fn(u32) -> bool,
    ) -> GpuResult<Option<(Vec<f32>, Duration)>> {
        let (saxpy, _) = self.builtins()?;
        let dx = self.upload(x)?;
        let mut dy = self.upload(y)?;
        self.sync()?;
        let n = x.len() as u64;
        let cfg = grid_for(x.len());
        let started = Instant::now();
        for i in 0..repeat {
            if !keep_going(i) {
                return Ok(None);
            }
            let mut launch = self.stream.launch_builder(&saxpy);
            launch.arg(&alpha).arg(&dx).arg(&mut dy).arg(&n);
            // SAFETY: nl_saxpy(float, const float*, float*, u64) reads x[..n], writes y[..n].
            unsafe { launch.launch(cfg) }.map_err(err("nl_saxpy launch"))?;
            self.sync()?;
        }
        let spent = started.elapsed();
        Ok(Some((self.download(&dy)?, spent)))
    }

    /// Per-block partial sums (op 0) or maxima (op 1) of `x`; the caller combines them.
    pub fn reduce_partials(&mut self, x: &[f32], op: i32) -> GpuResult<(Vec<f32>, Duration)> {
        let (_, reduce) = self.builtins()?;
        let dx = self.upload(x)?;
        let cfg = grid_for(x.len());
        let mut partial = self
            .stream
            .alloc_zeros::<f32>(cfg.grid_dim.0 as usize)
            .map_err(err("device allocation"))?;
        self.sync()?;
        let n = x.len() as u64;
        let started = Instant::now();
        let mut launch = self.stream.launch_builder(&reduce);
        launch.arg(&dx).arg(&mut partial).arg(&n).arg(&op);
        // SAFETY: nl_reduce reads x[..n] and writes one float per block into `partial`.
        unsafe { launch.launch(cfg) }.map_err(err("nl_reduce launch"))?;
        self.sync()?;
        let spent = started.elapsed();
        Ok((self.download(&partial)?, spent))
    }
}

/// Grid-stride launch shape for `n` elements.
fn grid_for(n: usize) -> LaunchConfig {
    let blocks = u32::try_from(n.div_ceil(THREADS as usize))
        .unwrap_or(MAX_BLOCKS)
        .clamp(1, MAX_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Compiles CUDA C with NVRTC for this context's device and loads it.
pub fn compile(ctx: &Arc<CudaContext>, source: &str, name: &str) -> GpuResult<Arc<CudaModule>> {
    if !probe().has_nvrtc() {
        return Err("NVRTC (libnvrtc) is not installed".into());
    }
    if source.contains('\0') {
        return Err("the source contains a NUL byte".into());
    }
    let arch = ctx
        .compute_capability()
        .ok()
        .and_then(|(major, minor)| arch_name(major, minor));
    let options = cudarc::nvrtc::CompileOptions {
        arch,
        name: Some(name.to_owned()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, options).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            format!("NVRTC compilation failed:\n{}", log.to_string_lossy())
        }
        other => format!("NVRTC: {other:?}"),
    })?;
    ctx.load_module(ptx).map_err(err("cuModuleLoadData"))
}

/// NVRTC's `--gpu-architecture` value for a compute capability it knows (a `&'static str`, as
/// cudarc's options want). Unknown ones compile for NVRTC's default and JIT on the device.
fn arch_name(major: i32, minor: i32) -> Option<&'static str> {
    Some(match (major, minor) {
        (7, 0) => "compute_70",
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        _ => return None,
    })
}
