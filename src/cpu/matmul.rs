//! Matmul: a matrix-vector product for decode, a cache-blocked GEMM for prefill.
//! Mirrors `shaders/matmul.wgsl` and `kernels/matmul.cu`.

use rayon::prelude::*;

use super::Floats;
use crate::params::MatmulParams;

/// Below this many rows of x the matmul is a matrix-vector product bound by reading W
/// (decode); from it on, a cache-blocked GEMM bound by arithmetic (prefill).
const GEMM_MIN_M: usize = 8;

/// Rows of W per task in the matrix-vector path: enough work to amortise scheduling,
/// few enough that both cores stay busy on the smallest projections.
const N_BLOCK: usize = 64;

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

/// Few rows of x: parallel over blocks of W's rows, each weight read exactly once,
/// in place (f16 and bf16 widened in registers).
/// Decode is bound by streaming W, so the dot products run in AVX2 where the CPU has it,
/// and f16 weights are widened by the F16C instruction (eight per instruction; the
/// portable bit-twiddling widening costs more than the load it follows).
fn gemv(m: usize, n: usize, k: usize, x: &[f32], w: Floats<'_>, out: &mut [f32]) {
    let (avx2, f16c) = (has_avx2(), has_f16c());
    let rows = |n0: usize, res: &mut [f32]| match w {
        Floats::F16(v) if f16c => {
            // SAFETY: `has_f16c` checked at run time that the CPU has AVX2, FMA and F16C.
            unsafe { gemv_rows_f16c(x, v, k, n0, res) }
        }
        _ if avx2 => {
            // SAFETY: `has_avx2` checked at run time that the CPU has AVX2 and FMA.
            unsafe { gemv_rows_avx2(x, w, k, n0, res) }
        }
        _ => gemv_rows::<false>(x, w, k, n0, res),
    };
    if m == 1 {
        // One row (batch-1 decode): each block's results are contiguous in `out`.
        out.par_chunks_mut(N_BLOCK)
            .enumerate()
            .for_each(|(blk, res)| rows(blk * N_BLOCK, res));
        return;
    }
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(N_BLOCK))
        .into_par_iter()
        .map(|blk| {
            let n0 = blk * N_BLOCK;
            let mut res = vec![0f32; m * N_BLOCK.min(n - n0)];
            rows(n0, &mut res);
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

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    has_avx2() && is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_f16c() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemv_rows_avx2(x: &[f32], w: Floats<'_>, k: usize, n0: usize, res: &mut [f32]) {
    gemv_rows::<true>(x, w, k, n0, res)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn gemv_rows_avx2(x: &[f32], w: Floats<'_>, k: usize, n0: usize, res: &mut [f32]) {
    gemv_rows::<false>(x, w, k, n0, res)
}

/// [`gemv_rows`] for f16 weights with F16C widening.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_rows_f16c(x: &[f32], w: &[half::f16], k: usize, n0: usize, res: &mut [f32]) {
    let m = x.len() / k;
    let nb = res.len() / m;
    for j in 0..nb {
        let wr = &w[(n0 + j) * k..(n0 + j + 1) * k];
        for i in 0..m {
            res[i * nb + j] = dot_f16c(&x[i * k..(i + 1) * k], wr);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn gemv_rows_f16c(x: &[f32], w: &[half::f16], k: usize, n0: usize, res: &mut [f32]) {
    gemv_rows::<false>(x, Floats::F16(w), k, n0, res)
}

/// `x · w` with w in f16: four independent 8-lane accumulators over chunks of 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f16c(x: &[f32], w: &[half::f16]) -> f32 {
    use std::arch::x86_64::*;
    assert_eq!(x.len(), w.len());
    let full = x.len() / 32 * 32;
    let mut acc = [_mm256_setzero_ps(); 4];
    for base in (0..full).step_by(32) {
        for (a, acc) in acc.iter_mut().enumerate() {
            let o = base + a * 8;
            // SAFETY: o + 8 <= full <= x.len() == w.len(), so both 8-element loads (32
            // bytes of f32, 16 bytes of f16) stay inside their slices; the loads are
            // unaligned ones.
            let (xv, wv) = unsafe {
                (
                    _mm256_loadu_ps(x.as_ptr().add(o)),
                    _mm_loadu_si128(w.as_ptr().add(o).cast::<__m128i>()),
                )
            };
            *acc = _mm256_fmadd_ps(xv, _mm256_cvtph_ps(wv), *acc);
        }
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds exactly eight f32, the 32 bytes the store writes.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    let tail: f32 = x[full..]
        .iter()
        .zip(&w[full..])
        .map(|(&xv, &wv)| xv * wv.to_f32())
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// `res[i, j] = x[i, :] · w[n0 + j, :]` for the rows of one block (`res` is (m, nb)).
/// `FMA`: fuse the multiply-adds (only where compiled for the instruction; without it
/// `mul_add` is a libm call).
#[inline(always)]
fn gemv_rows<const FMA: bool>(x: &[f32], w: Floats<'_>, k: usize, n0: usize, res: &mut [f32]) {
    let m = x.len() / k;
    let nb = res.len() / m;
    for j in 0..nb {
        let r = (n0 + j) * k..(n0 + j + 1) * k;
        for i in 0..m {
            let xi = &x[i * k..(i + 1) * k];
            res[i * nb + j] = match w {
                Floats::F32(v) => dot_wide::<_, FMA>(xi, &v[r.clone()], |w| w),
                Floats::BF16(v) => dot_wide::<_, FMA>(xi, &v[r.clone()], |w| {
                    f32::from_bits((w.to_bits() as u32) << 16)
                }),
                Floats::F16(v) => dot_wide::<_, FMA>(xi, &v[r.clone()], f16_bits_to_f32),
            };
        }
    }
}

/// f16 → f32 without branches, so a loop of them vectorises: the 15 exponent+mantissa
/// bits shifted into an f32 and scaled by 2^112 give every finite value exactly
/// (subnormals included); infinities and NaN are selected separately.
#[inline(always)]
fn f16_bits_to_f32(h: half::f16) -> f32 {
    let h = h.to_bits() as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    let finite = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000);
    let v = if em >= 0x7c00 {
        f32::from_bits((em << 13) | 0x7f80_0000)
    } else {
        finite
    };
    f32::from_bits(v.to_bits() | sign)
}

/// Dot product with 32 independent accumulators (four AVX registers) so the loads, not
/// the add latency, set the pace; `widen` converts one weight to f32.
#[inline(always)]
fn dot_wide<W: Copy, const FMA: bool>(x: &[f32], w: &[W], widen: impl Fn(W) -> f32) -> f32 {
    let mut acc = [0f32; 32];
    let (cx, cw) = (x.chunks_exact(32), w.chunks_exact(32));
    let (rx, rw) = (cx.remainder(), cw.remainder());
    for (xs, ws) in cx.zip(cw) {
        for l in 0..32 {
            acc[l] = if FMA {
                xs[l].mul_add(widen(ws[l]), acc[l])
            } else {
                acc[l] + xs[l] * widen(ws[l])
            };
        }
    }
    let mut tail = 0f32;
    for (&xv, &wv) in rx.iter().zip(rw) {
        tail += xv * widen(wv);
    }
    acc.iter().sum::<f32>() + tail
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
    assert!(x.len() >= m * k && wf.len() >= n * k && out.len() >= m * n);
    // SAFETY: dst is `out` viewed as (m, n) row-major (column stride 1, row stride n);
    // lhs is `x` as (m, k) row-major; rhs is wᵀ, i.e. element (k', n') at
    // `wf[n'·k + k']` (row stride 1, column stride k). The assert above shows every
    // index stays inside its slice; `out` is borrowed mutably and does not alias the
    // inputs; read_dst = false, so `out`'s old contents are ignored.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            wf.as_ptr(),
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

#[cfg(test)]
mod tests {
    /// Every one of the 65,536 f16 values converts as `half` converts it (NaNs stay NaN).
    #[test]
    fn f16_widening_is_exact() {
        for bits in 0..=u16::MAX {
            let h = half::f16::from_bits(bits);
            let (got, want) = (super::f16_bits_to_f32(h), h.to_f32());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
        }
    }
}
