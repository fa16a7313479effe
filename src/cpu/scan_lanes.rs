//! The fast CPU scan: eight adjacent channels advance together as the eight f32 lanes of
//! an AVX2 register (chosen at run time; the same code compiles for any target).
//!
//! Scanning one channel at a time leaves `y = Σₙ C·h` a serial chain and only `exp`
//! vectorised; eight channels that share one B/C group share B and C at each step, so
//! every operation of the recurrence becomes one vector operation. Same arithmetic as
//! `selective_scan.rs` / `selective_state_update.rs` in
//! [`Precision::Fast`](crate::cpu::Precision::Fast), only reordered.

use rayon::prelude::*;

use super::common::{fast_exp, fast_ln1p_exp};
use super::selective_scan::ScanSlices;
use super::selective_state_update::StepSlices;
use crate::params::{STATE_CARRY, STATE_NONE, ScanParams, StepParams};

/// Channels per block.
const LANES: usize = 8;

/// Can this scan run in lanes? Needs whole blocks of channels (dim % 8 == 0) whose B and
/// C rows are shared within a block (input-dependent or grouped, not per-channel), and a
/// state size the blocks are compiled for (the state lives in registers).
pub(crate) fn applies(p: &ScanParams) -> bool {
    let shared = |group_dim: u32| (group_dim as usize).is_multiple_of(LANES);
    (p.dim as usize).is_multiple_of(LANES)
        && shared(p.b_group_dim)
        && shared(p.c_group_dim)
        && matches!(p.dstate, 1 | 4 | 8 | 16)
}

/// The scan for every block of eight channels, in parallel over blocks.
pub(crate) fn selective_scan(
    p: &ScanParams,
    s: &ScanSlices<'_>,
    state: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let (batch, dim, len, n) = (
        p.batch as usize,
        p.dim as usize,
        p.len as usize,
        p.dstate as usize,
    );
    let blocks = batch * dim / LANES;
    let avx2 = has_avx2();
    let run = |blk: usize, h: Option<&mut [f32]>| -> Vec<f32> {
        let mut o = vec![0f32; len * LANES];
        match n {
            1 => dispatch::<1>(avx2, p, s, blk, h, &mut o),
            4 => dispatch::<4>(avx2, p, s, blk, h, &mut o),
            8 => dispatch::<8>(avx2, p, s, blk, h, &mut o),
            _ => dispatch::<16>(avx2, p, s, blk, h, &mut o),
        }
        o
    };
    let outs: Vec<Vec<f32>> = match state {
        Some(st) if p.state_mode != STATE_NONE => st
            .par_chunks_mut(LANES * n)
            .enumerate()
            .map(|(blk, h)| run(blk, Some(h)))
            .collect(),
        _ => (0..blocks)
            .into_par_iter()
            .map(|blk| run(blk, None))
            .collect(),
    };
    for (blk, o) in outs.iter().enumerate() {
        let (b, d0) = ((blk * LANES) / dim, (blk * LANES) % dim);
        for t in 0..len {
            for c in 0..LANES {
                out[b * p.x_sb as usize + (d0 + c) * p.x_sd as usize + t * p.x_st as usize] =
                    o[t * LANES + c];
            }
        }
    }
}

/// The decode step seen as a scan of length 1 that carries its state: x / dt / z / out
/// `(batch, dim)` are the sequence tensors with L = 1 and B / C `(batch, groups, N)` the
/// input-dependent ones, so the step runs the same blocks and arithmetic as the scan.
fn step_as_scan(p: &StepParams) -> ScanParams {
    let (n, groups) = (p.dstate, p.groups);
    ScanParams {
        batch: p.batch,
        dim: p.dim,
        len: 1,
        dstate: n,
        x_sb: p.dim,
        x_sd: 1,
        x_st: 1,
        b_sb: groups * n,
        b_sg: n,
        b_sn: 1,
        b_st: 0,
        b_group_dim: p.group_dim,
        c_sb: groups * n,
        c_sg: n,
        c_sn: 1,
        c_st: 0,
        c_group_dim: p.group_dim,
        has_d: p.has_d,
        has_z: p.has_z,
        has_delta_bias: p.has_dt_bias,
        delta_softplus: p.dt_softplus,
        state_mode: STATE_CARRY,
        _pad0: 0,
        _pad1: 0,
    }
}

