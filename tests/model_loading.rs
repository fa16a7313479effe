//! Checkpoint loading on the CPU backend: from a directory (mmap), from bytes and
//! sharded; 16-bit files and 16-bit storage; and every broken checkpoint (missing,
//! unexpected, misshapen or mistyped tensors, truncated or corrupt files) with its typed
//! error.

mod common;

use std::path::Path;

use common::model_io::{load_bytes, quiet, synth, tmp};
use common::model_synth::{Synth, Tensor, prompt, reference_logits, to_safetensors};
use mamba_gpu::model::{LoadOptions, MambaModel, WeightDType};
use mamba_gpu::{CpuBackend, DType, Error};
use safetensors::Dtype;

fn write_model(dir: &Path, s: &Synth, t: &[Tensor], dtype: Dtype) {
    std::fs::write(dir.join("config.json"), s.config_json()).unwrap();
    std::fs::write(dir.join("model.safetensors"), to_safetensors(t, dtype)).unwrap();
}

#[test]
fn load_from_dir_mmap_equals_bytes_and_sharded() {
    let (s, t) = synth();
    let dir = tmp("dir");
    write_model(&dir, &s, &t, Dtype::F32);
    let ids = prompt(3, 17, s.vocab);
    let from_dir = MambaModel::load(CpuBackend::new(), &dir, &quiet()).unwrap();
    let want = reference_logits(&s, &t, &ids);
    let got = from_dir.logits_for(&ids).unwrap();
    assert!(common::rel_l2(&got, &want) < 1e-5);

    // Sharded: two files plus an index.
    let sh = tmp("sharded");
    std::fs::write(sh.join("config.json"), s.config_json()).unwrap();
    let (a, b) = t.split_at(t.len() / 2);
    std::fs::write(
        sh.join("model-00001-of-00002.safetensors"),
        to_safetensors(a, Dtype::F32),
    )
    .unwrap();
    std::fs::write(
        sh.join("model-00002-of-00002.safetensors"),
        to_safetensors(b, Dtype::F32),
    )
    .unwrap();
    let mut map = serde_json::Map::new();
    for (names, f) in [
        (a, "model-00001-of-00002.safetensors"),
        (b, "model-00002-of-00002.safetensors"),
    ] {
        for (n, ..) in names {
            map.insert(n.clone(), f.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(sh.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let sharded = MambaModel::load(CpuBackend::new(), &sh, &quiet()).unwrap();
    assert_eq!(sharded.logits_for(&ids).unwrap(), got);

    // An index pointing at a shard that lacks the tensor.
    let mut bad = map.clone();
    bad.insert(
        "backbone.norm_f.weight".into(),
        "model-00001-of-00002.safetensors".into(),
    );
    let index = serde_json::json!({"weight_map": bad});
    std::fs::write(sh.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let e = MambaModel::load(CpuBackend::new(), &sh, &quiet())
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::MissingTensor { tensor, .. } if tensor == "backbone.norm_f.weight"),
        "{e}"
    );
    // A missing shard file.
    std::fs::remove_file(sh.join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::write(
        sh.join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    let e = MambaModel::load(CpuBackend::new(), &sh, &quiet())
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::Io { file, .. } if file.contains("00002")),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(sh);
}

#[test]
fn half_checkpoints_and_half_storage() {
    let (s, t) = synth();
    let ids = prompt(4, 20, s.vocab);
    let want = reference_logits(&s, &t, &ids);
    for file_dtype in [Dtype::F16, Dtype::BF16] {
        let m = load_bytes(&s.config_json(), &to_safetensors(&t, file_dtype)).unwrap();
        let expect = if file_dtype == Dtype::F16 {
            DType::F16
        } else {
            DType::BF16
        };
        assert_eq!(m.weight_dtype(), expect, "Auto keeps the file's dtype");
        let e = common::rel_l2(&m.logits_for(&ids).unwrap(), &want);
        assert!(e < 3e-2, "{file_dtype:?}: rel L2 {e}");
    }
    // f32 file stored as f16 / bf16 / f32 on request.
    let bytes = to_safetensors(&t, Dtype::F32);
    for (wd, dt, tol) in [
        (WeightDType::F16, DType::F16, 1e-2),
        (WeightDType::BF16, DType::BF16, 3e-2),
        (WeightDType::F32, DType::F32, 1e-5),
    ] {
        let opts = LoadOptions {
            weight_dtype: wd,
            progress: false,
            ..LoadOptions::default()
        };
        let m = MambaModel::from_bytes(
            CpuBackend::new(),
            s.config_json().as_bytes(),
            &[&bytes],
            &opts,
        )
        .unwrap();
        assert_eq!(m.weight_dtype(), dt);
        let e = common::rel_l2(&m.logits_for(&ids).unwrap(), &want);
        assert!(e < tol, "{wd:?}: rel L2 {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Broken checkpoints, each with its typed error.

fn with_tensors(t: &[Tensor], f: impl FnOnce(&mut Vec<Tensor>)) -> Vec<Tensor> {
    let mut t = t.to_vec();
    f(&mut t);
    t
}

#[test]
fn missing_unexpected_and_misshapen_tensors() {
    let (s, t) = synth();
    let cfg = s.config_json();
    let missing = with_tensors(&t, |t| t.retain(|x| x.0 != "backbone.layers.1.mixer.D"));
    let e = load_bytes(&cfg, &to_safetensors(&missing, Dtype::F32))
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::MissingTensor { tensor, .. } if tensor == "backbone.layers.1.mixer.D"),
        "{e}"
    );
    let no_emb = with_tensors(&t, |t| t.retain(|x| !x.0.contains("embeddings")));
    let e = load_bytes(&cfg, &to_safetensors(&no_emb, Dtype::F32))
        .err()
        .unwrap();
    assert!(matches!(&e, Error::MissingTensor { .. }), "{e}");

    let extra = with_tensors(&t, |t| {
        t.push((
            "backbone.layers.2.norm.weight".into(),
            vec![16],
            vec![1.0; 16],
        ))
    });
    let e = load_bytes(&cfg, &to_safetensors(&extra, Dtype::F32))
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::UnexpectedTensor { tensor, file } if tensor == "backbone.layers.2.norm.weight" && file == "model.safetensors"),
        "{e}"
    );

    let shaped = with_tensors(&t, |t| {
        let x = t
            .iter_mut()
            .find(|x| x.0 == "backbone.layers.0.mixer.x_proj.weight")
            .unwrap();
        x.1 = vec![x.1[0] - 1, x.1[1]];
        x.2.truncate(x.1[0] * x.1[1]);
    });
    let e = load_bytes(&cfg, &to_safetensors(&shaped, Dtype::F32))
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::TensorShape { tensor, expected, .. } if tensor == "backbone.layers.0.mixer.x_proj.weight" && expected == &vec![10, 32]),
        "{e}"
    );

    // Untied config without lm_head.
    let untied = Synth {
        tied: false,
        ..s.clone()
    };
    let e = load_bytes(&untied.config_json(), &to_safetensors(&t, Dtype::F32))
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::MissingTensor { tensor, .. } if tensor == "lm_head.weight"),
        "{e}"
    );
    // Tied config with a saved lm_head: accepted (HF saves it sometimes), embedding used.
    let with_head = with_tensors(&t, |t| {
        let emb = t[0].clone();
        t.push(("lm_head.weight".into(), emb.1, emb.2));
    });
    let m = load_bytes(&cfg, &to_safetensors(&with_head, Dtype::F32)).unwrap();
    assert!(m.weights().lm_head.is_none());
}

