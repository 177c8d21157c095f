//! Finds the CUDA driver, NVRTC and cuBLAS with dlopen BEFORE cudarc is touched: cudarc's lazy
//! loader panics when a library is missing, so nothing calls into cudarc unless the probe saw
//! the library it needs. The probe runs once per process and is cached.

use std::sync::OnceLock;

use cudarc::driver::result as cu;
use cudarc::driver::sys::CUdevice_attribute;
use nodelink_core::wire::dto::GpuInfo;

/// Set to `1` to make the probe report no GPU (tests of the CPU path on a GPU machine, or an
/// operator who wants the node to leave its GPUs alone).
pub const DISABLE_ENV: &str = "NODELINK_DISABLE_GPU";

/// What the probe found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probe {
    /// The library file names that opened, per library.
    pub driver_library: Option<String>,
    pub nvrtc_library: Option<String>,
    pub cublas_library: Option<String>,
    /// The driver's CUDA version, e.g. "12.8".
    pub driver_version: Option<String>,
    pub devices: Vec<Device>,
    /// Why there is no usable GPU (no driver, cuInit failed, no device, disabled).
    pub unavailable: Option<String>,
}

/// One GPU, as seen without creating a context.
#[derive(Clone, Debug, PartialEq)]
pub struct Device {
    pub index: u32,
    pub name: String,
    pub memory_total_mb: u64,
    /// "major.minor", e.g. "9.0".
    pub compute_capability: Option<String>,
}

/// A statically linked build (`crt-static`, e.g. the musl build of `nodelink-node` for minimal
/// hosts) cannot dlopen the CUDA libraries. Known at compile time, so every GPU path behind
/// [`Probe::has_gpu`] folds away and the static binary carries no GPU code.
const STATIC_BUILD: bool = cfg!(target_feature = "crt-static");

impl Probe {
    pub fn has_gpu(&self) -> bool {
        !STATIC_BUILD && !self.devices.is_empty()
    }

    pub fn has_nvrtc(&self) -> bool {
        self.has_gpu() && self.nvrtc_library.is_some()
    }

    pub fn has_cublas(&self) -> bool {
        self.has_gpu() && self.cublas_library.is_some()
    }

    /// Why a GPU command cannot run here, for `platform_unsupported` messages.
    pub fn reason(&self) -> String {
        self.unavailable
            .clone()
            .unwrap_or_else(|| "no CUDA device".to_owned())
    }
}

/// The cached probe of this process.
pub fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(run_probe)
}

/// The GPUs for the heartbeat's `capabilities.gpus` (empty without a GPU).
pub fn gpu_inventory() -> Vec<GpuInfo> {
    probe()
        .devices
        .iter()
        .map(|d| GpuInfo {
            index: d.index,
            name: d.name.clone(),
            memory_total_mb: d.memory_total_mb,
            compute_capability: d.compute_capability.clone(),
        })
        .collect()
}

/// The first of cudarc's candidate file names for `lib` that dlopen accepts.
#[allow(unsafe_code)]
fn find_library(lib: &str) -> Option<String> {
    cudarc::get_lib_name_candidates(lib)
        .into_iter()
        .find(|name| {
            // SAFETY: loading a vendor library runs its initialisers; these are the same
            // libraries cudarc would load, opened and closed once.
            unsafe { libloading::Library::new(name) }.is_ok()
        })
}

fn run_probe() -> Probe {
    if STATIC_BUILD {
        return Probe {
            unavailable: Some(
                "this is a statically linked build, which cannot load the CUDA libraries \
                 (use the dynamically linked build on GPU hosts)"
                    .to_owned(),
            ),
            ..Probe::default()
        };
    }
    if std::env::var(DISABLE_ENV).is_ok_and(|v| v == "1") {
        return Probe {
            unavailable: Some(format!("GPU use is disabled ({DISABLE_ENV}=1)")),
            ..Probe::default()
        };
    }
    let mut probe = Probe {
        driver_library: find_library("cuda"),
        ..Probe::default()
    };
    if probe.driver_library.is_none() {
        probe.unavailable =
            Some("the CUDA driver library (libcuda.so.1) is not installed".to_owned());
        return probe;
    }
    probe.nvrtc_library = find_library("nvrtc");
    probe.cublas_library = find_library("cublas");
    // cudarc can panic on a symbol its bindings expect but an old driver lacks: contain it.
    match std::panic::catch_unwind(devices) {
        Ok(Ok((version, devices))) => {
            probe.driver_version = version;
            if devices.is_empty() {
                probe.unavailable = Some("the CUDA driver reports no device".to_owned());
            }
            probe.devices = devices;
        }
        Ok(Err(message)) => probe.unavailable = Some(message),
        Err(_) => {
            probe.unavailable =
                Some("the CUDA driver is too old for this build (a symbol is missing)".to_owned())
        }
    }
    probe
}

type Found = (Option<String>, Vec<Device>);

#[allow(unsafe_code)]
fn devices() -> Result<Found, String> {
    cu::init().map_err(|e| format!("the CUDA driver did not initialise: {e}"))?;
    let mut version: std::ffi::c_int = 0;
    // SAFETY: cuDriverGetVersion writes one int into `version`.
    let version = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }
        .result()
        .ok()
        .map(|()| format!("{}.{}", version / 1000, (version % 1000) / 10));
    let count = cu::device::get_count().map_err(|e| format!("cuDeviceGetCount failed: {e}"))?;
    let mut devices = Vec::new();
    for ordinal in 0..count.max(0) {
        let Ok(dev) = cu::device::get(ordinal) else {
            continue;
        };
        let name = cu::device::get_name(dev).unwrap_or_else(|_| format!("CUDA device {ordinal}"));
        // SAFETY: `dev` is a device handle the driver just returned.
        let total = unsafe { cu::device::total_mem(dev) }.unwrap_or(0);
        let attribute = |a| unsafe { cu::device::get_attribute(dev, a) }.ok();
        let capability = match (
            attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
        ) {
            (Some(major), Some(minor)) => Some(format!("{major}.{minor}")),
            _ => None,
        };
        devices.push(Device {
            index: u32::try_from(ordinal).unwrap_or(0),
            name,
            memory_total_mb: (total / (1024 * 1024)) as u64,
            compute_capability: capability,
        });
    }
    Ok((version, devices))
}
