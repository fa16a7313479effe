//! The CPU backend's fast mode (f32 scan arithmetic) through the same shared checks the
//! GPU backends run, against the exact (f64) reference.

mod common;

use common::Tol;
use common::cases::{Bc, ScanCase, St};
use common::checks::{StepCase, check_scan, check_step, scan_cases};
use mamba_gpu::ops::Layout;
use mamba_gpu::{CpuBackend, Precision};

#[test]
fn fast_scan_matches_exact_reference() {
    let be = CpuBackend::with_precision(Precision::Fast);
    for c in scan_cases(true) {
        check_scan(&be, &c, Tol::F32);
    }
}

/// Shapes that take the eight-channel lane path (dim % 8 == 0, B/C shared by each block
/// of eight), and ones next to it that must fall back.
#[test]
fn fast_lane_scan_matches_exact_reference() {
    let be = CpuBackend::with_precision(Precision::Fast);
    let base = ScanCase::full(2, 16, 300, 16);
    let cases = [
        base,
        ScanCase {
            layout: Layout::TokenMajor,
            ..base
        },
        ScanCase {
            state: St::Final,
            d: false,
            z: false,
            ..base
        },
        ScanCase {
            state: St::None,
            delta_bias: false,
            softplus: false,
            ..base
        },
        ScanCase {
            bc: Bc::Grouped(2),
            layout: Layout::TokenMajor,
            dstate: 5,
            ..base
        },
        ScanCase {
            bc: Bc::Grouped(4),
            ..base
        }, // 4 channels per group: fallback
        ScanCase {
            bc: Bc::Invariant,
            ..base
        }, // per-channel B/C: fallback
        ScanCase { dim: 12, ..base }, // 12 % 8 != 0: fallback
        ScanCase {
            batch: 3,
            dim: 24,
            len: 1,
            dstate: 1,
            ..base
        },
    ];
    for c in cases {
        check_scan(&be, &c, Tol::F32);
    }
}

#[test]
fn fast_step_matches_exact_reference() {
    let be = CpuBackend::with_precision(Precision::Fast);
    for (i, &(batch, dim, dstate, groups)) in
        // dim % 8 == 0 with N in {1, 4, 8, 16} takes the lane path; the rest the loops.
        [
            (1, 1, 1, 0),
            (2, 8, 16, 0),
            (3, 12, 4, 3),
            (1, 768, 16, 1),
            (2, 16, 8, 2),
            (1, 32, 1, 0),
            (3, 24, 4, 3),
        ]
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

/// The fast token-major conv (f32 taps, channels as the inner loop) against the exact one,
/// across state modes, widths, sequences shorter than the window, and partial blocks.
#[test]
fn fast_conv_matches_exact_reference() {
    use common::checks::{ConvCase, check_conv};
    let be = CpuBackend::with_precision(Precision::Fast);
    let mut seed = 0;
    for &(batch, dim, len) in &[(1, 1, 1), (2, 70, 2), (1, 130, 37), (3, 64, 5)] {
        for width in 2..=4 {
            for state in [St::None, St::Final, St::Carry] {
                for layout in [Layout::TokenMajor, Layout::ChannelMajor] {
                    seed += 1;
                    let c = ConvCase {
                        batch,
                        dim,
                        len,
                        width,
                        bias: seed % 2 == 0,
                        silu: seed % 3 != 0,
                        layout,
                        state,
                        seed,
                    };
                    check_conv(&be, &c, Tol::F32);
                }
            }
        }
    }
}

/// The fast (f32) conv decode step against the exact one, with and without bias and
/// SiLU, over widths 2–4 and 6 and enough channels to split across threads (and blocks
/// of channels that run across two sequences).
#[test]
fn fast_conv_update_matches_exact_reference() {
    use common::checks::{ConvCase, check_conv_update};
    let be = CpuBackend::with_precision(Precision::Fast);
    let mut seed = 100;
    for &(batch, dim) in &[(1, 1), (2, 70), (1, 1536), (3, 640)] {
        for width in [2, 3, 4, 6] {
            seed += 1;
            let c = ConvCase {
                batch,
                dim,
                len: 1,
                width,
                bias: seed % 2 == 0,
                silu: seed % 3 != 0,
                layout: Layout::TokenMajor,
                state: St::Carry,
                seed,
            };
            check_conv_update(&be, &c, Tol::F32);
        }
    }
}
