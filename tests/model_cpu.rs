//! The whole model on the CPU backend: HF fixtures, a naive f64 reference, the decode
//! path's properties, sampling, and every bad input with its typed error.

mod common;

use std::path::{Path, PathBuf};

use common::model_fixtures::{
    Synth, Tensor, check_model_consistency, check_model_fixtures, prompt, reference_logits,
    to_safetensors,
};
use mamba_gpu::model::{
    GenerateOptions, Generator, LoadOptions, MambaConfig, MambaModel, Sampler, SamplingParams,
    WeightDType, apply_repetition_penalty, filtered_distribution,
};
use mamba_gpu::{CpuBackend, DType, Error};
use safetensors::Dtype;

fn quiet() -> LoadOptions {
    LoadOptions {
        progress: false,
        ..LoadOptions::default()
    }
}

/// A fresh directory under the system temp dir.
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mamba-gpu-model-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_model(dir: &Path, s: &Synth, t: &[Tensor], dtype: Dtype) {
    std::fs::write(dir.join("config.json"), s.config_json()).unwrap();
    std::fs::write(dir.join("model.safetensors"), to_safetensors(t, dtype)).unwrap();
}

fn load_bytes(config: &str, st: &[u8]) -> mamba_gpu::Result<MambaModel<CpuBackend>> {
    MambaModel::from_bytes(CpuBackend::new(), config.as_bytes(), &[st], &quiet())
}

fn synth() -> (Synth, Vec<Tensor>) {
    let s = Synth::default();
    let t = s.tensors(1);
    (s, t)
}

#[test]
fn hf_fixtures_match_transformers() {
    for r in check_model_fixtures(&CpuBackend::new()) {
        assert!(r.worst_rel_l2 <= 1e-4);
    }
}

/// The same on the CPU as users run it: f32 scan arithmetic, lane scan, fast conv.
#[test]
fn hf_fixtures_match_transformers_fast_cpu() {
    for r in check_model_fixtures(&CpuBackend::with_precision(mamba_gpu::Precision::Fast)) {
        assert!(r.worst_rel_l2 <= 1e-4);
    }
}

