//! Properties of the CPU reference on fresh seeded data, independent of any other
//! backend: a sequence split and carried through the state equals the whole; a prefill
//! followed by one decode step equals a prefill one token longer; the token-major layout
//! is the transpose of the channel-major one; one group equals input-dependent B/C; the
//! conv1d carried and stepped equals the whole. (Matmul and RMSNorm against naive f64
//! loops: tests/cpu_linalg.rs.)

mod common;

use common::cases::{Bc, Gen, ScanCase, ScanData, St};
use common::checks::{down, poison, run_scan, up};
use common::{Tol, assert_close};
use mamba_gpu::CpuBackend;
use mamba_gpu::ops::{self, Layout, StateIo, StepInputs};

const TOL: Tol = Tol::EXACTISH;

// ---------------------------------------------------------------------------------------
// Slicing along time.

/// `(outer, len, inner)` around `axis`.
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// `v[..., t0..t1, ...]` along `axis`.
fn slice_axis(v: &[f32], shape: &[usize], axis: usize, t0: usize, t1: usize) -> Vec<f32> {
    let (outer, len, inner) = around(shape, axis);
    assert_eq!(v.len(), outer * len * inner);
    let mut r = Vec::with_capacity(outer * (t1 - t0) * inner);
    for o in 0..outer {
        r.extend_from_slice(&v[(o * len + t0) * inner..(o * len + t1) * inner]);
    }
    r
}

/// Writes `src` (the slice `t0..t0+n` along `axis`) into `dst` of shape `shape`.
fn place_axis(dst: &mut [f32], shape: &[usize], axis: usize, t0: usize, src: &[f32]) {
    let (outer, len, inner) = around(shape, axis);
    let n = src.len() / (outer * inner);
    for o in 0..outer {
        dst[(o * len + t0) * inner..(o * len + t0 + n) * inner]
            .copy_from_slice(&src[o * n * inner..(o + 1) * n * inner]);
    }
}

fn seq_time_axis(layout: Layout) -> usize {
    match layout {
        Layout::ChannelMajor => 2,
        Layout::TokenMajor => 1,
    }
}

fn bc_time_axis(c: &ScanCase) -> Option<usize> {
    match (c.bc, c.layout) {
        (Bc::Invariant, _) => None,
        (_, Layout::TokenMajor) => Some(1),
        (Bc::Variable, Layout::ChannelMajor) => Some(2),
        (Bc::Grouped(_), Layout::ChannelMajor) => Some(3),
    }
}

/// The case and data of time steps `t0..t1`, starting from `h0` (`St::Carry`).
fn slice_case(
    c: &ScanCase,
    x: &ScanData,
    t0: usize,
    t1: usize,
    h0: Vec<f32>,
) -> (ScanCase, ScanData) {
    let seq = c.seq_shape();
    let sa = seq_time_axis(c.layout);
    let s = |v: &Vec<f32>| slice_axis(v, &seq, sa, t0, t1);
    let bcs = |v: &Vec<f32>| match bc_time_axis(c) {
        None => v.clone(),
        Some(ax) => slice_axis(v, &c.bc_shape(), ax, t0, t1),
    };
    let piece = ScanCase {
        len: t1 - t0,
        state: St::Carry,
        ..*c
    };
    let data = ScanData {
        u: s(&x.u),
        delta: s(&x.delta),
        a: x.a.clone(),
        b: bcs(&x.b),
        c: bcs(&x.c),
        d: x.d.clone(),
        z: x.z.as_ref().map(s),
        delta_bias: x.delta_bias.clone(),
        h0,
    };
    (piece, data)
}

/// Moves the last axis (time) of a `(batch, rest..., L)` tensor to position 1.
fn time_last_to_1(v: &[f32], batch: usize, rest: usize, len: usize) -> Vec<f32> {
    let mut r = vec![0f32; v.len()];
    for b in 0..batch {
        for i in 0..rest {
            for t in 0..len {
                r[(b * len + t) * rest + i] = v[(b * rest + i) * len + t];
            }
        }
    }
    r
}

/// Moves axis 1 (time) of a `(batch, L, rest...)` tensor to the end.
fn time_1_to_last(v: &[f32], batch: usize, rest: usize, len: usize) -> Vec<f32> {
    let mut r = vec![0f32; v.len()];
    for b in 0..batch {
        for t in 0..len {
            for i in 0..rest {
                r[(b * rest + i) * len + t] = v[(b * len + t) * rest + i];
            }
        }
    }
    r
}

// ---------------------------------------------------------------------------------------
// Scan.

