//! Bad input to the fused decode ops (`src/ops/decode.rs`): each case is the typed error
//! naming the op and the tensor, never a panic; a valid call next to each proves the
//! case differs from a good one only in what it breaks.

use mamba_gpu::ops::{self, MixerInInputs, SsmStepInputs};
use mamba_gpu::{Backend, CpuBackend, CpuBuffer, Error, HostSlice};

const B: usize = 2;
const D: usize = 8;
const E: usize = 16;
const N: usize = 4;
const K: usize = 4;
const R: usize = 3;

fn f(shape: &[usize]) -> CpuBuffer {
    let n: usize = shape.iter().product();
    CpuBackend::new()
        .upload(HostSlice::F32(&vec![0.25; n]), shape)
        .unwrap()
}

fn bf(shape: &[usize]) -> CpuBuffer {
    let n: usize = shape.iter().product();
    let v = vec![half::bf16::from_f32(0.25); n];
    CpuBackend::new()
        .upload(HostSlice::BF16(&v), shape)
        .unwrap()
}

fn tensor_of(e: &Error) -> &'static str {
    match e {
        Error::Shape { tensor, .. } | Error::DType { tensor, .. } | Error::Limit { tensor, .. } => {
            tensor
        }
        Error::Arg { arg, .. } => arg,
        Error::ZeroDim { tensor, .. } => tensor,
        other => panic!("unexpected error {other:?}"),
    }
}

/// Runs mixer_in with the given h, w_z, conv state and xc shapes and eps (the other
/// inputs valid).
fn mixer_in(
    h: &CpuBuffer,
    w_z: &CpuBuffer,
    state: &[usize],
    xc: &[usize],
    eps: f32,
) -> Result<(), Error> {
    let be = CpuBackend::new();
    let (norm_w, w_x, conv_w, conv_b) = (f(&[D]), f(&[E, D]), f(&[E, K]), f(&[E]));
    let inputs = MixerInInputs {
        h,
        norm_w: &norm_w,
        eps,
        w_x: &w_x,
        w_z,
        conv_w: &conv_w,
        conv_b: Some(&conv_b),
    };
    let (mut s, mut x, mut z) = (f(state), f(xc), f(&[B, E]));
    ops::mixer_in(&be, &inputs, &mut s, &mut x, &mut z)
}

#[test]
fn mixer_in_errors_name_the_tensor() {
    let ok = |h: &CpuBuffer| mixer_in(h, &f(&[E, D]), &[B, E, K - 1], &[B, E], 1e-5);
    ok(&f(&[B, D])).expect("the valid call");
    let cases: Vec<(&str, Result<(), Error>)> = vec![
        ("h", ok(&f(&[9, D]))), // more sequences than the fused ops take
        ("h", ok(&f(&[B, D, 1]))),
        ("h", ok(&f(&[0, D]))),
        (
            "w_z",
            mixer_in(&f(&[B, D]), &f(&[E, D + 1]), &[B, E, K - 1], &[B, E], 1e-5),
        ),
        (
            "w_z",
            mixer_in(&f(&[B, D]), &bf(&[E, D]), &[B, E, K - 1], &[B, E], 1e-5),
        ),
        (
            "conv_state",
            mixer_in(&f(&[B, D]), &f(&[E, D]), &[B, E, K], &[B, E], 1e-5),
        ),
        (
            "xc",
            mixer_in(&f(&[B, D]), &f(&[E, D]), &[B, E, K - 1], &[B, E + 1], 1e-5),
        ),
        (
            "eps",
            mixer_in(&f(&[B, D]), &f(&[E, D]), &[B, E, K - 1], &[B, E], f32::NAN),
        ),
        (
            "eps",
            mixer_in(&f(&[B, D]), &f(&[E, D]), &[B, E, K - 1], &[B, E], -1.0),
        ),
    ];
    for (want, got) in cases {
        let e = got.expect_err(want);
        assert_eq!(tensor_of(&e), want, "{e}");
        assert!(e.to_string().contains("mixer_in"), "{e}");
    }
    let e = ok(&f(&[9, D])).unwrap_err();
    assert!(e.is_limit(), "{e}");
}