#[test]
fn synthetic_models_match_reference_and_decode_path_is_consistent() {
    check_model_consistency(&CpuBackend::new(), 1e-5);
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

#[test]
fn greedy_generator_streams_and_stops_at_eos() {
    let (s, t) = synth();
    let m = load_bytes(&s.config_json(), &to_safetensors(&t, Dtype::F32)).unwrap();
    let p = prompt(8, 6, s.vocab);
    let opts = GenerateOptions {
        max_new_tokens: 10,
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    let ids: Vec<u32> = Generator::new(&m, &p, &opts)
        .unwrap()
        .collect::<mamba_gpu::Result<_>>()
        .unwrap();
    assert_eq!(ids.len(), 10);
    // Greedy = argmax of the reference logits at every step.
    let mut ctx = p.clone();
    for &id in &ids {
        let l = reference_logits(&s, &t, &ctx);
        assert_eq!(id, mamba_gpu::model::sample::argmax(&l));
        ctx.push(id);
    }
    // Stop at a stop id (included in the output, as HF does).
    let stop = ids[3];
    let first = ids.iter().position(|&x| x == stop).unwrap();
    let opts2 = GenerateOptions {
        stop_ids: vec![stop],
        ..opts.clone()
    };
    let got: Vec<u32> = Generator::new(&m, &p, &opts2)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(got, ids[..=first]);
    // EOS from the config stops unless ignored.
    let s_eos = Synth {
        eos: ids[0],
        ..Synth::default()
    };
    let m2 = load_bytes(&s_eos.config_json(), &to_safetensors(&t, Dtype::F32)).unwrap();
    let opts3 = GenerateOptions {
        ignore_eos: false,
        ..opts.clone()
    };
    let got: Vec<u32> = Generator::new(&m2, &p, &opts3)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(got, vec![ids[0]]);
    let mut g = Generator::new(&m2, &p, &opts).unwrap();
    assert_eq!(g.by_ref().count(), 10);
    let st = g.stats();
    assert_eq!(st.prompt_tokens, 6);
    assert_eq!(st.decode_steps, 9);
    // Greedy with a repetition penalty runs on the host: the result follows the rule.
    let opts4 = GenerateOptions {
        sampling: SamplingParams {
            repetition_penalty: 1.5,
            ..SamplingParams::greedy()
        },
        ..opts.clone()
    };
    let pen: Vec<u32> = Generator::new(&m, &p, &opts4)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut ctx = p.clone();
    for &id in &pen {
        let mut l = reference_logits(&s, &t, &ctx);
        apply_repetition_penalty(&mut l, &ctx, 1.5);
        assert_eq!(id, mamba_gpu::model::sample::argmax(&l));
        ctx.push(id);
    }
}

// ---------------------------------------------------------------------------------------
// Sampling on synthetic logits.

fn logits() -> Vec<f32> {
    vec![2.0, 1.0, 0.5, 3.0, -1.0, 0.0, 2.5, -2.0]
}

fn draw(params: SamplingParams, n: usize, history: &[u32]) -> Vec<u32> {
    let mut s = Sampler::new(params).unwrap();
    (0..n).map(|_| s.sample(&logits(), history)).collect()
}

fn t1(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        seed,
        ..SamplingParams::default()
    }
}

#[test]
fn sampling_is_reproducible_and_uses_all_tokens() {
    let a = draw(t1(5), 2000, &[]);
    assert_eq!(a, draw(t1(5), 2000, &[]));
    assert_ne!(a, draw(t1(6), 2000, &[]));
    // Every token appears; frequencies follow softmax.
    let l = logits();
    let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
    for (i, &x) in l.iter().enumerate() {
        let p = (x as f64).exp() / z;
        let f = a.iter().filter(|&&t| t == i as u32).count() as f64 / a.len() as f64;
        assert!((f - p).abs() < 0.04, "token {i}: freq {f}, p {p}");
    }
    // Greedy picks the argmax; temperature 0 ignores the seed.
    assert!(
        draw(SamplingParams::greedy(), 5, &[])
            .iter()
            .all(|&t| t == 3)
    );
}

#[test]
fn top_k_top_p_min_p_filter() {
    let sorted = [3u32, 6, 0, 1, 2, 5, 4, 7];
    let k3 = SamplingParams { top_k: 3, ..t1(1) };
    let d = filtered_distribution(&logits(), &[], &k3);
    assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), sorted[..3]);
    assert!((d.iter().map(|x| x.1).sum::<f32>() - 1.0).abs() < 1e-6);
    assert!(draw(k3, 500, &[]).iter().all(|t| sorted[..3].contains(t)));

    // top-p: the smallest prefix whose mass reaches p.
    let l = logits();
    let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
    let probs: Vec<f64> = sorted
        .iter()
        .map(|&i| (l[i as usize] as f64).exp() / z)
        .collect();
    for p in [0.3f32, 0.5, 0.8, 0.95] {
        let mut cum = 0.0;
        let mut want = 0;
        while cum < p as f64 {
            cum += probs[want];
            want += 1;
        }
        let pp = SamplingParams { top_p: p, ..t1(1) };
        let d = filtered_distribution(&l, &[], &pp);
        assert_eq!(d.len(), want, "top_p {p}");
        assert!(
            draw(pp, 300, &[])
                .iter()
                .all(|t| sorted[..want].contains(t))
        );
    }

    // min-p: drop tokens below min_p × the top probability.
    let mp = SamplingParams {
        min_p: 0.3,
        ..t1(1)
    };
    let d = filtered_distribution(&l, &[], &mp);
    let keep: Vec<u32> = sorted
        .iter()
        .copied()
        .filter(|&i| (l[i as usize] - 3.0).exp() >= 0.3)
        .collect();
    assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), keep);
    assert!(draw(mp, 300, &[]).iter().all(|t| keep.contains(t)));

    // Temperature sharpens.
    let cold = filtered_distribution(
        &l,
        &[],
        &SamplingParams {
            temperature: 0.1,
            ..t1(1)
        },
    );
    assert!(cold[0].1 > 0.99);
}

#[test]
fn repetition_penalty_follows_hf() {
    let mut l = logits();
    apply_repetition_penalty(&mut l, &[3, 4, 3, 5], 2.0);
    assert_eq!(l, vec![2.0, 1.0, 0.5, 1.5, -2.0, 0.0, 2.5, -2.0]);
    // With the penalty, the argmax moves from 3 to 6.
    let g = SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::greedy()
    };
    assert_eq!(draw(g, 1, &[3]), vec![6]);
    // Sampling draws from the softmax of the penalised logits.
    let pen = SamplingParams {
        repetition_penalty: 1.7,
        ..t1(3)
    };
    let hist = [3u32, 4, 0];
    let mut l = logits();
    apply_repetition_penalty(&mut l, &hist, 1.7);
    let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
    let d = filtered_distribution(&logits(), &hist, &pen);
    for (i, q) in d {
        let want = (l[i as usize] as f64).exp() / z;
        assert!((q as f64 - want).abs() < 1e-6, "token {i}: {q} vs {want}");
    }
}

