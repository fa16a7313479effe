//! The config.json of Falcon-Mamba and Mamba-2 (HF and the original mamba_ssm layout):
//! the values read, transformers' defaults for missing keys, Python's `Infinity`/`NaN`
//! tokens, and a typed error naming the key for every bad or unsupported value. Also:
//! a state saved by one family is refused by another.

mod common;

use std::path::Path;

use common::model_io::quiet;
use mamba_gpu::model::{Family, MambaConfig, MambaModel};
use mamba_gpu::{CpuBackend, Error};

fn parse(json: &str) -> Result<MambaConfig, Error> {
    MambaConfig::from_json_bytes(json.as_bytes(), "cfg.json")
}

fn key_of(e: &Error) -> &'static str {
    match e {
        Error::ConfigValue { key, .. }
        | Error::ConfigMissing { key, .. }
        | Error::ConfigUnsupported { key, .. }
        | Error::ConfigInconsistent { key, .. } => key,
        other => panic!("not a config error naming a key: {other}"),
    }
}

const M2: &str = r#""model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100, "num_heads": 8, "head_dim": 16"#;

#[test]
fn mamba2_hf_config() {
    // transformers' Mamba2Config defaults, and `Infinity` as Python's json writes it.
    let c = parse(&format!(
        r#"{{{M2}, "time_step_limit": [0.0, Infinity], "note": "Infinity NaN in a string"}}"#
    ))
    .unwrap();
    let Family::Mamba2(m2) = c.family else {
        panic!("{:?}", c.family)
    };
    assert_eq!((m2.num_heads, m2.head_dim, m2.n_groups), (8, 16, 8));
    assert_eq!(
        (c.state_size, c.intermediate_size, c.dt_rank),
        (128, 128, 8)
    );
    assert_eq!(m2.chunk_size, 256);
    assert!(!c.tie_word_embeddings && !c.use_bias && c.use_conv_bias);
    assert_eq!(
        (c.bos_token_id, c.eos_token_id, c.pad_token_id),
        (Some(0), Some(2), Some(1))
    );
    assert!(
        parse(&format!(
            r#"{{{M2}, "time_step_limit": [-Infinity, Infinity]}}"#
        ))
        .is_ok()
    );

    for (extra, key) in [
        (r#""num_heads": 3"#, "num_heads"), // 3 x 16 != 2 x 64
        (r#""n_groups": 3"#, "n_groups"),   // does not divide 8 heads
        (r#""n_groups": 0"#, "n_groups"),
        (r#""head_dim": 0"#, "head_dim"),
        (r#""time_step_limit": [0.001, 0.1]"#, "time_step_limit"),
        (r#""time_step_limit": [0.0, NaN]"#, "time_step_limit"),
        (r#""time_step_limit": "wide""#, "time_step_limit"),
        (r#""rms_norm": false"#, "rms_norm"),
        (r#""hidden_act": "gelu""#, "hidden_act"),
        (r#""layer_norm_epsilon": NaN"#, "layer_norm_epsilon"),
        (r#""layer_norm_epsilon": -Infinity"#, "layer_norm_epsilon"),
        (r#""state_size": Infinity"#, "state_size"),
        (r#""state_size": 4611686018427387904"#, "state_size"),
        (
            r#""n_groups": 4, "state_size": 1152921504606846976"#,
            "state_size",
        ),
    ] {
        // A later duplicate key wins in serde_json, as in Python.
        let e = parse(&format!("{{{M2}, {extra}}}")).unwrap_err();
        assert_eq!(key_of(&e), key, "{extra}: {e}");
    }
    let e = parse(
        r#"{"model_type": "mamba3", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 4}"#,
    )
    .unwrap_err();
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
}

#[test]
fn mamba2_original_config() {
    let base = r#""d_model": 64, "n_layer": 2, "vocab_size": 100, "pad_vocab_size_multiple": 16, "rms_norm": true"#;
    let c = parse(&format!(r#"{{{base}, "ssm_cfg": {{"layer": "Mamba2"}}}}"#)).unwrap();
    let Family::Mamba2(m2) = c.family else {
        panic!("{:?}", c.family)
    };
    // mamba_ssm's Mamba2 defaults: d_state 128, headdim 64, ngroups 1; vocab padded.
    assert_eq!((m2.num_heads, m2.head_dim, m2.n_groups), (2, 64, 1));
    assert_eq!((c.state_size, c.vocab_size, c.dt_rank), (128, 112, 2));
    assert_eq!(m2.gated_norm_eps, 1e-5);
    assert!(c.tie_word_embeddings);
    for ssm in [
        r#""headdim": 48"#, // does not divide d_inner 128
        r#""ngroups": 3"#,  // does not divide 2 heads
        r#""norm_before_gate": true"#,
        r#""rmsnorm": false"#,
        r#""D_has_hdim": true"#,
        r#""d_ssm": 64"#,
        r#""dt_limit": [0.0, 1.0]"#,
        r#""expand": 0"#,
    ] {
        let e = parse(&format!(
            r#"{{{base}, "ssm_cfg": {{"layer": "Mamba2", {ssm}}}}}"#
        ))
        .unwrap_err();
        let k = key_of(&e);
        assert!(
            ["ssm_cfg", "dt_limit", "ngroups", "n_groups", "expand"].contains(&k),
            "{ssm}: {e}"
        );
    }
    let e = parse(&format!(r#"{{{base}, "ssm_cfg": {{"layer": "Mamba3"}}}}"#)).unwrap_err();
    assert_eq!(key_of(&e), "ssm_cfg", "{e}");
}

#[test]
fn falcon_mamba_config() {
    let base = r#""model_type": "falcon_mamba", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100"#;
    // FalconMambaConfig trusts intermediate_size over expand (falcon-mamba-7b's config).
    let c = parse(&format!(
        r#"{{{base}, "expand": 16, "intermediate_size": 128}}"#
    ))
    .unwrap();
    assert_eq!(
        c.family,
        Family::FalconMamba {
            mixer_rms_eps: 1e-6
        }
    );
    assert_eq!((c.intermediate_size, c.dt_rank, c.state_size), (128, 4, 16));
    let c = parse(&format!(r#"{{{base}, "mixer_rms_eps": 1e-5}}"#)).unwrap();
    assert_eq!(
        c.family,
        Family::FalconMamba {
            mixer_rms_eps: 1e-5
        }
    );
    for bad in [
        r#""mixer_rms_eps": 0"#,
        r#""mixer_rms_eps": NaN"#,
        r#""mixer_rms_eps": "x""#,
    ] {
        let e = parse(&format!("{{{base}, {bad}}}")).unwrap_err();
        assert_eq!(key_of(&e), "mixer_rms_eps", "{bad}: {e}");
    }
    // Plain Mamba still checks intermediate_size against expand.
    let e = parse(r#"{"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100, "expand": 16, "intermediate_size": 128}"#).unwrap_err();
    assert_eq!(key_of(&e), "intermediate_size", "{e}");
}

fn load(name: &str) -> MambaModel<CpuBackend> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name);
    MambaModel::load(CpuBackend::new(), dir, &quiet()).expect(name)
}

#[test]
fn a_state_of_one_family_is_refused_by_another() {
    let models = [
        load("tiny_tied"),
        load("falcon_tiny_tied"),
        load("mamba2_g1_tied"),
    ];
    for (i, a) in models.iter().enumerate() {
        let mut st = a.new_state(1).unwrap();
        a.prefill(&mut st, &[&[1, 2, 3]]).unwrap();
        let host = st.save(a.backend()).unwrap();
        for (j, b) in models.iter().enumerate() {
            let r = b.restore_state(&host);
            if i == j {
                assert!(r.is_ok());
            } else {
                let e = r.err().expect("a state of another family was accepted");
                assert!(matches!(e, Error::StateModel { .. }), "{i} -> {j}: {e}");
            }
        }
    }
}
