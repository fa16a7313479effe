//! One generic check per op: run it on `be` and on the CPU reference with the same
//! seeded inputs, and compare. GPU backends' tests call these with their backend.

use half::{bf16, f16};
use mamba_gpu::ops::{self, Elementwise, Layout, ScanInputs, StateIo, StepInputs};
use mamba_gpu::{Backend, CpuBackend, DType, HostSlice};

use super::cases::{Bc, Gen, ScanCase, ScanData, St};
use super::{Tol, assert_close};

pub fn up<B: Backend>(be: &B, v: &[f32], shape: &[usize]) -> B::Buffer {
    be.upload(HostSlice::F32(v), shape).expect("upload")
}

/// An f32 buffer full of NaN, so unwritten outputs cannot pass.
pub fn poison<B: Backend>(be: &B, shape: &[usize]) -> B::Buffer {
    up(be, &vec![f32::NAN; shape.iter().product()], shape)
}

pub fn down<B: Backend>(be: &B, b: &B::Buffer) -> Vec<f32> {
    be.download(b).expect("download").to_f32()
}

/// Runs a scan case on `be`: (out, final state if the case keeps one).
pub fn run_scan<B: Backend>(be: &B, c: &ScanCase, x: &ScanData) -> (Vec<f32>, Option<Vec<f32>>) {
    run_scan_io(be, c, x, DType::F32)
}

/// Runs a case on `be` with I/O dtype `io` for the sequence tensors (u, delta, z, B, C)
/// and `out`: (out widened to f32, final state if kept). `out` starts as NaN in `io`,
/// so an element the backend does not write fails.
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
    let mut out = up_as(be, &vec![f32::NAN; seq.iter().product()], &seq, io);
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
    ops::selective_scan(be, &inputs, st_io, &mut out).expect("selective_scan");
    let got = be.download(&out).expect("download");
    assert_eq!(got.dtype(), io, "out keeps its dtype");
    (got.to_f32(), state.map(|s| down(be, &s)))
}

