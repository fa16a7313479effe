//! Matmul, embedding (row gather) and argmax.
//! Mirrors `shaders/matmul.wgsl`, `shaders/embedding.wgsl`, `shaders/argmax.wgsl`.

use rayon::prelude::*;

use super::Floats;
use crate::error::{Error, Result};
use crate::params::{ArgmaxParams, EmbeddingParams, MatmulParams};

/// Dot product with eight independent f32 lanes (vectorises; the lanes also keep the
/// rounding error of long sums down), summed pairwise at the end.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Rows of W handled by one task: converted to f32 once, reused for every row of x.
const N_BLOCK: usize = 32;

/// `out[m, n] = Σ_k x[m, k]·w[n, k] + bias[n]`. Parallel over blocks of W's rows, so
/// each weight is read (and converted from f16/bf16) once per call.
pub(crate) fn matmul(
    p: &MatmulParams,
    x: &[f32],
    w: Floats<'_>,
    bias: Option<Floats<'_>>,
    out: &mut [f32],
) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(N_BLOCK))
        .into_par_iter()
        .map(|blk| {
            let n0 = blk * N_BLOCK;
            let nb = N_BLOCK.min(n - n0);
            let mut wf = vec![0f32; nb * k];
            w.read_into(n0 * k, &mut wf);
            let mut res = vec![0f32; m * nb];
            for (row, r) in x.chunks_exact(k).zip(res.chunks_exact_mut(nb)) {
                for (j, o) in r.iter_mut().enumerate() {
                    *o = dot(row, &wf[j * k..(j + 1) * k]) + bias.map_or(0.0, |b| b.get(n0 + j));
                }
            }
            res
        })
        .collect();
    for (blk, res) in blocks.iter().enumerate() {
        let n0 = blk * N_BLOCK;
        let nb = N_BLOCK.min(n - n0);
        for (r, o) in res.chunks_exact(nb).zip(out.chunks_exact_mut(n)) {
            o[n0..n0 + nb].copy_from_slice(r);
        }
    }
}

/// `out[i, :] = table[ids[i], :]`; an id past the table is an error.
pub(crate) fn embedding(
    p: &EmbeddingParams,
    ids: &[u32],
    table: Floats<'_>,
    out: &mut [f32],
) -> Result<()> {
    let dim = p.dim as usize;
    for (i, (&id, o)) in ids.iter().zip(out.chunks_exact_mut(dim)).enumerate() {
        if id >= p.rows {
            return Err(Error::Index {
                op: "embedding",
                index: id as u64,
                position: i,
                rows: p.rows as usize,
            });
        }
        table.read_into(id as usize * dim, o);
    }
    Ok(())
}

/// Index of the largest value of each row; the first on ties; NaN is skipped.
pub(crate) fn argmax(p: &ArgmaxParams, x: &[f32], out: &mut [u32]) {
    for (row, o) in x.chunks_exact(p.cols as usize).zip(out.iter_mut()) {
        let mut best = 0usize;
        let mut best_v = f32::NEG_INFINITY;
        for (j, &v) in row.iter().enumerate() {
            if v > best_v {
                best = j;
                best_v = v;
            }
        }
        *o = best as u32;
    }
}
