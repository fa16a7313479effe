//! The scan with f16/bf16 I/O: run a case with its sequence tensors (u, delta, z, B, C)
//! and `out` in a half dtype, and the reference it is held to, the f32-I/O scan on the
//! very same half-rounded inputs. The two differ only by the rounding of `out`, plus
//! whatever the backend's arithmetic adds.

use half::{bf16, f16};
use mamba_gpu::ops::{self, ScanInputs, StateIo};
use mamba_gpu::{Backend, DType, HostSlice};

use super::cases::{ScanCase, ScanData, St};
use super::checks::{down, poison, up};
use super::{Tol, assert_close};

/// Uploads f32 values as `dtype`, rounded to nearest-even.
pub fn up_as<B: Backend>(be: &B, v: &[f32], shape: &[usize], dtype: DType) -> B::Buffer {
    let r = match dtype {
        DType::F32 => be.upload(HostSlice::F32(v), shape),
        DType::F16 => {
            let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            be.upload(HostSlice::F16(&h), shape)
        }
        DType::BF16 => {
            let h: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
            be.upload(HostSlice::BF16(&h), shape)
        }
        DType::U32 => panic!("not a float dtype"),
    };
    r.expect("upload")
}

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

/// Runs a case on `be` with I/O dtype `io`: (out widened to f32, final state if kept).
/// `out` starts as NaN in `io`, so an element the backend does not write fails.
pub fn run_scan_io<B: Backend>(
    be: &B,
    c: &ScanCase,
    x: &ScanData,
    io: DType,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let seq = c.seq_shape();
    let bc = c.bc_shape();
    let u = up_as(be, &x.u, &seq, io);
    let delta = up_as(be, &x.delta, &seq, io);
    let a = up(be, &x.a, &[c.dim, c.dstate]);
    let b = up_as(be, &x.b, &bc, io);
    let cc = up_as(be, &x.c, &bc, io);
    let d = x.d.as_ref().map(|v| up(be, v, &[c.dim]));
    let z = x.z.as_ref().map(|v| up_as(be, v, &seq, io));
    let db = x.delta_bias.as_ref().map(|v| up(be, v, &[c.dim]));
    let inputs = ScanInputs {
        u: &u,
        delta: &delta,
        a: &a,
        b: &b,
        c: &cc,
        d: d.as_ref(),
        z: z.as_ref(),
        delta_bias: db.as_ref(),
        delta_softplus: c.softplus,
        layout: c.layout,
    };
    let nan = vec![f32::NAN; seq.iter().product()];
    let mut out = up_as(be, &nan, &seq, io);
    let mut state = match c.state {
        St::Carry => Some(up(be, &x.h0, &c.state_shape())),
        St::Final => Some(poison(be, &c.state_shape())),
        St::None => None,
    };
    let st_io = match (c.state, state.as_mut()) {
        (St::Carry, Some(s)) => StateIo::Carry(s),
        (St::Final, Some(s)) => StateIo::Final(s),
        _ => StateIo::None,
    };
    ops::selective_scan(be, &inputs, st_io, &mut out).expect("selective_scan (half I/O)");
    assert_eq!(
        be.download(&out).expect("download").dtype(),
        io,
        "out keeps its dtype"
    );
    (down(be, &out), state.map(|s| down(be, &s)))
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
