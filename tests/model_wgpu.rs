//! The whole model on the wgpu backend: the HF fixtures and the synthetic-model checks
//! of `tests/common/model_fixtures.rs` and `tests/common/model_synth.rs`. Without an
//! adapter the tests print "wgpu model tests SKIPPED" and pass, unless
//! `MAMBA_GPU_REQUIRE` names `wgpu`.
#![cfg(feature = "wgpu")]

mod common;

use common::model_fixtures::check_model_fixtures;
use common::model_synth::check_model_consistency;
use mamba_gpu::wgpu::WgpuBackend;

fn backend() -> Option<WgpuBackend> {
    common::gpu::or_skip("wgpu", "wgpu model tests", WgpuBackend::new())
}

#[test]
fn hf_fixtures_match_transformers_wgpu() {
    if let Some(be) = backend() {
        check_model_fixtures(&be);
    }
}

#[test]
fn synthetic_models_and_decode_path_wgpu() {
    if let Some(be) = backend() {
        check_model_consistency(&be, 1e-4);
    }
}

#[test]
fn interleaved_states_decode_as_alone_wgpu() {
    use common::decode_checks::{check_interleaved_states, small_model};
    if let Some(be) = backend() {
        check_interleaved_states(&small_model(&be, 3, mamba_gpu::DType::F32), 1e-6);
    }
}
