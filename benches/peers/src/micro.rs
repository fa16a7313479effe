//! `--micro`: the two ops that dominate mamba-gpu's CPU time, timed through the public
//! `ops` API on the 130m shapes, next to a straightforward rewrite of each kept in this
//! bench (not in src/). The rewrites were written first, to show what the same arithmetic
//! costs when it is laid out for the vector units; src/cpu now uses the same layouts
//! (eight-channel lane scan, in-place AVX2 GEMV), so the two columns should match and the
//! table guards against regressions. Their outputs are checked against ours.
//!
//! * the prefill scan: blocks of 8 adjacent channels as SIMD lanes (token-major inputs
//!   are contiguous across channels), AVX2+FMA picked at run time;
//! * the decode matrix-vector product: each weight row read in place with AVX2+FMA
//!   (bf16 widened in registers).

use std::time::Instant;

use mamba_gpu::ops::{self, Layout, ScanInputs, StateIo};
use mamba_gpu::{Backend, CpuBackend, HostSlice, Precision};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

fn rnd(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.unwrap())
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let (mut n, mut d) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        n += (x as f64 - y as f64).powi(2);
        d += (y as f64).powi(2);
    }
    (n / d).sqrt()
}

// ------------------------------------------------------------------ scan

const LANES: usize = 8;
const NS: usize = 16;

#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    // The same polynomial as mamba-gpu's `fast_exp`.
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // k is integral and within ±128: the integer conversion needs no saturation.
    let scale = f32::from_bits((((k + 127.0) as i32) as u32) << 23);
    p * scale
}

struct ScanIn<'a> {
    l: usize,
    e: usize,
    u: &'a [f32],
    delta: &'a [f32],
    z: &'a [f32],
    b: &'a [f32],
    c: &'a [f32],
    a: &'a [f32],
    d: &'a [f32],
    bias: &'a [f32],
}

