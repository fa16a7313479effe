//! Checks of the fused decode step (`src/ops/decode.rs`) any backend runs: its four ops
//! on fresh random inputs against the unfused ops on the exact CPU reference, and whole
//! decodes with the fused step against the unfused step; batched decode around the
//! switch from the fused (matrix-vector) step to the unfused (GEMM) one.

use mamba_gpu::model::{LoadOptions, MambaModel, WeightDType};
use mamba_gpu::ops::{self, MixerInInputs, SsmStepInputs, StepInputs};
use mamba_gpu::{Backend, CpuBackend, DType};

use super::cases::Gen;
use super::checks::{down, poison, up, up_as};
use super::decode_checks::{SMALL, Trace, assert_same_trace, decode_alone, small_model};
use super::{Tol, assert_close, rel_l2};

/// Shapes of one fused-op case: batch, D, E, N, K, R; `norm`: Falcon-Mamba's norms of
/// Δ_low, B and C (eps 1e-6) in `ssm_step`.
#[derive(Debug, Clone, Copy)]
pub struct FusedCase {
    pub batch: usize,
    pub d: usize,
    pub e: usize,
    pub n: usize,
    pub k: usize,
    pub r: usize,
    pub norm: bool,
}

const NORM_EPS: f32 = 1e-6;

/// The outputs of one layer's decode step: xc, z, dbc, y, the residual after, the conv
/// and ssm states after.
type StepOut = [Vec<f32>; 7];

struct Data {
    h: Vec<f32>,
    norm_w: Vec<f32>,
    w_x: Vec<f32>,
    w_z: Vec<f32>,
    conv_w: Vec<f32>,
    conv_b: Vec<f32>,
    conv_state: Vec<f32>,
    w_dt: Vec<f32>,
    w_b: Vec<f32>,
    w_c: Vec<f32>,
    dt_proj: Vec<f32>,
    dt_bias: Vec<f32>,
    a: Vec<f32>,
    d: Vec<f32>,
    ssm: Vec<f32>,
    out_w: Vec<f32>,
}

fn data(c: &FusedCase, seed: u64) -> Data {
    let mut g = Gen::new(seed);
    let FusedCase {
        batch,
        d,
        e,
        n,
        k,
        r,
        ..
    } = *c;
    let scaled = |g: &mut Gen, len: usize, s: f32| -> Vec<f32> {
        g.normal(len).into_iter().map(|v| v * s).collect()
    };
    Data {
        h: g.normal(batch * d),
        norm_w: g.uniform(d, 0.5, 1.5),
        w_x: scaled(&mut g, e * d, 1.0 / (d as f32).sqrt()),
        w_z: scaled(&mut g, e * d, 1.0 / (d as f32).sqrt()),
        conv_w: scaled(&mut g, e * k, 0.5),
        conv_b: g.normal(e),
        conv_state: g.normal(batch * e * (k - 1)),
        w_dt: scaled(&mut g, r * e, 1.0 / (e as f32).sqrt()),
        w_b: scaled(&mut g, n * e, 1.0 / (e as f32).sqrt()),
        w_c: scaled(&mut g, n * e, 1.0 / (e as f32).sqrt()),
        dt_proj: scaled(&mut g, e * r, 1.0 / (r as f32).sqrt()),
        dt_bias: g.uniform(e, -4.0, -1.0),
        a: g.uniform(e * n, -8.0, -0.5),
        d: g.normal(e),
        ssm: g.normal(batch * e * n),
        out_w: scaled(&mut g, d * e, 1.0 / (e as f32).sqrt()),
    }
}

