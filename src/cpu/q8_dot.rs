//! The dot products of the Q8_0 GEMV (`matmul_q8.rs`): one row of 8-bit weights with
//! one row of activations, in two families.
//!
//! * **f32 activations** ([`dot_f32`]): each block's 32 int8 weights are widened and
//!   multiplied into `x` in f32, then scaled once by the block's `d`. The f32 matmul by
//!   the dequantized weights up to the order of the additions.
//! * **int8 activations** ([`dot_rows_i8`]): `x` is quantized to Q8_0 blocks first
//!   ([`QAct`], the weights' rounding with an f32 scale), and each block is an exact
//!   integer dot product (AVX-512 VNNI `vpdpbusd`, AVX2 `vpmaddubsw`, or portable i32)
//!   scaled by `d_w·d_x`. About three times fewer instructions per weight, which is what
//!   decode on a CPU is bound by at 8 bits; it adds the activations' rounding error.
//!
//! The paths are chosen at run time from [`Isa::current`] (so `MAMBA_CPU_ISA` caps them
//! too); [`q8_isas`] and friends expose every path this CPU has to the tests.

use half::f16;

use super::gemv::{Isa, group};
use crate::quant::{Q8_BLOCK, quantize_block};

/// Rows of activations quantized to Q8_0 blocks: `q` int8 `(m, k)`, `d` f32 `(m, k/32)`,
/// and per row whether it was finite (a row holding a NaN or inf is left unquantized:
/// the GEMV takes it in f32, so the NaN or inf propagates as in the float path).
pub(crate) struct QAct {
    pub(crate) q: Vec<i8>,
    pub(crate) d: Vec<f32>,
    pub(crate) finite: Vec<bool>,
}

impl QAct {
    /// `x` `(·, k)`, k a multiple of 32.
    pub(crate) fn new(x: &[f32], k: usize) -> QAct {
        let mut q = vec![0i8; x.len()];
        let mut d = vec![0f32; x.len() / Q8_BLOCK];
        let mut finite = Vec::with_capacity(x.len() / k.max(1));
        let rows = x.chunks_exact(k).zip(q.chunks_exact_mut(k));
        for ((xr, qr), dr) in rows.zip(d.chunks_exact_mut(k / Q8_BLOCK)) {
            let ok = xr.iter().all(|v| v.is_finite());
            finite.push(ok);
            if ok {
                let blocks = xr
                    .chunks_exact(Q8_BLOCK)
                    .zip(qr.as_chunks_mut::<Q8_BLOCK>().0);
                for ((xb, qb), db) in blocks.zip(dr) {
                    *db = quantize_block(xb, qb);
                }
            }
        }
        QAct { q, d, finite }
    }
}

/// The integer kernels a CPU can run, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntIsa {
    Portable,
    /// AVX2 `vpmaddubsw` / `vpmaddwd`.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 BW + VNNI `vpdpbusd`, two blocks per instruction.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl IntIsa {
    /// The kernel under the float GEMVs' level `isa`.
    pub(crate) fn for_isa(isa: Isa) -> IntIsa {
        #[cfg(target_arch = "x86_64")]
        {
            match isa {
                Isa::Portable => IntIsa::Portable,
                Isa::Avx512 if is_x86_feature_detected!("avx512vnni") => IntIsa::Avx512Vnni,
                _ => IntIsa::Avx2,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = isa; // only the portable level exists here
            IntIsa::Portable
        }
    }
}

/// `Σ_b d_b · Σ_i q_{b,i}·x_{b,i}` over one row, x in f32 (`isa` must be available).
#[inline]
pub(crate) fn dot_f32(isa: Isa, x: &[f32], q: &[u32], d: &[f16]) -> f32 {
    match isa {
        Isa::Portable => dot_f32_portable(x, q, d),
        // SAFETY: `Isa::current` and `paths` give these levels only where the CPU
        // reports their features (AVX2+FMA+F16C / AVX-512F+BW+VL).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::dot_f32_avx2(x, q, d) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::dot_f32_avx512(x, q, d) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => dot_f32_portable(x, q, d),
    }
}