/// One block of LANES channels over all tokens; token-major in and out.
#[inline(always)]
fn scan_block_body(s: &ScanIn<'_>, d0: usize, out: &mut [f32]) {
    let mut h = [[0f32; LANES]; NS];
    let mut a = [[0f32; LANES]; NS];
    for c in 0..LANES {
        for k in 0..NS {
            a[k][c] = s.a[(d0 + c) * NS + k];
        }
    }
    let mut dt = [0f32; LANES];
    let mut du = [0f32; LANES];
    let mut y = [0f32; LANES];
    for t in 0..s.l {
        let row = t * s.e + d0;
        for c in 0..LANES {
            let v = s.delta[row + c] + s.bias[d0 + c];
            dt[c] = if v > 20.0 { v } else { fast_exp(v).ln_1p() };
            du[c] = dt[c] * s.u[row + c];
            y[c] = 0.0;
        }
        let (bt, ct) = (&s.b[t * NS..t * NS + NS], &s.c[t * NS..t * NS + NS]);
        for k in 0..NS {
            for c in 0..LANES {
                let hk = fast_exp(dt[c] * a[k][c]) * h[k][c] + du[c] * bt[k];
                h[k][c] = hk;
                y[c] += ct[k] * hk;
            }
        }
        for c in 0..LANES {
            let zc = s.z[row + c];
            let g = zc / (1.0 + fast_exp(-zc));
            out[t * LANES + c] = (y[c] + s.d[d0 + c] * s.u[row + c]) * g;
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn scan_block_avx2(s: &ScanIn<'_>, d0: usize, out: &mut [f32]) {
    scan_block_body(s, d0, out)
}

fn scan_blocked(s: &ScanIn<'_>, out: &mut [f32]) {
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    let blocks: Vec<Vec<f32>> = (0..s.e / LANES)
        .into_par_iter()
        .map(|blk| {
            let mut o = vec![0f32; s.l * LANES];
            if avx2 {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                unsafe { scan_block_avx2(s, blk * LANES, &mut o) }
            } else {
                scan_block_body(s, blk * LANES, &mut o)
            }
            o
        })
        .collect();
    for (blk, o) in blocks.iter().enumerate() {
        for t in 0..s.l {
            out[t * s.e + blk * LANES..t * s.e + blk * LANES + LANES]
                .copy_from_slice(&o[t * LANES..t * LANES + LANES]);
        }
    }
}

fn micro_scan(runs: usize) {
    let (l, e) = (512usize, 1536usize);
    let u = rnd(l * e, -1.0, 1.0, 1);
    let delta = rnd(l * e, -3.0, 0.0, 2);
    let z = rnd(l * e, -2.0, 2.0, 3);
    let b = rnd(l * NS, -1.0, 1.0, 4);
    let c = rnd(l * NS, -1.0, 1.0, 5);
    let a: Vec<f32> = (0..e).flat_map(|_| (1..=NS).map(|j| -(j as f32))).collect();
    let d = vec![1.0f32; e];
    let bias = rnd(e, -4.0, -2.0, 6);

    let be = CpuBackend::with_precision(Precision::Fast);
    let up = |v: &[f32], s: &[usize]| be.upload(HostSlice::F32(v), s).unwrap();
    let (ub, db, zb) = (
        up(&u, &[1, l, e]),
        up(&delta, &[1, l, e]),
        up(&z, &[1, l, e]),
    );
    let (bb, cb) = (up(&b, &[1, l, NS]), up(&c, &[1, l, NS]));
    let (ab, dd, biasb) = (up(&a, &[e, NS]), up(&d, &[e]), up(&bias, &[e]));
    let inputs = ScanInputs {
        u: &ub,
        delta: &db,
        a: &ab,
        b: &bb,
        c: &cb,
        d: Some(&dd),
        z: Some(&zb),
        delta_bias: Some(&biasb),
        delta_softplus: true,
        layout: Layout::TokenMajor,
    };
    let (t_ours, ours) = best_of(runs, || {
        let mut out = be.zeros(mamba_gpu::DType::F32, &[1, l, e]).unwrap();
        ops::selective_scan(&be, &inputs, StateIo::None, &mut out).unwrap();
        be.download(&out).unwrap().to_f32()
    });
    let s = ScanIn {
        l,
        e,
        u: &u,
        delta: &delta,
        z: &z,
        b: &b,
        c: &c,
        a: &a,
        d: &d,
        bias: &bias,
    };
    let (t_new, new) = best_of(runs, || {
        let mut out = vec![0f32; l * e];
        scan_blocked(&s, &mut out);
        out
    });
    let per = |t: f64| t * 1e9 / (l * e * NS) as f64;
    println!(
        "| selective_scan, one layer (L {l}, E {e}, N {NS}), token-major | {:.1} ms ({:.2} ns/update) | {:.1} ms ({:.2} ns/update) | {:.1}x | {:.1e} |",
        t_ours * 1e3,
        per(t_ours),
        t_new * 1e3,
        per(t_new),
        t_ours / t_new,
        rel(&new, &ours)
    );
}

// ------------------------------------------------------------------ gemv

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 32];
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..32 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[inline(always)]
fn dot_bf16_body(x: &[f32], w: &[u16]) -> f32 {
    let mut acc = [0f32; 32];
    let (cx, cw) = (x.chunks_exact(32), w.chunks_exact(32));
    let (rx, rw) = (cx.remainder(), cw.remainder());
    for (xs, ws) in cx.zip(cw) {
        for i in 0..32 {
            acc[i] = xs[i].mul_add(f32::from_bits((ws[i] as u32) << 16), acc[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (xv, wv) in rx.iter().zip(rw) {
        s += xv * f32::from_bits((*wv as u32) << 16);
    }
    s
}

#[target_feature(enable = "avx2,fma")]
unsafe fn rows_f32(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(k)) {
        *o = dot_body(x, row);
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn rows_bf16(x: &[f32], w: &[u16], k: usize, out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(k)) {
        *o = dot_bf16_body(x, row);
    }
}

fn gemv_f32(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    out.par_chunks_mut(64)
        .zip(w.par_chunks(64 * k))
        // SAFETY: AVX2 and FMA checked by the caller.
        .for_each(|(o, wb)| unsafe { rows_f32(x, wb, k, o) });
}

fn gemv_bf16(x: &[f32], w: &[u16], k: usize, out: &mut [f32]) {
    out.par_chunks_mut(64)
        .zip(w.par_chunks(64 * k))
        // SAFETY: AVX2 and FMA checked by the caller.
        .for_each(|(o, wb)| unsafe { rows_bf16(x, wb, k, o) });
}

fn micro_gemv(runs: usize) {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        println!("(no AVX2/FMA: gemv rewrite skipped)");
        return;
    }
    let be = CpuBackend::with_precision(Precision::Fast);
    // One decode step's weights: 24 x (in_proj 3072x768 + out_proj 768x1536), then lm_head.
    for (label, n, k, reps) in [
        (
            "in_proj (x and z), 24 layers",
            2 * 1536usize,
            768usize,
            24usize,
        ),
        ("out_proj, 24 layers", 768, 1536, 24),
        ("lm_head", 50280, 768, 1),
        // The small products of a decode step: x_proj's Δ rows, dt_proj.
        ("x_proj dt rows, 24 layers", 48, 1536, 24),
        ("dt_proj, 24 layers", 1536, 48, 24),
    ] {
        let ws: Vec<Vec<f32>> = (0..reps)
            .map(|r| rnd(n * k, -0.05, 0.05, 100 + r as u64))
            .collect();
        let x = rnd(k, -1.0, 1.0, 7);
        let xb = be.upload(HostSlice::F32(&x), &[1, k]).unwrap();
        for dt in ["f32", "bf16"] {
            let wb: Vec<_> = ws
                .iter()
                .map(|w| {
                    if dt == "f32" {
                        be.upload(HostSlice::F32(w), &[n, k]).unwrap()
                    } else {
                        let h: Vec<half::bf16> =
                            w.iter().map(|&v| half::bf16::from_f32(v)).collect();
                        be.upload(HostSlice::BF16(&h), &[n, k]).unwrap()
                    }
                })
                .collect();
            let wraw16: Vec<Vec<u16>> = ws
                .iter()
                .map(|w| {
                    w.iter()
                        .map(|&v| half::bf16::from_f32(v).to_bits())
                        .collect()
                })
                .collect();
            let (t_ours, ours) = best_of(runs, || {
                let mut last = Vec::new();
                for w in &wb {
                    let mut out = be.zeros(mamba_gpu::DType::F32, &[1, n]).unwrap();
                    ops::matmul(&be, &xb, w, None, &mut out).unwrap();
                    last = be.download(&out).unwrap().to_f32();
                }
                last
            });
            let (t_new, new) = best_of(runs, || {
                let mut out = vec![0f32; n];
                for r in 0..reps {
                    if dt == "f32" {
                        gemv_f32(&x, &ws[r], k, &mut out);
                    } else {
                        gemv_bf16(&x, &wraw16[r], k, &mut out);
                    }
                }
                out
            });
            let bytes = (reps * n * k * if dt == "f32" { 4 } else { 2 }) as f64;
            println!(
                "| gemv {label}, {dt} weights ({n}x{k}) | {:.2} ms ({:.1} GB/s) | {:.2} ms ({:.1} GB/s) | {:.1}x | {:.1e} |",
                t_ours * 1e3,
                bytes / t_ours / 1e9,
                t_new * 1e3,
                bytes / t_new / 1e9,
                t_ours / t_new,
                rel(&new, &ours)
            );
        }
    }
}

pub fn run(runs: usize) {
    println!("\n## Micro: mamba-gpu ops vs a SIMD-laid-out rewrite (best of {runs})\n");
    println!(
        "| op | ours (ops API, CpuBackend Fast) | rewrite in benches/peers/src/micro.rs | speed-up | rel L2 vs ours |"
    );
    println!("|---|---:|---:|---:|---:|");
    micro_scan(runs);
    micro_gemv(runs);
}
