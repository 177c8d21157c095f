//! GPU access: the probe, the lanes (one per GPU), `gpu.info` and `kernel.run`.
//!
//! Order of trust: [`probe`] dlopens the libraries first; only a device the probe listed gets a
//! lane; a lane creates its cudarc context on first use; every cudarc call runs inside
//! [`Gpu::on_lane`], which turns a panic into `internal_error` instead of taking the node down.

pub mod device;
mod kernel;
pub mod lanes;
pub mod probe;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome};
use nodelink_core::node::executor::{command_error, Executor, RunContext};
use nodelink_core::wire::dto::{CommandError, ErrorCode};
use serde_json::{json, Value};

pub use self::kernel::{KernelRun, KERNEL_SCOPE};
pub use self::lanes::{LaneState, Lanes};
pub use self::probe::{gpu_inventory, probe, Probe, DISABLE_ENV};

use self::device::GpuLane;

/// The node's GPUs: what the probe found and one lane per device.
#[derive(Debug)]
pub struct Gpu {
    probe: Probe,
    lanes: Lanes,
}

impl Gpu {
    /// The GPUs of this machine (none when the probe found none).
    pub fn detect(busy_retry_after: Duration) -> Arc<Self> {
        let probe = probe().clone();
        let lanes = Lanes::new(probe.devices.len(), busy_retry_after);
        Arc::new(Self { probe, lanes })
    }

    /// No GPU at all: every tensor command takes its CPU path.
    pub fn none(reason: &str) -> Arc<Self> {
        Arc::new(Self {
            probe: Probe {
                unavailable: Some(reason.to_owned()),
                ..Probe::default()
            },
            lanes: Lanes::new(0, Duration::from_secs(1)),
        })
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    pub fn lanes(&self) -> &Lanes {
        &self.lanes
    }

    pub fn available(&self) -> bool {
        self.probe.has_gpu() && !self.lanes.is_empty()
    }

    /// `platform_unsupported` naming why there is no GPU.
    pub fn unsupported(&self, what: &str) -> CommandError {
        command_error(
            ErrorCode::PlatformUnsupported,
            format!("{what} needs a CUDA GPU: {}", self.probe.reason()),
        )
    }

    /// Runs `work` on a free lane's device (opened on first use); `busy` when all are taken.
    /// A cudarc error or panic becomes `internal_error` naming the lane.
    pub fn on_lane<T>(
        &self,
        work: impl FnOnce(&mut GpuLane) -> Result<T, String>,
    ) -> Result<(usize, T), CommandError> {
        if !self.available() {
            return Err(self.unsupported("this command"));
        }
        let mut lane = self.lanes.acquire()?;
        let index = lane.index;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if lane.gpu.as_ref().is_none_or(|g| g.is_err()) {
                lane.gpu = Some(GpuLane::open(index));
            }
            match lane.gpu.as_mut() {
                Some(Ok(gpu)) => work(gpu),
                Some(Err(e)) => Err(e.clone()),
                None => Err("the lane has no device".to_owned()),
            }
        }));
        match outcome {
            Ok(Ok(value)) => Ok((index, value)),
            Ok(Err(message)) => Err(command_error(
                ErrorCode::InternalError,
                format!("GPU {index}: {message}"),
            )),
            Err(_) => {
                lane.gpu = None;
                Err(command_error(
                    ErrorCode::InternalError,
                    format!("GPU {index}: the CUDA library failed (a panic in cudarc)"),
                ))
            }
        }
    }
}

/// `gpu.info`: the devices, their memory (free memory of lanes not in use), compute capability
/// and the driver version. No params, no scope. Without a GPU: `available: false` and a reason.
#[derive(Clone, Debug)]
pub struct GpuInfoCommand {
    gpu: Arc<Gpu>,
}

impl GpuInfoCommand {
    pub fn new(gpu: Arc<Gpu>) -> Self {
        Self { gpu }
    }
}

impl Executor for GpuInfoCommand {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("gpu.info")
    }

    fn run(&self, _request: &ExecuteRequest, _context: &dyn RunContext) -> Outcome {
        let probe = self.gpu.probe();
        let busy = self.gpu.lanes().busy();
        let devices: Vec<Value> = probe
            .devices
            .iter()
            .map(|d| {
                // Free memory needs the device's context: only asked of a lane nobody uses.
                let free_mb = match self.gpu.lanes().acquire_index(d.index as usize) {
                    Some(mut lane) => free_memory_mb(&mut lane),
                    None => None,
                };
                json!({
                    "index": d.index,
                    "name": d.name,
                    "memoryTotalMb": d.memory_total_mb,
                    "memoryFreeMb": free_mb,
                    "computeCapability": d.compute_capability,
                    "busy": busy.get(d.index as usize).copied().unwrap_or(false),
                })
            })
            .collect();
        Ok(json!({
            "available": self.gpu.available(),
            "reason": probe.unavailable,
            "driverVersion": probe.driver_version,
            "libraries": {
                "cuda": probe.driver_library,
                "nvrtc": probe.nvrtc_library,
                "cublas": probe.cublas_library,
            },
            "lanes": self.gpu.lanes().len(),
            "devices": devices,
        }))
    }
}

fn free_memory_mb(lane: &mut LaneState) -> Option<u64> {
    let index = lane.index;
    catch_unwind(AssertUnwindSafe(|| {
        if lane.gpu.is_none() {
            lane.gpu = Some(GpuLane::open(index));
        }
        match lane.gpu.as_ref() {
            Some(Ok(gpu)) => gpu
                .memory()
                .ok()
                .map(|(free, _)| (free / (1024 * 1024)) as u64),
            _ => None,
        }
    }))
    .ok()
    .flatten()
}