/// `out[j] = Σ_b d_{j,b}·dx_b · Σ_i q_{j,b,i}·qx_{j,b,i}` for every row `j` held in `q`
/// and `d` (`out.len()` of them); `qx`, `dx` one row of a [`QAct`]. The rows run four at
/// a time, in the groups of the float kernels ([`group`]: four runs of contiguous rows,
/// so each is a long sequential stream), which loads each vector of x once for all four
/// and keeps four weight streams in flight (one row at a time reached a quarter of the
/// bandwidth on one core of the Xeon of BENCHMARKS.md).
pub(crate) fn dot_rows_i8(
    isa: IntIsa,
    qx: &[i8],
    dx: &[f32],
    q: &[u32],
    d: &[f16],
    out: &mut [f32],
) {
    let (nb, nr) = (dx.len(), out.len());
    assert!(qx.len() == nb * Q8_BLOCK && q.len() == nr * nb * 8 && d.len() == nr * nb);
    match isa {
        IntIsa::Portable => {
            let runs = nr.div_ceil(ROWS);
            for t in 0..runs {
                let (idx, rows) = group(nr, runs, t);
                for &j in &idx[..rows] {
                    let (qr, dr) = (&q[j * nb * 8..(j + 1) * nb * 8], &d[j * nb..(j + 1) * nb]);
                    out[j] = dot_i8_portable(qx, dx, qr, dr);
                }
            }
        }
        // SAFETY: `IntIsa::for_isa` and `int_paths` give these only where the CPU has
        // AVX2+FMA+F16C / AVX-512F+BW+VL+VNNI; the assert gives the kernels their
        // lengths (per block 32 quants of x, one dx, and per row 8 words and a scale).
        #[cfg(target_arch = "x86_64")]
        IntIsa::Avx2 => unsafe { x86::rows_i8_avx2(qx, dx, q, d, out) },
        #[cfg(target_arch = "x86_64")]
        IntIsa::Avx512Vnni => unsafe { x86::rows_i8_avx512vnni(qx, dx, q, d, out) },
    }
}

/// Rows of a kernel's group in [`dot_rows_i8`].
const ROWS: usize = 4;

