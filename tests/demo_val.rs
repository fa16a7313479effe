//! The demo model's validation loss on the CPU (held-out text, `tests/common/demo_val.rs`):
//! f32 and f16 weights against transformers' loss on the same windows, and Q8_0 (int8
//! and f32 activations) within 1 % of f16 — the quality bar of 8-bit weights.
#![cfg(feature = "demo-model")]

mod common;

use common::demo_val::{demo_model, load, nll};
use mamba_gpu::model::WeightDType;
use mamba_gpu::{CpuBackend, Precision, Q8Activations};

#[test]
fn demo_validation_loss_f16_and_q8() {
    let v = load();
    let n = v.windows.len();
    let fast = || CpuBackend::with_precision(Precision::Fast);
    let f32_loss = nll(&demo_model(fast(), WeightDType::F32), &v.windows, n);
    let f16 = nll(&demo_model(fast(), WeightDType::F16), &v.windows, n);
    let q8_int8 = nll(&demo_model(fast(), WeightDType::Q8_0), &v.windows, n);
    let f32_acts = fast().with_q8_activations(Q8Activations::F32);
    let q8_f32 = nll(&demo_model(f32_acts, WeightDType::Q8_0), &v.windows, n);
    let rel = |a: f64, b: f64| (a - b).abs() / b;
    println!(
        "demo model validation loss over {n} windows of {} predictions (nats/token): \
         transformers {:.5}, ours f32 {f32_loss:.5}, f16 {f16:.5}, q8 int8 activations \
         {q8_int8:.5} ({:+.3} % of f16), q8 f32 activations {q8_f32:.5} ({:+.3} %)",
        v.windows[0].len() - 1,
        v.transformers_nll,
        100.0 * (q8_int8 - f16) / f16,
        100.0 * (q8_f32 - f16) / f16,
    );
    // The checkpoint is f16: f32 and f16 storage hold the same values, and transformers
    // ran them in f32.
    assert!(
        rel(f32_loss, v.transformers_nll) <= 1e-4,
        "{f32_loss} vs {}",
        v.transformers_nll
    );
    assert!(
        rel(f16, v.transformers_nll) <= 1e-4,
        "{f16} vs {}",
        v.transformers_nll
    );
    assert!(rel(q8_int8, f16) <= 0.01, "q8 int8 {q8_int8} vs f16 {f16}");
    assert!(rel(q8_f32, f16) <= 0.01, "q8 f32 {q8_f32} vs f16 {f16}");
    // Quantization moved the loss: the q8 models really ran 8-bit weights.
    assert!(q8_int8 != f16 && q8_f32 != f16);
}

#[test]
fn mean_nll_refuses_what_it_cannot_score() {
    let m = demo_model(
        CpuBackend::with_precision(Precision::Fast),
        WeightDType::F16,
    );
    assert!(m.mean_nll(&[5]).is_err());
    assert!(m.mean_nll(&[]).is_err());
    let e = m.mean_nll(&[5, 99_999]).unwrap_err().to_string();
    assert!(e.contains("99999"), "{e}");
}