/// The scan on `be` against the CPU reference.
pub fn check_scan<B: Backend>(be: &B, c: &ScanCase, tol: Tol) {
    let x = ScanData::new(c);
    let (out, st) = run_scan(be, c, &x);
    let (want, want_st) = run_scan(&CpuBackend::new(), c, &x);
    assert_close(&format!("{} scan out {c:?}", be.name()), &out, &want, tol);
    if let (Some(s), Some(w)) = (st, want_st) {
        assert_close(&format!("{} scan state {c:?}", be.name()), &s, &w, tol);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StepCase {
    pub batch: usize,
    pub dim: usize,
    pub dstate: usize,
    /// 0: B/C as (batch, N); g > 0: (batch, g, N).
    pub groups: usize,
    pub d: bool,
    pub z: bool,
    pub dt_bias: bool,
    pub softplus: bool,
    pub seed: u64,
}

/// Runs one decode step on `be`: (out, new state).
pub fn run_step<B: Backend>(be: &B, c: &StepCase) -> (Vec<f32>, Vec<f32>) {
    let mut g = Gen::new(c.seed);
    let (bt, dim, n) = (c.batch, c.dim, c.dstate);
    let bc_shape = if c.groups == 0 {
        vec![bt, n]
    } else {
        vec![bt, c.groups, n]
    };
    let nbc: usize = bc_shape.iter().product();
    let x = up(be, &g.normal(bt * dim), &[bt, dim]);
    let dt = up(be, &g.uniform(bt * dim, 0.0, 0.5), &[bt, dim]);
    let a = up(be, &g.uniform(dim * n, -0.5, 0.0), &[dim, n]);
    let b = up(be, &g.normal(nbc), &bc_shape);
    let cc = up(be, &g.normal(nbc), &bc_shape);
    let (dv, zv, bv) = (g.normal(dim), g.normal(bt * dim), g.uniform(dim, 0.0, 0.5));
    let d = c.d.then(|| up(be, &dv, &[dim]));
    let z = c.z.then(|| up(be, &zv, &[bt, dim]));
    let bias = c.dt_bias.then(|| up(be, &bv, &[dim]));
    let mut state = up(be, &g.normal(bt * dim * n), &[bt, dim, n]);
    let mut out = poison(be, &[bt, dim]);
    let inputs = StepInputs {
        x: &x,
        dt: &dt,
        a: &a,
        b: &b,
        c: &cc,
        d: d.as_ref(),
        z: z.as_ref(),
        dt_bias: bias.as_ref(),
        dt_softplus: c.softplus,
    };
    ops::selective_state_update(be, &inputs, &mut state, &mut out).expect("selective_state_update");
    (down(be, &out), down(be, &state))
}

pub fn check_step<B: Backend>(be: &B, c: &StepCase, tol: Tol) {
    let (out, st) = run_step(be, c);
    let (want, want_st) = run_step(&CpuBackend::new(), c);
    assert_close(&format!("{} step out {c:?}", be.name()), &out, &want, tol);
    assert_close(
        &format!("{} step state {c:?}", be.name()),
        &st,
        &want_st,
        tol,
    );
}

#[derive(Debug, Clone, Copy)]
pub struct ConvCase {
    pub batch: usize,
    pub dim: usize,
    pub len: usize,
    pub width: usize,
    pub bias: bool,
    pub silu: bool,
    pub layout: Layout,
    pub state: St,
    pub seed: u64,
}

/// Runs the sequence conv on `be`: (out, state if kept).
pub fn run_conv<B: Backend>(be: &B, c: &ConvCase) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut g = Gen::new(c.seed);
    let seq = match c.layout {
        Layout::ChannelMajor => vec![c.batch, c.dim, c.len],
        Layout::TokenMajor => vec![c.batch, c.len, c.dim],
    };
    let x = up(be, &g.normal(c.batch * c.dim * c.len), &seq);
    let w = up(be, &g.normal(c.dim * c.width), &[c.dim, c.width]);
    let bv = g.normal(c.dim);
    let bias = c.bias.then(|| up(be, &bv, &[c.dim]));
    let st_shape = [c.batch, c.dim, c.width.saturating_sub(1)];
    let st0 = g.normal(st_shape.iter().product());
    let mut state = match c.state {
        St::Carry => Some(up(be, &st0, &st_shape)),
        St::Final => Some(poison(be, &st_shape)),
        St::None => None,
    };
    let io = match (c.state, state.as_mut()) {
        (St::Carry, Some(s)) => StateIo::Carry(s),
        (St::Final, Some(s)) => StateIo::Final(s),
        _ => StateIo::None,
    };
    let mut out = poison(be, &seq);
    ops::causal_conv1d(be, &x, &w, bias.as_ref(), c.silu, c.layout, io, &mut out)
        .expect("causal_conv1d");
    (down(be, &out), state.map(|s| down(be, &s)))
}

pub fn check_conv<B: Backend>(be: &B, c: &ConvCase, tol: Tol) {
    let (out, st) = run_conv(be, c);
    let (want, want_st) = run_conv(&CpuBackend::new(), c);
    assert_close(&format!("{} conv out {c:?}", be.name()), &out, &want, tol);
    if let (Some(s), Some(w)) = (st, want_st) {
        assert_close(&format!("{} conv state {c:?}", be.name()), &s, &w, tol);
    }
}

/// One conv decode step on `be`: (out, new state).
pub fn run_conv_update<B: Backend>(be: &B, c: &ConvCase) -> (Vec<f32>, Vec<f32>) {
    let mut g = Gen::new(c.seed);
    let x = up(be, &g.normal(c.batch * c.dim), &[c.batch, c.dim]);
    let w = up(be, &g.normal(c.dim * c.width), &[c.dim, c.width]);
    let bv = g.normal(c.dim);
    let bias = c.bias.then(|| up(be, &bv, &[c.dim]));
    let st_shape = [c.batch, c.dim, c.width - 1];
    let mut state = up(be, &g.normal(st_shape.iter().product()), &st_shape);
    let mut out = poison(be, &[c.batch, c.dim]);
    ops::causal_conv1d_update(be, &x, &w, bias.as_ref(), c.silu, &mut state, &mut out)
        .expect("conv update");
    (down(be, &out), down(be, &state))
}

pub fn check_conv_update<B: Backend>(be: &B, c: &ConvCase, tol: Tol) {
    let (out, st) = run_conv_update(be, c);
    let (want, want_st) = run_conv_update(&CpuBackend::new(), c);
    assert_close(
        &format!("{} conv update out {c:?}", be.name()),
        &out,
        &want,
        tol,
    );
    assert_close(
        &format!("{} conv update state {c:?}", be.name()),
        &st,
        &want_st,
        tol,
    );
}

/// Uploads f32 host values as `dtype` (rounded for f16/bf16).
pub fn up_as<B: Backend>(be: &B, v: &[f32], shape: &[usize], dtype: DType) -> B::Buffer {
    match dtype {
        DType::F16 => {
            let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            be.upload(HostSlice::F16(&h), shape).expect("upload")
        }
        DType::BF16 => {
            let h: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
            be.upload(HostSlice::BF16(&h), shape).expect("upload")
        }
        _ => up(be, v, shape),
    }
}

/// `x (m, k) · w (n, k)ᵀ + bias` on `be` with weights stored as `wdtype`.
pub fn run_matmul<B: Backend>(
    be: &B,
    m: usize,
    n: usize,
    k: usize,
    bias: bool,
    wdtype: DType,
    seed: u64,
) -> Vec<f32> {
    let mut g = Gen::new(seed);
    let x = up(be, &g.normal(m * k), &[m, k]);
    let w = up_as(be, &g.normal(n * k), &[n, k], wdtype);
    let bv = g.normal(n);
    let b = bias.then(|| up_as(be, &bv, &[n], wdtype));
    let mut out = poison(be, &[m, n]);
    ops::matmul(be, &x, &w, b.as_ref(), &mut out).expect("matmul");
    down(be, &out)
}

pub fn check_matmul<B: Backend>(
    be: &B,
    m: usize,
    n: usize,
    k: usize,
    bias: bool,
    wdtype: DType,
    tol: Tol,
) {
    let seed = (m * 7919 + n * 31 + k) as u64;
    let got = run_matmul(be, m, n, k, bias, wdtype, seed);
    let want = run_matmul(&CpuBackend::new(), m, n, k, bias, wdtype, seed);
    assert_close(
        &format!("{} matmul {m}x{n}x{k} {wdtype:?}", be.name()),
        &got,
        &want,
        tol,
    );
}

/// RMSNorm of `rows × dim` with an optional residual: (out, residual after).
pub fn run_rms_norm<B: Backend>(
    be: &B,
    rows: usize,
    dim: usize,
    residual: bool,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let mut g = Gen::new(seed);
    let x = up(be, &g.normal(rows * dim), &[rows, dim]);
    let w = up(be, &g.uniform(dim, 0.5, 1.5), &[dim]);
    let mut r = up(be, &g.normal(rows * dim), &[rows, dim]);
    let mut out = poison(be, &[rows, dim]);
    ops::rms_norm(be, &x, &w, 1e-5, residual.then_some(&mut r), &mut out).expect("rms_norm");
    (down(be, &out), down(be, &r))
}

/// Mamba-2's grouped RMSNorm against an f64 loop written here (independent of the CPU
/// backend): each row of `dim` splits into `groups` segments, each normalised alone.
pub fn check_rms_norm_grouped<B: Backend>(be: &B, rows: usize, dim: usize, groups: usize) {
    let mut g = Gen::new((rows * 7919 + dim * 31 + groups) as u64);
    let xv = g.normal(rows * dim);
    // Scale the groups differently, so a norm over the whole row gives other values.
    let xv: Vec<f32> = xv
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + 3.0 * ((i % dim) / (dim / groups)) as f32))
        .collect();
    let wv = g.uniform(dim, 0.5, 1.5);
    let x = up(be, &xv, &[rows, dim]);
    let w = up(be, &wv, &[dim]);
    let mut out = poison(be, &[rows, dim]);
    ops::rms_norm_grouped(be, &x, &w, 1e-5, groups, &mut out).expect("rms_norm_grouped");
    let seg = dim / groups;
    let mut want = vec![0f32; rows * dim];
    for (s, (xs, o)) in xv.chunks(seg).zip(want.chunks_mut(seg)).enumerate() {
        let ms = xs.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / seg as f64;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        for (j, (o, &v)) in o.iter_mut().zip(xs).enumerate() {
            *o = (v as f64 * inv * wv[(s % groups) * seg + j] as f64) as f32;
        }
    }
    assert_close(
        &format!(
            "{} rms_norm_grouped {rows}x{dim} groups {groups}",
            be.name()
        ),
        &down(be, &out),
        &want,
        Tol::F32,
    );
}