/// One layer's fused decode step on `be`, weights stored as `wd`; outputs poisoned first.
fn fused<B: Backend>(be: &B, c: &FusedCase, x: &Data, wd: DType) -> StepOut {
    let FusedCase {
        batch,
        d,
        e,
        n,
        k,
        r,
        norm,
    } = *c;
    let mut h = up(be, &x.h, &[batch, d]);
    let norm_w = up_as(be, &x.norm_w, &[d], wd);
    let (w_x, w_z) = (
        up_as(be, &x.w_x, &[e, d], wd),
        up_as(be, &x.w_z, &[e, d], wd),
    );
    let conv_w = up(be, &x.conv_w, &[e, k]);
    let conv_b = up(be, &x.conv_b, &[e]);
    let mut conv_state = up(be, &x.conv_state, &[batch, e, k - 1]);
    let (mut xc, mut z) = (poison(be, &[batch, e]), poison(be, &[batch, e]));
    let inputs = MixerInInputs {
        h: &h,
        norm_w: &norm_w,
        eps: 1e-5,
        w_x: &w_x,
        w_z: &w_z,
        conv_w: &conv_w,
        conv_b: Some(&conv_b),
    };
    ops::mixer_in(be, &inputs, &mut conv_state, &mut xc, &mut z).expect("mixer_in");
    let w_dt = up_as(be, &x.w_dt, &[r, e], wd);
    let (w_b, w_c) = (
        up_as(be, &x.w_b, &[n, e], wd),
        up_as(be, &x.w_c, &[n, e], wd),
    );
    let mut dbc = poison(be, &[batch, r + 2 * n]);
    ops::x_proj(be, &xc, &w_dt, &w_b, &w_c, &mut dbc).expect("x_proj");
    let dt_proj = up_as(be, &x.dt_proj, &[e, r], wd);
    let (dt_bias, a, dd) = (
        up(be, &x.dt_bias, &[e]),
        up(be, &x.a, &[e, n]),
        up(be, &x.d, &[e]),
    );
    let mut ssm = up(be, &x.ssm, &[batch, e, n]);
    let mut y = poison(be, &[batch, e]);
    let inputs = SsmStepInputs {
        xc: &xc,
        dbc: &dbc,
        z: &z,
        dt_proj: &dt_proj,
        dt_bias: &dt_bias,
        a: &a,
        d: &dd,
        norm_eps: norm.then_some(NORM_EPS),
    };
    ops::ssm_step(be, &inputs, &mut ssm, &mut y).expect("ssm_step");
    let out_w = up_as(be, &x.out_w, &[d, e], wd);
    ops::matmul_accumulate(be, &y, &out_w, None, &mut h).expect("matmul_accumulate");
    [&xc, &z, &dbc, &y, &h, &conv_state, &ssm].map(|b| down(be, b))
}

/// The same layer step from the unfused ops on the exact CPU reference.
fn unfused(c: &FusedCase, x: &Data, wd: DType) -> StepOut {
    let be = &CpuBackend::new();
    let FusedCase {
        batch,
        d,
        e,
        n,
        k,
        r,
        norm,
    } = *c;
    let h = up(be, &x.h, &[batch, d]);
    let norm_w = up_as(be, &x.norm_w, &[d], wd);
    let mut normed = poison(be, &[batch, d]);
    ops::rms_norm(be, &h, &norm_w, 1e-5, None, &mut normed).expect("rms_norm");
    let mm = |xin: &_, w: &[f32], rows: usize, cols: usize| {
        let w = up_as(be, w, &[rows, cols], wd);
        let mut o = poison(be, &[batch, rows]);
        ops::matmul(be, xin, &w, None, &mut o).expect("matmul");
        o
    };
    let xr = mm(&normed, &x.w_x, e, d);
    let z = mm(&normed, &x.w_z, e, d);
    let conv_w = up(be, &x.conv_w, &[e, k]);
    let conv_b = up(be, &x.conv_b, &[e]);
    let mut conv_state = up(be, &x.conv_state, &[batch, e, k - 1]);
    let mut xc = poison(be, &[batch, e]);
    ops::causal_conv1d_update(
        be,
        &xr,
        &conv_w,
        Some(&conv_b),
        true,
        &mut conv_state,
        &mut xc,
    )
    .expect("conv update");
    let dt_low = mm(&xc, &x.w_dt, r, e);
    let bm = mm(&xc, &x.w_b, n, e);
    let cm = mm(&xc, &x.w_c, n, e);
    // Falcon-Mamba: the model's unfused path, rms_norm with a unit weight.
    let normed = |v: &_, width: usize| {
        let ones = up(be, &vec![1.0; width], &[width]);
        let mut o = poison(be, &[batch, width]);
        ops::rms_norm(be, v, &ones, NORM_EPS, None, &mut o).expect("norm");
        o
    };
    let normed_all = norm.then(|| (normed(&dt_low, r), normed(&bm, n), normed(&cm, n)));
    let (dt_in, bs, cs) = match &normed_all {
        Some((a, b, c)) => (a, b, c),
        None => (&dt_low, &bm, &cm),
    };
    let dt = mm(dt_in, &x.dt_proj, e, r);
    let (dt_bias, a, dd) = (
        up(be, &x.dt_bias, &[e]),
        up(be, &x.a, &[e, n]),
        up(be, &x.d, &[e]),
    );
    let mut ssm = up(be, &x.ssm, &[batch, e, n]);
    let mut y = poison(be, &[batch, e]);
    let inputs = StepInputs {
        x: &xc,
        dt: &dt,
        a: &a,
        b: bs,
        c: cs,
        d: Some(&dd),
        z: Some(&z),
        dt_bias: Some(&dt_bias),
        dt_softplus: true,
    };
    ops::selective_state_update(be, &inputs, &mut ssm, &mut y).expect("state update");
    let out = mm(&y, &x.out_w, d, e);
    let res: Vec<f32> = x.h.iter().zip(down(be, &out)).map(|(a, b)| a + b).collect();
    let dbc: Vec<f32> = (0..batch)
        .flat_map(|b| {
            let row = |v: &Vec<f32>, w: usize| v[b * w..(b + 1) * w].to_vec();
            let (dl, bv, cv) = (down(be, &dt_low), down(be, &bm), down(be, &cm));
            [row(&dl, r), row(&bv, n), row(&cv, n)].concat()
        })
        .collect();
    [
        down(be, &xc),
        down(be, &z),
        dbc,
        down(be, &y),
        res,
        down(be, &conv_state),
        down(be, &ssm),
    ]
}