#[test]
fn sampling_parameters_are_validated() {
    for (p, name) in [
        (
            SamplingParams {
                temperature: -1.0,
                ..t1(0)
            },
            "temperature",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..t1(0)
            },
            "top_p",
        ),
        (
            SamplingParams {
                top_p: 1.5,
                ..t1(0)
            },
            "top_p",
        ),
        (
            SamplingParams {
                min_p: 2.0,
                ..t1(0)
            },
            "min_p",
        ),
        (
            SamplingParams {
                repetition_penalty: 0.0,
                ..t1(0)
            },
            "repetition_penalty",
        ),
    ] {
        let e = Sampler::new(p).unwrap_err();
        assert!(
            matches!(e, Error::Sampling { param, .. } if param == name),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Bad input, each with its typed error.

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

fn cfg_err(json: &str) -> Error {
    MambaConfig::from_json_bytes(json.as_bytes(), "cfg.json").unwrap_err()
}

#[test]
fn config_parsing_and_validation() {
    // HF keys, "auto" rank.
    let c = MambaConfig::from_json_bytes(
        br#"{"hidden_size": 768, "num_hidden_layers": 24, "vocab_size": 50280, "intermediate_size": 1536, "state_size": 16, "time_step_rank": "auto", "eos_token_id": 0}"#,
        "c",
    )
    .unwrap();
    assert_eq!(
        (c.dt_rank, c.intermediate_size, c.conv_kernel),
        (48, 1536, 4)
    );
    assert!(c.tie_word_embeddings && !c.use_bias && c.use_conv_bias);
    assert_eq!(c.eos_token_id, Some(0));
    // Original keys: vocab padded, ssm_cfg.
    let c = MambaConfig::from_json_bytes(
        br#"{"d_model": 2560, "n_layer": 64, "vocab_size": 50277, "ssm_cfg": {"d_state": 8, "dt_rank": 100}, "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 8}"#,
        "c",
    )
    .unwrap();
    assert_eq!(c.vocab_size, 50280);
    assert_eq!(
        (c.state_size, c.dt_rank, c.intermediate_size),
        (8, 100, 5120)
    );

    let e = cfg_err("{not json");
    assert!(
        matches!(&e, Error::ConfigJson { file, .. } if file == "cfg.json"),
        "{e}"
    );
    let e = cfg_err("[1, 2]");
    assert!(matches!(&e, Error::ConfigJson { .. }), "{e}");
    let e = cfg_err(r#"{"hidden_size": 8, "vocab_size": 10}"#);
    assert!(
        matches!(
            &e,
            Error::ConfigMissing {
                key: "num_hidden_layers",
                ..
            }
        ),
        "{e}"
    );
    let e = cfg_err(
        r#"{"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10, "intermediate_size": 20}"#,
    );
    assert!(
        matches!(
            &e,
            Error::ConfigInconsistent {
                key: "intermediate_size",
                other: "expand",
                ..
            }
        ),
        "{e}"
    );
    let e = cfg_err(r#"{"hidden_size": 0, "num_hidden_layers": 2, "vocab_size": 10}"#);
    assert!(
        matches!(
            &e,
            Error::ConfigValue {
                key: "hidden_size",
                ..
            }
        ),
        "{e}"
    );
    let e =
        cfg_err(r#"{"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10, "state_size": 0}"#);
    assert!(
        matches!(
            &e,
            Error::ConfigValue {
                key: "state_size",
                ..
            }
        ),
        "{e}"
    );
    let e = cfg_err(r#"{"hidden_size": "big", "num_hidden_layers": 2, "vocab_size": 10}"#);
    assert!(
        matches!(
            &e,
            Error::ConfigValue {
                key: "hidden_size",
                ..
            }
        ),
        "{e}"
    );
    let e = cfg_err(
        r#"{"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10, "time_step_rank": "big"}"#,
    );
    assert!(
        matches!(
            &e,
            Error::ConfigValue {
                key: "time_step_rank",
                ..
            }
        ),
        "{e}"
    );
    let e = cfg_err(
        r#"{"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10, "layer_norm_epsilon": -1}"#,
    );
    assert!(
        matches!(
            &e,
            Error::ConfigValue {
                key: "layer_norm_epsilon",
                ..
            }
        ),
        "{e}"
    );
    let e = cfg_err(
        r#"{"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10, "conv_kernel": 1}"#,
    );
    assert!(
        matches!(
            &e,
            Error::ConfigUnsupported {
                key: "conv_kernel",
                ..
            }
        ),
        "{e}"
    );
    let e = cfg_err(
        r#"{"model_type": "mamba2", "hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10}"#,
    );
    assert!(
        matches!(
            &e,
            Error::ConfigUnsupported {
                key: "model_type",
                ..
            }
        ),
        "{e}"
    );
    let e = cfg_err(r#"{"d_model": 8, "n_layer": 2, "vocab_size": 10, "rms_norm": false}"#);
    assert!(
        matches!(
            &e,
            Error::ConfigUnsupported {
                key: "rms_norm",
                ..
            }
        ),
        "{e}"
    );
    let e = cfg_err(
        r#"{"d_model": 8, "n_layer": 2, "vocab_size": 10, "ssm_cfg": {"layer": "Mamba2"}}"#,
    );
    assert!(
        matches!(&e, Error::ConfigUnsupported { key: "ssm_cfg", .. }),
        "{e}"
    );
    let e =
        cfg_err(r#"{"d_model": 8, "n_layer": 2, "vocab_size": 10, "pad_vocab_size_multiple": 0}"#);
    assert!(
        matches!(
            &e,
            Error::ConfigValue {
                key: "pad_vocab_size_multiple",
                ..
            }
        ),
        "{e}"
    );

    // A directory whose config.json is broken names that file.
    let dir = tmp("badcfg");
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 8,").unwrap();
    let e = MambaModel::load(CpuBackend::new(), &dir, &quiet())
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::ConfigJson { file, .. } if file.ends_with("config.json")),
        "{e}"
    );
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = MambaModel::load(CpuBackend::new(), &dir, &quiet())
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::Io { file, .. } if file.ends_with("config.json")),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_token_ids_empty_prompts_and_state_mismatch() {
    let (s, t) = synth();
    let m = load_bytes(&s.config_json(), &to_safetensors(&t, Dtype::F32)).unwrap();
    let e = m.logits_for(&[1, 2, s.vocab as u32]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TokenId {
                id: 40,
                position: 2,
                sequence: 0,
                vocab: 40
            }
        ),
        "{e}"
    );
    let e = m.logits_for(&[]).unwrap_err();
    assert!(matches!(e, Error::EmptyPrompt { sequence: 0 }), "{e}");
    let e = Generator::new(&m, &[], &GenerateOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, Error::EmptyPrompt { .. }), "{e}");
    let mut st = m.new_state(2).unwrap();
    let e = m.prefill(&mut st, &[&[1, 2], &[]]).unwrap_err();
    assert!(matches!(e, Error::EmptyPrompt { sequence: 1 }), "{e}");
    let e = m.prefill(&mut st, &[&[1, 2]]).unwrap_err();
    assert!(matches!(e, Error::StateMismatch { .. }), "{e}");
    m.prefill(&mut st, &[&[1, 2], &[3]]).unwrap();
    let e = m.step(&mut st, &[1, 999]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TokenId {
                id: 999,
                sequence: 1,
                ..
            }
        ),
        "{e}"
    );
    // Restoring a state of another batch size.
    let saved = st.save(m.backend()).unwrap();
    let mut one = m.new_state(1).unwrap();
    let e = one.restore(m.backend(), &saved).unwrap_err();
    assert!(matches!(e, Error::StateMismatch { .. }), "{e}");
    let e = m.new_state(0).err().unwrap();
    assert!(matches!(e, Error::ZeroDim { .. }), "{e}");
}

#[cfg(feature = "tokenizers")]
#[test]
fn unreadable_tokenizer() {
    use mamba_gpu::model::TextTokenizer;
    let dir = tmp("tok");
    let p = dir.join("tokenizer.json");
    std::fs::write(&p, "{\"version\": \"1.0\", \"model\": 42}").unwrap();
    let e = TextTokenizer::from_file(&p).err().unwrap();
    assert!(
        matches!(&e, Error::Tokenizer { file, .. } if file.ends_with("tokenizer.json")),
        "{e}"
    );
    std::fs::write(&p, [0xffu8, 0xfe, 0x00]).unwrap();
    let e = TextTokenizer::from_file(&p).err().unwrap();
    assert!(matches!(&e, Error::Tokenizer { .. }), "{e}");
    let e = TextTokenizer::from_file(&dir.join("absent.json"))
        .err()
        .unwrap();
    assert!(matches!(&e, Error::Io { .. }), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A byte-level BPE `tokenizer.json` with one token per byte (GPT-2's byte-to-unicode
/// alphabet) and no merges: every multi-byte character spans several tokens.
#[cfg(feature = "tokenizers")]
fn byte_tokenizer_json() -> String {
    let mut bs: Vec<u32> = (0x21..=0x7e)
        .chain(0xa1..=0xac)
        .chain(0xae..=0xff)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let vocab: serde_json::Map<String, serde_json::Value> = bs
        .iter()
        .zip(&cs)
        .map(|(&b, &c)| (char::from_u32(c).unwrap().to_string(), b.into()))
        .collect();
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []
        }
    })
    .to_string()
}

#[cfg(feature = "tokenizers")]
#[test]
fn text_stream_never_splits_a_character() {
    use mamba_gpu::model::TextTokenizer;
    let tok = TextTokenizer::from_bytes(byte_tokenizer_json().as_bytes(), "bytes.json").unwrap();
    let text = "héllo ✓ wörld — 日本";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids.len(), text.len(), "one token per byte");
    assert_eq!(tok.decode(&ids).unwrap(), text);
    let mut stream = tok.stream();
    let mut out = String::new();
    let mut held = 0;
    for &id in &ids {
        let d = stream.push(id).unwrap();
        assert!(!d.contains('\u{FFFD}'), "delta {d:?} splits a character");
        held += d.is_empty() as usize;
        out.push_str(&d);
    }
    out.push_str(&stream.finish().unwrap());
    assert_eq!(out, text);
    assert!(held >= 8, "continuation bytes were held back ({held})");
}

/// The embedded demo model (examples/demo_model/) against the transformers samples
/// recorded next to it: prompt encoding, top-5 last logits, greedy ids and text.
#[cfg(feature = "tokenizers")]
#[test]
fn demo_model_matches_its_recorded_samples() {
    use common::model_fixtures::{FixtureReport, compare_greedy};
    use mamba_gpu::model::{BatchGenerator, TextTokenizer};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo_model");
    let Ok(samples) = std::fs::read(dir.join("samples.json")) else {
        eprintln!("no examples/demo_model/samples.json: demo model check not run");
        return;
    };
    let samples: serde_json::Value = serde_json::from_slice(&samples).unwrap();
    let model = MambaModel::load(CpuBackend::new(), &dir, &quiet()).unwrap();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let mut tally = FixtureReport {
        name: "demo".into(),
        prompts: 0,
        worst_rel_l2: 0.0,
        longest_prompt: 0,
        greedy_tokens: 0,
        near_ties: 0,
    };
    let mut failures = Vec::new();
    let ids_of = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    for s in samples["samples"].as_array().unwrap() {
        let text = s["prompt"].as_str().unwrap();
        let ids = ids_of(&s["prompt_ids"]);
        assert_eq!(tok.encode(text).unwrap(), ids, "encoding of {text:?}");
        let logits = model.logits_for(&ids).unwrap();
        for pair in s["last_logits_top5"].as_array().unwrap() {
            let (id, want) = (
                pair[0].as_u64().unwrap() as usize,
                pair[1].as_f64().unwrap(),
            );
            assert!(
                (logits[id] as f64 - want).abs() < 1e-3,
                "{text:?}: logit {id} is {}, recorded {want}",
                logits[id]
            );
        }
        let want = ids_of(&s["greedy_new_ids"]);
        if ids.len() + 1 < model.config().conv_kernel {
            // transformers' generate(use_cache=True) writes the conv state of prompts
            // shorter than conv_kernel - 1 at the wrong positions, so its tokens differ
            // from its own use_cache=False path (which ours equal: checked by hand for
            // "Emma was": [314, 273, 286, 292, 267, 1022, 12, 283]).
            eprintln!(
                "{text:?}: {} tokens, recorded greedy not comparable",
                ids.len()
            );
            continue;
        }
        let opts = GenerateOptions {
            max_new_tokens: want.len(),
            ignore_eos: true,
            ..GenerateOptions::default()
        };
        let ours = BatchGenerator::new(&model, std::slice::from_ref(&ids), &opts)
            .unwrap()
            .run()
            .unwrap()
            .remove(0);
        match compare_greedy(&model, text, &ids, &ours, &want, &mut tally) {
            Ok(()) if ours == want => {
                let mut all = ids.clone();
                all.extend_from_slice(&ours);
                assert_eq!(
                    tok.decode(&all).unwrap(),
                    s["greedy_text"].as_str().unwrap()
                );
            }
            Ok(()) => {}
            Err(m) => failures.push(m),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Several states on one model, stepped in turn, restored and reset: each decodes as
/// it does alone.
#[test]
fn interleaved_states_decode_as_alone_cpu() {
    use common::decode_checks::{check_interleaved_states, small_model};
    check_interleaved_states(&small_model(CpuBackend::new(), 3, DType::F32), 1e-6);
}
