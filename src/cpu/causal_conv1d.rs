//! Causal depthwise conv1d, over a sequence and for one decode step.
//! Mirrors `shaders/causal_conv1d.wgsl` and `kernels/causal_conv1d.cu`.

use rayon::prelude::*;

use crate::params::{ConvParams, STATE_CARRY, STATE_NONE};

use super::common::{Real, silu, silu_t};

/// `out[b,d,t] = act(bias[d] + Σ_k w[d,k]·x[b,d,t-(K-1)+k])`; inputs before t = 0 come
/// from the conv state when carried, else are zero. The state, if kept, receives the
/// last K-1 inputs of the extended sequence (state ++ x), oldest first.
pub(crate) fn causal_conv1d(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    state: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let (batch, dim, len, k) = (
        p.batch as usize,
        p.dim as usize,
        p.len as usize,
        p.width as usize,
    );
    let pre = k - 1;
    let channel = |bd: usize, st: Option<&mut [f32]>| -> Vec<f32> {
        let (b, d) = (bd / dim, bd % dim);
        let base = b * p.x_sb as usize + d * p.x_sd as usize;
        // The extended input: K-1 past values, then the sequence.
        let mut ext = vec![0f32; pre + len];
        if let (Some(s), STATE_CARRY) = (&st, p.state_mode) {
            ext[..pre].copy_from_slice(s);
        }
        for t in 0..len {
            ext[pre + t] = x[base + t * p.x_st as usize];
        }
        let wd = &w[d * k..(d + 1) * k];
        let ys = (0..len)
            .map(|t| {
                let mut acc = bias.map_or(0.0, |b| b[d] as f64);
                for (j, &wj) in wd.iter().enumerate() {
                    acc += wj as f64 * ext[t + j] as f64;
                }
                (if p.silu != 0 { silu(acc) } else { acc }) as f32
            })
            .collect();
        if let Some(s) = st {
            s.copy_from_slice(&ext[len..]);
        }
        ys
    };
    let rows: Vec<Vec<f32>> = match state {
        Some(st) if p.state_mode != STATE_NONE && pre > 0 => st
            .par_chunks_mut(pre)
            .enumerate()
            .map(|(bd, s)| channel(bd, Some(s)))
            .collect(),
        _ => (0..batch * dim)
            .into_par_iter()
            .map(|bd| channel(bd, None))
            .collect(),
    };
    for (bd, ys) in rows.iter().enumerate() {
        let base = (bd / dim) * p.x_sb as usize + (bd % dim) * p.x_sd as usize;
        for (t, &y) in ys.iter().enumerate() {
            out[base + t * p.x_st as usize] = y;
        }
    }
}

/// One step: `window = state ++ [x]`, `out = act(bias + w·window)`, state ← window[1..],
/// in the arithmetic `T` (f64 for `Precision::Exact`; the fast path is
/// [`causal_conv1d_update_lanes`]).
pub(crate) fn causal_conv1d_update<T: Real + Send>(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    state: &mut [f32],
    out: &mut [f32],
) {
    let (dim, k) = (p.dim as usize, p.width as usize);
    let pre = k - 1;
    // A few hundred channels of K multiply-adds are less work than a task switch; the
    // chunks run on the decode pool (see `pool.rs`).
    const CH: usize = 512;
    super::pool::par_chunks2_mut(state, CH * pre, out, CH, |c, ss, os| {
        for (i, (s, o)) in ss.chunks_exact_mut(pre).zip(os.iter_mut()).enumerate() {
            let bd = c * CH + i;
            let d = bd % dim;
            let wd = &w[d * k..(d + 1) * k];
            let mut acc = T::of(bias.map_or(0.0, |b| b[d]));
            for j in 0..pre {
                acc += T::of(wd[j]) * T::of(s[j]);
            }
            acc += T::of(wd[pre]) * T::of(x[bd]);
            s.copy_within(1.., 0);
            s[pre - 1] = x[bd];
            *o = (if p.silu != 0 { silu_t(acc) } else { acc }).to_f32();
        }
    });
}

