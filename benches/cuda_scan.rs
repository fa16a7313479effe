//! CUDA selective-scan and decode-step timings with CUDA events (kernel time only).
//!
//! ```text
//! cargo bench --features cuda --bench cuda_scan
//! MAMBA_GPU_PEAK_GBS=3350 target/release/deps/cuda_scan-* --bench   # on the GPU machine
//! ```
//!
//! Per shape and I/O dtype (f32, and bf16 for u, delta, z, B, C and out): median of 20
//! timed calls after 3 warm-ups, two input sets alternated so that consecutive calls do
//! not hit in L2, achieved GB/s against the memory floor
//! `bytes = s·batch·L·(4·dim + 2·N) + 4·(dim·N + 2·dim)` with `s` the I/O element size
//! (input-dependent B/C, D, z, delta_bias; design.md), the ratio to `MAMBA_GPU_PEAK_GBS`
//! when set, the ratio to the exp-unit floor `batch·dim·L·N / MAMBA_GPU_EXP_GPS` (one
//! exp2 per state update; set it to the device's exp2 rate in G/s, e.g. SMs × 16 per
//! clock × GHz), and the relative L2 error against the CPU reference (which reads the
//! same rounded inputs). Prints a skip line and exits 0 without a usable GPU.

use cudarc::driver::sys::CUevent_flags;
use half::bf16;
use mamba_gpu::cuda::{CudaBackend, CudaBuffer};
use mamba_gpu::ops::{self, Layout, ScanInputs, StateIo, StepInputs};
use mamba_gpu::{Backend, CpuBackend, DType, HostSlice};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WARMUP: usize = 3;
const ITERS: usize = 20;

struct Host {
    u: Vec<f32>,
    delta: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    d: Vec<f32>,
    z: Vec<f32>,
    bias: Vec<f32>,
}

fn host(seed: u64, [batch, dim, len, n]: [usize; 4]) -> Host {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v = |k: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..k).map(|_| rng.random_range(lo..hi)).collect()
    };
    let seq = batch * dim * len;
    Host {
        u: v(seq, -2.0, 2.0),
        delta: v(seq, 0.0, 0.5),
        a: v(dim * n, -0.5, 0.0),
        b: v(batch * n * len, -2.0, 2.0),
        c: v(batch * n * len, -2.0, 2.0),
        d: v(dim, -1.0, 1.0),
        z: v(seq, -2.0, 2.0),
        bias: v(dim, 0.0, 0.5),
    }
}

struct Dev<B: Backend> {
    u: B::Buffer,
    delta: B::Buffer,
    a: B::Buffer,
    b: B::Buffer,
    c: B::Buffer,
    d: B::Buffer,
    z: B::Buffer,
    bias: B::Buffer,
}

/// Uploads the inputs, the sequence tensors and B/C in the I/O dtype `io` (f32 or bf16).
fn upload<B: Backend>(
    be: &B,
    h: &Host,
    [batch, dim, len, n]: [usize; 4],
    layout: Layout,
    io: DType,
) -> Dev<B> {
    let (seq, bc) = match layout {
        Layout::ChannelMajor => (vec![batch, dim, len], vec![batch, n, len]),
        Layout::TokenMajor => (vec![batch, len, dim], vec![batch, len, n]),
    };
    let up = |v: &[f32], s: &[usize]| be.upload(HostSlice::F32(v), s).expect("upload");
    let up_io = |v: &[f32], s: &[usize]| match io {
        DType::BF16 => {
            let h: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
            be.upload(HostSlice::BF16(&h), s).expect("upload")
        }
        _ => up(v, s),
    };
    Dev {
        u: up_io(&h.u, &seq),
        delta: up_io(&h.delta, &seq),
        a: up(&h.a, &[dim, n]),
        b: up_io(&h.b, &bc),
        c: up_io(&h.c, &bc),
        d: up(&h.d, &[dim]),
        z: up_io(&h.z, &seq),
        bias: up(&h.bias, &[dim]),
    }
}

fn scan<B: Backend>(
    be: &B,
    x: &Dev<B>,
    layout: Layout,
    state: &mut B::Buffer,
    out: &mut B::Buffer,
) {
    let inputs = ScanInputs {
        u: &x.u,
        delta: &x.delta,
        a: &x.a,
        b: &x.b,
        c: &x.c,
        d: Some(&x.d),
        z: Some(&x.z),
        delta_bias: Some(&x.bias),
        delta_softplus: true,
        layout,
    };
    ops::selective_scan(be, &inputs, StateIo::Final(state), out).expect("selective_scan");
}

