//! Matmul: a matrix-vector product for decode, a cache-blocked GEMM for prefill.
//! Mirrors `shaders/matmul.wgsl` and `kernels/matmul.cu`.

use rayon::prelude::*;

use super::{Floats, gemv, pool};
use crate::params::MatmulParams;

/// Below this many rows of x the matmul is a matrix-vector product bound by reading W
/// (decode); from it on, a cache-blocked GEMM bound by arithmetic (prefill).
pub(crate) const GEMM_MIN_M: usize = 8;

/// `out[m, n] = Σ_k x[m, k]·w[n, k] + bias[n]`, or `out[m, n] +=` that with
/// `p.accumulate` (the product is formed on its own and added once, as the GPU kernels
/// add their finished dot products).
pub(crate) fn matmul(
    p: &MatmulParams,
    x: &[f32],
    w: Floats<'_>,
    bias: Option<Floats<'_>>,
    out: &mut [f32],
) {
    if p.accumulate != 0 {
        let mut q = *p;
        q.accumulate = 0;
        let mut prod = vec![0f32; out.len()];
        matmul(&q, x, w, bias, &mut prod);
        for (o, v) in out.iter_mut().zip(prod) {
            *o += v;
        }
        return;
    }
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    if m >= GEMM_MIN_M {
        gemm_f32(m, n, k, x, w, out);
    } else {
        gemv(m, n, k, x, w, out);
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

/// Weights a chunk of the matrix-vector product reads at least, so that claiming it (one
/// atomic add) and the kernel's setup are noise next to the reads.
const MIN_CHUNK_BYTES: usize = 32 << 10;
/// Rows a chunk has at most: enough chunks that the threads finish together even when
/// one of them is held up, and a descheduled helper holds back little work.
const MAX_CHUNK_ROWS: usize = 512;

/// Rows of W per chunk of a (n, k) matrix-vector product with `elem`-byte weights:
/// about eight chunks per thread, within [`MIN_CHUNK_BYTES`] and [`MAX_CHUNK_ROWS`], a
/// multiple of four (the kernels' row group).
pub(crate) fn chunk_rows(n: usize, k: usize, elem: usize) -> usize {
    let by_bytes = MIN_CHUNK_BYTES.div_ceil((k * elem).max(1));
    let by_balance = n.div_ceil(8 * pool::threads());
    by_balance
        .max(by_bytes)
        .min(MAX_CHUNK_ROWS)
        .next_multiple_of(4)
}

/// Few rows of x: the pool runs chunks of W's rows, each weight read exactly once, in
/// place, by the best kernels the CPU has ([`gemv::Isa::current`]).
fn gemv(m: usize, n: usize, k: usize, x: &[f32], w: Floats<'_>, out: &mut [f32]) {
    let isa = gemv::Isa::current();
    let rows = chunk_rows(n, k, w.elem_bytes());
    let x = gemv::Act::new(isa, &x[..m * k], k, w);
    let x = &x;
    if m == 1 {
        // One row (batch-1 decode): each chunk's results are contiguous in `out`.
        pool::par_chunks_mut(&mut out[..n], rows, |c, res| {
            gemv::rows(isa, x, w, k, c * rows, res)
        });
        return;
    }
    // The kernels write (row of W, row of x) pairs; transpose into (m, n) after.
    let mut t = vec![0f32; n * m];
    pool::par_chunks_mut(&mut t, rows * m, |c, res| {
        gemv::rows(isa, x, w, k, c * rows, res)
    });
    for (j, col) in t.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            out[i * n + j] = v;
        }
    }
}

/// Many rows of x: the `gemm` crate's blocked, multi-threaded f32 kernel. Half
/// weights are widened to f32 first (that pass is cheap next to m·n·k FMAs).
fn gemm_f32(m: usize, n: usize, k: usize, x: &[f32], w: Floats<'_>, out: &mut [f32]) {
    let widened;
    let wf: &[f32] = match w {
        Floats::F32(v) => v,
        _ => {
            let mut v = vec![0f32; w.len()];
            v.par_chunks_mut(k)
                .enumerate()
                .for_each(|(r, row)| w.read_into(r * k, row));
            widened = v;
            &widened
        }
    };
    gemm_into(m, n, k, x, wf, out, 0, n);
}

/// `out[i·ldo + col0 + j] = x[i, :] · w[j, :]` for i < m, j < n: x `(m, k)` and w `(n, k)`
/// row-major f32, by the `gemm` crate on rayon. The one call into its unsafe API.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
    col0: usize,
    ldo: usize,
) {
    assert!(x.len() >= m * k && w.len() >= n * k && col0 + n <= ldo);
    assert!(m == 0 || out.len() >= (m - 1) * ldo + col0 + n);
    // SAFETY: dst is `out` from `col0` viewed as (m, n) with row stride `ldo` and column
    // stride 1: element (i, j) at `out[i·ldo + col0 + j]`, inside `out` by the asserts.
    // lhs is `x` as (m, k) row-major; rhs is wᵀ, element (k', j) at `w[j·k + k']` (row
    // stride 1, column stride k), inside `w`. `out` is borrowed mutably and aliases
    // neither input; read_dst = false, so its old contents are ignored.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr().add(col0),
            1,
            ldo as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}
