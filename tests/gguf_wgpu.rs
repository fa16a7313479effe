//! GGUF files on the wgpu backend: the f32 conversions against transformers (the
//! tolerance of the safetensors fixtures), a Q8_0 one against the same file on the CPU.
//! Without an adapter the test prints "SKIPPED" and passes, unless `MAMBA_REQUIRE`
//! names `wgpu`.
#![cfg(feature = "wgpu")]

mod common;

use std::path::Path;

use common::model_io::quiet;
use common::rel_l2;
use mamba_gpu::model::MambaModel;
use mamba_gpu::wgpu::WgpuBackend;
use mamba_gpu::{CpuBackend, Q8Activations};
use safetensors::SafeTensors;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn gguf_fixtures_on_wgpu() {
    let Some(be) = common::gpu::or_skip("wgpu", "gguf_fixtures_on_wgpu", WgpuBackend::new()) else {
        return;
    };
    for (file, model) in [
        ("falcon_tiny_tied_f32", "falcon_tiny_tied"),
        ("mamba2_g2_untied_bias_f32", "mamba2_g2_untied_bias"),
    ] {
        let m = MambaModel::load(
            &be,
            root().join(format!("tests/fixtures/gguf/{file}.gguf")),
            &quiet(),
        )
        .unwrap();
        let bytes = std::fs::read(root().join(format!(
            "tests/fixtures/models/{model}/expected.safetensors"
        )))
        .unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let ids: Vec<u32> = st
            .tensor("prompt_0_ids")
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect();
        let want: Vec<f32> =
            bytemuck::pod_collect_to_vec(st.tensor("prompt_0_logits").unwrap().data());
        let e = rel_l2(&m.logits_for(&ids).unwrap(), &want);
        println!("{file}.gguf on wgpu: logits rel L2 vs transformers {e:.3e}");
        assert!(e <= 1e-4, "{file}: {e:.3e}");
    }
    // Q8_0: the file's blocks on the wgpu kernels vs the CPU's f32-activation ones.
    let path = root().join("tests/fixtures/gguf/falcon_tiny_tied_q8_0.gguf");
    let g = MambaModel::load(&be, &path, &quiet()).unwrap();
    let cpu = CpuBackend::new().with_q8_activations(Q8Activations::F32);
    let c = MambaModel::load(cpu, &path, &quiet()).unwrap();
    assert!(g.weights().q8 && c.weights().q8);
    let ids = [3u32, 17, 200, 5, 9, 11, 0, 42];
    let e = rel_l2(&g.logits_for(&ids).unwrap(), &c.logits_for(&ids).unwrap());
    println!("falcon_tiny_tied_q8_0.gguf: wgpu vs CPU rel L2 {e:.3e}");
    assert!(e <= 1e-4, "{e:.3e}");
}