/// Median kernel time in ms of `f`, timed with CUDA events on the backend's stream.
fn time_ms(be: &CudaBackend, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..WARMUP {
        f(i);
    }
    let mut t: Vec<f64> = (0..ITERS)
        .map(|i| {
            let s = be.stream();
            let start = s
                .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .expect("event");
            f(i);
            let end = s
                .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .expect("event");
            start.elapsed_ms(&end).expect("elapsed") as f64
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[ITERS / 2]
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

fn main() {
    let be = match CudaBackend::new(0) {
        Ok(be) => be,
        Err(e) => {
            println!("cuda_scan bench SKIPPED: {e}");
            return;
        }
    };
    be.precompile().expect("compile kernels");
    let env = |k: &str| -> Option<f64> { std::env::var(k).ok().and_then(|v| v.parse().ok()) };
    let peak = env("MAMBA_GPU_PEAK_GBS");
    let exp_gps = env("MAMBA_GPU_EXP_GPS");
    println!(
        "device: {} (sm_{}{}); peak {}",
        be.device_name(),
        be.compute_capability().0,
        be.compute_capability().1,
        peak.map_or("unknown (set MAMBA_GPU_PEAK_GBS)".into(), |p| format!(
            "{p} GB/s"
        ))
    );
    println!(
        "{:<22} {:<6} {:<5} {:>10} {:>10} {:>8} {:>8} {:>10}",
        "scan BxDxLxN", "layout", "io", "ms", "GB/s", "x floor", "x exp", "rel L2"
    );
    let cpu = CpuBackend::new();
    for shape in [
        [1, 768, 2048, 16],
        [1, 1536, 2048, 16],
        [4, 1536, 2048, 16],
        [1, 2560, 8192, 16],
    ] {
        let [batch, dim, len, n] = shape;
        for (layout, io) in [Layout::ChannelMajor, Layout::TokenMajor]
            .into_iter()
            .flat_map(|l| [(l, DType::F32), (l, DType::BF16)])
        {
            let seq = match layout {
                Layout::ChannelMajor => vec![batch, dim, len],
                Layout::TokenMajor => vec![batch, len, dim],
            };
            let hosts = [host(1, shape), host(2, shape)];
            let devs: Vec<Dev<CudaBackend>> = hosts
                .iter()
                .map(|h| upload(&be, h, shape, layout, io))
                .collect();
            let mut out: CudaBuffer = be.zeros(io, &seq).expect("zeros");
            let mut state = be.zeros(DType::F32, &[batch, dim, n]).expect("zeros");
            let ms = time_ms(&be, |i| {
                scan(&be, &devs[i % 2], layout, &mut state, &mut out)
            });
            // Check the last call (input set 1) against the CPU reference, which gets the
            // same (rounded) inputs and rounds its out the same way.
            let got = be.download(&out).expect("download").to_f32();
            let ref_in = upload(&cpu, &hosts[(ITERS - 1) % 2], shape, layout, io);
            let mut ref_out = cpu.zeros(io, &seq).expect("zeros");
            let mut ref_state = cpu.zeros(DType::F32, &[batch, dim, n]).expect("zeros");
            scan(&cpu, &ref_in, layout, &mut ref_state, &mut ref_out);
            let err = rel_l2(&got, &cpu.download(&ref_out).expect("download").to_f32());
            let s = io.size() as f64;
            let bytes =
                s * (batch * len * (4 * dim + 2 * n)) as f64 + 4.0 * (dim * n + 2 * dim) as f64;
            let gbs = bytes / (ms * 1e-3) / 1e9;
            let ratio = peak.map_or("-".to_string(), |p| format!("{:.2}", p / gbs));
            let exp_ratio = exp_gps.map_or("-".to_string(), |g| {
                let floor_ms = (batch * dim * len * n) as f64 / (g * 1e9) * 1e3;
                format!("{:.2}", ms / floor_ms)
            });
            println!(
                "{:<22} {:<6} {:<5} {:>10.4} {:>10.1} {:>8} {:>8} {:>10.2e}",
                format!("{batch}x{dim}x{len}x{n}"),
                if layout == Layout::ChannelMajor {
                    "chan"
                } else {
                    "token"
                },
                format!("{io:?}").to_lowercase(),
                ms,
                gbs,
                ratio,
                exp_ratio,
                err
            );
        }
    }

    // Decode step: batch 1 (and 8), d_inner of the 130M..2.8B models, N = 16.
    println!("\n{:<22} {:>10} {:>10}", "step BxDxN", "us", "GB/s");
    for (batch, dim) in [(1, 1536), (1, 5120), (8, 5120)] {
        let n = 16;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut v = |k: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..k).map(|_| rng.random_range(lo..hi)).collect()
        };
        let up = |x: Vec<f32>, s: &[usize]| be.upload(HostSlice::F32(&x), s).expect("upload");
        let x = up(v(batch * dim, -2.0, 2.0), &[batch, dim]);
        let dt = up(v(batch * dim, 0.0, 0.5), &[batch, dim]);
        let a = up(v(dim * n, -0.5, 0.0), &[dim, n]);
        let b = up(v(batch * n, -2.0, 2.0), &[batch, n]);
        let c = up(v(batch * n, -2.0, 2.0), &[batch, n]);
        let d = up(v(dim, -1.0, 1.0), &[dim]);
        let z = up(v(batch * dim, -2.0, 2.0), &[batch, dim]);
        let bias = up(v(dim, 0.0, 0.5), &[dim]);
        let mut state = up(v(batch * dim * n, -1.0, 1.0), &[batch, dim, n]);
        let mut out = be.zeros(DType::F32, &[batch, dim]).expect("zeros");
        let inputs = StepInputs {
            x: &x,
            dt: &dt,
            a: &a,
            b: &b,
            c: &c,
            d: Some(&d),
            z: Some(&z),
            dt_bias: Some(&bias),
            dt_softplus: true,
        };
        let ms = time_ms(&be, |_| {
            ops::selective_state_update(&be, &inputs, &mut state, &mut out).expect("step")
        });
        // state read + written, x/dt/z/out, A, B/C, D, bias
        let bytes = 4.0
            * (2 * batch * dim * n + 4 * batch * dim + dim * n + 2 * batch * n + 2 * dim) as f64;
        println!(
            "{:<22} {:>10.2} {:>10.1}",
            format!("{batch}x{dim}x{n}"),
            ms * 1e3,
            bytes / (ms * 1e-3) / 1e9
        );
    }
}
