//! The CPU backend's fast mode (f32 scan arithmetic) through the same shared checks the
//! GPU backends run, against the exact (f64) reference.

mod common;

use common::Tol;
use common::checks::{StepCase, check_scan, check_step, scan_cases};
use mamba_gpu::{CpuBackend, Precision};

#[test]
fn fast_scan_matches_exact_reference() {
    let be = CpuBackend::with_precision(Precision::Fast);
    for c in scan_cases(true) {
        check_scan(&be, &c, Tol::F32);
    }
}

#[test]
fn fast_step_matches_exact_reference() {
    let be = CpuBackend::with_precision(Precision::Fast);
    for (i, &(batch, dim, dstate, groups)) in
        [(1, 1, 1, 0), (2, 8, 16, 0), (3, 12, 4, 3), (1, 768, 16, 1)]
            .iter()
            .enumerate()
    {
        for flags in 0..4u32 {
            let c = StepCase {
                batch,
                dim,
                dstate,
                groups,
                d: flags & 1 != 0,
                z: flags & 2 != 0,
                dt_bias: flags != 0,
                softplus: flags != 1,
                seed: (i * 4) as u64 + flags as u64,
            };
            check_step(&be, &c, Tol::F32);
        }
    }
}