#[test]
fn x_proj_and_ssm_step_errors_name_the_tensor() {
    let be = CpuBackend::new();
    let xc = f(&[B, E]);
    let (w_dt, w_b, w_c) = (f(&[R, E]), f(&[N, E]), f(&[N, E]));
    ops::x_proj(&be, &xc, &w_dt, &w_b, &w_c, &mut f(&[B, R + 2 * N])).expect("valid x_proj");
    let cases: Vec<(&str, Result<(), Error>)> = vec![
        (
            "dbc",
            ops::x_proj(&be, &xc, &w_dt, &w_b, &w_c, &mut f(&[B, R + N])),
        ),
        (
            "w_c",
            ops::x_proj(
                &be,
                &xc,
                &w_dt,
                &w_b,
                &f(&[N + 1, E]),
                &mut f(&[B, R + 2 * N]),
            ),
        ),
        (
            "w_b",
            ops::x_proj(&be, &xc, &w_dt, &bf(&[N, E]), &w_c, &mut f(&[B, R + 2 * N])),
        ),
        (
            "w_dt",
            ops::x_proj(
                &be,
                &xc,
                &f(&[R, E + 1]),
                &w_b,
                &w_c,
                &mut f(&[B, R + 2 * N]),
            ),
        ),
    ];
    for (want, got) in cases {
        let e = got.expect_err(want);
        assert_eq!(tensor_of(&e), want, "{e}");
        assert!(e.to_string().contains("x_proj"), "{e}");
    }

    let (dbc, z, dt_proj) = (f(&[B, R + 2 * N]), f(&[B, E]), f(&[E, R]));
    let (dt_bias, a, d) = (f(&[E]), f(&[E, N]), f(&[E]));
    let step = |dbc: &CpuBuffer, a: &CpuBuffer, state: &[usize], y: &[usize]| {
        let inputs = SsmStepInputs {
            xc: &xc,
            dbc,
            z: &z,
            dt_proj: &dt_proj,
            dt_bias: &dt_bias,
            a,
            d: &d,
            norm_eps: None,
        };
        ops::ssm_step(&be, &inputs, &mut f(state), &mut f(y))
    };
    step(&dbc, &a, &[B, E, N], &[B, E]).expect("valid ssm_step");
    let cases: Vec<(&str, Result<(), Error>)> = vec![
        ("dbc", step(&f(&[B, R + N]), &a, &[B, E, N], &[B, E])),
        ("A", step(&dbc, &f(&[E, N + 1]), &[B, E, N], &[B, E])),
        ("state", step(&dbc, &a, &[B + 1, E, N], &[B, E])),
        ("y", step(&dbc, &a, &[B, E, N], &[B, 1])),
        ("A", step(&dbc, &bf(&[E, N]), &[B, E, N], &[B, E])),
    ];
    for (want, got) in cases {
        let e = got.expect_err(want);
        assert_eq!(tensor_of(&e), want, "{e}");
        assert!(e.to_string().contains("ssm_step"), "{e}");
    }
}

/// `matmul_accumulate` checks as `matmul` does.
#[test]
fn matmul_accumulate_errors() {
    let be = CpuBackend::new();
    let e = ops::matmul_accumulate(&be, &f(&[2, 5]), &f(&[3, 4]), None, &mut f(&[2, 3]))
        .expect_err("x of the wrong width");
    assert_eq!(tensor_of(&e), "x", "{e}");
    let e = ops::matmul_accumulate(&be, &f(&[2, 4]), &f(&[3, 4]), None, &mut f(&[2, 4]))
        .expect_err("out of the wrong width");
    assert_eq!(tensor_of(&e), "out", "{e}");
    let u = be.upload(HostSlice::U32(&[1; 12]), &[3, 4]).unwrap();
    let e = ops::matmul_accumulate(&be, &f(&[2, 4]), &u, None, &mut f(&[2, 3]))
        .expect_err("u32 weights");
    assert!(matches!(e, Error::DType { tensor: "w", .. }), "{e}");
}
