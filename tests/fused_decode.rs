//! The fused decode step (issue 13): its ops against the unfused reference ops, whole
//! decodes fused vs unfused vs the CPU reference, batched decode around the switch to
//! the unfused GEMM step, on the CPU (both precisions), wgpu (lavapipe here) and the
//! CUDA backend's CPU execution model.

mod common;

use common::Tol;
use common::fused_checks::{
    check_batched_decode, check_fused_model, check_fused_ops, check_matmul_accumulate,
};
use mamba_gpu::CpuBackend;
use mamba_gpu::cpu::Precision;

#[test]
fn cpu_fused_ops_match_unfused() {
    check_matmul_accumulate(&CpuBackend::with_precision(Precision::Fast), Tol::EXACTISH);
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
            check_matmul_accumulate(&be, Tol::F32);
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

/// The CUDA backend's fused kernels (`kernels/decode_step.cu`) and its accumulating
/// matmul (the decode kernel, the modelled cuBLAS path, and the kernel that stands in
/// when libcublas is missing) on the CPU execution model.
#[cfg(feature = "cuda")]
mod cuda_cpu {
    use super::*;
    use mamba_gpu::Error;
    use mamba_gpu::cuda::{CudaCpuBackend, CudaCpuOptions};
    use std::path::PathBuf;

    fn make(cublas: bool) -> Option<CudaCpuBackend> {
        make_with(CudaCpuOptions {
            cublas,
            ..Default::default()
        })
    }

    fn make_with(o: CudaCpuOptions) -> Option<CudaCpuBackend> {
        let opts = CudaCpuOptions {
            build_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda-cpu")),
            ..o
        };
        match CudaCpuBackend::new(opts) {
            Ok(be) => Some(be),
            Err(e @ Error::BackendUnavailable { .. })
                if std::env::var("MAMBA_CUDA_CPU").as_deref() == Ok("skip") =>
            {
                eprintln!("cuda-cpu test SKIPPED (MAMBA_CUDA_CPU=skip): {e}");
                None
            }
            Err(e) => panic!("the CPU execution model is unavailable: {e}"),
        }
    }

    #[test]
    fn cuda_cpu_matmul_accumulates() {
        for cublas in [true, false] {
            if let Some(be) = make(cublas) {
                check_matmul_accumulate(&be, Tol::F32);
            }
        }
    }

    #[test]
    fn cuda_cpu_fused_ops_match_unfused() {
        if let Some(be) = make(true) {
            check_fused_ops(&be, Tol::F32);
        }
    }

    /// mixer_in's block reduction and the warp shuffles under the other schedules, and
    /// every fused kernel under AddressSanitizer + UBSan (exact-size allocations: an
    /// access past any tensor is reported).
    #[test]
    fn cuda_cpu_fused_ops_other_schedules_and_asan() {
        use mamba_gpu::cuda::Schedule;
        for schedule in [
            Schedule::Reverse,
            Schedule::LowestFirst,
            Schedule::HighestFirst,
            Schedule::Random(0x5eed),
        ] {
            let Some(be) = make_with(CudaCpuOptions {
                schedule,
                ..Default::default()
            }) else {
                return;
            };
            check_fused_ops(&be, Tol::F32);
        }
        let Some(be) = make_with(CudaCpuOptions {
            schedule: Schedule::Random(11),
            sanitize: true,
            cublas: false,
            ..Default::default()
        }) else {
            return;
        };
        check_fused_ops(&be, Tol::F32);
        check_matmul_accumulate(&be, Tol::F32);
    }

    #[test]
    fn cuda_cpu_fused_decode_matches_unfused() {
        if let Some(be) = make(true) {
            check_fused_model(&&be, 1e-4);
            check_batched_decode(&&be, 1e-4);
        }
    }
}
