//! Bad input at the op level: every case returns the typed error naming the op and the
//! tensor, never a panic.

use mamba_gpu::ops::{self, Elementwise, Layout, ScanInputs, StateIo, StepInputs};
use mamba_gpu::{Backend, CpuBackend, CpuBuffer, DType, Error, HostSlice};

fn be() -> CpuBackend {
    CpuBackend::new()
}

fn f(shape: &[usize]) -> CpuBuffer {
    let n: usize = shape.iter().product();
    be().upload(HostSlice::F32(&vec![0.25; n]), shape).unwrap()
}

fn ids(v: &[u32]) -> CpuBuffer {
    be().upload(HostSlice::U32(v), &[v.len()]).unwrap()
}

/// A valid scan problem: batch 2, dim 4, L 5, N 3, channel-major.
struct Scan {
    u: CpuBuffer,
    delta: CpuBuffer,
    a: CpuBuffer,
    b: CpuBuffer,
    c: CpuBuffer,
    out: CpuBuffer,
}

fn scan() -> Scan {
    Scan {
        u: f(&[2, 4, 5]),
        delta: f(&[2, 4, 5]),
        a: f(&[4, 3]),
        b: f(&[2, 3, 5]),
        c: f(&[2, 3, 5]),
        out: f(&[2, 4, 5]),
    }
}

fn inputs(s: &Scan) -> ScanInputs<'_, CpuBuffer> {
    ScanInputs {
        u: &s.u,
        delta: &s.delta,
        a: &s.a,
        b: &s.b,
        c: &s.c,
        d: None,
        z: None,
        delta_bias: None,
        delta_softplus: true,
        layout: Layout::ChannelMajor,
    }
}

fn run_scan(i: &ScanInputs<'_, CpuBuffer>, out: &mut CpuBuffer) -> mamba_gpu::Result<()> {
    ops::selective_scan(&be(), i, StateIo::None, out)
}

#[track_caller]
fn assert_shape(r: mamba_gpu::Result<()>, op: &str, tensor: &str) {
    match r {
        Err(Error::Shape {
            op: o, tensor: t, ..
        }) if o == op && t == tensor => {}
        other => panic!("expected Shape error for {op}/{tensor}, got {other:?}"),
    }
}

#[track_caller]
fn assert_dtype(r: mamba_gpu::Result<()>, op: &str, tensor: &str) {
    match r {
        Err(Error::DType {
            op: o, tensor: t, ..
        }) if o == op && t == tensor => {}
        other => panic!("expected DType error for {op}/{tensor}, got {other:?}"),
    }
}

#[test]
fn valid_scan_passes() {
    let s = scan();
    let mut out = s.out.clone();
    run_scan(&inputs(&s), &mut out).unwrap();
}

#[test]
fn scan_shape_errors() {
    let s = scan();
    let mut out = s.out.clone();
    let bad_seq = f(&[2, 4, 6]);
    assert_shape(
        run_scan(
            &ScanInputs {
                delta: &bad_seq,
                ..inputs(&s)
            },
            &mut out,
        ),
        "selective_scan",
        "delta",
    );
    assert_shape(
        run_scan(
            &ScanInputs {
                z: Some(&bad_seq),
                ..inputs(&s)
            },
            &mut out,
        ),
        "selective_scan",
        "z",
    );
    let a = f(&[5, 3]);
    assert_shape(
        run_scan(
            &ScanInputs {
                a: &a,
                ..inputs(&s)
            },
            &mut out,
        ),
        "selective_scan",
        "A",
    );
    let b = f(&[2, 3, 6]);
    assert_shape(
        run_scan(
            &ScanInputs {
                b: &b,
                ..inputs(&s)
            },
            &mut out,
        ),
        "selective_scan",
        "B",
    );
    let c = f(&[4, 2]);
    assert_shape(
        run_scan(
            &ScanInputs {
                c: &c,
                ..inputs(&s)
            },
            &mut out,
        ),
        "selective_scan",
        "C",
    );
    let c5 = f(&[2, 1, 3, 5, 1]);
    assert_shape(
        run_scan(
            &ScanInputs {
                c: &c5,
                ..inputs(&s)
            },
            &mut out,
        ),
        "selective_scan",
        "C",
    );
    let d = f(&[3]);
    assert_shape(
        run_scan(
            &ScanInputs {
                d: Some(&d),
                ..inputs(&s)
            },
            &mut out,
        ),
        "selective_scan",
        "D",
    );
    assert_shape(
        run_scan(
            &ScanInputs {
                delta_bias: Some(&d),
                ..inputs(&s)
            },
            &mut out,
        ),
        "selective_scan",
        "delta_bias",
    );
    let u2 = f(&[8, 5]);
    assert_shape(
        run_scan(
            &ScanInputs {
                u: &u2,
                ..inputs(&s)
            },
            &mut out,
        ),
        "selective_scan",
        "u",
    );
    let mut bad_out = f(&[2, 5, 4]);
    assert_shape(run_scan(&inputs(&s), &mut bad_out), "selective_scan", "out");
    // Read as token-major, u (2, 4, 5) means dim = 5, which A (4, 3) contradicts.
    assert_shape(
        run_scan(
            &ScanInputs {
                layout: Layout::TokenMajor,
                ..inputs(&s)
            },
            &mut f(&[2, 4, 5]),
        ),
        "selective_scan",
        "A",
    );
    let mut st = f(&[2, 4, 4]);
    assert_shape(
        ops::selective_scan(&be(), &inputs(&s), StateIo::Carry(&mut st), &mut out),
        "selective_scan",
        "state",
    );
}

