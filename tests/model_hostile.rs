//! The hostile inputs of issue 10 ("Why" 4 and 7), each with the typed error it must
//! give, on the demo model (CPU backend): config values that used to overflow or make
//! the loader allocate gigabytes, token ids outside the vocabulary, non-finite weights,
//! safetensors errors that did not name the tensor, and directories or absent files in
//! place of model files.

mod common;

use std::path::{Path, PathBuf};

use common::model_io::{quiet, synth, tmp};
use common::model_synth::to_safetensors;
use mamba_gpu::model::{LoadOptions, MambaConfig, MambaModel, WeightDType};
use mamba_gpu::{CpuBackend, Error};
use safetensors::Dtype;

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo_model")
}

fn demo_config() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(demo_dir().join("config.json")).unwrap()).unwrap()
}

fn demo_st() -> Vec<u8> {
    std::fs::read(demo_dir().join("model.safetensors")).unwrap()
}

fn ssm_config() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/ssm_layout");
    serde_json::from_slice(&std::fs::read(p.join("config.json")).unwrap()).unwrap()
}

/// `json` with `key` replaced by the raw JSON text `raw` (so that numbers beyond
/// u64/f64 range survive as written).
fn with_raw(mut json: serde_json::Value, path: &[&str], raw: &str) -> String {
    let mut o = &mut json;
    for k in &path[..path.len() - 1] {
        o = o.get_mut(*k).unwrap();
    }
    o[path[path.len() - 1]] = "@@RAW@@".into();
    json.to_string().replace("\"@@RAW@@\"", raw)
}

fn load(config: &str, st: &[u8], opts: &LoadOptions) -> mamba_gpu::Result<MambaModel<CpuBackend>> {
    MambaModel::from_bytes(CpuBackend::new(), config.as_bytes(), &[st], opts)
}

fn config_key(e: &Error) -> Option<&'static str> {
    match e {
        Error::ConfigValue { key, .. }
        | Error::ConfigInconsistent { key, .. }
        | Error::ConfigCheckpoint { key, .. } => Some(key),
        _ => None,
    }
}

#[test]
fn a_layer_count_the_header_cannot_hold_is_refused_before_allocating() {
    // 1e8 layers used to allocate ~5 GB of expected tensor names (abort, exit 134).
    let cfg = with_raw(demo_config(), &["num_hidden_layers"], "100000000");
    let t = std::time::Instant::now();
    let e = load(&cfg, &demo_st(), &quiet()).err().unwrap();
    assert!(
        matches!(&e, Error::ConfigCheckpoint { key: "num_hidden_layers", why, .. }
            if why.contains("100000000") && why.contains(" 4 ")),
        "{e}"
    );
    assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());
    // One layer more than the checkpoint has is the same error.
    let cfg = with_raw(demo_config(), &["num_hidden_layers"], "5");
    let e = load(&cfg, &demo_st(), &quiet()).err().unwrap();
    assert_eq!(config_key(&e), Some("num_hidden_layers"), "{e}");
}

#[test]
fn config_sizes_that_overflow_are_typed_errors_naming_the_key() {
    let hf = demo_config();
    let drop_inter = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("intermediate_size");
        v
    };
    let cases: Vec<(String, &str)> = vec![
        // hidden_size 2^63 (x expand 2 overflows).
        (
            with_raw(
                drop_inter(hf.clone()),
                &["hidden_size"],
                "9223372036854775808",
            ),
            "hidden_size",
        ),
        // expand u64::MAX.
        (
            with_raw(drop_inter(hf.clone()), &["expand"], "18446744073709551615"),
            "expand",
        ),
        // state_size 2^63 - 1 (2 x state_size in x_proj's rows overflows).
        (
            with_raw(hf.clone(), &["state_size"], "9223372036854775807"),
            "state_size",
        ),
        // hidden_size and intermediate_size consistent, in_proj (2^82 elements) impossible.
        (
            {
                let mut v = hf.clone();
                v["hidden_size"] = (1u64 << 40).into();
                v["intermediate_size"] = (1u64 << 41).into();
                v.to_string()
            },
            "intermediate_size",
        ),
        (
            with_raw(hf.clone(), &["time_step_rank"], "18446744073709551615"),
            "time_step_rank",
        ),
        (
            with_raw(hf.clone(), &["conv_kernel"], "9223372036854775808"),
            "conv_kernel",
        ),
        // Original layout: vocab 2^64 - 1 (padding overflows), d_model 2^63.
        (
            with_raw(ssm_config(), &["vocab_size"], "18446744073709551615"),
            "vocab_size",
        ),
        (
            with_raw(ssm_config(), &["d_model"], "9223372036854775808"),
            "d_model",
        ),
        (
            with_raw(ssm_config(), &["ssm_cfg", "d_state"], "9223372036854775807"),
            "state_size",
        ),
    ];
    for (json, key) in cases {
        let e = MambaConfig::from_json_bytes(json.as_bytes(), "config.json").unwrap_err();
        assert_eq!(config_key(&e), Some(key), "{json}\n -> {e}");
        assert!(!e.to_string().contains("got 0"), "wrapped: {e}");
    }
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused() {
    for key in ["eos_token_id", "pad_token_id", "bos_token_id"] {
        let mut v = demo_config();
        v[key] = 2048.into(); // vocab_size is 2048
        let e = MambaConfig::from_json_bytes(v.to_string().as_bytes(), "c").unwrap_err();
        assert!(
            matches!(&e, Error::ConfigInconsistent { key: k, other: "vocab_size", .. } if *k == key),
            "{key}: {e}"
        );
        v[key] = 2047.into();
        MambaConfig::from_json_bytes(v.to_string().as_bytes(), "c").unwrap();
    }
}

