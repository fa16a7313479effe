//! The safetensors header and shards through `MambaModel::from_bytes` on the CPU
//! backend. The input's first byte picks the config (the demo model's, a tiny one, or
//! the tiny one in the original layout) and how many shards the rest is cut into, so
//! both real headers (from the seed corpus) and sharded loads are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamba_gpu::CpuBackend;
use mamba_gpu::model::{LoadOptions, MambaModel};

const CONFIGS: [&[u8]; 3] = [
    include_bytes!("../../examples/demo_model/config.json"),
    include_bytes!("../../tests/fixtures/models/tiny_tied/config.json"),
    include_bytes!("../../tests/fixtures/models/ssm_layout/config.json"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let config = CONFIGS[(sel & 3) as usize % CONFIGS.len()];
    let opts = LoadOptions {
        progress: false,
        allow_non_finite: sel & 0x80 != 0,
        ..LoadOptions::default()
    };
    // Up to 3 shards, cut at 4-byte length prefixes, else the whole rest is one file.
    let mut shards: Vec<&[u8]> = Vec::new();
    if sel & 0x40 != 0 {
        let mut r = rest;
        while shards.len() < 3 && r.len() >= 4 {
            let n = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
            let n = n.min(r.len() - 4);
            shards.push(&r[4..4 + n]);
            r = &r[4 + n..];
        }
    } else {
        shards.push(rest);
    }
    let _ = MambaModel::from_bytes(CpuBackend::new(), config, &shards, &opts);
});