#[test]
fn scan_dtype_errors() {
    let s = scan();
    let mut out = s.out.clone();
    let half: Vec<half::f16> = vec![half::f16::ONE; 40];
    let u16 = be().upload(HostSlice::F16(&half), &[2, 4, 5]).unwrap();
    assert_dtype(
        run_scan(
            &ScanInputs {
                u: &u16,
                ..inputs(&s)
            },
            &mut out,
        ),
        "selective_scan",
        "u",
    );
    let a_ids = be().upload(HostSlice::U32(&[1; 12]), &[4, 3]).unwrap();
    assert_dtype(
        run_scan(
            &ScanInputs {
                a: &a_ids,
                ..inputs(&s)
            },
            &mut out,
        ),
        "selective_scan",
        "A",
    );
    let mut out_ids = be().upload(HostSlice::U32(&[0; 40]), &[2, 4, 5]).unwrap();
    assert_dtype(run_scan(&inputs(&s), &mut out_ids), "selective_scan", "out");
}

#[test]
fn scan_zero_sized_dims() {
    for shape in [[0, 4, 5], [2, 0, 5], [2, 4, 0]] {
        let u = f(&shape);
        let mut out = f(&shape);
        let s = scan();
        match run_scan(
            &ScanInputs {
                u: &u,
                ..inputs(&s)
            },
            &mut out,
        ) {
            Err(Error::ZeroDim {
                op: "selective_scan",
                tensor: "u",
                ..
            }) => {}
            other => panic!("shape {shape:?}: expected ZeroDim, got {other:?}"),
        }
    }
    let s = scan();
    let a = f(&[4, 0]);
    match run_scan(
        &ScanInputs {
            a: &a,
            ..inputs(&s)
        },
        &mut s.out.clone(),
    ) {
        Err(Error::ZeroDim {
            op: "selective_scan",
            tensor: "A",
            dim: "N",
            ..
        }) => {}
        other => panic!("expected ZeroDim on A, got {other:?}"),
    }
}

#[test]
fn scan_groups_must_divide_dim() {
    let s = scan();
    let b = f(&[2, 3, 3, 5]); // 3 groups, dim 4
    match run_scan(
        &ScanInputs {
            b: &b,
            ..inputs(&s)
        },
        &mut s.out.clone(),
    ) {
        Err(Error::Groups {
            op: "selective_scan",
            groups: 3,
            dim: 4,
        }) => {}
        other => panic!("expected Groups error, got {other:?}"),
    }
    let c = f(&[2, 0, 3, 5]);
    assert!(matches!(
        run_scan(
            &ScanInputs {
                c: &c,
                ..inputs(&s)
            },
            &mut s.out.clone()
        ),
        Err(Error::Groups { groups: 0, .. })
    ));
}