/// The demo checkpoint with element `index` of `tensor` set to `value` (the demo
/// checkpoint is f16).
fn poke_f16(tensor: &str, index: usize, value: half::f16) -> Vec<u8> {
    let st = demo_st();
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
    assert_eq!(h[tensor]["dtype"], "F16");
    let at = 8 + n + h[tensor]["data_offsets"][0].as_u64().unwrap() as usize + 2 * index;
    let mut out = st.clone();
    out[at..at + 2].copy_from_slice(&value.to_le_bytes());
    out
}

#[test]
fn non_finite_weights_are_refused_with_the_tensor_name_unless_allowed() {
    let cfg = demo_config().to_string();
    let norm = "backbone.layers.0.norm.weight";
    let a_log = "backbone.layers.1.mixer.A_log";
    for (tensor, index, value) in [
        (norm, 5, half::f16::NAN),
        (a_log, 0, half::f16::INFINITY),
        ("backbone.embeddings.weight", 1000, half::f16::NEG_INFINITY),
        ("backbone.layers.3.mixer.out_proj.weight", 7, half::f16::NAN),
        // Finite, but A = -exp(100) overflows f32.
        (a_log, 3, half::f16::from_f32(100.0)),
    ] {
        let st = poke_f16(tensor, index, value);
        let e = load(&cfg, &st, &quiet()).err().unwrap();
        assert!(
            matches!(&e, Error::NonFiniteWeight { tensor: t, file, .. } if t == tensor && file == "model.safetensors"),
            "{tensor}[{index}] = {value}: {e}"
        );
        let opts = LoadOptions {
            allow_non_finite: true,
            ..quiet()
        };
        load(&cfg, &st, &opts).unwrap();
    }
    // The message says where.
    let e = load(&cfg, &poke_f16(norm, 5, half::f16::NAN), &quiet())
        .err()
        .unwrap();
    assert!(e.to_string().contains("element 5 is NaN"), "{e}");
}

/// A finite f32 weight that the dtype a model is loaded as cannot hold (f16 tops out at
/// 65504; a Q8_0 block's f16 scale at max|w| = 127 · 65504) used to become an infinity
/// in silence, and the model ran on weights that were not the checkpoint's. Refused,
/// naming the tensor and the element; the dtypes that hold it load.
#[test]
fn weights_beyond_the_range_of_the_load_dtype_are_refused() {
    let (s, t) = synth();
    let cfg = s.config_json();
    let as_ = |w| LoadOptions {
        weight_dtype: w,
        ..quiet()
    };
    let load_with =
        |st: &[u8], w| MambaModel::from_bytes(CpuBackend::new(), cfg.as_bytes(), &[st], &as_(w));
    for (tensor, index, value, refused) in [
        (
            "backbone.layers.1.mixer.x_proj.weight",
            7,
            1e6,
            vec![WeightDType::F16],
        ),
        (
            "backbone.layers.0.mixer.in_proj.weight",
            3,
            -7e4,
            vec![WeightDType::F16],
        ),
        // in_proj's K (hidden 16) is no multiple of 32: no Q8_0 there; out_proj's is.
        (
            "backbone.layers.1.mixer.out_proj.weight",
            40,
            1e7,
            vec![WeightDType::F16, WeightDType::Q8_0],
        ),
        // Beyond bf16's 3.3895e38 too (the tied head's K of 16 keeps it in float with q8).
        (
            "backbone.embeddings.weight",
            5,
            3.4e38,
            vec![WeightDType::F16, WeightDType::BF16],
        ),
    ] {
        let mut t = t.clone();
        let v = &mut t.iter_mut().find(|x| x.0 == tensor).unwrap().2;
        v[index] = value;
        let st = to_safetensors(&t, Dtype::F32);
        for w in [
            WeightDType::F32,
            WeightDType::F16,
            WeightDType::BF16,
            WeightDType::Q8_0,
        ] {
            let r = load_with(&st, w);
            if !refused.contains(&w) {
                r.unwrap_or_else(|e| panic!("{tensor}[{index}] = {value} as {w:?}: {e}"));
                continue;
            }
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{tensor} = {value} as {w:?} loaded"));
            assert!(
                matches!(&e, Error::WeightValue { tensor: n, .. } if n == tensor),
                "{tensor} as {w:?}: {e}"
            );
            let at = match w {
                WeightDType::Q8_0 => format!("({}, {})", index / s.e(), index % s.e() / 32 * 32),
                _ => format!("element {index} "),
            };
            assert!(
                e.to_string().contains(&at),
                "{tensor} as {w:?}: {e} (want {at})"
            );
        }
    }
}

