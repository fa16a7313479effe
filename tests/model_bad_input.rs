//! Bad input to the model on the CPU backend, each with its typed error: `config.json`
//! (parsing both key spellings, then every missing, inconsistent, invalid or
//! unsupported value), token ids, empty prompts and state mismatches, and unreadable
//! tokenizer files.

mod common;

use common::model_io::{load_bytes, quiet, synth, tmp};
use common::model_synth::to_safetensors;
use mamba_gpu::model::{GenerateOptions, Generator, MambaConfig, MambaModel};
use mamba_gpu::{CpuBackend, Error};
use safetensors::Dtype;

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
        r#"{"model_type": "jamba", "hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10}"#,
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
        r#"{"d_model": 8, "n_layer": 2, "vocab_size": 10, "ssm_cfg": {"layer": "Mamba3"}}"#,
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