/// The fused ops on `be` equal the unfused reference ops for every weight dtype at
/// batch 1 to 4 (130m-like ratios at a small width, plus odd sizes), with and without
/// Falcon-Mamba's norms.
pub fn check_fused_ops<B: Backend>(be: &B, tol: Tol) {
    let case = |batch, d, e, n, k, r, norm| FusedCase {
        batch,
        d,
        e,
        n,
        k,
        r,
        norm,
    };
    let cases = [
        case(1, 64, 128, 16, 4, 4, false),
        case(3, 48, 96, 16, 4, 3, false),
        case(4, 37, 75, 5, 3, 7, false),
        case(2, 300, 600, 16, 4, 19, false),
        // Falcon-Mamba's norms of Δ_low, B and C inside ssm_step.
        case(1, 64, 128, 16, 4, 4, true),
        case(3, 40, 88, 6, 4, 5, true),
        // The most sequences the fused ops take.
        case(8, 40, 72, 8, 4, 4, false),
        case(7, 24, 48, 16, 4, 2, true),
    ];
    const NAMES: [&str; 7] = ["xc", "z", "dbc", "y", "residual", "conv state", "ssm state"];
    let mut worst = (0f64, "");
    for (i, c) in cases.iter().enumerate() {
        for wd in [DType::F32, DType::F16, DType::BF16] {
            let x = data(c, 40 + i as u64);
            let got = fused(be, c, &x, wd);
            let want = unfused(c, &x, wd);
            for ((g, w), name) in got.iter().zip(&want).zip(NAMES) {
                let what = format!("{} fused {name}, {c:?}, {wd:?}", be.name());
                assert_close(&what, g, w, tol);
                let e = rel_l2(g, w);
                if e > worst.0 {
                    worst = (e, name);
                }
            }
        }
    }
    super::gpu::say(format!(
        "{}: fused decode ops vs the unfused reference ops, {} cases x 3 weight dtypes: \
         worst rel L2 {:.2e} ({})",
        be.name(),
        cases.len(),
        worst.0,
        worst.1
    ));
}

/// The small random model of `decode_checks` (an f32 checkpoint) with weights stored as
/// `wd` on the device.
fn model_as<B: Backend>(be: B, wd: DType) -> MambaModel<B> {
    let shape = SMALL;
    let bytes = shape.checkpoint(11, DType::F32).expect("checkpoint");
    let weight_dtype = match wd {
        DType::F16 => WeightDType::F16,
        DType::BF16 => WeightDType::BF16,
        _ => WeightDType::F32,
    };
    let opts = LoadOptions {
        progress: false,
        weight_dtype,
        ..LoadOptions::default()
    };
    let m = MambaModel::from_bytes(be, shape.config_json().as_bytes(), &[&bytes], &opts);
    let m = m.expect("load");
    assert_eq!(m.weight_dtype(), wd, "weights stored as asked");
    m
}

