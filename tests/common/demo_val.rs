//! The demo model's validation loss (`tests/fixtures/demo_val`, written by
//! `tools/make_demo_val_fixture.py`): windows of the held-out 2 % of its training
//! stream, and transformers' mean next-token cross-entropy on them.

use mamba_gpu::Backend;
use mamba_gpu::model::{LoadOptions, MambaModel, WeightDType};

pub struct DemoVal {
    pub windows: Vec<Vec<u32>>,
    pub transformers_nll: f64,
}

pub fn load() -> DemoVal {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/demo_val");
    let bytes = std::fs::read(dir.join("ids.u16")).expect("tests/fixtures/demo_val/ids.u16");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let w = meta["window"].as_u64().unwrap() as usize + 1;
    let ids: Vec<u32> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
        .collect();
    assert_eq!(ids.len(), w * meta["windows"].as_u64().unwrap() as usize);
    DemoVal {
        windows: ids.chunks_exact(w).map(|c| c.to_vec()).collect(),
        transformers_nll: meta["transformers_nll"].as_f64().unwrap(),
    }
}

/// The demo model on `be` with `weights`.
pub fn demo_model<B: Backend>(be: B, weights: WeightDType) -> MambaModel<B> {
    use mamba_gpu::model::text_model::demo;
    let opts = LoadOptions {
        weight_dtype: weights,
        progress: false,
        ..LoadOptions::default()
    };
    MambaModel::from_bytes(be, demo::CONFIG_JSON, &[demo::MODEL_SAFETENSORS], &opts).unwrap()
}

/// Mean NLL over the first `n` windows (each from a fresh state; equal lengths, so the
/// mean of the windows' means).
pub fn nll<B: Backend>(m: &MambaModel<B>, windows: &[Vec<u32>], n: usize) -> f64 {
    let n = n.min(windows.len());
    windows[..n]
        .iter()
        .map(|w| m.mean_nll(w).unwrap())
        .sum::<f64>()
        / n as f64
}
