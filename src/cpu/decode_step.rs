//! The fused decode step's ops (see `crate::ops::decode`) on the CPU: each one is the
//! reference ops it replaces, run back to back on the same slices: the norm, the
//! matrix-vector products, the conv step and the state update of this backend. That
//! makes it the reference the fused GPU kernels (`shaders/decode_step.wgsl`,
//! `kernels/decode_step.cu`) are tested against. Fusing the loops themselves does not
//! pay here: a decode step streams the weights once either way and the activations
//! between the ops (a few KiB per sequence) stay in cache.

use super::Floats;
use super::Precision;
use super::causal_conv1d::{causal_conv1d_update, causal_conv1d_update_lanes};
use super::matmul::{GEMM_MIN_M, matmul};
use super::rms_norm::rms_norm;
use super::scan_lanes;
use super::selective_state_update::{StepSlices, selective_state_update};
use super::{gemv, pool};
use crate::params::*;

fn matmul_params(m: u32, n: u32, k: u32) -> MatmulParams {
    let mut p: MatmulParams = bytemuck::Zeroable::zeroed();
    (p.m, p.n, p.k) = (m, n, k);
    p
}

/// The weights and slices of [`crate::ops::mixer_in`].
pub(crate) struct MixerIn<'a> {
    pub h: &'a [f32],
    pub norm_w: Floats<'a>,
    pub w_x: Floats<'a>,
    pub w_z: Floats<'a>,
    pub conv_w: &'a [f32],
    pub conv_b: Option<&'a [f32]>,
}

pub(crate) fn mixer_in(
    precision: Precision,
    p: &MixerInParams,
    i: &MixerIn<'_>,
    conv_state: &mut [f32],
    xc: &mut [f32],
    z: &mut [f32],
) {
    let (b, d, e) = (p.batch as usize, p.d_model as usize, p.d_inner as usize);
    let mut np: NormParams = bytemuck::Zeroable::zeroed();
    (np.rows, np.dim, np.eps, np.groups) = (p.batch, p.d_model, p.eps, 1);
    let mut normed = vec![0f32; b * d];
    rms_norm(&np, i.h, i.norm_w, None, &mut normed);
    let mp = matmul_params(p.batch, p.d_inner, p.d_model);
    let mut x = vec![0f32; b * e];
    matmul(&mp, &normed, i.w_x, None, &mut x);
    matmul(&mp, &normed, i.w_z, None, z);
    let mut cp: ConvParams = bytemuck::Zeroable::zeroed();
    (cp.batch, cp.dim, cp.len, cp.width) = (p.batch, p.d_inner, 1, p.width);
    (cp.has_bias, cp.silu) = (p.has_conv_bias, 1);
    let bias = i.conv_b.filter(|_| p.has_conv_bias != 0);
    match precision {
        Precision::Exact => causal_conv1d_update::<f64>(&cp, &x, i.conv_w, bias, conv_state, xc),
        Precision::Fast => causal_conv1d_update_lanes(&cp, &x, i.conv_w, bias, conv_state, xc),
    }
}

