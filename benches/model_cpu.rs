//! Criterion benches of the whole model on the CPU backend (`Precision::Fast`): a
//! mamba-130m-shaped model with seeded random weights, built in memory (safetensors
//! bytes → `MambaModel::from_bytes`), f32 and bf16 weight storage.
//!
//! * `model_cpu/prefill_128`: one-pass prefill of a 128-token prompt, last-position logits;
//! * `model_cpu/decode_step`: one batch-1 decode step (embedding → 24 layers → lm_head).
//!
//! `cargo bench --bench model_cpu` (a few minutes on 2 cores). The cross-check against
//! candle and mamba-rs lives in `benches/peers` (see BENCHMARKS.md).

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use mamba_gpu::model::{LoadOptions, MambaModel, WeightDType};
use mamba_gpu::{CpuBackend, Precision};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::time::Duration;

const D: usize = 768;
const LAYERS: usize = 24;
const E: usize = 1536;
const N: usize = 16;
const K: usize = 4;
const R: usize = 48;
const V: usize = 50280;
const PREFILL: usize = 128;

const CONFIG: &str = r#"{"model_type": "mamba", "hidden_size": 768, "num_hidden_layers": 24,
 "intermediate_size": 1536, "state_size": 16, "conv_kernel": 4, "time_step_rank": 48,
 "vocab_size": 50280, "use_bias": false, "use_conv_bias": true, "layer_norm_epsilon": 1e-5,
 "tie_word_embeddings": true}"#;

/// HF-named f32 tensors with realistic scales: A_log = log(1..N), D = 1,
/// softplus(dt bias) log-uniform in [1e-3, 1e-1], small normal matrices.
fn checkpoint_bytes() -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6d61_6d62_61);
    let mut normal = |n: usize, std: f32| -> Vec<f32> {
        let d = Normal::new(0.0f32, std).unwrap();
        (0..n).map(|_| d.sample(&mut rng)).collect()
    };
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    t.push((
        "backbone.embeddings.weight".into(),
        vec![V, D],
        normal(V * D, 0.02),
    ));
    for l in 0..LAYERS {
        let p = |s: &str| format!("backbone.layers.{l}.{s}");
        let a_log: Vec<f32> = (0..E)
            .flat_map(|_| (1..=N).map(|j| (j as f32).ln()))
            .collect();
        t.push((p("norm.weight"), vec![D], vec![1.0; D]));
        t.push((p("mixer.A_log"), vec![E, N], a_log));
        t.push((p("mixer.D"), vec![E], vec![1.0; E]));
        t.push((
            p("mixer.in_proj.weight"),
            vec![2 * E, D],
            normal(2 * E * D, 1.0 / (D as f32).sqrt()),
        ));
        t.push((p("mixer.conv1d.weight"), vec![E, 1, K], normal(E * K, 0.3)));
        t.push((p("mixer.conv1d.bias"), vec![E], normal(E, 0.05)));
        t.push((
            p("mixer.x_proj.weight"),
            vec![R + 2 * N, E],
            normal((R + 2 * N) * E, 1.0 / (E as f32).sqrt()),
        ));
        t.push((
            p("mixer.dt_proj.weight"),
            vec![E, R],
            normal(E * R, 0.1 / (R as f32).sqrt()),
        ));
        t.push((p("mixer.dt_proj.bias"), vec![E], {
            let mut r = ChaCha8Rng::seed_from_u64(l as u64);
            (0..E)
                .map(|_| {
                    let dt =
                        (r.random::<f64>() * (0.1f64.ln() - 0.001f64.ln()) + 0.001f64.ln()).exp();
                    (dt + (-(-dt).exp_m1()).ln()) as f32
                })
                .collect()
        }));
        t.push((
            p("mixer.out_proj.weight"),
            vec![D, E],
            normal(D * E, 1.0 / (E as f32).sqrt() / (LAYERS as f32).sqrt()),
        ));
    }
    t.push(("backbone.norm_f.weight".into(), vec![D], vec![1.0; D]));
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes.iter().map(|(n, s, b)| {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
            .expect("tensor view");
        (n.clone(), view)
    });
    safetensors::serialize(views, None).expect("serialize")
}

fn model(bytes: &[u8], wd: WeightDType) -> MambaModel<CpuBackend> {
    MambaModel::from_bytes(
        CpuBackend::with_precision(Precision::Fast),
        CONFIG.as_bytes(),
        &[bytes],
        &LoadOptions {
            weight_dtype: wd,
            progress: false,
        },
    )
    .expect("model")
}

fn bench_model(c: &mut Criterion) {
    let bytes = checkpoint_bytes();
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
