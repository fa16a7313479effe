//! The CUDA backend through the shared op suite (`tests/common/ops_suite.rs`), against
//! the CPU reference, plus compiling every kernel up front. Without a usable NVIDIA GPU
//! (no driver, no NVRTC, no device) each test prints "cuda tests SKIPPED: ..." and
//! passes, unless `MAMBA_REQUIRE` names `cuda` (e.g. `MAMBA_REQUIRE=cuda` or
//! `=wgpu,cuda`), which makes the skip a failure.
#![cfg(feature = "cuda")]

mod common;

use common::checks::check_write;
use common::{gpu, ops_suite};
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
fn scan_matches_cpu() {
    let Some(be) = backend() else { return };
    ops_suite::scan(&be);
}

#[test]
fn scan_layouts_and_bc_kinds() {
    let Some(be) = backend() else { return };
    ops_suite::scan_layouts_and_bc_kinds(&be);
}

#[test]
fn scan_million_steps() {
    let Some(be) = backend() else { return };
    ops_suite::scan_million_steps(&be);
}

#[test]
fn scan_split_sequence_carries_state() {
    let Some(be) = backend() else { return };
    ops_suite::scan_split_sequence_carries_state(&be);
}

#[test]
fn step_matches_cpu() {
    let Some(be) = backend() else { return };
    ops_suite::step(&be);
}

#[test]
fn conv_matches_cpu() {
    let Some(be) = backend() else { return };
    ops_suite::conv(&be);
}

#[test]
fn conv_update_matches_cpu() {
    let Some(be) = backend() else { return };
    ops_suite::conv_update(&be);
}

#[test]
fn matmul_matches_cpu() {
    let Some(be) = backend() else { return };
    ops_suite::matmul(&be);
}

#[test]
fn rms_norm_matches_cpu() {
    let Some(be) = backend() else { return };
    ops_suite::rms_norm(&be);
}

#[test]
fn embedding_matches_cpu() {
    let Some(be) = backend() else { return };
    ops_suite::embedding(&be);
}

#[test]
fn embedding_out_of_range_ids_write_zeros() {
    let Some(be) = backend() else { return };
    ops_suite::embedding_out_of_range_ids_write_zeros(&be);
}

#[test]
fn elementwise_matches_cpu() {
    let Some(be) = backend() else { return };
    ops_suite::elementwise(&be);
}

#[test]
fn argmax_matches_cpu() {
    let Some(be) = backend() else { return };
    ops_suite::argmax(&be);
}

#[test]
fn argmax_ties_and_nan() {
    let Some(be) = backend() else { return };
    ops_suite::argmax_ties_and_nan(&be);
}

#[test]
fn copy_matches_cpu() {
    let Some(be) = backend() else { return };
    ops_suite::copy(&be);
}

#[test]
fn upload_download_roundtrip() {
    let Some(be) = backend() else { return };
    ops_suite::upload_download_roundtrip(&be);
}

/// Many kernels launched on the stream before one flush.
#[test]
fn recorded_ops_flush_once() {
    let Some(be) = backend() else { return };
    ops_suite::recorded_ops_flush_once(&be);
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
