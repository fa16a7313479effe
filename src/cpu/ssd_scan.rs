//! Mamba-2's scan in head form: the reference loop (see [`crate::ops::ssd_scan`]).
//!
//! One task per (batch, head) runs the recurrence over time with the head's state
//! `(P, N)` held in the arithmetic `T` for the whole sequence (rounded to f32 once, at
//! the end). Per step a head needs one `exp` (A and Δ are constant over the head),
//! where the general scan spends one per channel and state: P·N times fewer.

use rayon::prelude::*;

use super::common::{Real, discretize_delta, silu_t};
use crate::params::{STATE_CARRY, STATE_NONE, SsdParams};

pub(crate) struct SsdSlices<'a> {
    pub x: &'a [f32],
    pub dt: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub c: &'a [f32],
    pub d: Option<&'a [f32]>,
    pub z: Option<&'a [f32]>,
    pub dt_bias: Option<&'a [f32]>,
}

pub(crate) fn ssd_scan<T: Real + Send>(
    p: &SsdParams,
    s: &SsdSlices<'_>,
    state: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let [batch, len, heads, hd, n, groups] =
        [p.batch, p.len, p.heads, p.head_dim, p.dstate, p.groups].map(|v| v as usize);
    let e = heads * hd;
    let per_group = heads / groups;
    let mut scratch;
    let state = match state {
        Some(st) => st,
        None => {
            scratch = vec![0f32; batch * heads * hd * n];
            &mut scratch[..]
        }
    };
    let carry = p.state_mode == STATE_CARRY;
    // Each task writes its head's outputs `(L, P)` here; they are scattered after.
    let ys: Vec<Vec<f32>> = state
        .par_chunks_mut(hd * n)
        .enumerate()
        .map(|(bh, st)| {
            let (b, h) = (bh / heads, bh % heads);
            let g = h / per_group;
            let mut hs: Vec<T> = if carry {
                st.iter().map(|&v| T::of(v)).collect()
            } else {
                vec![T::default(); hd * n]
            };
            let a = T::of(s.a[h]);
            let dv = s.d.map(|d| T::of(d[h]));
            let mut y = vec![0f32; len * hd];
            for t in p.t_begin as usize..p.t_end as usize {
                let row = b * len + t;
                let dt: T = discretize_delta(
                    s.dt[row * heads + h],
                    s.dt_bias.map(|v| v[h]),
                    p.dt_softplus != 0,
                );
                let decay = (dt * a).exp();
                let bc = (row * groups + g) * n;
                let (bv, cv) = (&s.b[bc..bc + n], &s.c[bc..bc + n]);
                let xs = &s.x[row * e + h * hd..row * e + (h + 1) * hd];
                for (pi, (hp, &xv)) in hs.chunks_mut(n).zip(xs).enumerate() {
                    let x = T::of(xv);
                    let dx = dt * x;
                    let mut acc = update_dot(hp, bv, cv, decay, dx);
                    if let Some(d) = dv {
                        acc += d * x;
                    }
                    if let Some(z) = s.z {
                        acc = acc * silu_t(T::of(z[row * e + h * hd + pi]));
                    }
                    y[t * hd + pi] = acc.to_f32();
                }
            }
            if p.state_mode != STATE_NONE {
                for (o, v) in st.iter_mut().zip(&hs) {
                    *o = v.to_f32();
                }
            }
            y
        })
        .collect();
    for (bh, y) in ys.iter().enumerate() {
        let (b, h) = (bh / heads, bh % heads);
        for t in p.t_begin as usize..p.t_end as usize {
            let o = (b * len + t) * e + h * hd;
            out[o..o + hd].copy_from_slice(&y[t * hd..(t + 1) * hd]);
        }
    }
}

/// `h ← decay·h + dx·B`, then `Σ C·h`, with eight partial sums so that the f32 loop
/// vectorises (one running sum would serialise on the additions).
#[inline]
fn update_dot<T: Real>(h: &mut [T], b: &[f32], c: &[f32], decay: T, dx: T) -> T {
    let mut acc = [T::default(); 8];
    let mut hc = h.chunks_exact_mut(8);
    let (mut bc, mut cc) = (b.chunks_exact(8), c.chunks_exact(8));
    for ((h8, b8), c8) in (&mut hc).zip(&mut bc).zip(&mut cc) {
        for j in 0..8 {
            h8[j] = decay * h8[j] + dx * T::of(b8[j]);
            acc[j] += T::of(c8[j]) * h8[j];
        }
    }
    let mut sum = T::default();
    for ((hk, &bk), &ck) in hc
        .into_remainder()
        .iter_mut()
        .zip(bc.remainder())
        .zip(cc.remainder())
    {
        *hk = decay * *hk + dx * T::of(bk);
        sum += T::of(ck) * *hk;
    }
    acc.iter().fold(sum, |s, &a| s + a)
}
