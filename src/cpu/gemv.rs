//! The matrix-vector kernels of decode (few rows of x, bound by reading W) and the
//! run-time choice between them: AVX-512, AVX2 or portable Rust, the best the CPU has.
//!
//! `MAMBA_CPU_ISA=portable|avx2|avx512` (read once, undocumented on purpose) caps the
//! choice, so that the paths a machine has below its best can be run through the whole
//! model (`MAMBA_CPU_ISA=avx2 cargo test --test cpu_model`); the unit tests below call
//! every available path directly.

use std::sync::OnceLock;

use super::Floats;

/// How far ahead of its loads a GEMV kernel prefetches each weight row, in bytes (0:
/// not at all), by CPU vendor and level, chosen once per process; `MAMBA_CPU_PREFETCH`
/// (bytes, read once, undocumented on purpose) overrides it for both levels, for tuning.
///
/// * Intel, AVX-512: 4 KiB. The hardware prefetchers alone left one core of the Xeon of
///   BENCHMARKS.md well short of the bandwidth (int8 Q8_0 kernel: ~6 GB/s, 11.5 with 4 KiB
///   ahead, 18 on two cores), measured with four adjacent rows per group; not re-measured
///   since the kernels walk four runs of contiguous rows ([`group`]).
/// * Others, AVX2: 16 KiB, from the Zen 2 EPYC of BENCHMARKS.md (f32 ~15 GB/s with 4 KiB,
///   ~19 with 16 KiB), also with adjacent rows; no Intel AVX2-only machine was measured.
/// * AMD: none. On the Zen 4 EPYC of BENCHMARKS.md, with runs of contiguous rows, every
///   distance tried (1–16 KiB) lost to the hardware prefetcher alone at both levels
///   (two-thread f32 decode 34–47 tok/s with 4–8 KiB against 51–67 without).
#[cfg(target_arch = "x86_64")]
pub(crate) fn prefetch_ahead(isa: Isa) -> usize {
    static AHEAD: OnceLock<(usize, usize)> = OnceLock::new();
    let (avx512, avx2) = *AHEAD.get_or_init(|| {
        let set = std::env::var("MAMBA_CPU_PREFETCH").ok();
        if let Some(v) = set.and_then(|v| v.trim().parse().ok()) {
            return (v, v);
        }
        // CPUID leaf 0: the vendor string in ebx, edx, ecx ("AuthenticAMD").
        let id = std::arch::x86_64::__cpuid(0);
        let amd = (id.ebx, id.edx, id.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
        if amd { (0, 0) } else { (4 << 10, 16 << 10) }
    });
    if isa == Isa::Avx512 { avx512 } else { avx2 }
}

/// An instruction-set level of the kernels, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    Portable,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// AVX-512 F, BW and VL.
    Avx512,
}

impl Isa {
    pub(crate) const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// Whether this CPU can run the level's kernels.
    pub(crate) fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Portable => true,
                Isa::Avx2 => {
                    is_x86_feature_detected!("avx2")
                        && is_x86_feature_detected!("fma")
                        && is_x86_feature_detected!("f16c")
                }
                Isa::Avx512 => {
                    is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vl")
                        && is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Portable
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The level the matmuls use: the best available, capped by `MAMBA_CPU_ISA`.
    pub(crate) fn current() -> Isa {
        static CHOSEN: OnceLock<Isa> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let cap = std::env::var("MAMBA_CPU_ISA")
                .ok()
                .and_then(|v| Isa::ALL.into_iter().find(|i| i.name() == v.trim()))
                .unwrap_or(Isa::Avx512);
            Isa::ALL
                .into_iter()
                .filter(|i| *i <= cap && i.available())
                .max()
                .unwrap_or(Isa::Portable)
        })
    }
}

/// The rows a kernel runs together: a chunk's `nb` rows cut into four runs of
/// `q = ⌈nb / 4⌉` contiguous rows, and group `t < q` is row `t` of each run (`t + r·q`,
/// those below `nb`; the rest repeat row `t` and are not stored). Returns the rows and how
/// many are real (a prefix: at least one, since `t < q ≤ nb`).
///
/// Why not four adjacent rows: that makes four short streams (one row each, 3–6 KiB)
/// start together every group, and on the Zen 4 EPYC of BENCHMARKS.md one core read f32
/// weights at ~12 GB/s that way against ~23 GB/s for four runs of contiguous rows (each
/// a long sequential stream the hardware prefetcher follows) or one row at a time.
#[inline(always)]
pub(crate) fn group(nb: usize, q: usize, t: usize) -> ([usize; 4], usize) {
    let rows = (0..4).take_while(|&r| t + r * q < nb).count();
    (
        std::array::from_fn(|r| if r < rows { t + r * q } else { t }),
        rows,
    )
}

