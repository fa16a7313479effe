//! Selective scan: the reference loop. Mirrors `shaders/selective_scan.wgsl` and
//! `kernels/selective_scan.cu`, which run the same recurrence as a parallel scan over time.
//! Generic over the arithmetic (`Real`, see `common.rs`).

use rayon::prelude::*;

use super::common::{Real, discretize_delta, silu_t};
use crate::params::{STATE_CARRY, STATE_NONE, ScanParams};

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

/// `h_t = exp(Δ·A)·h_{t-1} + Δ·B·u`, `y = C·h + D·u`, `out = y·silu(z)` for every
/// (batch, channel), sequentially over time, in the arithmetic `T`. Channels run in
/// parallel.
pub(crate) fn selective_scan<T: Real + Send>(
    p: &ScanParams,
    s: &ScanSlices<'_>,
    state: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let (batch, dim, n) = (p.batch as usize, p.dim as usize, p.dstate as usize);
    let rows: Vec<Vec<f32>> = match state {
        Some(st) if p.state_mode != STATE_NONE => st
            .par_chunks_mut(n)
            .enumerate()
            .map(|(bd, h)| scan_channel::<T>(p, s, bd, Some(h)))
            .collect(),
        _ => (0..batch * dim)
            .into_par_iter()
            .map(|bd| scan_channel::<T>(p, s, bd, None))
            .collect(),
    };
    for (bd, ys) in rows.iter().enumerate() {
        let base = (bd / dim) * p.x_sb as usize + (bd % dim) * p.x_sd as usize;
        for (t, &y) in ys.iter().enumerate() {
            out[base + t * p.x_st as usize] = y;
        }
    }
}

/// One (batch, channel) of the scan: returns its L outputs and updates `h_io`.
fn scan_channel<T: Real>(
    p: &ScanParams,
    s: &ScanSlices<'_>,
    bd: usize,
    h_io: Option<&mut [f32]>,
) -> Vec<f32> {
    let (dim, len, n) = (p.dim as usize, p.len as usize, p.dstate as usize);
    let (b, d) = (bd / dim, bd % dim);
    let mut h: Vec<T> = match (&h_io, p.state_mode) {
        (Some(h0), STATE_CARRY) => h0.iter().map(|&v| T::of(v)).collect(),
        _ => vec![T::default(); n],
    };
    let a: Vec<T> = s.a[d * n..(d + 1) * n].iter().map(|&v| T::of(v)).collect();
    let (bg, cg) = (d / p.b_group_dim as usize, d / p.c_group_dim as usize);
    let b_base = b * p.b_sb as usize + bg * p.b_sg as usize;
    let c_base = b * p.c_sb as usize + cg * p.c_sg as usize;
    let x_base = b * p.x_sb as usize + d * p.x_sd as usize;
    let bias = s.delta_bias.map(|v| v[d]);
    let (b_sn, c_sn) = (p.b_sn as usize, p.c_sn as usize);
    // Per-step scratch: the decays exp(Δ·A) (computed in one vectorisable pass), and
    // B and C gathered into contiguous lanes.
    let (mut da, mut bt, mut ct) = (
        vec![T::default(); n],
        vec![T::default(); n],
        vec![T::default(); n],
    );
    let mut ys = Vec::with_capacity(len);
    for t in 0..len {
        let xi = x_base + t * p.x_st as usize;
        let u = T::of(s.u[xi]);
        let dt: T = discretize_delta(s.delta[xi], bias, p.delta_softplus != 0);
        let (b0, c0) = (b_base + t * p.b_st as usize, c_base + t * p.c_st as usize);
        for k in 0..n {
            bt[k] = T::of(s.b[b0 + k * b_sn]);
            ct[k] = T::of(s.c[c0 + k * c_sn]);
        }
        for (e, &ak) in da.iter_mut().zip(&a) {
            *e = (dt * ak).exp();
        }
        let du = dt * u;
        let mut y = T::default();
        for k in 0..n {
            h[k] = da[k] * h[k] + du * bt[k];
            y += ct[k] * h[k];
        }
        if let Some(dv) = s.d {
            y += T::of(dv[d]) * u;
        }
        if let Some(z) = s.z {
            y = y * silu_t(T::of(z[xi]));
        }
        ys.push(y.to_f32());
    }
    if let Some(h_out) = h_io {
        for (o, v) in h_out.iter_mut().zip(&h) {
            *o = v.to_f32();
        }
    }
    ys
}
