//! The whole model on the CUDA backend: the HF fixtures and the synthetic-model checks
//! of `tests/common/model_fixtures.rs` and `tests/common/model_synth.rs`, and the CUDA
//! graphs of the decode step (graph replay == direct launches; states never mixed up; a
//! bounded cache). Without a usable
//! NVIDIA GPU the tests print "cuda model tests SKIPPED" and pass, unless
//! `MAMBA_REQUIRE` names `cuda`.
#![cfg(feature = "cuda")]

mod common;

use common::decode_checks::{
    assert_same_trace, check_interleaved_states, check_two_models, decode_alone, greedy_step,
    prefilled, small_model,
};
use common::model_fixtures::check_model_fixtures;
use common::model_synth::check_model_consistency;
use mamba_gpu::DType;
use mamba_gpu::cuda::{CudaBackend, MAX_GRAPHS};

fn backend() -> Option<CudaBackend> {
    common::gpu::or_skip("cuda", "cuda model tests", CudaBackend::new(0))
}

#[test]
fn hf_fixtures_match_transformers_cuda() {
    if let Some(be) = backend() {
        check_model_fixtures(&be);
    }
}

#[test]
fn synthetic_models_and_decode_path_cuda() {
    if let Some(be) = backend() {
        check_model_consistency(&be, 1e-4);
    }
}

/// After decoding with graphs on: no capture failed (a failure turns graphs off and
/// says why on stderr) and graphs were cached.
fn assert_graphs_used(be: &CudaBackend, what: &str) {
    assert!(
        be.graphs_enabled(),
        "{what}: a CUDA graph capture failed (see stderr); decoding fell back to direct launches"
    );
    assert!(be.cached_graphs() > 0, "{what}: no graph was captured");
}

/// Greedy decoding with the step captured in a CUDA graph gives the ids and logits of
/// direct launches. Batch 9 takes matmul's cuBLAS path (more than 8 rows), and with
/// bf16 weights its stream-ordered f32 scratch is allocated and freed inside the graph.
#[test]
fn graphs_match_direct_launches() {
    let Some(be) = backend() else { return };
    for (batch, weights) in [
        (1, DType::F32),
        (3, DType::F32),
        (9, DType::F32),
        (1, DType::BF16),
        (9, DType::BF16),
    ] {
        let what = format!("batch {batch}, {weights:?} weights");
        let m = small_model(&be, 11, weights);
        let prompts: Vec<Vec<u32>> = (0..batch as u32)
            .map(|b| (0..5).map(|t| (t * 7 + b * 3 + 1) % 64).collect())
            .collect();
        let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        be.set_graphs(false);
        let direct = decode_alone(&m, &refs, 12);
        be.set_graphs(true);
        let graphed = decode_alone(&m, &refs, 12);
        assert_graphs_used(&be, &what);
        assert_same_trace(
            &format!("{what}: graphs vs direct"),
            &graphed,
            &direct,
            1e-6,
        );
    }
}

/// Three states on one model, stepped in turn (each key replays its own graph), one
/// restored in place and one reset (new buffers, new key): each decodes as alone.
#[test]
fn interleaved_states_use_their_own_graphs() {
    let Some(be) = backend() else { return };
    be.set_graphs(true);
    check_interleaved_states(&small_model(&be, 3, DType::F32), 1e-6);
    assert_graphs_used(&be, "interleaved states");
}

/// Two models sharing one backend and one state shape: a state stepped by both (keys
/// differ by model) follows each model's weights.
#[test]
fn two_models_one_backend() {
    let Some(be) = backend() else { return };
    be.set_graphs(true);
    let (m1, m2) = (
        small_model(&be, 1, DType::F32),
        small_model(&be, 2, DType::F32),
    );
    check_two_models(&m1, &m2, 1e-6);
    assert_graphs_used(&be, "two models");
}

/// Many short-lived states: the graph cache stays bounded.
#[test]
fn graph_cache_is_bounded() {
    let Some(be) = backend() else { return };
    be.set_graphs(true);
    let m = small_model(&be, 5, DType::F32);
    for k in 0..MAX_GRAPHS + 4 {
        let mut st = prefilled(&m, &[&[k as u32 % 64, 1, 2]]);
        for i in 0..3 {
            greedy_step(&m, &mut st, i);
        }
        assert!(
            be.cached_graphs() <= MAX_GRAPHS,
            "{} graphs cached",
            be.cached_graphs()
        );
    }
    assert_graphs_used(&be, "many states");
    assert_eq!(be.cached_graphs(), MAX_GRAPHS);
    be.set_graphs(false);
    assert_eq!(be.cached_graphs(), 0, "turning graphs off drops them");
}
