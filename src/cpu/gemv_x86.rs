//! The x86-64 matrix-vector kernels behind [`super::gemv`]: AVX2 (with FMA and F16C) and
//! AVX-512 (F, BW, VL), each for f32, f16 and bf16 weights. Decode is bound by reading
//! W, so every kernel reads each weight exactly once, in place, widening half weights in
//! registers (f16 by `vcvtph2ps`, bf16 by a 16-bit shift, which is exact) and keeping the
//! activations and accumulators in f32. Four weight rows run together so that one load
//! of x feeds four FMAs and four independent streams of W are in flight; the four are
//! rows of four runs of contiguous rows ([`super::gemv::group`]), so that each stream is
//! long and sequential.
//!
//! AVX512_BF16's `vdpbf16ps` is not used: it rounds x to bf16 as well, which would make
//! bf16 weights cost accuracy beyond the rounding of the weights themselves.
//!
//! bf16 kernels read x rearranged in pairs (see "bf16 in pairs" below).
//!
//! Every kernel has the contract of [`super::gemv::rows`]: `x` is (m, k), rows
//! `n0 .. n0 + nb` of `w` (row-major, k wide) are read, and `res[j·m + i]` receives
//! `x[i, :] · w[n0 + j, :]`, with `nb = res.len() / m`.

use std::arch::x86_64::*;

use half::{bf16, f16};

use super::gemv::{Isa, group, prefetch_ahead};

/// Checks the slice bounds every kernel's pointer arithmetic relies on, once per call.
#[inline(always)]
fn bounds<W>(x: &[f32], w: &[W], k: usize, n0: usize, res: &[f32]) -> (usize, usize) {
    assert!(k > 0 && x.len().is_multiple_of(k) && !x.is_empty());
    let m = x.len() / k;
    assert!(res.len().is_multiple_of(m));
    let nb = res.len() / m;
    assert!((n0 + nb) * k <= w.len());
    (m, nb)
}

/// Asks for the weights `ahead` bytes ([`prefetch_ahead`]; 0: nothing) past element
/// `elems` of the row at `p` (on in the same run of rows): wrapping arithmetic, since the
/// address may lie past the slice, and a prefetch never faults.
#[inline(always)]
pub(crate) fn prefetch<W>(p: *const W, elems: usize, ahead: usize) {
    if ahead == 0 {
        return;
    }
    let ahead = (p as *const i8).wrapping_add(elems * std::mem::size_of::<W>() + ahead);
    // SAFETY: a prefetch reads nothing architecturally and cannot fault.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead) };
}

// ------------------------------------------------------------------ AVX-512

