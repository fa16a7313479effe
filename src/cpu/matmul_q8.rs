//! Matmul with Q8_0 weights ([`crate::ops::matmul_q8`], format in [`crate::quant`]).
//! Mirrors `shaders/matmul_q8.wgsl` and `kernels/matmul_q8.cu`.
//!
//! The activations stay f32: each block's 32 int8 weights are widened and multiplied
//! into `x` in f32, then scaled once by the block's `d`. So the result is the f32 matmul
//! by the dequantized weights up to the order of the additions, and decode (a GEMV bound
//! by reading the weights) reads 34 bytes per 32 weights instead of 128 (f32) or 64.

use half::f16;
use rayon::prelude::*;

use super::Floats;
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
) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    if m >= GEMM_MIN_M {
        gemm(m, n, k, x, q, d, out);
    } else {
        gemv(m, n, k, x, q, d, out);
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
/// in AVX-512 or AVX2 where the CPU has it.
fn gemv(m: usize, n: usize, k: usize, x: &[f32], q: &[u32], d: &[f16], out: &mut [f32]) {
    let isa = Isa::detect();
    let (kw, kb) = (k / 4, k / Q8_BLOCK);
    // 34 bytes per 32 weights: chunks sized as the float GEMV's for 1-byte weights.
    let rows = super::matmul::chunk_rows(n, k, 1);
    let mut cols = vec![0f32; n * m]; // (n, m): each chunk owns whole rows
    super::pool::par_chunks_mut(&mut cols, rows * m, |blk, res| {
        for (i, r) in res.chunks_exact_mut(m).enumerate() {
            let row = blk * rows + i;
            let (qr, dr) = (&q[row * kw..(row + 1) * kw], &d[row * kb..(row + 1) * kb]);
            for (mi, o) in r.iter_mut().enumerate() {
                *o = isa.dot(&x[mi * k..(mi + 1) * k], qr, dr);
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
        assert!(x.len() >= m * k && out.len() >= m * n && n0 + pn <= n);
        // SAFETY: dst is columns n0..n0 + pn of `out` viewed as (m, n) row-major: element
        // (i, j) at `out[i·n + n0 + j]` (column stride 1, row stride n), which the assert
        // keeps inside `out` for i < m, j < pn. lhs is `x` as (m, k) row-major; rhs is the
        // panelᵀ, element (k', j) at `panel[j·k + k']` (row stride 1, column stride k),
        // inside `panel` (pn·k values). `out` is borrowed mutably and aliases neither
        // input; read_dst = false, so the old contents are ignored.
        unsafe {
            gemm::gemm(
                m,
                pn,
                k,
                out.as_mut_ptr().add(n0),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                panel.as_ptr(),
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

/// The instruction set the GEMV's dot product runs in, found once per call.
#[derive(Clone, Copy)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// `Σ_b d_b · Σ_i q_{b,i}·x_{b,i}` over one row.
    #[inline]
    fn dot(self, x: &[f32], q: &[u32], d: &[f16]) -> f32 {
        match self {
            Isa::Portable => dot_portable(x, q, d),
            // SAFETY: `detect` and `available_isas` give these only where the CPU
            // reports AVX2+FMA / AVX-512F.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { dot_avx2(x, q, d) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { dot_avx512(x, q, d) },
        }
    }
}

fn dot_portable(x: &[f32], q: &[u32], d: &[f16]) -> f32 {
    let mut acc = 0f32;
    for ((xb, qb), dv) in x.chunks_exact(Q8_BLOCK).zip(q.chunks_exact(8)).zip(d) {
        // Eight partial sums, so that the loop vectorises.
        let mut s = [0f32; 8];
        for (x8, q2) in xb.chunks_exact(8).zip(qb.chunks_exact(2)) {
            for j in 0..8 {
                let v = ((q2[j / 4] >> (8 * (j % 4))) as u8 as i8) as f32;
                s[j] += v * x8[j];
            }
        }
        acc += dv.to_f32() * s.iter().sum::<f32>();
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(x: &[f32], q: &[u32], d: &[f16]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    for ((xb, qb), dv) in x.chunks_exact(Q8_BLOCK).zip(q.chunks_exact(8)).zip(d) {
        let mut s = _mm256_setzero_ps();
        for (x8, q2) in xb.chunks_exact(8).zip(qb.chunks_exact(2)) {
            // SAFETY: q2 holds two u32 (8 bytes) and x8 eight f32: both loads read
            // exactly the slices' memory (unaligned loads).
            unsafe {
                let b = _mm_loadl_epi64(q2.as_ptr() as *const __m128i);
                let w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
                s = _mm256_fmadd_ps(w, _mm256_loadu_ps(x8.as_ptr()), s);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dv.to_f32()), s, acc);
    }
    let hi = _mm256_extractf128_ps(acc, 1);
    let v = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
    let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    let v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
    _mm_cvtss_f32(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(x: &[f32], q: &[u32], d: &[f16]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm512_setzero_ps();
    for ((xb, qb), dv) in x.chunks_exact(Q8_BLOCK).zip(q.chunks_exact(8)).zip(d) {
        let mut s = _mm512_setzero_ps();
        for (x16, q4) in xb.chunks_exact(16).zip(qb.chunks_exact(4)) {
            // SAFETY: q4 holds four u32 (16 bytes) and x16 sixteen f32: both loads read
            // exactly the slices' memory (unaligned loads).
            unsafe {
                let b = _mm_loadu_si128(q4.as_ptr() as *const __m128i);
                let w = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
                s = _mm512_fmadd_ps(w, _mm512_loadu_ps(x16.as_ptr()), s);
            }
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(dv.to_f32()), s, acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// The dot-product paths this CPU can run, by name.
fn available_isas() -> Vec<(&'static str, Isa)> {
    #[allow(unused_mut)]
    let mut v = vec![("portable", Isa::Portable)];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(("avx2", Isa::Avx2));
        }
        if is_x86_feature_detected!("avx512f") {
            v.push(("avx512", Isa::Avx512));
        }
    }
    v
}

/// Names of the GEMV dot-product paths this CPU runs (the last is the one used).
#[doc(hidden)]
pub fn q8_isas() -> Vec<&'static str> {
    available_isas().into_iter().map(|(n, _)| n).collect()
}

/// One row's dot product by the named path (see [`q8_isas`]), for tests that hold every
/// path the CPU has to a reference; `None` for a path this CPU lacks or bad lengths.
#[doc(hidden)]
pub fn q8_dot(isa: &str, x: &[f32], q: &[u32], d: &[f16]) -> Option<f32> {
    let (_, isa) = available_isas().into_iter().find(|(n, _)| *n == isa)?;
    let ok =
        x.len().is_multiple_of(Q8_BLOCK) && q.len() * 4 == x.len() && d.len() * Q8_BLOCK == x.len();
    ok.then(|| isa.dot(x, q, d))
}
