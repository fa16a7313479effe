//! Selective scan and single-step state update: the reference loops.
//!
//! Mirrors `shaders/selective_scan.wgsl` / `kernels/selective_scan.cu` (which run the
//! same recurrence as a parallel scan over time) and
//! `shaders/selective_state_update.wgsl` / `kernels/selective_state_update.cu`.
//! All arithmetic is f64; inputs and outputs are f32.

use rayon::prelude::*;

use crate::params::{STATE_CARRY, STATE_NONE, ScanParams, StepParams};

pub(crate) struct ScanSlices<'a> {
    pub u: &'a [f32],
    pub delta: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub c: &'a [f32],
    pub d: Option<&'a [f32]>,
    pub z: Option<&'a [f32]>,
    pub delta_bias: Option<&'a [f32]>,
}

pub(crate) struct StepSlices<'a> {
    pub x: &'a [f32],
    pub dt: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub c: &'a [f32],
    pub d: Option<&'a [f32]>,
    pub z: Option<&'a [f32]>,
    pub dt_bias: Option<&'a [f32]>,
}

/// PyTorch's softplus (beta 1, threshold 20).
#[inline]
pub(crate) fn softplus(x: f64) -> f64 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

#[inline]
pub(crate) fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Δ after bias and softplus.
#[inline]
fn discretize_delta(raw: f32, bias: Option<f32>, softplus_on: bool) -> f64 {
    let dt = raw as f64 + bias.unwrap_or(0.0) as f64;
    if softplus_on { softplus(dt) } else { dt }
}

/// `h_t = exp(Δ·A)·h_{t-1} + Δ·B·u`, `y = C·h + D·u`, `out = y·silu(z)` for every
/// (batch, channel), sequentially over time. Channels run in parallel.
pub(crate) fn selective_scan(
    p: &ScanParams,
    s: &ScanSlices<'_>,
    state: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let (batch, dim, len, n) = (
        p.batch as usize,
        p.dim as usize,
        p.len as usize,
        p.dstate as usize,
    );
    let channel = |bd: usize, h_io: Option<&mut [f32]>| -> Vec<f32> {
        let (b, d) = (bd / dim, bd % dim);
        let mut h: Vec<f64> = match (&h_io, p.state_mode) {
            (Some(h0), STATE_CARRY) => h0.iter().map(|&v| v as f64).collect(),
            _ => vec![0.0; n],
        };
        let a: Vec<f64> = s.a[d * n..(d + 1) * n].iter().map(|&v| v as f64).collect();
        let (bg, cg) = (d / p.b_group_dim as usize, d / p.c_group_dim as usize);
        let b_base = b * p.b_sb as usize + bg * p.b_sg as usize;
        let c_base = b * p.c_sb as usize + cg * p.c_sg as usize;
        let x_base = b * p.x_sb as usize + d * p.x_sd as usize;
        let bias = s.delta_bias.map(|v| v[d]);
        let mut ys = Vec::with_capacity(len);
        for t in 0..len {
            let xi = x_base + t * p.x_st as usize;
            let u = s.u[xi] as f64;
            let dt = discretize_delta(s.delta[xi], bias, p.delta_softplus != 0);
            let (bt, ct) = (b_base + t * p.b_st as usize, c_base + t * p.c_st as usize);
            let mut y = 0.0;
            for (k, hk) in h.iter_mut().enumerate() {
                let bk = s.b[bt + k * p.b_sn as usize] as f64;
                let ck = s.c[ct + k * p.c_sn as usize] as f64;
                *hk = (dt * a[k]).exp() * *hk + dt * bk * u;
                y += ck * *hk;
            }
            if let Some(dv) = s.d {
                y += dv[d] as f64 * u;
            }
            if let Some(z) = s.z {
                y *= silu(z[xi] as f64);
            }
            ys.push(y as f32);
        }
        if let Some(h_out) = h_io {
            for (o, v) in h_out.iter_mut().zip(&h) {
                *o = *v as f32;
            }
        }
        ys
    };
    let rows: Vec<Vec<f32>> = match state {
        Some(st) if p.state_mode != STATE_NONE => st
            .par_chunks_mut(n)
            .enumerate()
            .map(|(bd, h)| channel(bd, Some(h)))
            .collect(),
        _ => (0..batch * dim)
            .into_par_iter()
            .map(|bd| channel(bd, None))
            .collect(),
    };
    for (bd, ys) in rows.iter().enumerate() {
        let base = (bd / dim) * p.x_sb as usize + (bd % dim) * p.x_sd as usize;
        for (t, &y) in ys.iter().enumerate() {
            out[base + t * p.x_st as usize] = y;
        }
    }
}

/// One decode step for every (batch, channel): the state is updated in place.
pub(crate) fn selective_state_update(
    p: &StepParams,
    s: &StepSlices<'_>,
    state: &mut [f32],
    out: &mut [f32],
) {
    let (dim, n) = (p.dim as usize, p.dstate as usize);
    state
        .par_chunks_mut(n)
        .zip(out.par_iter_mut())
        .enumerate()
        .for_each(|(bd, (h, o))| {
            let (b, d) = (bd / dim, bd % dim);
            let g = d / p.group_dim as usize;
            let bc = (b * p.groups as usize + g) * n;
            let x = s.x[bd] as f64;
            let dt = discretize_delta(s.dt[bd], s.dt_bias.map(|v| v[d]), p.dt_softplus != 0);
            let mut y = 0.0;
            for k in 0..n {
                let hk =
                    (dt * s.a[d * n + k] as f64).exp() * h[k] as f64 + dt * s.b[bc + k] as f64 * x;
                h[k] = hk as f32;
                y += s.c[bc + k] as f64 * hk;
            }
            if let Some(dv) = s.d {
                y += dv[d] as f64 * x;
            }
            if let Some(z) = s.z {
                y *= silu(z[bd] as f64);
            }
            *o = y as f32;
        });
}