pub fn check_rms_norm<B: Backend>(be: &B, rows: usize, dim: usize, residual: bool, tol: Tol) {
    let seed = (rows * 131 + dim) as u64;
    let (o, r) = run_rms_norm(be, rows, dim, residual, seed);
    let (wo, wr) = run_rms_norm(&CpuBackend::new(), rows, dim, residual, seed);
    assert_close(
        &format!("{} rms_norm out {rows}x{dim}", be.name()),
        &o,
        &wo,
        tol,
    );
    assert_close(
        &format!("{} rms_norm residual {rows}x{dim}", be.name()),
        &r,
        &wr,
        tol,
    );
}

pub fn run_embedding<B: Backend>(
    be: &B,
    count: usize,
    rows: usize,
    dim: usize,
    dtype: DType,
) -> Vec<f32> {
    let mut g = Gen::new((count * 17 + rows * 3 + dim) as u64);
    let ids = g.ids(count, rows as u32);
    let ids = be
        .upload(HostSlice::U32(&ids), &[count])
        .expect("upload ids");
    let table = up_as(be, &g.normal(rows * dim), &[rows, dim], dtype);
    let mut out = poison(be, &[count, dim]);
    ops::embedding(be, &ids, &table, &mut out).expect("embedding");
    down(be, &out)
}

