//! RMSNorm with an optional fused residual add. Mirrors `shaders/rms_norm.wgsl`.

use rayon::prelude::*;

use super::Floats;
use crate::params::NormParams;

/// Elements up to which the norm runs on the calling thread.
const SERIAL_MAX: usize = 1 << 14;

/// Per row: `r = residual + x` (stored back) or `r = x`; `out = r / sqrt(mean(r²) + eps) · w`.
/// The mean of squares is accumulated in f64. A row is a segment of `p.dim` values;
/// segment `s` is scaled by the weight from `(s % p.groups)·dim` on (see [`NormParams`]).
pub(crate) fn rms_norm(
    p: &NormParams,
    x: &[f32],
    w: Floats<'_>,
    residual: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let dim = p.dim as usize;
    let groups = p.groups as usize;
    let mut wf = vec![0f32; dim * groups];
    w.read_into(0, &mut wf);
    let norm_row = |s: usize, r: &[f32], o: &mut [f32]| {
        let wf = &wf[(s % groups) * dim..][..dim];
        let ms = r.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
        let inv = 1.0 / (ms + p.eps as f64).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(r).zip(wf) {
            *o = (v as f64 * inv) as f32 * g;
        }
    };
    // A decode step's rows (a few of d_model) are less work than waking rayon.
    if x.len() <= SERIAL_MAX {
        match residual {
            Some(res) => {
                for (s, ((r, xr), o)) in res
                    .chunks_mut(dim)
                    .zip(x.chunks(dim))
                    .zip(out.chunks_mut(dim))
                    .enumerate()
                {
                    for (rv, &xv) in r.iter_mut().zip(xr) {
                        *rv += xv;
                    }
                    norm_row(s, r, o);
                }
            }
            None => {
                for (s, (xr, o)) in x.chunks(dim).zip(out.chunks_mut(dim)).enumerate() {
                    norm_row(s, xr, o);
                }
            }
        }
        return;
    }
    match residual {
        Some(res) => res
            .par_chunks_mut(dim)
            .zip(x.par_chunks(dim))
            .zip(out.par_chunks_mut(dim))
            .enumerate()
            .for_each(|(s, ((r, xr), o))| {
                for (rv, &xv) in r.iter_mut().zip(xr) {
                    *rv += xv;
                }
                norm_row(s, r, o);
            }),
        None => x
            .par_chunks(dim)
            .zip(out.par_chunks_mut(dim))
            .enumerate()
            .for_each(|(s, (xr, o))| norm_row(s, xr, o)),
    }
}
