//! Dependent dispatches per decode token on wgpu, for the layer counts of mamba-130m
//! (24 layers; the count depends on the layers and the family, not on the widths, so
//! narrow random models stand in). The bound is today's step — RMSNorm, the
//! projections, conv, scan step, per layer, plus embedding, final norm and LM head —
//! kept as a guard against regressions; issue 13's fused step is to bring it to ≤ 4
//! per layer. The bench reports the same count (`examples/bench --json`).

#![cfg(feature = "wgpu")]

mod common;

use mamba_gpu::DType;
use mamba_gpu::model::{LoadOptions, Mamba2Shape, MambaModel, SyntheticModel};
use mamba_gpu::wgpu::WgpuBackend;

fn per_token(be: &WgpuBackend, shape: SyntheticModel) -> u64 {
    let bytes = shape.checkpoint(5, DType::F32).expect("checkpoint");
    let opts = LoadOptions {
        progress: false,
        ..LoadOptions::default()
    };
    let m = MambaModel::from_bytes(be, shape.config_json().as_bytes(), &[&bytes], &opts)
        .expect("model");
    let mut st = m.new_state(1).expect("state");
    m.prefill(&mut st, &[&[1, 2, 3]]).expect("prefill");
    m.greedy_ids(&mut st).expect("ids");
    // The first step records (and keeps) its dispatches, later ones replay them: count
    // a replayed step, which is what decoding runs.
    m.step_device_ids(&mut st).expect("step");
    m.greedy_ids(&mut st).expect("ids");
    let before = be.dispatch_count();
    m.step_device_ids(&mut st).expect("step");
    let after = be.dispatch_count();
    m.greedy_ids(&mut st).expect("ids");
    after - before
}

#[test]
fn decode_dispatches_per_token() {
    let Some(be) = common::gpu::or_skip("wgpu", "dispatch counts", WgpuBackend::new()) else {
        return;
    };
    let narrow = |mamba2| SyntheticModel {
        hidden: 32,
        layers: 24,
        state: 16,
        conv: 4,
        vocab: 64,
        mamba2,
    };
    let m1 = per_token(&be, narrow(None));
    let m2 = per_token(
        &be,
        narrow(Some(Mamba2Shape {
            head_dim: 16,
            groups: 1,
        })),
    );
    common::gpu::say(format!(
        "wgpu decode step, 24 layers: Mamba-1 {m1} dispatches per token ({:.1} per layer), \
         Mamba-2 {m2} ({:.1} per layer)",
        m1 as f64 / 24.0,
        m2 as f64 / 24.0
    ));
    // Today (244 for Mamba-1, the figure issue 13 measured independently): Mamba-1 10
    // per layer + 4; Mamba-2 12 per layer + 4 (norm, five in_proj parts, three convs,
    // ssd_scan, the grouped norm, out_proj). Fewer is the goal; more is a regression.
    assert!(m1 > 24 && m1 <= 10 * 24 + 4, "Mamba-1: {m1}");
    assert!(m2 > 24 && m2 <= 12 * 24 + 4, "Mamba-2: {m2}");
}
