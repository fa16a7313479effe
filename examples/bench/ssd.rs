//! The Mamba-2 scan rows of the bench: `ops::ssd_scan` (the chunked form from 32 steps
//! on, on the GPU backends) on shapes BATCHxHEADSxPxLxN with one group, timed like the
//! selective scan.
//!
//! The floor counts each tensor read or written once, f32: x, z, out `(batch, L, E)`,
//! dt `(batch, L, H)`, B and C `(batch, L, N)`, and the final state `(batch, E, N)`:
//! `bytes = 4·batch·(L·(3·E + H + 2·N) + E·N)` with `E = H·P`.

use std::time::Instant;

use mamba_gpu::ops::{self, SsdInputs, StateIo};
use mamba_gpu::{Backend, DType, HostSlice, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn parse(s: &str) -> Option<[usize; 5]> {
    let v: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    (v.len() == 5 && v.iter().all(|&x| x > 0)).then(|| [v[0], v[1], v[2], v[3], v[4]])
}

fn floor_bytes([batch, heads, p, len, n]: [usize; 5]) -> f64 {
    let e = heads * p;
    4.0 * (batch * (len * (3 * e + heads + 2 * n) + e * n)) as f64
}

/// Seconds per call (median of `iters`, after one warm-up), each ending with the download
/// of the final state, which waits for the work.
fn time_ssd<B: Backend>(be: &B, shape: [usize; 5], iters: usize) -> Result<f64> {
    let [batch, heads, p, len, n] = shape;
    let e = heads * p;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut vec = |k: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..k).map(|_| rng.random_range(lo..hi)).collect()
    };
    let up = |v: &[f32], s: &[usize]| be.upload(HostSlice::F32(v), s);
    let seq = [batch, len, e];
    let x = up(&vec(batch * len * e, -1.0, 1.0), &seq)?;
    let z = up(&vec(batch * len * e, -1.0, 1.0), &seq)?;
    let dt = up(&vec(batch * len * heads, -3.0, 0.0), &[batch, len, heads])?;
    let a = up(&vec(heads, -8.0, -1.0), &[heads])?;
    let b = up(&vec(batch * len * n, -1.0, 1.0), &[batch, len, n])?;
    let c = up(&vec(batch * len * n, -1.0, 1.0), &[batch, len, n])?;
    let d = up(&vec(heads, -1.0, 1.0), &[heads])?;
    let bias = up(&vec(heads, -1.0, 0.0), &[heads])?;
    let mut out = be.zeros(DType::F32, &seq)?;
    let mut state = be.zeros(DType::F32, &[batch, e, n])?;
    let inputs = SsdInputs {
        x: &x,
        dt: &dt,
        a: &a,
        b: &b,
        c: &c,
        d: Some(&d),
        z: Some(&z),
        dt_bias: Some(&bias),
        dt_softplus: true,
        head_dim: p,
    };
    let mut times = Vec::with_capacity(iters);
    for i in 0..=iters {
        let t = Instant::now();
        ops::ssd_scan(be, &inputs, StateIo::Final(&mut state), &mut out)?;
        be.download(&state)?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// One row per shape: time, achieved GB/s and the ratio to the memory floor at `peak`;
/// with `json`, one [`super::Row`] each (`what: "ssd_scan"`).
pub fn table<B: Backend>(
    be: &B,
    shapes: &[[usize; 5]],
    iters: usize,
    peak_gbs: Option<f64>,
    json: bool,
) -> Result<()> {
    if shapes.is_empty() {
        return Ok(());
    }
    if !json {
        println!(
            "{:<24} {:>11} {:>12} {:>10} {:>10}",
            format!("{} ssd B×H×P×L×N", be.name()),
            "time (ms)",
            "floor (MB)",
            "GB/s",
            "× floor"
        );
    }
    for &shape in shapes {
        let secs = time_ssd(be, shape, iters)?;
        let bytes = floor_bytes(shape);
        let gbs = bytes / secs / 1e9;
        let ratio = peak_gbs
            .filter(|&p| p > 0.0)
            .map(|peak| secs / (bytes / (peak * 1e9)));
        let [b, h, p, l, n] = shape;
        if json {
            super::Row {
                backend: be.name(),
                model: None,
                what: "ssd_scan",
                batch: b,
                dtype: "f32",
                tokens_per_s: Some((b * l) as f64 / secs),
                dispatches_per_token: None,
                host_us_per_step: None,
                gbs: Some(gbs),
                floor_ratio: ratio,
                fused: None,
            }
            .print();
            continue;
        }
        println!(
            "{:<24} {:>11.3} {:>12.1} {:>10.2} {:>10}",
            format!("{b}×{h}×{p}×{l}×{n}"),
            secs * 1e3,
            bytes / 1e6,
            gbs,
            ratio.map_or("-".into(), |r| format!("{r:.2}"))
        );
    }
    Ok(())
}
