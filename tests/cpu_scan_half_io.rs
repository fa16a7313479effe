//! The selective scan with f16/bf16 I/O on the CPU backend, and the front door's dtype
//! rules for it.
//!
//! Inputs are generated in f32 and rounded to the half dtype; the reference is the
//! f32-I/O scan on those rounded values. The CPU computes in the same arithmetic either
//! way, so its half-I/O `out` must be exactly the reference rounded to nearest-even,
//! and its f32 state exactly the reference's.

mod common;

use common::Tol;
use common::cases::{Bc, ScanCase, ScanData, St};
use common::checks::run_scan_io;
use common::checks::scan_cases;
use common::half_io::{check_scan_io, round_through, rounded};
use mamba_gpu::ops::{self, Layout, ScanInputs, StateIo};
use mamba_gpu::{Backend, CpuBackend, CpuBuffer, DType, Error, HostSlice, Precision};

const HALVES: [DType; 2] = [DType::F16, DType::BF16];

/// The shared scan cases (L = 1, grouped and time-invariant B/C, TokenMajor, with and
/// without z / D / delta_bias / softplus, every state mode), plus lengths around the
/// CUDA kernel's 512-step chunk and its 8-step vector loads, and shapes that take the
/// fast CPU path's eight-channel lanes.
fn cases() -> Vec<ScanCase> {
    let mut v = scan_cases(false);
    for len in [8, 511, 512, 513] {
        v.push(ScanCase::full(1, 3, len, 4));
    }
    let lanes = ScanCase::full(2, 16, 300, 16);
    v.push(lanes);
    v.push(ScanCase {
        bc: Bc::Grouped(2),
        layout: Layout::TokenMajor,
        state: St::Final,
        z: false,
        ..lanes
    });
    v.push(ScanCase {
        bc: Bc::Invariant,
        d: false,
        delta_bias: false,
        state: St::None,
        ..lanes
    });
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn half_io_is_the_f32_scan_rounded_once() {
    for precision in [Precision::Exact, Precision::Fast] {
        let be = CpuBackend::with_precision(precision);
        for io in HALVES {
            for c in cases() {
                let x = rounded(&ScanData::new(&c), io);
                let (out, st) = run_scan_io(&be, &c, &x, io);
                let (want, want_st) = run_scan_io(&be, &c, &x, DType::F32);
                assert!(
                    bits(&out) == bits(&round_through(&want, io)),
                    "{precision:?} {io:?} out is not the f32 out rounded to nearest-even: {c:?}"
                );
                assert!(
                    st.as_deref().map(bits) == want_st.as_deref().map(bits),
                    "{precision:?} {io:?} state differs from the f32-I/O state: {c:?}"
                );
            }
        }
    }
}

#[test]
fn half_io_within_tolerance_of_exact_reference() {
    let exact = CpuBackend::new();
    let fast = CpuBackend::with_precision(Precision::Fast);
    for io in HALVES {
        let (mut e_worst, mut f_worst) = ((0f32, 0f32), (0f32, 0f32));
        for c in cases() {
            let e = check_scan_io(&exact, &exact, &c, io, Tol::EXACTISH);
            let f = check_scan_io(&fast, &exact, &c, io, Tol::F32);
            e_worst = (e_worst.0.max(e.0), e_worst.1.max(e.1));
            f_worst = (f_worst.0.max(f.0), f_worst.1.max(f.1));
        }
        eprintln!(
            "{io:?} I/O vs exact f32 I/O: exact worst rel {:.3e} abs {:.3e}; \
             fast worst rel {:.3e} abs {:.3e}",
            e_worst.0, e_worst.1, f_worst.0, f_worst.1
        );
    }
}

// ---------------------------------------------------------------------------------------
// The front door: one I/O dtype for u, delta, z, B, C and out; A, D, delta_bias and the
// state f32.

fn up(v: f32, shape: &[usize], dtype: DType) -> CpuBuffer {
    let n: usize = shape.iter().product();
    common::checks::up_as(&CpuBackend::new(), &vec![v; n], shape, dtype)
}

/// A valid problem (batch 2, dim 4, L 5, N 3) with every optional tensor, all sequence
/// tensors in `io`.
struct Problem {
    u: CpuBuffer,
    delta: CpuBuffer,
    a: CpuBuffer,
    b: CpuBuffer,
    c: CpuBuffer,
    d: CpuBuffer,
    z: CpuBuffer,
    bias: CpuBuffer,
    state: CpuBuffer,
    out: CpuBuffer,
}

fn problem(io: DType) -> Problem {
    let seq = [2, 4, 5];
    Problem {
        u: up(0.5, &seq, io),
        delta: up(0.25, &seq, io),
        a: up(-0.5, &[4, 3], DType::F32),
        b: up(1.0, &[2, 3, 5], io),
        c: up(1.0, &[2, 3, 5], io),
        d: up(1.0, &[4], DType::F32),
        z: up(1.0, &seq, io),
        bias: up(0.1, &[4], DType::F32),
        state: up(0.0, &[2, 4, 3], DType::F32),
        out: up(0.0, &seq, io),
    }
}

fn run(p: &mut Problem) -> mamba_gpu::Result<()> {
    let inputs = ScanInputs {
        u: &p.u,
        delta: &p.delta,
        a: &p.a,
        b: &p.b,
        c: &p.c,
        d: Some(&p.d),
        z: Some(&p.z),
        delta_bias: Some(&p.bias),
        delta_softplus: true,
        layout: Layout::ChannelMajor,
    };
    ops::selective_scan(
        &CpuBackend::new(),
        &inputs,
        StateIo::Carry(&mut p.state),
        &mut p.out,
    )
}

#[track_caller]
fn expect_dtype_err(r: mamba_gpu::Result<()>, tensor: &str, mentions: &str) {
    let e = r.expect_err("a dtype error");
    let Error::DType {
        op, tensor: t, got, ..
    } = &e
    else {
        panic!("expected a DType error naming `{tensor}`, got {e:?}");
    };
    assert_eq!((*op, *t), ("selective_scan", tensor), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(mentions),
        "`{msg}` does not mention {mentions}"
    );
    eprintln!("{tensor} ({got:?}): {msg}");
}

#[test]
fn one_io_dtype_for_every_sequence_tensor() {
    for io in [DType::F32, DType::F16, DType::BF16] {
        run(&mut problem(io)).unwrap_or_else(|e| panic!("{io:?} I/O: {e}"));
        // Time-invariant B/C (dim, N) in the I/O dtype are accepted too.
        let mut p = problem(io);
        p.b = up(1.0, &[4, 3], io);
        p.c = up(1.0, &[4, 3], io);
        run(&mut p).unwrap_or_else(|e| panic!("{io:?} I/O, (dim, N) B/C: {e}"));
    }
    let other = |io| {
        if io == DType::BF16 {
            DType::F16
        } else {
            DType::BF16
        }
    };
    let seq = [2, 4, 5];
    for io in [DType::F32, DType::F16, DType::BF16] {
        let name = match io {
            DType::F32 => "f32, the I/O dtype",
            DType::F16 => "f16, the I/O dtype",
            _ => "bf16, the I/O dtype",
        };
        let o = other(io);
        let mut p = problem(io);
        p.u = up(0.5, &seq, o);
        expect_dtype_err(run(&mut p), "u", name);
        let mut p = problem(io);
        p.delta = up(0.5, &seq, o);
        expect_dtype_err(run(&mut p), "delta", name);
        let mut p = problem(io);
        p.z = up(0.5, &seq, o);
        expect_dtype_err(run(&mut p), "z", name);
        let mut p = problem(io);
        p.b = up(1.0, &[2, 3, 5], o);
        expect_dtype_err(run(&mut p), "B", name);
        let mut p = problem(io);
        p.c = up(1.0, &[4, 3], o);
        expect_dtype_err(run(&mut p), "C", name);
        // `out` sets the I/O dtype: an out that differs from the inputs makes the first
        // input the odd one.
        let mut p = problem(io);
        p.out = up(0.0, &seq, o);
        expect_dtype_err(run(&mut p), "u", "the I/O dtype");
    }
    // The parameters and the state stay f32 whatever the I/O dtype.
    for io in [DType::F16, DType::BF16] {
        let mut p = problem(io);
        p.a = up(-0.5, &[4, 3], io);
        expect_dtype_err(run(&mut p), "A", "f32");
        let mut p = problem(io);
        p.d = up(1.0, &[4], io);
        expect_dtype_err(run(&mut p), "D", "f32");
        let mut p = problem(io);
        p.bias = up(0.1, &[4], io);
        expect_dtype_err(run(&mut p), "delta_bias", "f32");
        let mut p = problem(io);
        p.state = up(0.0, &[2, 4, 3], io);
        expect_dtype_err(run(&mut p), "state", "f32");
    }
    // A non-float out is refused by name.
    let mut p = problem(DType::F16);
    p.out = CpuBackend::new()
        .upload(HostSlice::U32(&[0; 40]), &seq)
        .unwrap();
    expect_dtype_err(run(&mut p), "out", "f32, f16 or bf16");
}