fn scan_split_equals_whole(c: &ScanCase, cuts: &[usize]) {
    let be = CpuBackend::new();
    let x = ScanData::new(c);
    let whole = ScanCase {
        state: St::Carry,
        ..*c
    };
    let (want, want_st) = run_scan(&be, &whole, &x);
    let want_st = want_st.expect("carried state");
    let seq = c.seq_shape();
    let mut got = vec![f32::NAN; want.len()];
    let mut h = x.h0.clone();
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(c.len);
    for w in bounds.windows(2) {
        let (pc, pd) = slice_case(c, &x, w[0], w[1], h);
        let (o, st) = run_scan(&be, &pc, &pd);
        place_axis(&mut got, &seq, seq_time_axis(c.layout), w[0], &o);
        h = st.expect("carried state");
    }
    let what = format!("split at {cuts:?} {c:?}");
    assert_close(&format!("scan out, {what}"), &got, &want, TOL);
    assert_close(&format!("scan state, {what}"), &h, &want_st, TOL);
}

#[test]
fn scan_split_and_carried_equals_whole() {
    for layout in [Layout::ChannelMajor, Layout::TokenMajor] {
        for (i, bc) in [Bc::Variable, Bc::Invariant, Bc::Grouped(2), Bc::Grouped(3)]
            .into_iter()
            .enumerate()
        {
            let base = ScanCase {
                bc,
                layout,
                seed: 17 + i as u64,
                ..ScanCase::full(2, 6, 100, 16)
            };
            scan_split_equals_whole(&base, &[1, 37, 64, 99]);
            let plain = ScanCase {
                d: false,
                z: false,
                delta_bias: false,
                softplus: false,
                dstate: 4,
                seed: 99 + i as u64,
                ..base
            };
            scan_split_equals_whole(&plain, &[50]);
        }
        let long = ScanCase {
            layout,
            ..ScanCase::full(1, 3, 2049, 8)
        };
        scan_split_equals_whole(&long, &[255, 256, 1024, 2048]);
        let short = ScanCase {
            layout,
            ..ScanCase::full(3, 5, 2, 1)
        };
        scan_split_equals_whole(&short, &[1]);
    }
}

/// The data of position `t` as decode-step inputs `(x, dt, z, B, C, bc_shape)` of a
/// channel-major case; time-invariant B/C become groups of one channel (G = dim).
fn step_slices(c: &ScanCase, x: &ScanData, t: usize) -> [Vec<f32>; 5] {
    assert_eq!(c.layout, Layout::ChannelMajor);
    let seq = c.seq_shape();
    let s = |v: &Vec<f32>| slice_axis(v, &seq, 2, t, t + 1);
    let bc = |v: &Vec<f32>| match c.bc {
        Bc::Invariant => (0..c.batch).flat_map(|_| v.iter().copied()).collect(),
        Bc::Variable => slice_axis(v, &c.bc_shape(), 2, t, t + 1),
        Bc::Grouped(_) => slice_axis(v, &c.bc_shape(), 3, t, t + 1),
    };
    let z = x.z.as_ref().map(s).unwrap_or_default();
    [s(&x.u), s(&x.delta), z, bc(&x.b), bc(&x.c)]
}

fn prefill_then_step(c: &ScanCase) {
    let be = CpuBackend::new();
    let len = c.len;
    let full = ScanCase {
        len: len + 1,
        state: St::Final,
        ..*c
    };
    let x = ScanData::new(&full);
    let (want, want_st) = run_scan(&be, &full, &x);
    let want_st = want_st.expect("final state");
    // The prefill of the first `len` tokens, from zero.
    let (pc, pd) = slice_case(&full, &x, 0, len, Vec::new());
    let pc = ScanCase {
        state: St::Final,
        ..pc
    };
    let (pout, pst) = run_scan(&be, &pc, &pd);
    let seq = full.seq_shape();
    assert_close(
        &format!("prefill out {c:?}"),
        &pout,
        &slice_axis(&want, &seq, 2, 0, len),
        TOL,
    );
    // One step at position `len`.
    let [xs, dts, zs, bs, cs] = step_slices(&full, &x, len);
    let (bt, dim, n) = (c.batch, c.dim, c.dstate);
    let bc_shape = match c.bc {
        Bc::Invariant => vec![bt, dim, n],
        Bc::Variable => vec![bt, n],
        Bc::Grouped(g) => vec![bt, g, n],
    };
    let (xb, dtb, a) = (
        up(&be, &xs, &[bt, dim]),
        up(&be, &dts, &[bt, dim]),
        up(&be, &x.a, &[dim, n]),
    );
    let (b, cc) = (up(&be, &bs, &bc_shape), up(&be, &cs, &bc_shape));
    let d = x.d.as_ref().map(|v| up(&be, v, &[dim]));
    let z = x.z.as_ref().map(|_| up(&be, &zs, &[bt, dim]));
    let bias = x.delta_bias.as_ref().map(|v| up(&be, v, &[dim]));
    let inputs = StepInputs {
        x: &xb,
        dt: &dtb,
        a: &a,
        b: &b,
        c: &cc,
        d: d.as_ref(),
        z: z.as_ref(),
        dt_bias: bias.as_ref(),
        dt_softplus: c.softplus,
    };
    let mut state = up(&be, &pst.expect("final state"), &[bt, dim, n]);
    let mut out = poison(&be, &[bt, dim]);
    ops::selective_state_update(&be, &inputs, &mut state, &mut out).expect("step");
    assert_close(
        &format!("step out after prefill {c:?}"),
        &down(&be, &out),
        &slice_axis(&want, &seq, 2, len, len + 1),
        TOL,
    );
    assert_close(
        &format!("step state after prefill {c:?}"),
        &down(&be, &state),
        &want_st,
        TOL,
    );
}

