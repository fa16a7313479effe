//! The scan with f16/bf16 I/O: run a case with its sequence tensors (u, delta, z, B, C)
//! and `out` in a half dtype, and the reference it is held to, the f32-I/O scan on the
//! very same half-rounded inputs. The two differ only by the rounding of `out`, plus
//! whatever the backend's arithmetic adds.

use half::{bf16, f16};
use mamba_gpu::{Backend, DType};

use super::cases::{ScanCase, ScanData};
use super::checks::run_scan_io;
use super::{Tol, assert_close};

/// `v` rounded to `dtype` and widened back: the values a half-I/O scan actually reads.
pub fn round_through(v: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => v.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
        DType::BF16 => v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
        _ => v.to_vec(),
    }
}

/// The case's data with the sequence tensors rounded through `dtype`; A, D, delta_bias
/// and the initial state stay f32, as the scan takes them.
pub fn rounded(x: &ScanData, dtype: DType) -> ScanData {
    let r = |v: &[f32]| round_through(v, dtype);
    ScanData {
        u: r(&x.u),
        delta: r(&x.delta),
        a: x.a.clone(),
        b: r(&x.b),
        c: r(&x.c),
        d: x.d.clone(),
        z: x.z.as_deref().map(r),
        delta_bias: x.delta_bias.clone(),
        h0: x.h0.clone(),
    }
}

/// The tolerance of a half-I/O scan against the f32 scan on the same inputs: the
/// rounding of `out` (half an ulp: 2^-11 relative for f16, 2^-8 for bf16) with margin,
/// widened by `arith` for a backend whose arithmetic differs from the reference's.
pub fn io_tol(io: DType, arith: Tol) -> Tol {
    let rel = match io {
        DType::F16 => 1e-3,
        DType::BF16 => 8e-3,
        _ => 0.0,
    };
    Tol {
        rel: rel + arith.rel,
        abs: 1e-4_f32.max(arith.abs),
    }
}

/// Worst `|got − want| / (|got| + |want|)` (the `Tol::rel` measure) over elements above
/// `floor`, and the worst absolute error overall.
pub fn worst(got: &[f32], want: &[f32], floor: f32) -> (f32, f32) {
    let (mut rel, mut abs) = (0f32, 0f32);
    for (&g, &w) in got.iter().zip(want) {
        let e = (g - w).abs();
        abs = abs.max(e);
        if w.abs() > floor {
            rel = rel.max(e / (g.abs() + w.abs()));
        }
    }
    (rel, abs)
}

/// Half-I/O scan on `be` against the f32-I/O scan on `reference` over the same rounded
/// inputs; returns the worst (rel, abs) error of `out`. The state (f32) is held to
/// `arith`.
pub fn check_scan_io<B: Backend, R: Backend>(
    be: &B,
    reference: &R,
    c: &ScanCase,
    io: DType,
    arith: Tol,
) -> (f32, f32) {
    let x = rounded(&ScanData::new(c), io);
    let (out, st) = run_scan_io(be, c, &x, io);
    let (want, want_st) = run_scan_io(reference, c, &x, DType::F32);
    let what = format!("{} {io:?}-I/O scan", be.name());
    assert_close(&format!("{what} out {c:?}"), &out, &want, io_tol(io, arith));
    if let (Some(s), Some(w)) = (st, want_st) {
        assert_close(&format!("{what} state {c:?}"), &s, &w, arith);
    }
    worst(&out, &want, 1e-3)
}
