//! One decode step of the selective state space: the reference loop. Mirrors
//! `shaders/selective_state_update.wgsl` and `kernels/selective_state_update.cu`.
//! Generic over the arithmetic (`Real`, see `common.rs`).

use rayon::prelude::*;

use super::common::{Real, discretize_delta, silu_t};
use crate::params::StepParams;

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

/// One decode step for every (batch, channel) in the arithmetic `T`: the state is
/// updated in place.
pub(crate) fn selective_state_update<T: Real>(
    p: &StepParams,
    s: &StepSlices<'_>,
    state: &mut [f32],
    out: &mut [f32],
) {
    let (dim, n) = (p.dim as usize, p.dstate as usize);
    state
        .par_chunks_mut(n)
        .zip(out.par_iter_mut())
        .with_min_len(64)
        .enumerate()
        .for_each(|(bd, (h, o))| {
            let (b, d) = (bd / dim, bd % dim);
            let g = d / p.group_dim as usize;
            let bc = (b * p.groups as usize + g) * n;
            let x = T::of(s.x[bd]);
            let dt: T = discretize_delta(s.dt[bd], s.dt_bias.map(|v| v[d]), p.dt_softplus != 0);
            let (a, bv, cv) = (&s.a[d * n..(d + 1) * n], &s.b[bc..bc + n], &s.c[bc..bc + n]);
            let dx = dt * x;
            let mut y = T::default();
            for k in 0..n {
                let hk = (dt * T::of(a[k])).exp() * T::of(h[k]) + dx * T::of(bv[k]);
                h[k] = hk.to_f32();
                y += T::of(cv[k]) * hk;
            }
            if let Some(dv) = s.d {
                y += T::of(dv[d]) * x;
            }
            if let Some(z) = s.z {
                y = y * silu_t(T::of(z[bd]));
            }
            *o = y.to_f32();
        });
}
