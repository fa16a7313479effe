//! Loading helpers of the model tests: quiet load options, scratch directories, and the
//! default synthetic checkpoint ([`super::model_synth::Synth`]) loaded from bytes onto
//! the CPU backend.

use std::path::PathBuf;

use mamba_gpu::CpuBackend;
use mamba_gpu::model::{LoadOptions, MambaModel};

use super::model_synth::{Synth, Tensor};

/// Default load options without the progress bar.
pub fn quiet() -> LoadOptions {
    LoadOptions {
        progress: false,
        ..LoadOptions::default()
    }
}

/// A fresh directory under the system temp dir.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mamba-gpu-model-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A model on the CPU backend from a config and one safetensors file in memory.
pub fn load_bytes(config: &str, st: &[u8]) -> mamba_gpu::Result<MambaModel<CpuBackend>> {
    MambaModel::from_bytes(CpuBackend::new(), config.as_bytes(), &[st], &quiet())
}

/// The default synthetic model and its tensors (seed 1).
pub fn synth() -> (Synth, Vec<Tensor>) {
    let s = Synth::default();
    let t = s.tensors(1);
    (s, t)
}
