//! The CUDA scan with f16/bf16 I/O (`selective_scan_f16` / `_bf16`) against the CPU
//! reference: the exact f32-I/O scan on the same half-rounded inputs, held to the f32
//! tolerance plus the rounding of `out`.
//!
//! Without a usable NVIDIA GPU each test prints "cuda tests SKIPPED: ..." and passes,
//! unless `MAMBA_REQUIRE` names `cuda`, which makes the skip a failure.
#![cfg(feature = "cuda")]

mod common;

use common::Tol;
use common::cases::{Bc, ScanCase, St};
use common::checks::scan_cases;
use common::half_io::check_scan_io;
use mamba_gpu::cuda::CudaBackend;
use mamba_gpu::ops::Layout;
use mamba_gpu::{CpuBackend, DType};

/// The backend on device 0, or `None` (after saying why) when this machine has none.
fn backend() -> Option<CudaBackend> {
    let be = common::gpu::or_skip("cuda", "cuda tests", CudaBackend::new(0))?;
    eprintln!(
        "cuda: {} (sm_{}{})",
        be.device_name(),
        be.compute_capability().0,
        be.compute_capability().1
    );
    Some(be)
}

/// Runs every case in both half dtypes and prints the worst errors.
fn check_all(be: &CudaBackend, cases: &[ScanCase]) {
    let cpu = CpuBackend::new();
    for io in [DType::F16, DType::BF16] {
        let mut w = (0f32, 0f32);
        for c in cases {
            let e = check_scan_io(be, &cpu, c, io, Tol::F32);
            w = (w.0.max(e.0), w.1.max(e.1));
        }
        eprintln!(
            "cuda {io:?} I/O vs cpu f32 I/O: worst rel {:.3e}, abs {:.3e}",
            w.0, w.1
        );
    }
}

#[test]
fn half_io_shared_cases() {
    let Some(be) = backend() else { return };
    check_all(&be, &scan_cases(true));
}

/// The kernel's paths: 16-byte vector loads/stores of 8 halves (ChannelMajor with L a
/// multiple of 8) and the scalar path (TokenMajor, or L % 8 != 0, e.g. 300 where f32
/// still vectorises and halves do not); lengths around the 512-step chunk and the
/// 8-step tail; B/C staged in shared memory (one group per block of 4 channels) or
/// read per row; partial channel blocks; several 8-state tiles.
#[test]
fn half_io_paths() {
    let Some(be) = backend() else { return };
    let mut cases = Vec::new();
    for layout in [Layout::ChannelMajor, Layout::TokenMajor] {
        for bc in [Bc::Invariant, Bc::Variable, Bc::Grouped(2), Bc::Grouped(4)] {
            for state in [St::None, St::Final, St::Carry] {
                for &(b, d, l, n) in &[
                    (2, 8, 512, 16),
                    (1, 12, 300, 5),
                    (1, 4, 1027, 40),
                    (2, 6, 513, 16),
                    (1, 8, 2048, 16),
                ] {
                    if let Bc::Grouped(g) = bc
                        && d % g != 0
                    {
                        continue;
                    }
                    cases.push(ScanCase {
                        bc,
                        layout,
                        state,
                        ..ScanCase::full(b, d, l, n)
                    });
                }
            }
        }
    }
    let base = ScanCase::full(1, 16, 1024, 16);
    cases.push(ScanCase {
        d: false,
        z: false,
        delta_bias: false,
        softplus: false,
        ..base
    });
    cases.push(ScanCase {
        z: false,
        state: St::None,
        ..base
    });
    check_all(&be, &cases);
}
