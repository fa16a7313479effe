//! What the reference loops share (as `shaders/common.wgsl` and `kernels/common.cuh` do
//! for the kernels): the arithmetic trait and the math helpers.
//!
//! The scan loops (`selective_scan.rs`, `selective_state_update.rs`) are generic over
//! the arithmetic type: `f64` with libm's `exp` is the exact reference
//! ([`crate::cpu::Precision::Exact`]); `f32` with [`fast_exp`] (≈2 ulp, and vectorisable
//! over the state dimension) is the fast mode users run models with
//! ([`crate::cpu::Precision::Fast`]). Inputs and outputs are f32 either way: f16/bf16 scan
//! I/O is widened before these loops and `out` rounded after them (`cpu/mod.rs`).

/// The arithmetic of the scan loops.
pub(crate) trait Real:
    Copy
    + Default
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
{
    /// `ln(1 + eˣ)`, the softplus below PyTorch's threshold.
    fn ln1p_exp(self) -> Self;
    fn of(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn exp(self) -> Self;
}

impl Real for f64 {
    #[inline]
    fn of(x: f32) -> Self {
        x as f64
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline]
    fn ln1p_exp(self) -> Self {
        self.exp().ln_1p()
    }
}

impl Real for f32 {
    #[inline]
    fn of(x: f32) -> Self {
        x
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn exp(self) -> Self {
        fast_exp(self)
    }
    #[inline]
    fn ln1p_exp(self) -> Self {
        fast_ln1p_exp(self)
    }
}

/// `e^x` in f32 to about 2 ulp, branch-free so that a loop of them vectorises:
/// `e^x = 2^k · e^r` with `k = round(x·log2 e)`, `r = x − k·ln 2` (split in two
/// constants for exactness), and a degree-6 Taylor polynomial for `e^r` on
/// `|r| ≤ ln2/2`. Inputs are clamped to the finite range of f32 (below −87.3 the
/// result flushes towards zero, as `exp` does for the decays of a scan).
#[inline]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let t = x * LOG2E + ROUND;
    let k = t - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^k from the bits of `t`, which are those of 1.5·2^23 plus k: integer lane
    // arithmetic (`k as i32` would be a saturating scalar conversion per lane).
    let scale = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    p * scale
}

/// `ln(1 + eˣ)` in f32, branch-free so that eight of them run as one AVX2 sequence
/// (libm's `ln_1p` is a call per value, and per channel and token it cost as much as
/// the whole scan). `ln(1 + eˣ) = max(x, 0) + ln(1 + w)` with `w = e^{−|x|} ∈ (0, 1]`,
/// and `ln(1 + w) = 2·atanh(s)` with `s = w / (2 + w) ∈ (0, 1/3]`, whose odd series
/// through s¹³ is exact to about 1e-8 relative there. NaN stays NaN.
#[inline(always)]
pub(crate) fn fast_ln1p_exp(x: f32) -> f32 {
    let w = fast_exp(-x.abs());
    let s = w / (2.0 + w);
    let s2 = s * s;
    let series = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0
                + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0))))));
    let l = 2.0 * s * series;
    // `max` would turn a NaN input into 0; the sum with `l` (NaN then) keeps it NaN.
    (if x > 0.0 { x } else { 0.0 }) + l
}

/// PyTorch's softplus (beta 1, threshold 20).
#[inline]
pub(crate) fn softplus(x: f64) -> f64 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

#[inline]
pub(crate) fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Δ after bias and softplus, in the arithmetic `T`.
#[inline]
pub(crate) fn discretize_delta<T: Real>(raw: f32, bias: Option<f32>, softplus_on: bool) -> T {
    let dt = T::of(raw) + T::of(bias.unwrap_or(0.0));
    // PyTorch's threshold: linear above 20 (NaN takes the log branch and stays NaN).
    if softplus_on && dt <= T::of(20.0) {
        dt.ln1p_exp()
    } else {
        dt
    }
}

/// `x · sigmoid(x)` in the arithmetic `T`.
#[inline]
pub(crate) fn silu_t<T: Real>(x: T) -> T {
    x / (T::of(1.0) + (-x).exp())
}

#[cfg(test)]
mod tests {
    /// `fast_ln1p_exp` against f64 `ln(1 + eˣ)` over the range the scan uses it on
    /// (Δ up to the threshold 20, down to where it underflows), on a dense grid.
    #[test]
    fn fast_ln1p_exp_is_accurate() {
        let mut worst = 0f64;
        for i in 0..=2_000_000 {
            let x = -100.0 + 120.0 * i as f32 / 2_000_000.0;
            let want = (x as f64).exp().ln_1p();
            let got = super::fast_ln1p_exp(x) as f64;
            if want > 1e-37 {
                worst = worst.max((got - want).abs() / want);
            } else {
                assert!(got.abs() < 1e-30, "{x}: {got} vs {want}");
            }
        }
        eprintln!("fast_ln1p_exp: worst relative error {worst:e}");
        assert!(worst < 4e-7, "worst relative error {worst:e}");
        assert!(super::fast_ln1p_exp(f32::NAN).is_nan());
    }

    /// `fast_exp` against f64 `exp` over its whole clamped range.
    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        for i in 0..=2_000_000 {
            let x = -87.0 + 175.0 * i as f32 / 2_000_000.0;
            let want = (x as f64).exp();
            if want > f32::MAX as f64 {
                continue;
            }
            worst = worst.max((super::fast_exp(x) as f64 - want).abs() / want);
        }
        eprintln!("fast_exp: worst relative error {worst:e}");
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(super::fast_exp(-1000.0), super::fast_exp(-87.3));
    }
}
