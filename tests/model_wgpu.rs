//! The whole model on the wgpu backend: the HF fixtures and the synthetic-model checks
//! of `tests/common/model_fixtures.rs` and `tests/common/model_synth.rs`, and the replay
//! of the decode step's dispatches (replay == direct recording; states and models never
//! mixed up; a bounded cache that forgets dropped models). Without an adapter the tests
//! print "wgpu model tests SKIPPED" and pass, unless `MAMBA_REQUIRE` names `wgpu`.
#![cfg(feature = "wgpu")]

mod common;

use common::decode_checks::{
    assert_same_trace, check_interleaved_states, check_two_models, decode_alone, greedy_step,
    prefilled, small_model,
};
use common::model_fixtures::check_model_fixtures;
use common::model_synth::check_model_consistency;
use mamba_gpu::DType;
use mamba_gpu::wgpu::{MAX_REPLAYS, WgpuBackend, WgpuOptions};

fn backend_with(opts: WgpuOptions) -> Option<WgpuBackend> {
    common::gpu::or_skip("wgpu", "wgpu model tests", WgpuBackend::with_options(opts))
}

fn backend() -> Option<WgpuBackend> {
    backend_with(WgpuOptions::default())
}

#[test]
fn hf_fixtures_match_transformers_wgpu() {
    if let Some(be) = backend() {
        check_model_fixtures(&be);
    }
}

#[test]
fn synthetic_models_and_decode_path_wgpu() {
    if let Some(be) = backend() {
        check_model_consistency(&be, 1e-4);
    }
}

#[test]
fn interleaved_states_decode_as_alone_wgpu() {
    let Some(be) = backend() else { return };
    let m = small_model(&be, 3, DType::F32);
    check_interleaved_states(&m, 1e-6);
    assert!(be.cached_replays() > 0, "no decode step kept");
}

/// Greedy decoding with the step's dispatches replayed gives the ids and logits of
/// recording every op afresh (`no_replay`), for several batches and weight dtypes.
#[test]
fn replays_match_direct_recording() {
    let Some(direct_be) = backend_with(WgpuOptions {
        no_replay: true,
        ..Default::default()
    }) else {
        return;
    };
    let Some(be) = backend() else { return };
    for (batch, weights) in [(1, DType::F32), (3, DType::F32), (2, DType::BF16)] {
        let what = format!("batch {batch}, {weights:?} weights");
        let prompts: Vec<Vec<u32>> = (0..batch as u32)
            .map(|b| (0..5).map(|t| (t * 7 + b * 3 + 1) % 64).collect())
            .collect();
        let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let direct = decode_alone(&small_model(&direct_be, 11, weights), &refs, 12);
        let m = small_model(&be, 11, weights);
        let replayed = decode_alone(&m, &refs, 12);
        assert_eq!(be.cached_replays(), 1, "{what}: the step kept for replay");
        drop(m);
        assert_eq!(be.cached_replays(), 0, "{what}: forgotten with its model");
        assert_same_trace(
            &format!("{what}: replay vs direct"),
            &replayed,
            &direct,
            0.0,
        );
    }
    assert_eq!(direct_be.cached_replays(), 0, "no_replay keeps nothing");
}

/// Two models on one backend follow their own weights; dropping a model drops the
/// replays that name it (they hold its weight buffers).
#[test]
fn two_models_one_backend_wgpu() {
    let Some(be) = backend() else { return };
    let (m1, m2) = (
        small_model(&be, 1, DType::F32),
        small_model(&be, 2, DType::F32),
    );
    check_two_models(&m1, &m2, 0.0);
    let both = be.cached_replays();
    assert!(both >= 2, "{both} replays kept for two models");
    drop(m1);
    assert!(
        be.cached_replays() < both,
        "dropping a model forgets its replays"
    );
}

/// Many short-lived states: the replay cache stays bounded.
#[test]
fn replay_cache_is_bounded() {
    let Some(be) = backend() else { return };
    let m = small_model(&be, 5, DType::F32);
    for k in 0..MAX_REPLAYS + 4 {
        let mut st = prefilled(&m, &[&[k as u32 % 64, 1, 2]]);
        for i in 0..3 {
            greedy_step(&m, &mut st, i);
        }
        assert!(be.cached_replays() <= MAX_REPLAYS);
    }
    assert_eq!(be.cached_replays(), MAX_REPLAYS);
}

/// Q8_0 fixture models on wgpu (`matmul_q8.wgsl`): equal to the dequantized f32
/// checkpoint, and close to the float model (numbers printed).
#[test]
fn q8_models_match_dequantized_checkpoints_wgpu() {
    if let Some(be) = backend() {
        common::q8_model::check_q8_models(|| &be);
    }
}

/// The demo model's validation loss on wgpu over one held-out window of 128 predictions
/// (a lavapipe step with its logits read back takes ~0.1 s; the CPU test scores all
/// 174): f16 within 1e-4 of the CPU's, Q8_0 (`matmul_q8.wgsl`) within 1 % of f16.
#[cfg(feature = "demo-model")]
#[test]
fn demo_validation_loss_q8_wgpu() {
    use common::demo_val::{demo_model, load, nll};
    use mamba_gpu::model::WeightDType;
    const N: usize = 1;
    let Some(be) = backend() else { return };
    let v = load();
    let cpu = nll(
        &demo_model(mamba_gpu::CpuBackend::new(), WeightDType::F16),
        &v.windows,
        N,
    );
    let f16 = nll(&demo_model(&be, WeightDType::F16), &v.windows, N);
    let q8 = nll(&demo_model(&be, WeightDType::Q8_0), &v.windows, N);
    println!("wgpu demo validation loss, {N} window: cpu f16 {cpu:.5}, f16 {f16:.5}, q8 {q8:.5}");
    assert!((f16 - cpu).abs() <= 1e-4 * cpu, "{f16} vs cpu {cpu}");
    assert!((q8 - f16).abs() <= 0.01 * f16 && q8 != f16, "{q8} vs {f16}");
}
