//! The fused decode step (issue 13): its ops against the unfused reference ops, whole
//! decodes fused vs unfused vs the CPU reference, batched decode around the switch to
//! the unfused GEMM step, on the CPU (both precisions), wgpu (lavapipe here) and the
//! CUDA backend's CPU execution model.

mod common;

use common::Tol;
use common::fused_checks::{check_batched_decode, check_fused_model, check_fused_ops};
use mamba_gpu::CpuBackend;
use mamba_gpu::cpu::Precision;

#[test]
fn cpu_fused_ops_match_unfused() {
    check_fused_ops(&CpuBackend::new(), Tol::EXACTISH);
    check_fused_ops(&CpuBackend::with_precision(Precision::Fast), Tol::F32);
}

#[test]
fn cpu_fused_decode_matches_unfused() {
    check_fused_model(&CpuBackend::new(), 1e-6);
    check_batched_decode(&CpuBackend::new(), 1e-6);
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;
    use mamba_gpu::wgpu::WgpuBackend;

    fn backend(test: &str) -> Option<WgpuBackend> {
        common::gpu::or_skip("wgpu", test, WgpuBackend::new())
    }

    #[test]
    fn wgpu_fused_ops_match_unfused() {
        if let Some(be) = backend("fused ops") {
            check_fused_ops(&be, Tol::F32);
        }
    }

    #[test]
    fn wgpu_fused_decode_matches_unfused() {
        if let Some(be) = backend("fused decode") {
            check_fused_model(&&be, 1e-4);
            check_batched_decode(&&be, 1e-4);
        }
    }
}