/// The demo checkpoint with its header edited by `f` (data unchanged).
fn edit_header(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let st = demo_st();
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
    f(&mut h);
    let hb = h.to_string().into_bytes();
    let mut out = (hb.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&hb);
    out.extend_from_slice(&st[8 + n..]);
    out
}

#[test]
fn safetensors_errors_name_the_file_and_the_tensor() {
    let cfg = demo_config().to_string();
    let emb = "backbone.embeddings.weight";
    // Each of these used to say "invalid shape, data type, or offset for tensor" or
    // "overflow computing buffer size", without a name.
    for (what, value) in [
        ("shape", serde_json::json!([2048, 100])),
        ("shape", serde_json::json!([1u64 << 62, 1u64 << 62])),
        ("dtype", serde_json::json!("F32")),
    ] {
        let st = edit_header(|h| h[emb][what] = value.clone());
        let e = load(&cfg, &st, &quiet()).err().unwrap();
        assert!(
            matches!(&e, Error::CheckpointCorrupt { file, why } if file == "model.safetensors" && why.contains(emb)),
            "{what} = {value}: {e}"
        );
    }
    // A header entry that is not even an object.
    let st = edit_header(|h| h[emb] = serde_json::json!(null));
    let e = load(&cfg, &st, &quiet()).err().unwrap();
    assert!(
        matches!(&e, Error::CheckpointCorrupt { why, .. } if why.contains(emb)),
        "{e}"
    );
}

#[test]
fn directories_and_absent_files_say_what_is_wrong() {
    let src = demo_dir();
    let dir = tmp("hostile-dir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    MambaModel::load(CpuBackend::new(), &dir, &quiet()).unwrap();

    // model.safetensors is a directory: it used to say "No such device (os error 19)".
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::fs::create_dir(dir.join("model.safetensors")).unwrap();
    let e = MambaModel::load(CpuBackend::new(), &dir, &quiet())
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::Io { file, source } if file.ends_with("model.safetensors")
            && source.kind() == std::io::ErrorKind::IsADirectory),
        "{e}"
    );
    assert!(e.to_string().contains("is a directory"), "{e}");

    // Absent: the path is named.
    std::fs::remove_dir(dir.join("model.safetensors")).unwrap();
    let e = MambaModel::load(CpuBackend::new(), &dir, &quiet())
        .err()
        .unwrap();
    let want = dir.join("model.safetensors").display().to_string();
    assert!(matches!(&e, Error::Io { file, .. } if *file == want), "{e}");

    // An empty checkpoint file is truncated, not a mapping error.
    std::fs::write(dir.join("model.safetensors"), b"").unwrap();
    let e = MambaModel::load(CpuBackend::new(), &dir, &quiet())
        .err()
        .unwrap();
    assert!(matches!(&e, Error::CheckpointTruncated { .. }), "{e}");

    // config.json a directory.
    std::fs::remove_file(dir.join("config.json")).unwrap();
    std::fs::create_dir(dir.join("config.json")).unwrap();
    let e = MambaModel::load(CpuBackend::new(), &dir, &quiet())
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::Io { file, .. } if file.ends_with("config.json"))
            && e.to_string().contains("is a directory"),
        "{e}"
    );

    // A sharded index naming a shard that is absent, or a directory.
    std::fs::remove_dir(dir.join("config.json")).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    for (shard, is_dir) in [("absent.safetensors", false), ("sub", true)] {
        if is_dir {
            std::fs::create_dir_all(dir.join(shard)).unwrap();
        }
        let index = serde_json::json!({"weight_map": {"backbone.embeddings.weight": shard}});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        let e = MambaModel::load(CpuBackend::new(), &dir, &quiet())
            .err()
            .unwrap();
        assert!(
            matches!(&e, Error::Io { file, .. } if file.ends_with(shard)),
            "{shard}: {e}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// tokenizer.json files on which tokenizers 0.22 panics while parsing (found by
/// fuzz/tokenizer_load) are typed errors; the check does not rely on catching the panic
/// (the fuzz build, like any `panic = "abort"` build, cannot catch it).
#[cfg(feature = "tokenizers")]
#[test]
fn a_tokenizer_file_that_panics_the_parser_is_a_typed_error() {
    for name in ["tokenizer_crash_1.json", "tokenizer_crash_2.json"] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/fuzz")
            .join(name);
        let e = mamba_gpu::model::TextTokenizer::from_file(&p)
            .err()
            .unwrap();
        assert!(
            matches!(&e, Error::Tokenizer { file, why } if file.ends_with(name) && why.contains("not valid JSON")),
            "{name}: {e}"
        );
    }
}