/// Records that a kernel of `isa` ran (in unit tests, which assert it); nothing otherwise.
#[inline(always)]
pub(crate) fn mark(isa: Isa) {
    #[cfg(test)]
    tests::RAN.with(|r| r.set(r.get() | 1 << isa as u8));
    let _ = isa;
}

/// The activations of a matrix-vector product: x, and for bf16 weights in the x86
/// kernels x rearranged so that they can widen a vector of weights in one instruction
/// (see `gemv_x86.rs`, "bf16 in pairs"). Built once per product, shared by its chunks.
pub(crate) struct Act<'a> {
    x: &'a [f32],
    pairs: Vec<f32>,
}

impl<'a> Act<'a> {
    /// `x` is (·, k), for weights like `w` in the kernels of `isa`.
    pub(crate) fn new(isa: Isa, x: &'a [f32], k: usize, w: Floats<'_>) -> Self {
        let block = match (isa, w) {
            (Isa::Avx512, Floats::BF16(_)) => 32,
            (Isa::Avx2, Floats::BF16(_)) => 16,
            _ => {
                return Act {
                    x,
                    pairs: Vec::new(),
                };
            }
        };
        let mut pairs = x.to_vec();
        let half = block / 2;
        for (row, src) in pairs.chunks_exact_mut(k).zip(x.chunks_exact(k)) {
            for (dst, src) in row.chunks_exact_mut(block).zip(src.chunks_exact(block)) {
                for l in 0..half {
                    dst[l] = src[2 * l];
                    dst[half + l] = src[2 * l + 1];
                }
            }
        }
        Act { x, pairs }
    }
}

/// `res[j·m + i] = x[i, :] · w[n0 + j, :]` for `j < res.len() / m`, where x is (m, k)
/// and w row-major (·, k), in the kernels of `isa` (which must be available; `x` built
/// by [`Act::new`] for the same `isa` and weight dtype).
pub(crate) fn rows(isa: Isa, x: &Act<'_>, w: Floats<'_>, k: usize, n0: usize, res: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::gemv_x86::*;
        let (xs, xp) = (x.x, &x.pairs[..]);
        match (isa, w) {
            // SAFETY (all six): `isa` is available (the caller's contract), so the CPU
            // has the features each kernel is compiled for.
            (Isa::Avx512, Floats::F32(v)) => unsafe { rows_f32_avx512(xs, v, k, n0, res) },
            (Isa::Avx512, Floats::F16(v)) => unsafe { rows_f16_avx512(xs, v, k, n0, res) },
            (Isa::Avx512, Floats::BF16(v)) => unsafe {
                rows_bf16_pairs_avx512(xs, xp, v, k, n0, res)
            },
            (Isa::Avx2, Floats::F32(v)) => unsafe { rows_f32_avx2(xs, v, k, n0, res) },
            (Isa::Avx2, Floats::F16(v)) => unsafe { rows_f16_avx2(xs, v, k, n0, res) },
            (Isa::Avx2, Floats::BF16(v)) => unsafe { rows_bf16_pairs_avx2(xs, xp, v, k, n0, res) },
            (Isa::Portable, _) => rows_portable(xs, w, k, n0, res),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // No paired kernels here: `Act::new` leaves `pairs` empty for the portable level.
        let _ = (isa, &x.pairs);
        rows_portable(x.x, w, k, n0, res)
    }
}