/// `dbc[b] = [w_dt; w_b; w_c] · xc[b]`.
///
/// The three products are small (dt_rank + 2·d_state rows, ≈ 80 for 130m), so they run
/// as one pool region of [`XPROJ_ROWS`]-row chunks rather than three (each region has
/// a start-up cost of its own, comparable to the work of one of them).
pub(crate) fn x_proj(p: &StepProjParams, xc: &[f32], w: [Floats<'_>; 3], dbc: &mut [f32]) {
    let (b, e, r, n) = (
        p.batch as usize,
        p.d_inner as usize,
        p.dt_rank as usize,
        p.dstate as usize,
    );
    let width = r + 2 * n;
    if b >= GEMM_MIN_M {
        return x_proj_each(p, xc, w, dbc);
    }
    let sizes = [r, n, n];
    // Each matrix's rows padded to whole chunks, so that no chunk spans two matrices.
    let padded = sizes.map(|s| s.next_multiple_of(XPROJ_ROWS));
    let starts = [0, padded[0], padded[0] + padded[1]];
    let mut t = vec![0f32; (starts[2] + padded[2]) * b];
    let isa = gemv::Isa::current();
    let xs = w.map(|wi| gemv::Act::new(isa, &xc[..b * e], e, wi));
    pool::par_chunks_mut(&mut t, XPROJ_ROWS * b, |c, res| {
        let row = c * XPROJ_ROWS;
        // The last matrix starting at or before `row` (an empty one shares its start).
        let mi = (0..3).rev().find(|&i| starts[i] <= row).unwrap_or(0);
        let r0 = row - starts[mi];
        let len = XPROJ_ROWS.min(sizes[mi] - r0);
        gemv::rows(isa, &xs[mi], w[mi], e, r0, &mut res[..len * b]);
    });
    let cols = [0, r, r + n];
    for mi in 0..3 {
        for j in 0..sizes[mi] {
            for i in 0..b {
                dbc[i * width + cols[mi] + j] = t[(starts[mi] + j) * b + i];
            }
        }
    }
}

/// Rows per chunk of [`x_proj`]: with k = d_inner (1536 for 130m), 24 KiB of f32
/// weights, and ten chunks for 130m's 80 rows.
const XPROJ_ROWS: usize = 8;

/// [`x_proj`] for many sequences: three matmuls (the GEMM path).
fn x_proj_each(p: &StepProjParams, xc: &[f32], w: [Floats<'_>; 3], dbc: &mut [f32]) {
    let (b, r, n) = (p.batch as usize, p.dt_rank as usize, p.dstate as usize);
    let width = r + 2 * n;
    let mut col = 0;
    for (wi, rows) in w.into_iter().zip([r, n, n]) {
        let mut part = vec![0f32; b * rows];
        matmul(
            &matmul_params(p.batch, rows as u32, p.d_inner),
            xc,
            wi,
            None,
            &mut part,
        );
        for (row, src) in dbc.chunks_exact_mut(width).zip(part.chunks_exact(rows)) {
            row[col..col + rows].copy_from_slice(src);
        }
        col += rows;
    }
}

/// The slices of [`crate::ops::ssm_step`].
pub(crate) struct SsmStep<'a> {
    pub xc: &'a [f32],
    pub dbc: &'a [f32],
    pub z: &'a [f32],
    pub dt_proj: Floats<'a>,
    pub dt_bias: &'a [f32],
    pub a: &'a [f32],
    pub d: &'a [f32],
}

pub(crate) fn ssm_step(
    precision: Precision,
    p: &StepProjParams,
    i: &SsmStep<'_>,
    state: &mut [f32],
    y: &mut [f32],
) {
    let (b, e, r, n) = (
        p.batch as usize,
        p.d_inner as usize,
        p.dt_rank as usize,
        p.dstate as usize,
    );
    let width = r + 2 * n;
    let part = |from: usize, len: usize| -> Vec<f32> {
        i.dbc
            .chunks_exact(width)
            .flat_map(|row| row[from..from + len].iter().copied())
            .collect()
    };
    let (mut dt_low, mut bm, mut cm) = (part(0, r), part(r, n), part(r + n, n));
    if p.has_norm != 0 {
        // Falcon-Mamba: each of Δ_low, B, C RMS-normalised on its own, no weight.
        for (v, width) in [(&mut dt_low, r), (&mut bm, n), (&mut cm, n)] {
            let mut np: NormParams = bytemuck::Zeroable::zeroed();
            (np.rows, np.dim, np.eps, np.groups) = (p.batch, width as u32, p.norm_eps, 1);
            let ones = vec![1f32; width];
            let mut normed = vec![0f32; v.len()];
            rms_norm(&np, v, Floats::F32(&ones), None, &mut normed);
            *v = normed;
        }
    }
    let mut dt = vec![0f32; b * e];
    matmul(
        &matmul_params(p.batch, p.d_inner, p.dt_rank),
        &dt_low,
        i.dt_proj,
        None,
        &mut dt,
    );
    let mut sp: StepParams = bytemuck::Zeroable::zeroed();
    (sp.batch, sp.dim, sp.dstate, sp.group_dim, sp.groups) =
        (p.batch, p.d_inner, p.dstate, p.d_inner, 1);
    (sp.has_d, sp.has_z, sp.has_dt_bias, sp.dt_softplus) = (1, 1, 1, 1);
    let s = StepSlices {
        x: i.xc,
        dt: &dt,
        a: i.a,
        b: &bm,
        c: &cm,
        d: Some(i.d),
        z: Some(i.z),
        dt_bias: Some(i.dt_bias),
    };
    match precision {
        Precision::Exact => selective_state_update::<f64>(&sp, &s, state, y),
        Precision::Fast if scan_lanes::step_applies(&sp) => {
            scan_lanes::selective_state_update(&sp, &s, state, y)
        }
        Precision::Fast => selective_state_update::<f32>(&sp, &s, state, y),
    }
}
