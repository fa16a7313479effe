//! Criterion benches of the wgpu backend: the selective scan (prefill) and one decode
//! step of the state (`selective_state_update`). Skipped, with a message, when there is
//! no adapter.
//!
//! `cargo bench --bench scan`; each iteration ends by downloading a small buffer, which
//! waits for the GPU.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mamba_gpu::ops::{self, Layout, ScanInputs, StateIo, StepInputs};
use mamba_gpu::wgpu::WgpuBackend;
use mamba_gpu::{Backend, DType, HostSlice};

fn filled(be: &WgpuBackend, shape: &[usize], v: f32) -> <WgpuBackend as Backend>::Buffer {
    let n: usize = shape.iter().product();
    be.upload(HostSlice::F32(&vec![v; n]), shape)
        .expect("upload")
}

fn backend() -> Option<WgpuBackend> {
    match WgpuBackend::new() {
        Ok(be) => Some(be),
        Err(e) => {
            eprintln!("wgpu benches SKIPPED: no adapter ({e})");
            None
        }
    }
}

/// Shapes small enough for lavapipe; override with `MAMBA_GPU_BENCH_BIG=1` on a GPU.
fn scan_shapes() -> Vec<[usize; 4]> {
    if std::env::var("MAMBA_GPU_BENCH_BIG").is_ok() {
        vec![
            [1, 1536, 2048, 16],
            [4, 1536, 2048, 16],
            [1, 2560, 8192, 16],
        ]
    } else {
        vec![[1, 64, 256, 16], [1, 64, 2048, 16]]
    }
}

fn bench_scan(c: &mut Criterion) {
    let Some(be) = backend() else { return };
    let mut group = c.benchmark_group("wgpu/selective_scan");
    group.sample_size(10);
    for [batch, dim, len, n] in scan_shapes() {
        let seq = [batch, dim, len];
        let u = filled(&be, &seq, 0.5);
        let delta = filled(&be, &seq, 0.1);
        let z = filled(&be, &seq, 0.3);
        let a = filled(&be, &[dim, n], -0.5);
        let bc = filled(&be, &[batch, n, len], 0.2);
        let d = filled(&be, &[dim], 1.0);
        let mut out = be.zeros(DType::F32, &seq).expect("zeros");
        let mut state = be.zeros(DType::F32, &[batch, dim, n]).expect("zeros");
        let bytes = 4 * batch * len * (4 * dim + 2 * n) + 4 * (dim * n + 2 * dim);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{batch}x{dim}x{len}x{n}")),
            |bch| {
                bch.iter(|| {
                    let inputs = ScanInputs {
                        u: &u,
                        delta: &delta,
                        a: &a,
                        b: &bc,
                        c: &bc,
                        d: Some(&d),
                        z: Some(&z),
                        delta_bias: Some(&d),
                        delta_softplus: true,
                        layout: Layout::ChannelMajor,
                    };
                    ops::selective_scan(&be, &inputs, StateIo::Final(&mut state), &mut out)
                        .expect("scan");
                    be.download(&state).expect("download")
                })
            },
        );
    }
    group.finish();
}

fn bench_step(c: &mut Criterion) {
    let Some(be) = backend() else { return };
    let mut group = c.benchmark_group("wgpu/selective_state_update");
    group.sample_size(20);
    for (batch, dim, n) in [(1usize, 1536usize, 16usize), (8, 1536, 16)] {
        let x = filled(&be, &[batch, dim], 0.5);
        let dt = filled(&be, &[batch, dim], 0.1);
        let a = filled(&be, &[dim, n], -0.5);
        let bc = filled(&be, &[batch, n], 0.2);
        let d = filled(&be, &[dim], 1.0);
        let mut state = be.zeros(DType::F32, &[batch, dim, n]).expect("zeros");
        let mut out = be.zeros(DType::F32, &[batch, dim]).expect("zeros");
        group.bench_function(
            BenchmarkId::from_parameter(format!("{batch}x{dim}x{n}")),
            |bch| {
                bch.iter(|| {
                    let inputs = StepInputs {
                        x: &x,
                        dt: &dt,
                        a: &a,
                        b: &bc,
                        c: &bc,
                        d: Some(&d),
                        z: Some(&x),
                        dt_bias: Some(&d),
                        dt_softplus: true,
                    };
                    ops::selective_state_update(&be, &inputs, &mut state, &mut out).expect("step");
                    be.download(&out).expect("download")
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_scan, bench_step);
criterion_main!(benches);
