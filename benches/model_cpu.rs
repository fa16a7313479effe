//! Criterion benches of the whole model on the CPU backend (`Precision::Fast`): a
//! mamba-130m-shaped model with seeded random weights, built in memory
//! ([`SyntheticModel`] safetensors bytes → `MambaModel::from_bytes`), f32 and bf16 weight storage.
//!
//! * `model_cpu/prefill_128`: one-pass prefill of a 128-token prompt, last-position logits;
//! * `model_cpu/decode_step`: one batch-1 decode step (embedding → 24 layers → lm_head).
//!
//! `cargo bench --bench model_cpu` (a few minutes on 2 cores). The cross-check against
//! candle and mamba-rs lives in `benches/peers` (see BENCHMARKS.md).

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use mamba_gpu::model::{LoadOptions, MambaModel, SyntheticModel, WeightDType};
use mamba_gpu::{CpuBackend, Precision};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

const SHAPE: SyntheticModel = SyntheticModel::MAMBA_130M;
const V: usize = SHAPE.vocab;
const PREFILL: usize = 128;

fn model(bytes: &[u8], wd: WeightDType) -> MambaModel<CpuBackend> {
    MambaModel::from_bytes(
        CpuBackend::with_precision(Precision::Fast),
        SHAPE.config_json().as_bytes(),
        &[bytes],
        &LoadOptions {
            weight_dtype: wd,
            progress: false,
            ..LoadOptions::default()
        },
    )
    .expect("model")
}

fn bench_model(c: &mut Criterion) {
    let bytes = SHAPE
        .checkpoint(0x6d61_6d62, mamba_gpu::DType::F32)
        .expect("checkpoint");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let prompt: Vec<u32> = (0..PREFILL)
        .map(|_| rng.random_range(0..V as u32))
        .collect();
    for (wd, label) in [(WeightDType::F32, "f32"), (WeightDType::BF16, "bf16")] {
        let m = model(&bytes, wd);

        let mut g = c.benchmark_group("model_cpu/prefill_128");
        // About a second an iteration on 2 cores: flat sampling, 10 iterations.
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(12))
            .throughput(Throughput::Elements(PREFILL as u64));
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                let mut st = m.new_state(1).unwrap();
                m.prefill(&mut st, &[&prompt]).unwrap();
                st
            })
        });
        g.finish();

        let mut g = c.benchmark_group("model_cpu/decode_step");
        g.sample_size(20)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(8))
            .throughput(Throughput::Elements(1));
        let mut st = m.new_state(1).unwrap();
        m.prefill(&mut st, &[&prompt[..16]]).unwrap();
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                let id = m.greedy_ids(&mut st).unwrap()[0];
                m.step(&mut st, &[id]).unwrap();
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench_model);
criterion_main!(benches);
