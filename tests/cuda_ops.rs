//! The CUDA backend through every shared check of `tests/common`, against the CPU
//! reference. Without a usable NVIDIA GPU (no driver, no NVRTC, no device) each test
//! prints "cuda tests SKIPPED: ..." and passes, unless `MAMBA_GPU_REQUIRE` names `cuda`
//! (e.g. `MAMBA_GPU_REQUIRE=cuda` or `=wgpu,cuda`), which makes the skip a failure.
#![cfg(feature = "cuda")]

mod common;

use common::Tol;
use common::cases::{Bc, ScanCase, St};
use common::checks::*;
use mamba_gpu::DType;
use mamba_gpu::cuda::CudaBackend;
use mamba_gpu::ops::{Elementwise, Layout};

fn required() -> bool {
    std::env::var("MAMBA_GPU_REQUIRE").is_ok_and(|v| v.split(',').any(|s| s.trim() == "cuda"))
}

/// The backend on device 0, or `None` (after saying why) when this machine has none.
fn backend() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(be) => {
            eprintln!(
                "cuda: {} (sm_{}{}), cuBLAS {}",
                be.device_name(),
                be.compute_capability().0,
                be.compute_capability().1,
                if be.has_cublas() { "found" } else { "missing" }
            );
            Some(be)
        }
        Err(e) if required() => {
            panic!("MAMBA_GPU_REQUIRE=cuda but the CUDA backend is unavailable: {e}")
        }
        Err(e) => {
            eprintln!("cuda tests SKIPPED: {e}");
            None
        }
    }
}

/// Matmul sums k products of N(0,1) values (|out| ~ sqrt(k)) in another order than
/// the CPU: an absolute floor of 1e-4 covers that at k <= 1024.
const MATMUL_TOL: Tol = Tol {
    rel: 1e-4,
    abs: 1e-4,
};

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
fn scan_all_cases() {
    let Some(be) = backend() else { return };
    for c in scan_cases(true) {
        check_scan(&be, &c, Tol::F32);
    }
}

#[test]
fn scan_layouts_and_bc_kinds() {
    let Some(be) = backend() else { return };
    // Beyond the shared cases: channel counts that leave partial blocks of 4 channels,
    // groups that do / do not align with them, long sequences over several chunks,
    // odd lengths (scalar tail of the float4 path), large dstate (several state tiles).
    for layout in [Layout::ChannelMajor, Layout::TokenMajor] {
        for bc in [Bc::Invariant, Bc::Variable, Bc::Grouped(2), Bc::Grouped(4)] {
            for state in [St::None, St::Final, St::Carry] {
                for &(b, d, l, n) in &[(2, 8, 300, 16), (1, 12, 1027, 5), (1, 4, 64, 40)] {
                    let c = ScanCase {
                        bc,
                        layout,
                        state,
                        ..ScanCase::full(b, d, l, n)
                    };
                    check_scan(&be, &c, Tol::F32);
                }
            }
        }
    }
}

#[test]
fn step_cases() {
    let Some(be) = backend() else { return };
    for &(batch, dim, dstate, groups) in &[
        (1, 1, 1, 0),
        (1, 16, 16, 0),
        (3, 24, 16, 2),
        (2, 10, 5, 1),
        (2, 64, 64, 4),
    ] {
        for (d, z, dt_bias, softplus) in [(true, true, true, true), (false, false, false, false)] {
            let c = StepCase {
                batch,
                dim,
                dstate,
                groups,
                d,
                z,
                dt_bias,
                softplus,
                seed: (batch * 97 + dim * 13 + dstate) as u64,
            };
            check_step(&be, &c, Tol::F32);
        }
    }
}

#[test]
fn conv_both_layouts_all_state_modes() {
    let Some(be) = backend() else { return };
    for layout in [Layout::ChannelMajor, Layout::TokenMajor] {
        for state in [St::None, St::Final, St::Carry] {
            for &(batch, dim, len, width) in
                &[(1, 1, 1, 2), (2, 5, 3, 4), (2, 8, 64, 4), (1, 3, 257, 3)]
            {
                for (bias, silu) in [(true, true), (false, false)] {
                    let c = ConvCase {
                        batch,
                        dim,
                        len,
                        width,
                        bias,
                        silu,
                        layout,
                        state,
                        seed: (batch * 7 + dim * 31 + len) as u64,
                    };
                    check_conv(&be, &c, Tol::F32);
                }
            }
        }
    }
}

#[test]
fn conv_update() {
    let Some(be) = backend() else { return };
    for &(batch, dim, width) in &[(1, 1, 2), (2, 16, 4), (3, 7, 3)] {
        for (bias, silu) in [(true, true), (false, false)] {
            let c = ConvCase {
                batch,
                dim,
                len: 1,
                width,
                bias,
                silu,
                layout: Layout::ChannelMajor,
                state: St::Carry,
                seed: (batch * 5 + dim + width) as u64,
            };
            check_conv_update(&be, &c, Tol::F32);
        }
    }
}

#[test]
fn matmul_all_weight_dtypes() {
    let Some(be) = backend() else { return };
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        // m = 1 and m <= 8 take the matmul_rows kernel, larger m cuBLAS; k % 8 != 0
        // takes the scalar tail.
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 64, 256),
            (3, 50, 37),
            (8, 33, 128),
            (9, 40, 64),
            (64, 96, 200),
        ] {
            for bias in [false, true] {
                check_matmul(&be, m, n, k, bias, dtype, MATMUL_TOL);
            }
        }
    }
}

#[test]
fn rms_norm_with_and_without_residual() {
    let Some(be) = backend() else { return };
    for &(rows, dim) in &[(1, 1), (1, 64), (7, 768), (3, 1000)] {
        for residual in [false, true] {
            check_rms_norm(&be, rows, dim, residual, Tol::F32);
        }
    }
}

#[test]
fn embedding_all_table_dtypes() {
    let Some(be) = backend() else { return };
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        check_embedding(&be, 1, 10, 8, dtype);
        check_embedding(&be, 37, 100, 65, dtype);
    }
}

#[test]
fn elementwise_all_ops() {
    let Some(be) = backend() else { return };
    for op in [
        Elementwise::Silu,
        Elementwise::Softplus,
        Elementwise::Add,
        Elementwise::Mul,
        Elementwise::MulSilu,
    ] {
        for len in [1, 1000, 4097] {
            check_elementwise(&be, op, len, Tol::F32);
        }
    }
}

#[test]
fn argmax_rows() {
    let Some(be) = backend() else { return };
    for &(rows, cols) in &[(1, 1), (1, 100), (5, 257), (2, 50_280)] {
        check_argmax(&be, rows, cols);
    }
}

#[test]
fn copy_range() {
    let Some(be) = backend() else { return };
    check_copy(&be);
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