#[test]
fn step_errors() {
    let (x, dt, a, b, c) = (f(&[2, 4]), f(&[2, 4]), f(&[4, 3]), f(&[2, 3]), f(&[2, 3]));
    let base = StepInputs {
        x: &x,
        dt: &dt,
        a: &a,
        b: &b,
        c: &c,
        d: None,
        z: None,
        dt_bias: None,
        dt_softplus: true,
    };
    let (mut st, mut out) = (f(&[2, 4, 3]), f(&[2, 4]));
    ops::selective_state_update(&be(), &base, &mut st, &mut out).unwrap();
    let op = "selective_state_update";
    let x5 = f(&[2, 5]);
    assert_shape(
        ops::selective_state_update(&be(), &StepInputs { x: &x5, ..base }, &mut st, &mut out),
        op,
        "x",
    );
    let bg = f(&[2, 3, 3]);
    assert!(matches!(
        ops::selective_state_update(&be(), &StepInputs { b: &bg, ..base }, &mut st, &mut out),
        Err(Error::Groups {
            groups: 3,
            dim: 4,
            ..
        })
    ));
    let bg2 = f(&[2, 2, 3]);
    assert_shape(
        ops::selective_state_update(&be(), &StepInputs { b: &bg2, ..base }, &mut st, &mut out),
        op,
        "C",
    );
    let mut st0 = f(&[2, 0, 3]);
    assert!(matches!(
        ops::selective_state_update(&be(), &base, &mut st0, &mut out),
        Err(Error::ZeroDim {
            tensor: "state",
            dim: "dim",
            ..
        })
    ));
    let zb = f(&[2, 3]);
    assert_shape(
        ops::selective_state_update(
            &be(),
            &StepInputs {
                z: Some(&zb),
                ..base
            },
            &mut st,
            &mut out,
        ),
        op,
        "z",
    );
    let mut out_ids = be().upload(HostSlice::U32(&[0; 8]), &[2, 4]).unwrap();
    assert_dtype(
        ops::selective_state_update(&be(), &base, &mut st, &mut out_ids),
        op,
        "out",
    );
}

#[test]
fn conv_errors() {
    let be = be();
    let (x, w, bias) = (f(&[1, 3, 6]), f(&[3, 4]), f(&[3]));
    let mut out = f(&[1, 3, 6]);
    let mut st = f(&[1, 3, 3]);
    let conv = |x: &CpuBuffer, w: &CpuBuffer, st: StateIo<'_, CpuBuffer>, out: &mut CpuBuffer| {
        ops::causal_conv1d(&be, x, w, Some(&bias), true, Layout::ChannelMajor, st, out)
    };
    conv(&x, &w, StateIo::Carry(&mut st), &mut out).unwrap();
    assert_shape(
        conv(&x, &f(&[4, 4]), StateIo::None, &mut out),
        "causal_conv1d",
        "weight",
    );
    assert_shape(
        conv(&x, &w, StateIo::Final(&mut f(&[1, 3, 4])), &mut out),
        "causal_conv1d",
        "conv_state",
    );
    assert_shape(
        conv(&x, &w, StateIo::None, &mut f(&[1, 6, 3])),
        "causal_conv1d",
        "out",
    );
    assert!(matches!(
        conv(&x, &f(&[3, 1]), StateIo::Carry(&mut st), &mut out),
        Err(Error::Arg {
            op: "causal_conv1d",
            arg: "weight",
            ..
        })
    ));
    assert!(matches!(
        conv(&f(&[1, 3, 0]), &w, StateIo::None, &mut f(&[1, 3, 0])),
        Err(Error::ZeroDim {
            tensor: "x",
            dim: "L",
            ..
        })
    ));
    let (x1, mut o1) = (f(&[1, 3]), f(&[1, 3]));
    ops::causal_conv1d_update(&be, &x1, &w, None, false, &mut st, &mut o1).unwrap();
    assert_shape(
        ops::causal_conv1d_update(&be, &x1, &w, None, false, &mut f(&[1, 3, 2]), &mut o1),
        "causal_conv1d_update",
        "conv_state",
    );
    assert_shape(
        ops::causal_conv1d_update(&be, &x1, &w, Some(&f(&[2])), false, &mut st, &mut o1),
        "causal_conv1d_update",
        "bias",
    );
}

