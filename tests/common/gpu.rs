//! Hardware a test needs, or a skip that shows.
//!
//! One convention for "this must be present": `MAMBA_REQUIRE`, a comma list of
//!
//! * `wgpu`: a wgpu adapter (Vulkan, Metal, DX12; a GL adapter does not count),
//! * `wgpu-subgroups`: the subgroup variant of the wgpu scan really runs,
//! * `nvrtc`: libnvrtc loads (the CUDA compile checks),
//! * `cuda`: a CUDA device.
//!
//! Without the hardware a test calls [`skip`] and passes, unless `MAMBA_REQUIRE` names
//! it, which makes the skip a failure: CI sets it so that a broken driver cannot pass as
//! "skipped". Skip banners and the adapter line are written to the stderr handle itself,
//! not through `eprintln!`, which the test harness captures and a plain `cargo test` log
//! would never show.
//!
//! Included by `mod common` and, alone, by tests that need nothing else
//! (`#[path = "common/gpu.rs"] mod gpu;`).
#![allow(dead_code)]

use std::fmt::Display;
use std::io::Write;

/// The variables `MAMBA_REQUIRE` replaced; set, they would silently require nothing.
const OBSOLETE: &[&str] = &["MAMBA_GPU_REQUIRE", "MAMBA_REQUIRE_NVRTC"];

/// Does `MAMBA_REQUIRE` name `what`? Panics if an obsolete variable is set instead.
pub fn required(what: &str) -> bool {
    for old in OBSOLETE {
        if std::env::var_os(old).is_some() {
            panic!("{old} is no longer read: set MAMBA_REQUIRE=wgpu,nvrtc,cuda (a comma list)");
        }
    }
    std::env::var("MAMBA_REQUIRE").is_ok_and(|v| v.split(',').any(|s| s.trim() == what))
}

/// Writes `line` to stderr past the test harness' capture.
pub fn say(line: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A test that cannot run here: a failure when `MAMBA_REQUIRE` names `what`, otherwise a
/// banner "<test> SKIPPED: <why>" that reaches the log. The caller returns after it.
pub fn skip(what: &str, test: &str, why: impl Display) {
    if required(what) {
        panic!("MAMBA_REQUIRE names {what}, but {test} cannot run: {why}");
    }
    say(format!("{test} SKIPPED: {why}"));
}

/// A GPU backend a test can describe and vet.
pub trait Gpu {
    /// Checked on every backend made: why it does not count as `what` (a wgpu GL adapter).
    fn refused(&self) -> Option<String> {
        None
    }
    /// Printed once per test binary and backend kind.
    fn describe_once(&self) {}
}

/// The backend if `made` succeeded (its adapter described once per test binary), or a
/// [`skip`] and `None`.
pub fn or_skip<T: Gpu, E: Display>(what: &str, test: &str, made: Result<T, E>) -> Option<T> {
    match made {
        Ok(be) => {
            be.describe_once();
            if let Some(why) = be.refused().filter(|_| required(what)) {
                panic!("MAMBA_REQUIRE names {what}, but {why}");
            }
            Some(be)
        }
        Err(e) => {
            skip(what, test, e);
            None
        }
    }
}

#[cfg(feature = "wgpu")]
impl Gpu for mamba_gpu::wgpu::WgpuBackend {
    fn refused(&self) -> Option<String> {
        let info = self.adapter_info();
        (info.backend == wgpu::Backend::Gl).then(|| {
            format!(
                "the adapter `{}` is OpenGL (WgpuOptions::allow_gl); the kernels are \
                 tested on Vulkan, Metal and DX12",
                info.name
            )
        })
    }

    fn describe_once(&self) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let i = self.adapter_info();
            let kind = match i.device_type {
                wgpu::DeviceType::Cpu => "software",
                wgpu::DeviceType::Other => "unknown kind",
                _ => "hardware",
            };
            say(format!(
                "wgpu adapter: {} ({:?}, {kind}: {:?}; driver {} {}), subgroup sizes {}..{}, \
                 scan path: {}",
                i.name,
                i.backend,
                i.device_type,
                i.driver,
                i.driver_info,
                i.subgroup_min_size,
                i.subgroup_max_size,
                if self.uses_subgroup_scan() {
                    "subgroup"
                } else {
                    "shared memory"
                }
            ));
        });
    }
}

#[cfg(feature = "cuda")]
impl Gpu for mamba_gpu::cuda::CudaBackend {
    fn describe_once(&self) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| say(format!("cuda device: {}", self.device_name())));
    }
}

/// A run-time [`mamba_gpu::Device`] is vetted and described as the backend it holds.
impl Gpu for mamba_gpu::Device {
    fn refused(&self) -> Option<String> {
        match self {
            #[cfg(feature = "wgpu")]
            mamba_gpu::Device::Wgpu(be) => be.refused(),
            _ => None,
        }
    }

    fn describe_once(&self) {
        match self {
            #[cfg(feature = "wgpu")]
            mamba_gpu::Device::Wgpu(be) => be.describe_once(),
            #[cfg(feature = "cuda")]
            mamba_gpu::Device::Cuda(be) => be.describe_once(),
            _ => {}
        }
    }
}
