//! Matmul with Q8_0 weights ([`crate::ops::matmul_q8`], format in [`crate::quant`]).
//! Mirrors `shaders/matmul_q8.wgsl` and `kernels/matmul_q8.cu`.
//!
//! Decode (fewer than [`GEMM_MIN_M`] rows of x) is a GEMV over the packed weights, bound
//! by reading them (34 bytes per 32 weights instead of 128 in f32 or 64 in f16) and by
//! the per-weight arithmetic; its dot products (`q8_dot.rs`) take the activations in
//! f32 or quantized to int8 ([`super::Q8Activations`]). Prefill widens row panels of W
//! to f32 for the `gemm` crate, with f32 activations in both modes.

use half::f16;
use rayon::prelude::*;

use super::Floats;
use super::gemv::Isa;
use super::q8_dot::{IntIsa, QAct, dot_f32, dot_rows_i8};
use crate::params::MatmulParams;
use crate::quant::Q8_BLOCK;

/// Below this many rows of x: a GEMV over the packed weights; from it on, row panels of
/// W are widened to f32 and multiplied by the `gemm` crate (prefill, bound by arithmetic).
const GEMM_MIN_M: usize = 8;

/// Rows per widened panel in the GEMM (~1 MB of f32 at K 1024).
const PANEL: usize = 256;

pub(crate) fn matmul_q8(
    p: &MatmulParams,
    x: &[f32],
    q: &[u32],
    d: &[f16],
    bias: Option<Floats<'_>>,
    out: &mut [f32],
    int8: bool,
) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    if m >= GEMM_MIN_M {
        gemm(m, n, k, x, q, d, out);
    } else {
        let acts = int8.then(|| QAct::new(&x[..m * k], k));
        gemv(m, n, k, x, acts.as_ref(), q, d, out);
    }
    if let Some(b) = bias {
        let mut bf = vec![0f32; n];
        b.read_into(0, &mut bf);
        for row in out.chunks_exact_mut(n) {
            for (o, &bv) in row.iter_mut().zip(&bf) {
                *o += bv;
            }
        }
    }
}

/// The decode pool (`pool.rs`, as the float GEMV) over chunks of W's rows, each weight
/// read once; a row's dot products with the (at most 7) rows of x run block by block,
/// with `acts` (x quantized) where given and finite, else with x in f32.
#[allow(clippy::too_many_arguments)]
fn gemv(
    m: usize,
    n: usize,
    k: usize,
    x: &[f32],
    acts: Option<&QAct>,
    q: &[u32],
    d: &[f16],
    out: &mut [f32],
) {
    let isa = Isa::current();
    let int = IntIsa::for_isa(isa);
    let (kw, kb) = (k / 4, k / Q8_BLOCK);
    // 34 bytes per 32 weights: chunks sized as the float GEMV's for 1-byte weights.
    let rows = super::matmul::chunk_rows(n, k, 1);
    let mut cols = vec![0f32; n * m]; // (n, m): each chunk owns whole rows
    super::pool::par_chunks_mut(&mut cols, rows * m, |blk, res| {
        let r0 = blk * rows;
        let nr = res.len() / m;
        let (qc, dc) = (&q[r0 * kw..(r0 + nr) * kw], &d[r0 * kb..(r0 + nr) * kb]);
        // One row of x's results at a time, transposed into `res` (several rows of x).
        let mut o = if m > 1 { vec![0f32; nr] } else { Vec::new() };
        for mi in 0..m {
            match acts {
                Some(a) if a.finite[mi] => {
                    let (qx, dx) = (&a.q[mi * k..(mi + 1) * k], &a.d[mi * kb..(mi + 1) * kb]);
                    if m == 1 {
                        dot_rows_i8(int, qx, dx, qc, dc, res);
                    } else {
                        dot_rows_i8(int, qx, dx, qc, dc, &mut o);
                        for (j, &v) in o.iter().enumerate() {
                            res[j * m + mi] = v;
                        }
                    }
                }
                _ => {
                    let xr = &x[mi * k..(mi + 1) * k];
                    for j in 0..nr {
                        let (qr, dr) = (&qc[j * kw..(j + 1) * kw], &dc[j * kb..(j + 1) * kb]);
                        res[j * m + mi] = dot_f32(isa, xr, qr, dr);
                    }
                }
            }
        }
    });
    for (row, r) in cols.chunks_exact(m).enumerate() {
        for (mi, &v) in r.iter().enumerate() {
            out[mi * n + row] = v;
        }
    }
}

/// Row panels of W widened to f32 (in parallel), each multiplied by the `gemm` crate
/// straight into its columns of `out`.
fn gemm(m: usize, n: usize, k: usize, x: &[f32], q: &[u32], d: &[f16], out: &mut [f32]) {
    let (kw, kb) = (k / 4, k / Q8_BLOCK);
    let mut panel = vec![0f32; PANEL.min(n) * k];
    for n0 in (0..n).step_by(PANEL) {
        let pn = PANEL.min(n - n0);
        panel[..pn * k]
            .par_chunks_mut(k)
            .enumerate()
            .for_each(|(i, w)| {
                let row = n0 + i;
                dequant_row(
                    &q[row * kw..(row + 1) * kw],
                    &d[row * kb..(row + 1) * kb],
                    w,
                )
            });
        super::matmul::gemm_into(m, pn, k, x, &panel[..pn * k], out, n0, n);
    }
}

/// `d·q` of one row into `w`.
fn dequant_row(q: &[u32], d: &[f16], w: &mut [f32]) {
    for ((wb, qb), dv) in w.chunks_exact_mut(Q8_BLOCK).zip(q.chunks_exact(8)).zip(d) {
        let s = dv.to_f32();
        for (w4, &word) in wb.chunks_exact_mut(4).zip(qb) {
            for (j, wv) in w4.iter_mut().enumerate() {
                *wv = s * ((word >> (8 * j)) as u8 as i8) as f32;
            }
        }
    }
}