/// Sixteen weights at `p` (only the lanes in `mask`), widened to f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn load512_f32(p: *const f32, mask: __mmask16) -> __m512 {
    // SAFETY: the caller passes a pointer whose lanes selected by `mask` are in bounds;
    // masked-off lanes are not read (AVX-512 suppresses their faults).
    unsafe { _mm512_maskz_loadu_ps(mask, p) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn load512_f16(p: *const f16, mask: __mmask16) -> __m512 {
    // SAFETY: as in `load512_f32`, for sixteen 2-byte lanes.
    unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p.cast())) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn load512_bf16(p: *const bf16, mask: __mmask16) -> __m512 {
    // SAFETY: as in `load512_f32`, for sixteen 2-byte lanes. A bf16 is the upper half of
    // the f32 with the same value, so zero-extending and shifting by 16 widens exactly.
    unsafe {
        let h = _mm256_maskz_loadu_epi16(mask, p.cast());
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
}

macro_rules! avx512_rows {
    ($name:ident, $w:ty, $load:ident) => {
        /// AVX-512 kernel; the contract is [`super::gemv::rows`].
        ///
        /// Each row advances a cache line (64 bytes of weights: one f32 vector, two
        /// f16 ones) per iteration, with one prefetch per line (where any) and, for f16, two
        /// accumulators per row, as in the AVX2 kernels; on the Zen 5 EPYC of
        /// BENCHMARKS.md f16 decode trailed bf16's with a vector per iteration (two
        /// prefetches per line, one FMA chain per row), and this gained within the noise.
        ///
        /// # Safety
        /// The CPU must have AVX-512 F, BW and VL (checked by `Isa::available`).
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
        pub(crate) unsafe fn $name(x: &[f32], w: &[$w], k: usize, n0: usize, res: &mut [f32]) {
            super::gemv::mark(Isa::Avx512);
            const STEP: usize = 64 / std::mem::size_of::<$w>();
            let (m, nb) = bounds(x, w, k, n0, res);
            let ahead = prefetch_ahead(Isa::Avx512);
            let (lines, full) = (k / STEP * STEP, k / 16 * 16);
            // The last, partial vector of a row: its lanes below k % 16.
            let tail: __mmask16 = ((1u32 << (k % 16)) - 1) as u16;
            let xp = x.as_ptr();
            let q = nb.div_ceil(4);
            for t in 0..q {
                let (idx, rows) = group(nb, q, t);
                // SAFETY: every idx[r] < nb, so rows n0 + idx[r] lie inside `w` (`bounds`).
                let wp: [*const $w; 4] =
                    std::array::from_fn(|r| unsafe { w.as_ptr().add((n0 + idx[r]) * k) });
                for i in 0..m {
                    let mut acc = [[_mm512_setzero_ps(); 4]; 2];
                    let mut c = 0;
                    while c < lines {
                        // SAFETY: c + STEP <= lines <= k: the STEP lanes at c of x's row i
                        // (x holds m·k floats) and of each weight row are in bounds.
                        unsafe {
                            for r in 0..4 {
                                prefetch(wp[r], c, ahead);
                            }
                            for u in 0..STEP / 16 {
                                let xv = _mm512_loadu_ps(xp.add(i * k + c + u * 16));
                                let a = &mut acc[u % 2];
                                for r in 0..4 {
                                    let wv = $load(wp[r].add(c + u * 16), 0xffff);
                                    a[r] = _mm512_fmadd_ps(xv, wv, a[r]);
                                }
                            }
                        }
                        c += STEP;
                    }
                    while c < full {
                        // SAFETY: c + 16 <= full <= k: sixteen lanes in bounds.
                        unsafe {
                            let xv = _mm512_loadu_ps(xp.add(i * k + c));
                            for r in 0..4 {
                                let wv = $load(wp[r].add(c), 0xffff);
                                acc[0][r] = _mm512_fmadd_ps(xv, wv, acc[0][r]);
                            }
                        }
                        c += 16;
                    }
                    if tail != 0 {
                        // SAFETY: only lanes full .. k are selected by `tail`.
                        unsafe {
                            let xv = _mm512_maskz_loadu_ps(tail, xp.add(i * k + c));
                            for r in 0..4 {
                                let wv = $load(wp[r].add(c), tail);
                                acc[0][r] = _mm512_fmadd_ps(xv, wv, acc[0][r]);
                            }
                        }
                    }
                    for r in 0..rows {
                        let sum = _mm512_add_ps(acc[0][r], acc[1][r]);
                        res[idx[r] * m + i] = _mm512_reduce_add_ps(sum);
                    }
                }
            }
        }
    };
}

avx512_rows!(rows_f32_avx512, f32, load512_f32);
avx512_rows!(rows_f16_avx512, f16, load512_f16);

// ------------------------------------------------------------------ AVX2

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load256_f32(p: *const f32) -> __m256 {
    // SAFETY: the caller passes a pointer with eight readable f32 behind it.
    unsafe { _mm256_loadu_ps(p) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load256_f16(p: *const f16) -> __m256 {
    // SAFETY: the caller passes a pointer with eight readable f16 (16 bytes) behind it.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

fn widen_f32(v: f32) -> f32 {
    v
}

fn widen_f16(v: f16) -> f32 {
    v.to_f32()
}

macro_rules! avx2_rows {
    ($name:ident, $w:ty, $load:ident, $widen:ident) => {
        /// AVX2 kernel; the contract is [`super::gemv::rows`].
        ///
        /// Each row advances a cache line (64 bytes of weights) per iteration, with one
        /// prefetch per line and two accumulators per row: on the Zen 2 EPYC of
        /// BENCHMARKS.md a vector per iteration (one prefetch and one FMA chain per row)
        /// left the f16 kernel short of the bandwidth, bound by FMA latency and the
        /// prefetches issued two to four times per line.
        ///
        /// # Safety
        /// The CPU must have AVX2, FMA and F16C (checked by `Isa::available`).
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $name(x: &[f32], w: &[$w], k: usize, n0: usize, res: &mut [f32]) {
            super::gemv::mark(Isa::Avx2);
            const LANES: usize = 8;
            const STEP: usize = 64 / std::mem::size_of::<$w>();
            let (m, nb) = bounds(x, w, k, n0, res);
            let (lines, full) = (k / STEP * STEP, k / LANES * LANES);
            let xp = x.as_ptr();
            let ahead = prefetch_ahead(Isa::Avx2);
            let q = nb.div_ceil(4);
            for t in 0..q {
                let (idx, rows) = group(nb, q, t);
                let row0 = |r: usize| (n0 + idx[r]) * k;
                // SAFETY: as in the AVX-512 kernels: rows inside `w` (`bounds`).
                let wp: [*const $w; 4] =
                    std::array::from_fn(|r| unsafe { w.as_ptr().add(row0(r)) });
                for i in 0..m {
                    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
                    let mut c = 0;
                    while c < lines {
                        // SAFETY: c + STEP <= lines <= k: the STEP lanes at c of x's row i
                        // and of each weight row are in bounds.
                        unsafe {
                            for r in 0..4 {
                                prefetch(wp[r], c, ahead);
                            }
                            for u in 0..STEP / LANES {
                                let xv = _mm256_loadu_ps(xp.add(i * k + c + u * LANES));
                                let a = &mut acc[u % 2];
                                for r in 0..4 {
                                    let wv = $load(wp[r].add(c + u * LANES));
                                    a[r] = _mm256_fmadd_ps(xv, wv, a[r]);
                                }
                            }
                        }
                        c += STEP;
                    }
                    while c < full {
                        // SAFETY: c + LANES <= full <= k: eight lanes in bounds of x's row
                        // i and of each weight row.
                        unsafe {
                            let xv = _mm256_loadu_ps(xp.add(i * k + c));
                            for r in 0..4 {
                                acc[0][r] = _mm256_fmadd_ps(xv, $load(wp[r].add(c)), acc[0][r]);
                            }
                        }
                        c += LANES;
                    }
                    let xi = &x[i * k..(i + 1) * k];
                    for r in 0..rows {
                        let wr = &w[row0(r) + full..row0(r) + k];
                        let tail: f32 = xi[full..]
                            .iter()
                            .zip(wr)
                            .map(|(&a, &b)| a * $widen(b))
                            .sum();
                        res[idx[r] * m + i] = hsum256(_mm256_add_ps(acc[0][r], acc[1][r])) + tail;
                    }
                }
            }
        }
    };
}

avx2_rows!(rows_f32_avx2, f32, load256_f32, widen_f32);
avx2_rows!(rows_f16_avx2, f16, load256_f16, widen_f16);

// ------------------------------------------------------------------ bf16 in pairs

// A 32-bit lane of bf16 weights holds elements 2l (low half) and 2l + 1 (high half):
// a shift left by 16 makes the even one an f32, masking off the low half the odd one.
// That widens a whole vector of bf16 in one instruction per f32 vector (zero-extending
// 16 → 32 bits and shifting takes two, and a vector of x loaded for each), which is what
// sets bf16's pace when the cores are shared. x comes rearranged to match
// ([`super::gemv::Act`]): in each whole block of `2·lanes` values, the even-indexed
// ones, then the odd ones; the tail (k mod 2·lanes) as it is.

/// AVX-512 bf16 kernel over x rearranged in blocks of 32 (`xp`, same length as `x`);
/// otherwise the contract of [`super::gemv::rows`].
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VL (checked by `Isa::available`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
pub(crate) unsafe fn rows_bf16_pairs_avx512(
    x: &[f32],
    xp: &[f32],
    w: &[bf16],
    k: usize,
    n0: usize,
    res: &mut [f32],
) {
    super::gemv::mark(Isa::Avx512);
    let (m, nb) = bounds(x, w, k, n0, res);
    assert_eq!(xp.len(), x.len());
    let ahead = prefetch_ahead(Isa::Avx512);
    let full = k / 32 * 32;
    let rem = k - full;
    let t1 = ((1u32 << rem.min(16)) - 1) as u16;
    let t2 = ((1u32 << rem.saturating_sub(16)) - 1) as u16;
    let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
    let (xq, xpq) = (x.as_ptr(), xp.as_ptr());
    let q = nb.div_ceil(4);
    for t in 0..q {
        let (idx, rows) = group(nb, q, t);
        // SAFETY: rows inside `w` (`bounds`); see the f32 kernels.
        let wp: [*const bf16; 4] =
            std::array::from_fn(|r| unsafe { w.as_ptr().add((n0 + idx[r]) * k) });
        for i in 0..m {
            let mut even = [_mm512_setzero_ps(); 4];
            let mut odd = [_mm512_setzero_ps(); 4];
            let mut c = 0;
            while c < full {
                // SAFETY: c + 32 <= full <= k: 32 values of xp's row i and 32 bf16 (64
                // bytes) of each weight row are in bounds.
                unsafe {
                    let xe = _mm512_loadu_ps(xpq.add(i * k + c));
                    let xo = _mm512_loadu_ps(xpq.add(i * k + c + 16));
                    for r in 0..4 {
                        prefetch(wp[r], c, ahead);
                        let wv = _mm512_loadu_si512(wp[r].add(c).cast());
                        let we = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wv));
                        let wo = _mm512_castsi512_ps(_mm512_and_si512(wv, hi));
                        even[r] = _mm512_fmadd_ps(xe, we, even[r]);
                        odd[r] = _mm512_fmadd_ps(xo, wo, odd[r]);
                    }
                }
                c += 32;
            }
            for (mask, at) in [(t1, c), (t2, c + 16)] {
                if mask != 0 {
                    // SAFETY: the lanes `mask` selects lie below k (rem = k − full).
                    unsafe {
                        let xv = _mm512_maskz_loadu_ps(mask, xq.add(i * k + at));
                        for r in 0..4 {
                            let wv = load512_bf16(wp[r].add(at), mask);
                            even[r] = _mm512_fmadd_ps(xv, wv, even[r]);
                        }
                    }
                }
            }
            for r in 0..rows {
                res[idx[r] * m + i] = _mm512_reduce_add_ps(_mm512_add_ps(even[r], odd[r]));
            }
        }
    }
}

/// AVX2 bf16 kernel over x rearranged in blocks of 16; see [`rows_bf16_pairs_avx512`].
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C (checked by `Isa::available`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows_bf16_pairs_avx2(
    x: &[f32],
    xp: &[f32],
    w: &[bf16],
    k: usize,
    n0: usize,
    res: &mut [f32],
) {
    super::gemv::mark(Isa::Avx2);
    let (m, nb) = bounds(x, w, k, n0, res);
    assert_eq!(xp.len(), x.len());
    let full = k / 16 * 16;
    let hi = _mm256_set1_epi32(0xffff_0000u32 as i32);
    let xpq = xp.as_ptr();
    let ahead = prefetch_ahead(Isa::Avx2);
    let q = nb.div_ceil(4);
    for t in 0..q {
        let (idx, rows) = group(nb, q, t);
        let row0 = |r: usize| (n0 + idx[r]) * k;
        // SAFETY: rows inside `w` (`bounds`).
        let wp: [*const bf16; 4] = std::array::from_fn(|r| unsafe { w.as_ptr().add(row0(r)) });
        for i in 0..m {
            let mut even = [_mm256_setzero_ps(); 4];
            let mut odd = [_mm256_setzero_ps(); 4];
            let mut c = 0;
            while c < full {
                // SAFETY: c + 16 <= full <= k: 16 values of xp's row i and 16 bf16 (32
                // bytes) of each weight row are in bounds.
                unsafe {
                    let xe = _mm256_loadu_ps(xpq.add(i * k + c));
                    let xo = _mm256_loadu_ps(xpq.add(i * k + c + 8));
                    for r in 0..4 {
                        if c % 32 == 0 {
                            // One prefetch per 64-byte line (two iterations).
                            prefetch(wp[r], c, ahead);
                        }
                        let wv = _mm256_loadu_si256(wp[r].add(c).cast());
                        let we = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wv));
                        let wo = _mm256_castsi256_ps(_mm256_and_si256(wv, hi));
                        even[r] = _mm256_fmadd_ps(xe, we, even[r]);
                        odd[r] = _mm256_fmadd_ps(xo, wo, odd[r]);
                    }
                }
                c += 16;
            }
            let xi = &x[i * k..(i + 1) * k];
            for r in 0..rows {
                let wr = &w[row0(r) + full..row0(r) + k];
                let tail: f32 = xi[full..]
                    .iter()
                    .zip(wr)
                    .map(|(&a, &b)| a * b.to_f32())
                    .sum();
                res[idx[r] * m + i] = hsum256(_mm256_add_ps(even[r], odd[r])) + tail;
            }
        }
    }
}