#[test]
fn prefill_then_step_equals_longer_prefill() {
    for (i, bc) in [Bc::Variable, Bc::Invariant, Bc::Grouped(2), Bc::Grouped(3)]
        .into_iter()
        .enumerate()
    {
        for &(b, d, l, n) in &[(2, 6, 1, 16), (1, 6, 32, 4), (3, 12, 255, 16)] {
            let c = ScanCase {
                bc,
                seed: 300 + i as u64,
                ..ScanCase::full(b, d, l, n)
            };
            prefill_then_step(&c);
            prefill_then_step(&ScanCase {
                d: false,
                z: false,
                delta_bias: false,
                softplus: false,
                ..c
            });
        }
    }
}

/// The same data in token-major layout.
fn to_token_major(c: &ScanCase, x: &ScanData) -> (ScanCase, ScanData) {
    assert_eq!(c.layout, Layout::ChannelMajor);
    let (bt, dim, l, n) = (c.batch, c.dim, c.len, c.dstate);
    let t = |v: &Vec<f32>| time_last_to_1(v, bt, dim, l);
    let bc = |v: &Vec<f32>| match c.bc {
        Bc::Invariant => v.clone(),
        Bc::Variable => time_last_to_1(v, bt, n, l),
        Bc::Grouped(g) => time_last_to_1(v, bt, g * n, l),
    };
    let tc = ScanCase {
        layout: Layout::TokenMajor,
        ..*c
    };
    let td = ScanData {
        u: t(&x.u),
        delta: t(&x.delta),
        a: x.a.clone(),
        b: bc(&x.b),
        c: bc(&x.c),
        d: x.d.clone(),
        z: x.z.as_ref().map(t),
        delta_bias: x.delta_bias.clone(),
        h0: x.h0.clone(),
    };
    (tc, td)
}

#[test]
fn token_major_is_the_transpose_of_channel_major() {
    let be = CpuBackend::new();
    for (i, bc) in [Bc::Variable, Bc::Invariant, Bc::Grouped(2), Bc::Grouped(3)]
        .into_iter()
        .enumerate()
    {
        for &(b, d, l, n) in &[(1, 6, 1, 4), (2, 6, 33, 16), (3, 12, 257, 8)] {
            for state in [St::Carry, St::Final] {
                let c = ScanCase {
                    bc,
                    state,
                    seed: 500 + i as u64,
                    ..ScanCase::full(b, d, l, n)
                };
                let x = ScanData::new(&c);
                let (want, want_st) = run_scan(&be, &c, &x);
                let (tc, td) = to_token_major(&c, &x);
                let (got, got_st) = run_scan(&be, &tc, &td);
                let got = time_1_to_last(&got, b, d, l);
                assert_close(&format!("token-major out {c:?}"), &got, &want, TOL);
                assert_close(
                    &format!("token-major state {c:?}"),
                    &got_st.expect("state"),
                    &want_st.expect("state"),
                    TOL,
                );
            }
        }
    }
}