#[test]
fn matmul_errors() {
    let be = be();
    let (x, w) = (f(&[2, 3, 8]), f(&[5, 8]));
    let mut out = f(&[2, 3, 5]);
    ops::matmul(&be, &x, &w, None, &mut out).unwrap();
    assert_shape(
        ops::matmul(&be, &f(&[2, 7]), &w, None, &mut f(&[2, 5])),
        "matmul",
        "x",
    );
    assert_shape(
        ops::matmul(&be, &x, &w, None, &mut f(&[6, 5])),
        "matmul",
        "out",
    );
    assert_shape(
        ops::matmul(&be, &x, &w, Some(&f(&[8])), &mut out),
        "matmul",
        "bias",
    );
    let wi = be.upload(HostSlice::U32(&[0; 40]), &[5, 8]).unwrap();
    assert_dtype(ops::matmul(&be, &x, &wi, None, &mut out), "matmul", "w");
    assert!(matches!(
        ops::matmul(&be, &f(&[0, 8]), &w, None, &mut f(&[0, 5])),
        Err(Error::ZeroDim {
            op: "matmul",
            tensor: "x",
            ..
        })
    ));
}

#[test]
fn norm_embedding_misc_errors() {
    let be = be();
    let (x, w) = (f(&[3, 8]), f(&[8]));
    let mut out = f(&[3, 8]);
    assert_shape(
        ops::rms_norm(&be, &x, &f(&[7]), 1e-5, None, &mut out),
        "rms_norm",
        "x",
    );
    assert_shape(
        ops::rms_norm(&be, &x, &w, 1e-5, Some(&mut f(&[2, 8])), &mut out),
        "rms_norm",
        "residual",
    );
    assert!(matches!(
        ops::rms_norm(&be, &x, &w, f32::NAN, None, &mut out),
        Err(Error::Arg {
            op: "rms_norm",
            arg: "eps",
            ..
        })
    ));
    let table = f(&[10, 4]);
    let mut eo = f(&[3, 4]);
    ops::embedding(&be, &ids(&[0, 9, 3]), &table, &mut eo).unwrap();
    match ops::embedding(&be, &ids(&[0, 10, 3]), &table, &mut eo) {
        Err(Error::Index {
            op: "embedding",
            index: 10,
            position: 1,
            rows: 10,
        }) => {}
        other => panic!("expected Index error, got {other:?}"),
    }
    assert_dtype(
        ops::embedding(&be, &f(&[3]), &table, &mut eo),
        "embedding",
        "ids",
    );
    assert_shape(
        ops::embedding(&be, &ids(&[1, 2]), &table, &mut eo),
        "embedding",
        "out",
    );
    assert!(matches!(
        ops::elementwise(&be, Elementwise::Add, &x, None, &mut out),
        Err(Error::Arg {
            op: "elementwise",
            arg: "b",
            ..
        })
    ));
    assert!(matches!(
        ops::elementwise(&be, Elementwise::Silu, &x, Some(&x), &mut out),
        Err(Error::Arg {
            op: "elementwise",
            arg: "b",
            ..
        })
    ));
    assert_shape(
        ops::elementwise(&be, Elementwise::Mul, &x, Some(&f(&[8, 3])), &mut out),
        "elementwise",
        "b",
    );
    let mut am = be.upload(HostSlice::U32(&[0; 3]), &[3]).unwrap();
    ops::argmax(&be, &x, &mut am).unwrap();
    assert_dtype(ops::argmax(&be, &x, &mut f(&[3])), "argmax", "out");
    let mut dst = f(&[10]);
    assert!(matches!(
        ops::copy(&be, &f(&[10]), 5, &mut dst, 0, 6),
        Err(Error::Arg {
            op: "copy",
            arg: "src",
            ..
        })
    ));
    assert!(matches!(
        ops::copy(&be, &f(&[10]), 0, &mut dst, usize::MAX, 2),
        Err(Error::Arg {
            op: "copy",
            arg: "dst",
            ..
        })
    ));
    assert_dtype(
        ops::copy(&be, &f(&[10]), 0, &mut ids(&[0; 10]), 0, 2),
        "copy",
        "dst",
    );
    assert!(matches!(
        be.upload(HostSlice::F32(&[1.0; 5]), &[2, 3]),
        Err(Error::UploadLen {
            len: 5,
            expected: 6,
            ..
        })
    ));
    let mut r = f(&[2, 3]);
    use mamba_gpu::DeviceBuffer;
    assert!(matches!(
        r.reshape(&[7]),
        Err(Error::Shape { op: "reshape", .. })
    ));
    r.reshape(&[3, 2]).unwrap();
    let _ = DType::F32;
}