/// The portable kernel: plain Rust with 32 independent accumulators, which the compiler
/// vectorises for the build's baseline (SSE2 on x86-64, NEON on aarch64, SIMD128 on wasm).
fn rows_portable(x: &[f32], w: Floats<'_>, k: usize, n0: usize, res: &mut [f32]) {
    mark(Isa::Portable);
    let m = x.len() / k;
    let nb = res.len() / m;
    for j in 0..nb {
        let r = (n0 + j) * k..(n0 + j + 1) * k;
        for i in 0..m {
            let xi = &x[i * k..(i + 1) * k];
            res[j * m + i] = match w {
                Floats::F32(v) => dot(xi, &v[r.clone()], |w| w),
                Floats::BF16(v) => dot(xi, &v[r.clone()], |w| {
                    f32::from_bits((w.to_bits() as u32) << 16)
                }),
                Floats::F16(v) => dot(xi, &v[r.clone()], f16_bits_to_f32),
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

/// Dot product with 32 independent accumulators so the loads, not the add latency, set
/// the pace; `widen` converts one weight to f32.
#[inline(always)]
fn dot<W: Copy>(x: &[f32], w: &[W], widen: impl Fn(W) -> f32) -> f32 {
    let mut acc = [0f32; 32];
    let (cx, cw) = (x.chunks_exact(32), w.chunks_exact(32));
    let (rx, rw) = (cx.remainder(), cw.remainder());
    for (xs, ws) in cx.zip(cw) {
        for l in 0..32 {
            acc[l] += xs[l] * widen(ws[l]);
        }
    }
    let mut tail = 0f32;
    for (&xv, &wv) in rx.iter().zip(rw) {
        tail += xv * widen(wv);
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use half::{bf16, f16};
    use rand::{Rng, SeedableRng};

    use super::{Act, Floats, Isa, rows};

    thread_local! {
        /// Bit `isa as u8` is set once a kernel of that level has run on this thread
        /// (per thread, so other tests running matmuls at the same time do not count).
        pub(crate) static RAN: Cell<u8> = const { Cell::new(0) };
    }

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

    /// Each weight dtype's kernels of every available level against an f64 reference
    /// computed from the same (rounded) weights, and against the portable kernel, on
    /// fresh random shapes: odd k (tails of every length below 16 and 32), 1 row,
    /// 1 column, several rows of x, and a block that starts inside W (`n0 > 0`).
    /// Then asserts that every level the CPU has ran, and says which it lacks.
    #[test]
    fn every_available_isa_matches_the_f64_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
        let mut shapes: Vec<(usize, usize, usize)> = vec![(1, 1, 1), (1, 7, 1), (1, 1, 33)];
        for _ in 0..40 {
            shapes.push((
                [1, 1, 2, 3, 7][rng.random_range(0..5)],
                rng.random_range(1..70),
                rng.random_range(1..200),
            ));
        }
        shapes.push((1, 64, 768));
        shapes.push((2, 13, 1536));
        let mut ran = Vec::new();
        for isa in Isa::ALL {
            if !isa.available() {
                eprintln!(
                    "note: this CPU lacks {}; its kernels were not run",
                    isa.name()
                );
                continue;
            }
            RAN.with(|r| r.set(r.get() & !(1 << isa as u8)));
            for &(m, nb, k) in &shapes {
                let n0 = rng.random_range(0..3);
                let n = n0 + nb + rng.random_range(0..2);
                let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                let wf: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                let w16: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
                let wb16: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
                for w in [Floats::F32(&wf), Floats::F16(&w16), Floats::BF16(&wb16)] {
                    let mut wide = vec![0f32; n * k];
                    w.read_into(0, &mut wide);
                    let mut got = vec![f32::NAN; m * nb];
                    let mut port = vec![f32::NAN; m * nb];
                    rows(isa, &Act::new(isa, &x, k, w), w, k, n0, &mut got);
                    let xp = Act::new(Isa::Portable, &x, k, w);
                    rows(Isa::Portable, &xp, w, k, n0, &mut port);
                    for j in 0..nb {
                        for i in 0..m {
                            let (xi, wr) = (&x[i * k..][..k], &wide[(n0 + j) * k..][..k]);
                            let want: f64 =
                                xi.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                            let mag: f64 = xi
                                .iter()
                                .zip(wr)
                                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                                .sum();
                            // f32 accumulation of k terms: a few ulp of the magnitude.
                            let tol =
                                4.0 * f32::EPSILON as f64 * mag.max(1e-30) * (k as f64).sqrt();
                            for (what, v) in
                                [("kernel", got[j * m + i]), ("portable", port[j * m + i])]
                            {
                                assert!(
                                    (v as f64 - want).abs() <= tol,
                                    "{} {what} m {m} nb {nb} k {k} n0 {n0} ({}, {j}): {v} vs {want}",
                                    isa.name(),
                                    i
                                );
                            }
                        }
                    }
                }
            }
            if RAN.with(Cell::get) & (1 << isa as u8) != 0 {
                ran.push(isa.name());
            }
        }
        let available: Vec<&str> = Isa::ALL
            .into_iter()
            .filter(|i| i.available())
            .map(Isa::name)
            .collect();
        eprintln!("gemv kernels run on this CPU: {ran:?}");
        assert_eq!(ran, available);
        assert!(ran.contains(&"portable"));
    }
}