#[test]
fn one_group_equals_input_dependent() {
    let be = CpuBackend::new();
    for layout in [Layout::ChannelMajor, Layout::TokenMajor] {
        for &(b, d, l, n) in &[(1, 1, 1, 1), (2, 5, 33, 16), (1, 7, 300, 4)] {
            let c = ScanCase {
                layout,
                bc: Bc::Variable,
                ..ScanCase::full(b, d, l, n)
            };
            let x = ScanData::new(&c);
            let (want, want_st) = run_scan(&be, &c, &x);
            let g1 = ScanCase {
                bc: Bc::Grouped(1),
                ..c
            };
            let (got, got_st) = run_scan(&be, &g1, &x);
            assert_close(&format!("G=1 out {c:?}"), &got, &want, TOL);
            assert_close(
                &format!("G=1 state {c:?}"),
                &got_st.expect("state"),
                &want_st.expect("state"),
                TOL,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Conv1d.

struct ConvData {
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
    st0: Vec<f32>,
}

/// Sequence conv with a carried state: (out, state after).
#[allow(clippy::too_many_arguments)]
fn conv_carry(
    be: &CpuBackend,
    x: &[f32],
    shape: &[usize],
    dim: usize,
    width: usize,
    d: &ConvData,
    silu: bool,
    layout: Layout,
    st: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let xb = up(be, x, shape);
    let w = up(be, &d.w, &[dim, width]);
    let bias = d.bias.as_ref().map(|v| up(be, v, &[dim]));
    let mut state = up(be, st, &[shape[0], dim, width - 1]);
    let mut out = poison(be, shape);
    ops::causal_conv1d(
        be,
        &xb,
        &w,
        bias.as_ref(),
        silu,
        layout,
        StateIo::Carry(&mut state),
        &mut out,
    )
    .expect("causal_conv1d");
    (down(be, &out), down(be, &state))
}

#[test]
fn conv_split_and_carried_equals_whole() {
    let be = CpuBackend::new();
    let mut seed = 700;
    for layout in [Layout::ChannelMajor, Layout::TokenMajor] {
        for &(batch, dim, len, width) in
            &[(2, 5, 40, 4), (1, 3, 9, 2), (3, 8, 300, 4), (1, 2, 7, 5)]
        {
            for (bias, silu) in [(true, true), (false, false)] {
                seed += 1;
                let mut g = Gen::new(seed);
                let d = ConvData {
                    x: g.normal(batch * dim * len),
                    w: g.normal(dim * width),
                    bias: bias.then(|| g.normal(dim)),
                    st0: g.normal(batch * dim * (width - 1)),
                };
                let shape = match layout {
                    Layout::ChannelMajor => vec![batch, dim, len],
                    Layout::TokenMajor => vec![batch, len, dim],
                };
                let ax = seq_time_axis(layout);
                let (want, want_st) =
                    conv_carry(&be, &d.x, &shape, dim, width, &d, silu, layout, &d.st0);
                // Pieces shorter than the kernel included.
                let cuts = [1, 2, len / 2, len - 1];
                let mut bounds = vec![0];
                bounds.extend(cuts.iter().copied().filter(|&t| t > 0 && t < len));
                bounds.push(len);
                bounds.dedup();
                let mut got = vec![f32::NAN; want.len()];
                let mut st = d.st0.clone();
                for w in bounds.windows(2) {
                    let xs = slice_axis(&d.x, &shape, ax, w[0], w[1]);
                    let mut ps = shape.clone();
                    ps[ax] = w[1] - w[0];
                    let (o, s) = conv_carry(&be, &xs, &ps, dim, width, &d, silu, layout, &st);
                    place_axis(&mut got, &shape, ax, w[0], &o);
                    st = s;
                }
                let what = format!(
                    "{layout:?} b{batch} d{dim} l{len} k{width} bias {bias} silu {silu} cuts {bounds:?}"
                );
                assert_close(&format!("conv out, {what}"), &got, &want, TOL);
                assert_close(&format!("conv state, {what}"), &st, &want_st, TOL);
            }
        }
    }
}

#[test]
fn conv_update_equals_sequence_conv_of_one_token() {
    let be = CpuBackend::new();
    let mut seed = 900;
    for &(batch, dim, width) in &[(1, 1, 2), (2, 5, 4), (3, 64, 4), (1, 7, 3)] {
        for (bias, silu) in [(true, true), (false, true), (true, false)] {
            seed += 1;
            let mut g = Gen::new(seed);
            let d = ConvData {
                x: g.normal(batch * dim),
                w: g.normal(dim * width),
                bias: bias.then(|| g.normal(dim)),
                st0: g.normal(batch * dim * (width - 1)),
            };
            let (want, want_st) = conv_carry(
                &be,
                &d.x,
                &[batch, dim, 1],
                dim,
                width,
                &d,
                silu,
                Layout::ChannelMajor,
                &d.st0,
            );
            let x = up(&be, &d.x, &[batch, dim]);
            let w = up(&be, &d.w, &[dim, width]);
            let bb = d.bias.as_ref().map(|v| up(&be, v, &[dim]));
            let mut state = up(&be, &d.st0, &[batch, dim, width - 1]);
            let mut out = poison(&be, &[batch, dim]);
            ops::causal_conv1d_update(&be, &x, &w, bb.as_ref(), silu, &mut state, &mut out)
                .expect("conv update");
            let what = format!("b{batch} d{dim} k{width} bias {bias} silu {silu}");
            assert_close(
                &format!("conv update out, {what}"),
                &down(&be, &out),
                &want,
                TOL,
            );
            assert_close(
                &format!("conv update state, {what}"),
                &down(&be, &state),
                &want_st,
                TOL,
            );
        }
    }
}