/// [`causal_conv1d_update`] for [`Precision::Fast`](crate::cpu::Precision::Fast): the
/// same step with f32 accumulation, run as [`ConvBlock`]s of adjacent channels so that
/// the K taps and the silu are vector operations across channels (the per-channel loop
/// with a scalar exp was ~6 % of a one-thread q8 decode step of mamba-130m).
pub(crate) fn causal_conv1d_update_lanes(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    state: &mut [f32],
    out: &mut [f32],
) {
    let (dim, k) = (p.dim as usize, p.width as usize);
    let pre = k - 1;
    // As in `causal_conv1d_update`: a pool chunk of 512 channels.
    const CH: usize = 512;
    let avx2 = has_avx2();
    super::pool::par_chunks2_mut(state, CH * pre, out, CH, |c, ss, os| {
        let (mut head, mut taps, mut bs) = (
            vec![0f32; pre * D_BLOCK],
            vec![0f32; k * D_BLOCK],
            [0f32; D_BLOCK],
        );
        for (blk, (sb, ob)) in ss
            .chunks_mut(pre * D_BLOCK)
            .zip(os.chunks_mut(D_BLOCK))
            .enumerate()
        {
            let (bd0, db) = (c * CH + blk * D_BLOCK, ob.len());
            // The block's rows: the state (K−1, db), the taps (K, db), the bias; a block
            // may run across two sequences, so channel d = bd mod dim per element.
            let mut d = bd0 % dim;
            for (i, s) in sb.chunks_exact(pre).enumerate() {
                for j in 0..pre {
                    head[j * db + i] = s[j];
                }
                for j in 0..k {
                    taps[j * db + i] = w[d * k + j];
                }
                bs[i] = bias.map_or(0.0, |b| b[d]);
                d = if d + 1 == dim { 0 } else { d + 1 };
            }
            let blk = ConvBlock {
                x: &x[bd0..bd0 + db],
                x_st: 0,
                db,
                head: &head[..pre * db],
                taps: &taps[..k * db],
                bias: Some(&bs[..db]),
                silu: p.silu != 0,
            };
            if avx2 {
                // SAFETY: `has_avx2` checked at run time that this CPU has AVX2 and FMA.
                unsafe { blk.run_avx2(ob) }
            } else {
                blk.run(ob)
            }
            for (i, s) in sb.chunks_exact_mut(pre).enumerate() {
                s.copy_within(1.., 0);
                s[pre - 1] = x[bd0 + i];
            }
        }
    });
}

/// Channels per task of [`causal_conv1d_lanes`].
const D_BLOCK: usize = 64;