fn dot_f32_portable(x: &[f32], q: &[u32], d: &[f16]) -> f32 {
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

fn dot_i8_portable(qx: &[i8], dx: &[f32], q: &[u32], d: &[f16]) -> f32 {
    let mut acc = 0f32;
    let blocks = qx.chunks_exact(Q8_BLOCK).zip(q.chunks_exact(8));
    for ((xb, qb), (dw, dxv)) in blocks.zip(d.iter().zip(dx)) {
        let mut s = 0i32;
        for (x4, &word) in xb.chunks_exact(4).zip(qb) {
            for (j, &xv) in x4.iter().enumerate() {
                s += ((word >> (8 * j)) as u8 as i8 as i32) * xv as i32;
            }
        }
        acc += dw.to_f32() * dxv * s as f32;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use crate::quant::Q8_BLOCK;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_f32_avx2(x: &[f32], q: &[u32], d: &[f16]) -> f32 {
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
        hsum256(acc)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_f32_avx512(x: &[f32], q: &[u32], d: &[f16]) -> f32 {
        let mut acc = _mm512_setzero_ps();
        for ((xb, qb), dv) in x.chunks_exact(Q8_BLOCK).zip(q.chunks_exact(8)).zip(d) {
            let mut s = _mm512_setzero_ps();
            for (x16, q4) in xb.chunks_exact(16).zip(qb.chunks_exact(4)) {
                // SAFETY: q4 holds four u32 (16 bytes) and x16 sixteen f32: both loads
                // read exactly the slices' memory (unaligned loads).
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

    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum256(acc: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(acc, 1);
        let v = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        let v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
        _mm_cvtss_f32(v)
    }

    /// `Σ w·x` of one block's 32 int8 pairs as eight i32 lanes: vpmaddubsw multiplies
    /// unsigned by signed bytes, so it takes |w| and x carrying w's sign. Pair sums
    /// reach at most 2·127·127 < 2¹⁵ (Q8_0 never stores -128), so nothing saturates.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn block_avx2(w: __m256i, x: __m256i) -> __m256i {
        let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
    }

    use crate::cpu::gemv::{Isa, prefetch_ahead};
    use crate::cpu::gemv_x86::prefetch;

    /// Blocks per pass of the AVX2 kernel: the scales of one pass live on the stack.
    const PASS: usize = 32;

    /// Pointers to the first weight word and scale of rows `idx` of `nb` blocks.
    fn row_ptrs(
        q: &[u32],
        d: &[f16],
        nb: usize,
        idx: [usize; 4],
    ) -> ([*const u32; 4], [*const f16; 4]) {
        (
            std::array::from_fn(|i| q[idx[i] * nb * 8..].as_ptr()),
            std::array::from_fn(|i| d[idx[i] * nb..].as_ptr()),
        )
    }

    /// The row loops of the group kernels, one per feature set: every row of `q`/`d`
    /// dotted with `qx`/`dx` into `out`, four at a time in the groups of
    /// [`super::group`] (the loop here rather than in `dot_rows_i8`, so that it runs
    /// inside the kernel's features and the group kernel inlines into it).
    macro_rules! rows_for {
        ($name:ident, $group:ident, $features:literal) => {
            /// One row loop of `rows_for!` (above).
            ///
            /// # Safety
            /// The CPU has the features enabled below; `qx` holds `32·nb` quants
            /// (`nb = dx.len()`) and `q`, `d` `out.len()` whole rows of `nb` blocks (what
            /// `dot_rows_i8` asserts).
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                qx: &[i8],
                dx: &[f32],
                q: &[u32],
                d: &[f16],
                out: &mut [f32],
            ) {
                let nr = out.len();
                let runs = nr.div_ceil(super::ROWS);
                for t in 0..runs {
                    let (idx, rows) = super::group(nr, runs, t);
                    let mut o = [0f32; 4];
                    // SAFETY: the caller's contract, and every idx[r] < nr (`group`).
                    unsafe { $group(qx, dx, q, d, idx, &mut o) };
                    for r in 0..rows {
                        out[idx[r]] = o[r];
                    }
                }
            }
        };
    }
    rows_for!(rows_i8_avx2, group_i8_avx2, "avx2,fma,f16c");
    rows_for!(
        rows_i8_avx512vnni,
        group_i8_avx512vnni,
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
    );

    /// Four rows `idx` of `q`/`d` dotted with `qx`/`dx` into `out` (see [`super::dot_rows_i8`]).
    ///
    /// # Safety
    /// The CPU has the features enabled below; `qx` holds `32·nb` quants (`nb = dx.len()`),
    /// `q` and `d` whole rows of `nb` blocks, and every `idx[r]` is one of those rows (what
    /// `dot_rows_i8` asserts and [`super::group`] gives).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group_i8_avx2(
        qx: &[i8],
        dx: &[f32],
        q: &[u32],
        d: &[f16],
        idx: [usize; 4],
        out: &mut [f32; 4],
    ) {
        let nb = dx.len();
        let (qp, dp) = row_ptrs(q, d, nb, idx);
        let pf = prefetch_ahead(Isa::Avx2);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut s = [[0f32; PASS]; 4];
        for b0 in (0..nb).step_by(PASS) {
            let n = PASS.min(nb - b0);
            // The pass's scales d_w·d_x, eight at a time: one at a time, they cost about
            // as many instructions as the integer dots of a 768-wide row.
            for (sr, &dr) in s.iter_mut().zip(&dp) {
                let mut i = 0;
                while i + 8 <= n {
                    // SAFETY: blocks b0 + i .. b0 + i + 8 <= nb of a row inside `d` and of
                    // `dx` (`dot_rows_i8`'s assert); sr holds PASS >= n floats.
                    unsafe {
                        let h = _mm_loadu_si128(dr.add(b0 + i) as *const __m128i);
                        let dxv = _mm256_loadu_ps(dx.as_ptr().add(b0 + i));
                        let v = _mm256_mul_ps(_mm256_cvtph_ps(h), dxv);
                        _mm256_storeu_ps(sr.as_mut_ptr().add(i), v);
                    }
                    i += 8;
                }
                for (i, o) in sr[..n].iter_mut().enumerate().skip(i) {
                    // SAFETY: block b0 + i < nb of a row inside `d` (`dot_rows_i8`'s assert).
                    let bits = unsafe { *dr.add(b0 + i) }.to_bits();
                    let w = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)));
                    *o = w * dx[b0 + i];
                }
            }
            // Indexes: block b of the qx and q streams, and s[r][i] of four rows.
            #[allow(clippy::needless_range_loop)]
            for i in 0..n {
                let b = b0 + i;
                // SAFETY: block b < nb spans bytes 32b..32b + 32 of `qx` and of each row
                // of `q` (8 words from word 8b), inside both by `dot_rows_i8`'s assert.
                unsafe {
                    let x = _mm256_loadu_si256(qx.as_ptr().add(Q8_BLOCK * b) as *const __m256i);
                    for r in 0..4 {
                        // One prefetch per 64-byte line (two blocks).
                        if b % 2 == 0 {
                            prefetch(qp[r], 8 * b, pf);
                        }
                        let w = _mm256_loadu_si256(qp[r].add(8 * b) as *const __m256i);
                        let f = _mm256_cvtepi32_ps(block_avx2(w, x));
                        acc[r] = _mm256_fmadd_ps(f, _mm256_set1_ps(s[r][i]), acc[r]);
                    }
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = hsum256(a);
        }
    }

    /// Four rows `idx` of `q`/`d` dotted with `qx`/`dx` into `out` (see [`super::dot_rows_i8`]).
    ///
    /// # Safety
    /// The CPU has the features enabled below; `qx` holds `32·nb` quants (`nb = dx.len()`),
    /// `q` and `d` whole rows of `nb` blocks, and every `idx[r]` is one of those rows (what
    /// `dot_rows_i8` asserts and [`super::group`] gives).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn group_i8_avx512vnni(
        qx: &[i8],
        dx: &[f32],
        q: &[u32],
        d: &[f16],
        idx: [usize; 4],
        out: &mut [f32; 4],
    ) {
        let nb = dx.len();
        let (qp, dp) = row_ptrs(q, d, nb, idx);
        let pf = prefetch_ahead(Isa::Avx512);
        let zero = _mm512_setzero_si512();
        let mut acc = [_mm512_setzero_ps(); 4];
        // Lane l of a pair's scale vector takes scale 2p + l / 8 of a group's sixteen.
        let pair_idx = _mm512_srli_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            3,
        );
        // Groups of sixteen blocks: one vector of scales per row, masked at the end.
        for g0 in (0..nb).step_by(16) {
            let n = 16.min(nb - g0);
            let smask: __mmask16 = ((1u32 << n) - 1) as u16;
            // SAFETY: the masked loads read blocks g0 .. g0 + n < nb of dx and of each
            // row's scales only (lanes past n read nothing and are zero).
            let sv: [__m512; 4] = unsafe {
                let dxv = _mm512_maskz_loadu_ps(smask, dx.as_ptr().add(g0));
                std::array::from_fn(|r| {
                    let h = _mm256_maskz_loadu_epi16(smask, dp[r].add(g0) as *const i16);
                    _mm512_mul_ps(_mm512_cvtph_ps(h), dxv)
                })
            };
            for p in 0..n.div_ceil(2) {
                let b = g0 + 2 * p;
                // Both blocks of the pair, or only the first (the low 32 bytes) at an
                // odd end: the other lanes load as zero and add nothing.
                let bmask: __mmask64 = if b + 1 < nb { !0 } else { 0xffff_ffff };
                let idx = _mm512_add_epi32(pair_idx, _mm512_set1_epi32(2 * p as i32));
                // SAFETY: the masked loads read blocks b (and b + 1 when < nb) of `qx`
                // and of each row of `q`, inside them by `dot_rows_i8`'s assert.
                unsafe {
                    let x = _mm512_maskz_loadu_epi8(bmask, qx.as_ptr().add(Q8_BLOCK * b));
                    for r in 0..4 {
                        prefetch(qp[r], 8 * b, pf);
                        let w = _mm512_maskz_loadu_epi8(bmask, qp[r].add(8 * b) as *const i8);
                        // |w| as the unsigned operand, x with w's sign as the signed one.
                        let sx = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), zero, x);
                        let dot = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(w), sx);
                        let scale = _mm512_permutexvar_ps(idx, sv[r]);
                        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r]);
                    }
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(a);
        }
    }
}