pub fn check_embedding<B: Backend>(be: &B, count: usize, rows: usize, dim: usize, dtype: DType) {
    let got = run_embedding(be, count, rows, dim, dtype);
    let want = run_embedding(&CpuBackend::new(), count, rows, dim, dtype);
    assert_close(
        &format!("{} embedding", be.name()),
        &got,
        &want,
        Tol { rel: 0.0, abs: 0.0 },
    );
}

pub fn run_elementwise<B: Backend>(be: &B, op: Elementwise, len: usize) -> Vec<f32> {
    let mut g = Gen::new(len as u64 + op as u64);
    // Spread wide enough to reach softplus' linear branch (x > 20).
    let av: Vec<f32> = g.normal(len).iter().map(|v| v * 12.0).collect();
    let a = up(be, &av, &[len]);
    let b = op.is_binary().then(|| up(be, &g.normal(len), &[len]));
    let mut out = poison(be, &[len]);
    ops::elementwise(be, op, &a, b.as_ref(), &mut out).expect("elementwise");
    down(be, &out)
}

pub fn check_elementwise<B: Backend>(be: &B, op: Elementwise, len: usize, tol: Tol) {
    let got = run_elementwise(be, op, len);
    let want = run_elementwise(&CpuBackend::new(), op, len);
    assert_close(
        &format!("{} elementwise {op:?}", be.name()),
        &got,
        &want,
        tol,
    );
}

pub fn run_argmax<B: Backend>(be: &B, rows: usize, cols: usize) -> Vec<u32> {
    let mut g = Gen::new((rows * 1009 + cols) as u64);
    let x = up(be, &g.normal(rows * cols), &[rows, cols]);
    let mut out = be
        .upload(HostSlice::U32(&vec![u32::MAX; rows]), &[rows])
        .expect("upload");
    ops::argmax(be, &x, &mut out).expect("argmax");
    match be.download(&out).expect("download") {
        mamba_gpu::HostVec::U32(v) => v,
        other => panic!("argmax returned {:?}", other.dtype()),
    }
}

pub fn check_argmax<B: Backend>(be: &B, rows: usize, cols: usize) {
    assert_eq!(
        run_argmax(be, rows, cols),
        run_argmax(&CpuBackend::new(), rows, cols),
        "{} argmax {rows}x{cols}",
        be.name()
    );
}

/// Copies a middle range and checks the destination outside it is untouched.
pub fn check_copy<B: Backend>(be: &B) {
    let mut g = Gen::new(5);
    let src_v = g.normal(100);
    let dst_v = g.normal(80);
    let src = up(be, &src_v, &[100]);
    let mut dst = up(be, &dst_v, &[80]);
    ops::copy(be, &src, 10, &mut dst, 20, 50).expect("copy");
    let mut want = dst_v.clone();
    want[20..70].copy_from_slice(&src_v[10..60]);
    assert_eq!(down(be, &dst), want, "{} copy", be.name());
}