/// The fast path of the sequence conv for token-major input (`x_sd == 1`), used by
/// [`Precision::Fast`](crate::cpu::Precision::Fast): f32 accumulation of the K taps, and
/// the inner loop runs over adjacent channels, which are contiguous, so it vectorises.
/// Same semantics as [`causal_conv1d`].
pub(crate) fn causal_conv1d_lanes(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    state: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let (batch, dim, len, k) = (
        p.batch as usize,
        p.dim as usize,
        p.len as usize,
        p.width as usize,
    );
    let pre = k - 1;
    let carry = p.state_mode == STATE_CARRY;
    let old: Option<Vec<f32>> = state.as_deref().map(<[f32]>::to_vec);
    let old = old.as_deref();
    let blocks_per_row = dim.div_ceil(D_BLOCK);
    let blocks: Vec<Vec<f32>> = (0..batch * blocks_per_row)
        .into_par_iter()
        .map(|blk| {
            let (b, d0) = (blk / blocks_per_row, (blk % blocks_per_row) * D_BLOCK);
            let db = D_BLOCK.min(dim - d0);
            // The K−1 inputs before t = 0, as rows of the block: the carried state or zeros.
            let mut head = vec![0f32; pre * db];
            if let (true, Some(s)) = (carry, old) {
                for c in 0..db {
                    for j in 0..pre {
                        head[j * db + c] = s[(b * dim + d0 + c) * pre + j];
                    }
                }
            }
            // Taps as (K, db), so each tap is a contiguous row across the block.
            let mut taps = vec![0f32; k * db];
            for c in 0..db {
                for j in 0..k {
                    taps[j * db + c] = w[(d0 + c) * k + j];
                }
            }
            let bias = bias.map(|bv| &bv[d0..d0 + db]);
            let xb = &x[b * p.x_sb as usize + d0..];
            let mut res = vec![0f32; len * db];
            let blk = ConvBlock {
                x: xb,
                x_st: p.x_st as usize,
                db,
                head: &head,
                taps: &taps,
                bias,
                silu: p.silu != 0,
            };
            if has_avx2() {
                // SAFETY: `has_avx2` checked at run time that this CPU has AVX2 and FMA.
                unsafe { blk.run_avx2(&mut res) }
            } else {
                blk.run(&mut res)
            }
            res
        })
        .collect();
    for (blk, res) in blocks.iter().enumerate() {
        let (b, d0) = (blk / blocks_per_row, (blk % blocks_per_row) * D_BLOCK);
        let db = D_BLOCK.min(dim - d0);
        for t in 0..len {
            let o = b * p.x_sb as usize + t * p.x_st as usize + d0;
            out[o..o + db].copy_from_slice(&res[t * db..(t + 1) * db]);
        }
    }
    if let Some(st) = state
        && p.state_mode != STATE_NONE
        && pre > 0
    {
        // The new state holds the last K-1 inputs of (old state ++ x).
        for b in 0..batch {
            for d in 0..dim {
                for j in 0..pre {
                    let tt = len as isize - pre as isize + j as isize;
                    let v = if tt >= 0 {
                        x[b * p.x_sb as usize + d + tt as usize * p.x_st as usize]
                    } else if carry {
                        old.map_or(0.0, |s| {
                            s[(b * dim + d) * pre + (pre as isize + tt) as usize]
                        })
                    } else {
                        0.0
                    };
                    st[(b * dim + d) * pre + j] = v;
                }
            }
        }
    }
}

/// One block of channels of [`causal_conv1d_lanes`]: every row below is `db` adjacent
/// channels, so each tap is one vector multiply-add across the block.
struct ConvBlock<'a> {
    /// The block's first channel at t = 0; row `t` starts at `t * x_st`.
    x: &'a [f32],
    x_st: usize,
    /// Channels in the block.
    db: usize,
    /// (K−1, db): the inputs before t = 0.
    head: &'a [f32],
    /// (K, db).
    taps: &'a [f32],
    bias: Option<&'a [f32]>,
    silu: bool,
}

impl ConvBlock<'_> {
    /// Writes `res` (len, db).
    #[inline(always)]
    fn run(&self, res: &mut [f32]) {
        let (db, pre) = (self.db, self.taps.len() / self.db - 1);
        for (t, r) in res.chunks_exact_mut(db).enumerate() {
            match self.bias {
                Some(bv) => r.copy_from_slice(bv),
                None => r.fill(0.0),
            }
            for (j, tap) in self.taps.chunks_exact(db).enumerate() {
                let src = if t + j >= pre {
                    &self.x[(t + j - pre) * self.x_st..][..db]
                } else {
                    &self.head[(t + j) * db..][..db]
                };
                for ((o, &wv), &xv) in r.iter_mut().zip(tap).zip(src) {
                    *o += wv * xv;
                }
            }
            if self.silu {
                for o in r.iter_mut() {
                    *o /= 1.0 + super::common::fast_exp(-*o);
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, res: &mut [f32]) {
        self.run(res)
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run_avx2(&self, res: &mut [f32]) {
        self.run(res)
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