#[test]
fn wrong_dtype_truncated_and_corrupt_files() {
    let (s, t) = synth();
    let cfg = s.config_json();
    // An I32 tensor where a float one belongs.
    let mut views = Vec::new();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .iter()
        .map(|(n, sh, v)| (n.clone(), sh.clone(), bytemuck::cast_slice(v).to_vec()))
        .collect();
    for (n, sh, b) in &data {
        let dt = if n == "backbone.layers.0.mixer.D" {
            Dtype::I32
        } else {
            Dtype::F32
        };
        views.push((
            n.clone(),
            safetensors::tensor::TensorView::new(dt, sh.clone(), b).unwrap(),
        ));
    }
    let bytes = safetensors::serialize(views, None).unwrap();
    let e = load_bytes(&cfg, &bytes).err().unwrap();
    assert!(
        matches!(&e, Error::TensorDType { tensor, got, .. } if tensor == "backbone.layers.0.mixer.D" && got == "I32"),
        "{e}"
    );

    let good = to_safetensors(&t, Dtype::F32);
    for cut in [3usize, 20, good.len() - 7] {
        let e = load_bytes(&cfg, &good[..cut]).err().unwrap();
        assert!(
            matches!(&e, Error::CheckpointTruncated { .. }),
            "cut {cut}: {e}"
        );
    }
    // Garbage header, trailing junk, non-JSON.
    let mut corrupt = good.clone();
    corrupt[8] = b'#';
    let e = load_bytes(&cfg, &corrupt).err().unwrap();
    assert!(matches!(&e, Error::CheckpointCorrupt { .. }), "{e}");
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 16]);
    let e = load_bytes(&cfg, &longer).err().unwrap();
    assert!(matches!(&e, Error::CheckpointCorrupt { .. }), "{e}");
    let e = load_bytes(&cfg, &[255u8; 64]).err().unwrap();
    assert!(
        matches!(
            &e,
            Error::CheckpointCorrupt { .. } | Error::CheckpointTruncated { .. }
        ),
        "{e}"
    );

    // A missing checkpoint file in a directory names the file.
    let dir = tmp("nofile");
    std::fs::write(dir.join("config.json"), &cfg).unwrap();
    let e = MambaModel::load(CpuBackend::new(), &dir, &quiet())
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::Io { file, .. } if file.ends_with("model.safetensors")),
        "{e}"
    );
    // Truncated on disk: the file path is in the error.
    std::fs::write(dir.join("model.safetensors"), &good[..good.len() / 2]).unwrap();
    let e = MambaModel::load(CpuBackend::new(), &dir, &quiet())
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::CheckpointTruncated { file, .. } if file.ends_with("model.safetensors")),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