/// A representative spread of scan cases (sizes kept modest for lavapipe); `big` adds
/// the long ones.
pub fn scan_cases(big: bool) -> Vec<ScanCase> {
    let mut v = Vec::new();
    for &(b, d, l, n) in &[
        (1, 1, 1, 1),
        (2, 3, 7, 4),
        (1, 4, 31, 16),
        (3, 5, 64, 16),
        (2, 8, 255, 16),
        (1, 4, 256, 1),
        (1, 4, 257, 16),
    ] {
        v.push(ScanCase::full(b, d, l, n));
    }
    let base = ScanCase::full(2, 6, 33, 8);
    v.push(ScanCase {
        d: false,
        z: false,
        delta_bias: false,
        softplus: false,
        state: St::None,
        ..base
    });
    v.push(ScanCase {
        d: true,
        z: false,
        delta_bias: false,
        softplus: true,
        state: St::Final,
        ..base
    });
    v.push(ScanCase {
        bc: Bc::Invariant,
        ..base
    });
    v.push(ScanCase {
        bc: Bc::Grouped(3),
        ..base
    });
    v.push(ScanCase {
        bc: Bc::Grouped(2),
        layout: Layout::TokenMajor,
        ..base
    });
    v.push(ScanCase {
        layout: Layout::TokenMajor,
        state: St::Final,
        ..base
    });
    v.push(ScanCase {
        bc: Bc::Invariant,
        layout: Layout::TokenMajor,
        ..base
    });
    if big {
        v.push(ScanCase::full(1, 2, 2047, 16));
        v.push(ScanCase::full(1, 2, 2049, 4));
        v.push(ScanCase::full(1, 2, 10_001, 16));
    }
    v
}

/// `ops::write` into existing buffers: every dtype (odd f16/bf16 lengths too), the shape
/// kept, ops recorded before the write reading the old contents and ops after it the
/// new, and the typed errors (a wrong length or dtype changes nothing).
pub fn check_write<B: Backend>(be: &B) {
    use mamba_gpu::{DeviceBuffer, Error};
    let v: Vec<f32> = (0..7).map(|i| i as f32 * 0.5 - 1.25).collect();
    let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let hb: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
    let u: Vec<u32> = (0..7).map(|i| i * 3 + 1).collect();
    for data in [
        HostSlice::F32(&v),
        HostSlice::F16(&h),
        HostSlice::BF16(&hb),
        HostSlice::U32(&u),
    ] {
        let mut b = be.zeros(data.dtype(), &[7, 1]).expect("zeros");
        ops::write(be, data, &mut b).expect("write");
        assert_eq!(b.shape(), &[7, 1], "{:?}: shape kept", data.dtype());
        let got = be.download(&b).expect("download");
        assert_eq!(
            got.as_slice().as_bytes(),
            data.as_bytes(),
            "{:?}",
            data.dtype()
        );
    }

    // Ordered with the ops around it.
    let n = 300;
    let mut x = up(be, &vec![1.0; n], &[n]);
    let mut before = be.zeros(DType::F32, &[n]).unwrap();
    let mut after = be.zeros(DType::F32, &[n]).unwrap();
    ops::elementwise(be, Elementwise::Add, &x, Some(&x), &mut before).unwrap();
    ops::write(be, HostSlice::F32(&vec![2.0; n]), &mut x).unwrap();
    ops::elementwise(be, Elementwise::Add, &x, Some(&x), &mut after).unwrap();
    ops::write(be, HostSlice::F32(&vec![5.0; n]), &mut x).unwrap();
    be.flush().unwrap();
    assert_eq!(
        down(be, &before),
        vec![2.0; n],
        "op recorded before the write"
    );
    assert_eq!(
        down(be, &after),
        vec![4.0; n],
        "op recorded after the write"
    );
    assert_eq!(down(be, &x), vec![5.0; n], "the last write wins");

    // Errors name the op and the tensor; the buffer is left as it was.
    let mut f = up(be, &v, &[7]);
    let e = ops::write(be, HostSlice::F32(&v[..6]), &mut f).unwrap_err();
    assert!(
        matches!(&e, Error::Shape { op: "write", tensor: "data", got, .. } if got == &[6]),
        "{e}"
    );
    assert!(e.to_string().contains("7 elements"), "{e}");
    let e = ops::write(be, HostSlice::U32(&u), &mut f).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DType {
                op: "write",
                tensor: "data",
                got: DType::U32,
                expected: "f32"
            }
        ),
        "{e}"
    );
    let e = ops::write(be, HostSlice::F16(&h), &mut f).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DType {
                got: DType::F16,
                ..
            }
        ),
        "{e}"
    );
    // The backend method itself checks too (it is public): an error, not a panic.
    let e = be.write(HostSlice::F32(&v[..3]), &mut f).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "write", .. }), "{e}");
    assert_eq!(down(be, &f), v, "failed writes change nothing");
}