/// The f32-activation paths this CPU can run, by name (best last).
fn paths() -> Vec<(&'static str, Isa)> {
    Isa::ALL
        .into_iter()
        .filter(|i| i.available())
        .map(|i| (i.name(), i))
        .collect()
}

/// The int8-activation paths this CPU can run, by name (best last).
fn int_paths() -> Vec<(&'static str, IntIsa)> {
    #[allow(unused_mut)]
    let mut v = vec![("portable", IntIsa::Portable)];
    #[cfg(target_arch = "x86_64")]
    {
        if Isa::Avx2.available() {
            v.push(("avx2", IntIsa::Avx2));
        }
        if Isa::Avx512.available() && is_x86_feature_detected!("avx512vnni") {
            v.push(("avx512vnni", IntIsa::Avx512Vnni));
        }
    }
    v
}

/// Names of the Q8_0 GEMV's f32-activation paths on this CPU (the last is the best).
#[doc(hidden)]
pub fn q8_isas() -> Vec<&'static str> {
    paths().into_iter().map(|(n, _)| n).collect()
}

/// Names of the int8-activation paths on this CPU (the last is the best).
#[doc(hidden)]
pub fn q8_int8_isas() -> Vec<&'static str> {
    int_paths().into_iter().map(|(n, _)| n).collect()
}