/// Decoding with the fused step equals decoding with the unfused one (ids and logits)
/// on the same backend and against the exact CPU reference, for each weight dtype and
/// batch 1 and 3; a fused-capable backend really takes the fused step there.
pub fn check_fused_model<B: Backend + Clone>(be: &B, tol: f64) {
    let prompts: &[&[u32]] = &[&[1, 2, 3, 4, 5], &[9, 8, 7], &[30, 31, 32, 33]];
    for wd in [DType::F32, DType::F16, DType::BF16] {
        let mut m = model_as(be.clone(), wd);
        let mut reference = model_as(CpuBackend::new(), wd);
        reference.set_fused_decode(false);
        for batch in [1, 3] {
            let p = &prompts[..batch];
            assert!(
                m.uses_fused_decode(batch),
                "{}: fused step at batch {batch}",
                be.name()
            );
            let fused: Trace = decode_alone(&m, p, 6);
            m.set_fused_decode(false);
            let plain: Trace = decode_alone(&m, p, 6);
            m.set_fused_decode(true);
            let want: Trace = decode_alone(&reference, p, 6);
            let what = format!("{} {wd:?} batch {batch}", be.name());
            assert_same_trace(&format!("{what}: fused vs unfused"), &fused, &plain, tol);
            assert_same_trace(&format!("{what}: fused vs CPU"), &fused, &want, tol);
            let e = |a: &Trace, b: &Trace| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| rel_l2(&x.1, &y.1))
                    .fold(0f64, f64::max)
            };
            super::gpu::say(format!(
                "{what}: 6 greedy steps, ids equal; logits rel L2 fused vs unfused {:.2e}, \
                 vs unfused CPU reference {:.2e}",
                e(&fused, &plain),
                e(&fused, &want)
            ));
        }
    }
}

/// Batched decode around the switch from the fused step (≤ 8 sequences) to the unfused
/// GEMM step (and the GEMM paths of the matmul: wgpu tiles and CUDA's cuBLAS from 9
/// rows): the sequences of a batch of 3, 8, 9, 16 or 64 decode as each does alone (all
/// of them up to 9, a spread of 4 above).
pub fn check_batched_decode<B: Backend + Clone>(be: &B, tol: f64) {
    let m = small_model(be.clone(), 12, DType::F32);
    let all: Vec<Vec<u32>> = (0..64u32)
        .map(|i| vec![1 + i % 60, 20 + (2 * i) % 40, 40 + i % 23, 3])
        .collect();
    assert!(m.uses_fused_decode(8) || be.fused_step_max_weight_bytes().is_none());
    assert!(!m.uses_fused_decode(9));
    for batch in [3, 8, 9, 16, 64] {
        let p: Vec<&[u32]> = all[..batch].iter().map(|v| v.as_slice()).collect();
        let together = decode_alone(&m, &p, 5);
        let checked: Vec<usize> = if batch <= 9 {
            (0..batch).collect()
        } else {
            vec![0, 1, batch / 2, batch - 1]
        };
        for s in checked {
            let alone = decode_alone(&m, &[p[s]], 5);
            let mine: Trace = together
                .iter()
                .map(|(ids, logits)| {
                    let v = logits.len() / batch;
                    (vec![ids[s]], logits[s * v..(s + 1) * v].to_vec())
                })
                .collect();
            let what = format!("{} batch {batch}, sequence {s}", be.name());
            assert_same_trace(&what, &mine, &alone, tol);
        }
    }
}

/// `matmul_accumulate` on `be` equals `out₀ + x·wᵀ (+ bias)` from the CPU reference's
/// plain matmul, for the decode kernel (m ≤ 8), the GEMM path (m = 9, 70) and every
/// weight dtype, with and without a bias.
pub fn check_matmul_accumulate<B: Backend>(be: &B, tol: Tol) {
    let cpu = &CpuBackend::new();
    for (i, (m, n, k)) in [(1, 37, 64), (3, 64, 48), (9, 33, 40), (70, 65, 17)]
        .into_iter()
        .enumerate()
    {
        for wd in [DType::F32, DType::F16, DType::BF16] {
            for bias in [false, true] {
                let mut g = Gen::new(90 + i as u64);
                let (xv, wv, bv, ov) = (
                    g.normal(m * k),
                    g.normal(n * k),
                    g.normal(n),
                    g.normal(m * n),
                );
                let run = |target: &B| {
                    let x = up(target, &xv, &[m, k]);
                    let w = up_as(target, &wv, &[n, k], wd);
                    let b = bias.then(|| up_as(target, &bv, &[n], wd));
                    let mut out = up(target, &ov, &[m, n]);
                    ops::matmul_accumulate(target, &x, &w, b.as_ref(), &mut out)
                        .expect("accumulate");
                    down(target, &out)
                };
                let got = run(be);
                let x = up(cpu, &xv, &[m, k]);
                let w = up_as(cpu, &wv, &[n, k], wd);
                let b = bias.then(|| up_as(cpu, &bv, &[n], wd));
                let mut prod = poison(cpu, &[m, n]);
                ops::matmul(cpu, &x, &w, b.as_ref(), &mut prod).expect("matmul");
                let want: Vec<f32> = ov
                    .iter()
                    .zip(down(cpu, &prod))
                    .map(|(a, b)| a + b)
                    .collect();
                let what = format!(
                    "{} matmul_accumulate {m}x{n}x{k} {wd:?} bias {bias}",
                    be.name()
                );
                assert_close(&what, &got, &want, tol);
            }
        }
    }
}
