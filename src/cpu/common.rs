//! Selective scan and single-step state update: the reference loops.
//!
//! Mirrors `shaders/selective_scan.wgsl` / `kernels/selective_scan.cu` (which run the
//! same recurrence as a parallel scan over time) and
//! `shaders/selective_state_update.wgsl` / `kernels/selective_state_update.cu`.
//!
//! The loops are generic over the arithmetic type: `f64` with libm's `exp` is the exact
//! reference ([`crate::cpu::Precision::Exact`]); `f32` with [`fast_exp`] (≈2 ulp, and
//! vectorisable over the state dimension) is the fast mode users run models with
//! ([`crate::cpu::Precision::Fast`]). Inputs and outputs are f32 either way: f16/bf16 scan
//! I/O is widened before these loops and `out` rounded after them (`cpu/mod.rs`).

use rayon::prelude::*;

use crate::params::{STATE_CARRY, STATE_NONE, ScanParams, StepParams};

pub(crate) struct ScanSlices<'a> {
    pub u: &'a [f32],
    pub delta: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub c: &'a [f32],
    pub d: Option<&'a [f32]>,
    pub z: Option<&'a [f32]>,
    pub delta_bias: Option<&'a [f32]>,
}

pub(crate) struct StepSlices<'a> {
    pub x: &'a [f32],
    pub dt: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub c: &'a [f32],
    pub d: Option<&'a [f32]>,
    pub z: Option<&'a [f32]>,
    pub dt_bias: Option<&'a [f32]>,
}

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
fn discretize_delta<T: Real>(raw: f32, bias: Option<f32>, softplus_on: bool) -> T {
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

/// `h_t = exp(Δ·A)·h_{t-1} + Δ·B·u`, `y = C·h + D·u`, `out = y·silu(z)` for every
/// (batch, channel), sequentially over time, in the arithmetic `T`. Channels run in
/// parallel.
pub(crate) fn selective_scan<T: Real + Send>(
    p: &ScanParams,
    s: &ScanSlices<'_>,
    state: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let (batch, dim, n) = (p.batch as usize, p.dim as usize, p.dstate as usize);
    let rows: Vec<Vec<f32>> = match state {
        Some(st) if p.state_mode != STATE_NONE => st
            .par_chunks_mut(n)
            .enumerate()
            .map(|(bd, h)| scan_channel::<T>(p, s, bd, Some(h)))
            .collect(),
        _ => (0..batch * dim)
            .into_par_iter()
            .map(|bd| scan_channel::<T>(p, s, bd, None))
            .collect(),
    };
    for (bd, ys) in rows.iter().enumerate() {
        let base = (bd / dim) * p.x_sb as usize + (bd % dim) * p.x_sd as usize;
        for (t, &y) in ys.iter().enumerate() {
            out[base + t * p.x_st as usize] = y;
        }
    }
}

/// One (batch, channel) of the scan: returns its L outputs and updates `h_io`.
fn scan_channel<T: Real>(
    p: &ScanParams,
    s: &ScanSlices<'_>,
    bd: usize,
    h_io: Option<&mut [f32]>,
) -> Vec<f32> {
    let (dim, len, n) = (p.dim as usize, p.len as usize, p.dstate as usize);
    let (b, d) = (bd / dim, bd % dim);
    let mut h: Vec<T> = match (&h_io, p.state_mode) {
        (Some(h0), STATE_CARRY) => h0.iter().map(|&v| T::of(v)).collect(),
        _ => vec![T::default(); n],
    };
    let a: Vec<T> = s.a[d * n..(d + 1) * n].iter().map(|&v| T::of(v)).collect();
    let (bg, cg) = (d / p.b_group_dim as usize, d / p.c_group_dim as usize);
    let b_base = b * p.b_sb as usize + bg * p.b_sg as usize;
    let c_base = b * p.c_sb as usize + cg * p.c_sg as usize;
    let x_base = b * p.x_sb as usize + d * p.x_sd as usize;
    let bias = s.delta_bias.map(|v| v[d]);
    let (b_sn, c_sn) = (p.b_sn as usize, p.c_sn as usize);
    // Per-step scratch: the decays exp(Δ·A) (computed in one vectorisable pass), and
    // B and C gathered into contiguous lanes.
    let (mut da, mut bt, mut ct) = (
        vec![T::default(); n],
        vec![T::default(); n],
        vec![T::default(); n],
    );
    let mut ys = Vec::with_capacity(len);
    for t in 0..len {
        let xi = x_base + t * p.x_st as usize;
        let u = T::of(s.u[xi]);
        let dt: T = discretize_delta(s.delta[xi], bias, p.delta_softplus != 0);
        let (b0, c0) = (b_base + t * p.b_st as usize, c_base + t * p.c_st as usize);
        for k in 0..n {
            bt[k] = T::of(s.b[b0 + k * b_sn]);
            ct[k] = T::of(s.c[c0 + k * c_sn]);
        }
        for (e, &ak) in da.iter_mut().zip(&a) {
            *e = (dt * ak).exp();
        }
        let du = dt * u;
        let mut y = T::default();
        for k in 0..n {
            h[k] = da[k] * h[k] + du * bt[k];
            y += ct[k] * h[k];
        }
        if let Some(dv) = s.d {
            y += T::of(dv[d]) * u;
        }
        if let Some(z) = s.z {
            y = y * silu_t(T::of(z[xi]));
        }
        ys.push(y.to_f32());
    }
    if let Some(h_out) = h_io {
        for (o, v) in h_out.iter_mut().zip(&h) {
            *o = v.to_f32();
        }
    }
    ys
}

/// One decode step for every (batch, channel) in the arithmetic `T`: the state is
/// updated in place.
pub(crate) fn selective_state_update<T: Real>(
    p: &StepParams,
    s: &StepSlices<'_>,
    state: &mut [f32],
    out: &mut [f32],
) {
    let (dim, n) = (p.dim as usize, p.dstate as usize);
    state
        .par_chunks_mut(n)
        .zip(out.par_iter_mut())
        .with_min_len(64)
        .enumerate()
        .for_each(|(bd, (h, o))| {
            let (b, d) = (bd / dim, bd % dim);
            let g = d / p.group_dim as usize;
            let bc = (b * p.groups as usize + g) * n;
            let x = T::of(s.x[bd]);
            let dt: T = discretize_delta(s.dt[bd], s.dt_bias.map(|v| v[d]), p.dt_softplus != 0);
            let (a, bv, cv) = (&s.a[d * n..(d + 1) * n], &s.b[bc..bc + n], &s.c[bc..bc + n]);
            let dx = dt * x;
            let mut y = T::default();
            for k in 0..n {
                let hk = (dt * T::of(a[k])).exp() * T::of(h[k]) + dx * T::of(bv[k]);
                h[k] = hk.to_f32();
                y += T::of(cv[k]) * hk;
            }
            if let Some(dv) = s.d {
                y += T::of(dv[d]) * x;
            }
            if let Some(z) = s.z {
                y = y * silu_t(T::of(z[bd]));
            }
            *o = y.to_f32();
        });
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
