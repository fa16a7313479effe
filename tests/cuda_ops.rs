//! The CUDA backend through the shared op suite (`tests/common/ops_suite.rs`), against
//! the CPU reference, plus compiling every kernel up front. Without a usable NVIDIA GPU
//! (no driver, no NVRTC, no device) each test prints "cuda tests SKIPPED: ..." and
//! passes, unless `MAMBA_REQUIRE` names `cuda` (e.g. `MAMBA_REQUIRE=cuda` or
//! `=wgpu,cuda`), which makes the skip a failure.
#![cfg(feature = "cuda")]

mod common;

use common::checks::check_write;
use common::gpu;
use mamba_gpu::cuda::CudaBackend;

/// The backend on device 0, or `None` (after saying why) when this machine has none.
fn backend() -> Option<CudaBackend> {
    let be = gpu::or_skip("cuda", "cuda tests", CudaBackend::new(0))?;
    eprintln!(
        "cuda: {} (sm_{}{}), cuBLAS {}",
        be.device_name(),
        be.compute_capability().0,
        be.compute_capability().1,
        if be.has_cublas() { "found" } else { "missing" }
    );
    Some(be)
}

op_suite_tests!(gpu CudaBackend, backend());

#[test]
fn precompile_all_kernels() {
    let Some(be) = backend() else { return };
    be.precompile().expect("every kernel compiles and loads");
}

#[test]
fn write_into_existing_buffers() {
    let Some(be) = backend() else { return };
    check_write(&be);
}

#[test]
fn scan_matches_mamba_ssm_fixtures() {
    let Some(be) = backend() else { return };
    common::fixtures::check_scan_fixtures(&be);
}

#[test]
fn step_matches_mamba_ssm_fixtures() {
    let Some(be) = backend() else { return };
    common::fixtures::check_step_fixtures(&be);
}