/// Can this decode step run in lanes? The scan's conditions.
pub(crate) fn step_applies(p: &StepParams) -> bool {
    applies(&step_as_scan(p))
}

/// One decode step for every block of eight channels, in parallel over blocks; each
/// block writes its eight outputs and its state in place (no per-block buffers).
pub(crate) fn selective_state_update(
    p: &StepParams,
    s: &StepSlices<'_>,
    state: &mut [f32],
    out: &mut [f32],
) {
    let q = step_as_scan(p);
    let slices = ScanSlices {
        u: s.x,
        delta: s.dt,
        a: s.a,
        b: s.b,
        c: s.c,
        d: s.d,
        z: s.z,
        delta_bias: s.dt_bias,
    };
    let n = q.dstate as usize;
    let avx2 = has_avx2();
    #[cfg(target_arch = "x86_64")]
    let avx512 = super::gemv::Isa::current() == super::gemv::Isa::Avx512;
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    // A decode step's update is tens of µs: on the decode pool (see `pool.rs`), a few
    // blocks of eight channels per chunk.
    let blocks = out.len() / LANES;
    let per = blocks.div_ceil(4 * super::pool::threads()).max(1);
    super::pool::par_chunks2_mut(state, per * LANES * n, out, per * LANES, |c, hs, os| {
        for (i, (h, o)) in hs
            .chunks_exact_mut(LANES * n)
            .zip(os.chunks_exact_mut(LANES))
            .enumerate()
        {
            let blk = c * per + i;
            match n {
                1 => dispatch::<1>(avx2, &q, &slices, blk, Some(h), o),
                4 => dispatch::<4>(avx2, &q, &slices, blk, Some(h), o),
                8 => step_dispatch::<8>(avx512, avx2, p, s, blk, h, o),
                _ => step_dispatch::<16>(avx512, avx2, p, s, blk, h, o),
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

fn dispatch<const N: usize>(
    avx2: bool,
    p: &ScanParams,
    s: &ScanSlices<'_>,
    blk: usize,
    h: Option<&mut [f32]>,
    o: &mut [f32],
) {
    if avx2 {
        // SAFETY: `has_avx2` checked at run time that this CPU has AVX2 and FMA.
        unsafe { block_avx2::<N>(p, s, blk, h, o) }
    } else {
        block::<N, false>(p, s, blk, h, o)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const N: usize>(
    p: &ScanParams,
    s: &ScanSlices<'_>,
    blk: usize,
    h: Option<&mut [f32]>,
    o: &mut [f32],
) {
    block::<N, true>(p, s, blk, h, o)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block_avx2<const N: usize>(
    p: &ScanParams,
    s: &ScanSlices<'_>,
    blk: usize,
    h: Option<&mut [f32]>,
    o: &mut [f32],
) {
    block::<N, false>(p, s, blk, h, o)
}

fn step_dispatch<const N: usize>(
    avx512: bool,
    avx2: bool,
    p: &StepParams,
    s: &StepSlices<'_>,
    blk: usize,
    h: &mut [f32],
    o: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512 {
            // SAFETY: `Isa::current` is Avx512 only where this CPU has AVX-512 F/BW/VL.
            return unsafe { step_block_avx512::<N>(p, s, blk, h, o) };
        }
        if avx2 {
            // SAFETY: `has_avx2` checked at run time that this CPU has AVX2 and FMA.
            return unsafe { step_block_avx2::<N>(p, s, blk, h, o) };
        }
    }
    let _ = (avx512, avx2);
    step_block::<N, false>(p, s, blk, h, o)
}

/// [`step_block`] compiled for a level's features (FMA on), as `$name`.
macro_rules! step_block_for {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<const N: usize>(
            p: &StepParams,
            s: &StepSlices<'_>,
            blk: usize,
            h: &mut [f32],
            o: &mut [f32],
        ) {
            step_block::<N, true>(p, s, blk, h, o)
        }
    };
}
step_block_for!(step_block_avx512, "avx512f,avx512bw,avx512vl,fma");
step_block_for!(step_block_avx2, "avx2,fma");

/// One decode step of the eight channels of block `blk` in the state's own layout
/// (channel-major: a channel's N states are adjacent), for N a multiple of 8. Δ, Δ·u and
/// the gate run with the channels as lanes; then each channel's recurrence runs with
/// its N states as lanes (one AVX-512 vector or two AVX2 ones for N = 16), and C·h is a
/// pairwise sum. [`block`] with L = 1 does the same arithmetic but moves the state and
/// A into [state][lane] order and back, and on the Zen 4 EPYC of BENCHMARKS.md that
/// made the update ~15 % of a one-thread q8 decode step; y's sum runs in another order.
#[inline(always)]
fn step_block<const N: usize, const FMA: bool>(
    p: &StepParams,
    s: &StepSlices<'_>,
    blk: usize,
    h: &mut [f32],
    o: &mut [f32],
) {
    let dim = p.dim as usize;
    let bd0 = blk * LANES;
    let (b, d0) = (bd0 / dim, bd0 % dim);
    let lane = |v: Option<&[f32]>, at: usize, fill: f32| -> [f32; LANES] {
        std::array::from_fn(|c| v.map_or(fill, |v| v[at + c]))
    };
    let u = lane(Some(s.x), bd0, 0.0);
    let raw = lane(Some(s.dt), bd0, 0.0);
    let bias = lane(s.dt_bias, d0, 0.0);
    let dskip = lane(s.d, d0, 0.0);
    let (mut dt, mut du, mut gate) = ([0f32; LANES], [0f32; LANES], [1f32; LANES]);
    for c in 0..LANES {
        let v = raw[c] + bias[c];
        let sp = fast_ln1p_exp(v);
        dt[c] = if p.dt_softplus != 0 && v <= 20.0 {
            sp
        } else {
            v
        };
        du[c] = dt[c] * u[c];
    }
    if let Some(z) = s.z {
        let zz = lane(Some(z), bd0, 0.0);
        for c in 0..LANES {
            gate[c] = zz[c] / (1.0 + fast_exp(-zz[c]));
        }
    }
    let mut y = [0f32; LANES];
    for (c, hc) in h.chunks_exact_mut(N).enumerate() {
        let d = d0 + c;
        let bc = (b * p.groups as usize + d / p.group_dim as usize) * N;
        let hc: &mut [f32; N] = hc.try_into().expect("N states per channel");
        let a: &[f32; N] = s.a[d * N..][..N].try_into().expect("N rates");
        let bv: &[f32; N] = s.b[bc..][..N].try_into().expect("N of B");
        let cv: &[f32; N] = s.c[bc..][..N].try_into().expect("N of C");
        let mut ch = [0f32; N];
        for k in 0..N {
            let hk = madd::<FMA>(fast_exp(dt[c] * a[k]), hc[k], du[c] * bv[k]);
            hc[k] = hk;
            ch[k] = cv[k] * hk;
        }
        let mut w = N;
        while w > 1 {
            w /= 2;
            for k in 0..w {
                ch[k] += ch[k + w];
            }
        }
        y[c] = ch[0];
    }
    for c in 0..LANES {
        o[c] = madd::<FMA>(dskip[c], u[c], y[c]) * gate[c];
    }
}

/// `a·b + c`, fused where the block is compiled for FMA (without the instruction,
/// `mul_add` would be a libm call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// One block: channels `d0..d0 + 8` of batch `b`, all time steps; outputs go to `o`
/// as (L, 8), the state `h_io` (8 channels × N, channel-major) is read and/or written.
#[inline(always)]
fn block<const N: usize, const FMA: bool>(
    p: &ScanParams,
    s: &ScanSlices<'_>,
    blk: usize,
    h_io: Option<&mut [f32]>,
    o: &mut [f32],
) {
    let (dim, len, n) = (p.dim as usize, p.len as usize, N);
    let (b, d0) = ((blk * LANES) / dim, (blk * LANES) % dim);
    // State and decay rates as [state][lane].
    let mut h = [[0f32; LANES]; N];
    let mut a = [[0f32; LANES]; N];
    for c in 0..LANES {
        for k in 0..n {
            a[k][c] = s.a[(d0 + c) * n + k];
            if let (Some(h0), STATE_CARRY) = (&h_io, p.state_mode) {
                h[k][c] = h0[c * n + k];
            }
        }
    }
    let lane = |v: Option<&[f32]>, fill: f32| -> [f32; LANES] {
        std::array::from_fn(|c| v.map_or(fill, |v| v[d0 + c]))
    };
    let (bias, dskip) = (lane(s.delta_bias, 0.0), lane(s.d, 0.0));
    let b_base = b * p.b_sb as usize + (d0 / p.b_group_dim as usize) * p.b_sg as usize;
    let c_base = b * p.c_sb as usize + (d0 / p.c_group_dim as usize) * p.c_sg as usize;
    let x_base = b * p.x_sb as usize + d0 * p.x_sd as usize;
    let (x_sd, x_st) = (p.x_sd as usize, p.x_st as usize);
    let softplus = p.delta_softplus != 0;
    let (mut bt, mut ct) = ([0f32; N], [0f32; N]);
    let (mut dt, mut du, mut uu) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let (mut v, mut zz) = ([0f32; LANES], [0f32; LANES]);
    for t in 0..len {
        let xi = x_base + t * x_st;
        // Gather first (the channel stride is only known at run time), then compute on
        // fixed-size lane arrays, so each line below is one vector operation.
        for c in 0..LANES {
            v[c] = s.delta[xi + c * x_sd] + bias[c];
            uu[c] = s.u[xi + c * x_sd];
        }
        for c in 0..LANES {
            // Computed for every lane and then selected, so the loop stays one vector.
            let sp = fast_ln1p_exp(v[c]);
            dt[c] = if softplus && v[c] <= 20.0 { sp } else { v[c] };
            du[c] = dt[c] * uu[c];
        }
        let (b0, c0) = (b_base + t * p.b_st as usize, c_base + t * p.c_st as usize);
        for k in 0..n {
            bt[k] = s.b[b0 + k * p.b_sn as usize];
            ct[k] = s.c[c0 + k * p.c_sn as usize];
        }
        let mut y = [0f32; LANES];
        for k in 0..n {
            for c in 0..LANES {
                let hk = madd::<FMA>(fast_exp(dt[c] * a[k][c]), h[k][c], du[c] * bt[k]);
                h[k][c] = hk;
                y[c] = madd::<FMA>(ct[k], hk, y[c]);
            }
        }
        let out = &mut o[t * LANES..(t + 1) * LANES];
        for c in 0..LANES {
            out[c] = madd::<FMA>(dskip[c], uu[c], y[c]);
        }
        if let Some(z) = s.z {
            for c in 0..LANES {
                zz[c] = z[xi + c * x_sd];
            }
            for c in 0..LANES {
                out[c] *= zz[c] / (1.0 + fast_exp(-zz[c]));
            }
        }
    }
    if let Some(h_out) = h_io {
        for c in 0..LANES {
            for k in 0..n {
                h_out[c * n + k] = h[k][c];
            }
        }
    }
}