fn lengths_ok(x: &[f32], q: &[u32], d: &[f16]) -> bool {
    x.len().is_multiple_of(Q8_BLOCK) && q.len() * 4 == x.len() && d.len() * Q8_BLOCK == x.len()
}

/// One row's dot product by the named f32-activation path (see [`q8_isas`]), for tests
/// that hold every path to a reference; `None` for a path this CPU lacks or bad lengths.
#[doc(hidden)]
pub fn q8_dot(isa: &str, x: &[f32], q: &[u32], d: &[f16]) -> Option<f32> {
    let (_, isa) = paths().into_iter().find(|(n, _)| *n == isa)?;
    lengths_ok(x, q, d).then(|| dot_f32(isa, x, q, d))
}

/// As [`q8_dot`] for the int8-activation paths ([`q8_int8_isas`]), for any number of
/// rows in `q` and `d` (run [`ROWS`] at a time, as the GEMV runs them): `x` is quantized
/// as the GEMV quantizes it, then dotted with each row; `None` also for a non-finite `x`.
#[doc(hidden)]
pub fn q8_dot_int8(isa: &str, x: &[f32], q: &[u32], d: &[f16]) -> Option<Vec<f32>> {
    let (_, isa) = int_paths().into_iter().find(|(n, _)| *n == isa)?;
    let k = x.len();
    if k == 0 || !k.is_multiple_of(Q8_BLOCK) || !(q.len() * 4).is_multiple_of(k) {
        return None;
    }
    let (rows, nb) = (q.len() * 4 / k, k / Q8_BLOCK);
    if d.len() != rows * nb {
        return None;
    }
    let a = QAct::new(x, k);
    if !a.finite[0] {
        return None;
    }
    let mut out = vec![0f32; rows];
    dot_rows_i8(isa, &a.q, &a.d, q, d, &mut out);
    Some(out)
}
