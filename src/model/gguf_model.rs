//! A Mamba model in a GGUF file, as llama.cpp's `convert_hf_to_gguf.py` writes one
//! (architectures `mamba`, which covers Falcon-Mamba, and `mamba2`): the config from the
//! metadata, and the tensors mapped onto the Hugging Face names and shapes the loader
//! (`weights.rs`) checks and uploads, borrowed from the file's bytes.
//!
//! What the converter does, and what is undone here:
//! * names: `token_embd`, `blk.{i}.attn_norm`, `blk.{i}.ssm_in|ssm_conv1d|ssm_x|ssm_dt|
//!   ssm_out` (`.weight`, `.bias`), `blk.{i}.ssm_a`, `blk.{i}.ssm_d`, `blk.{i}.ssm_norm`
//!   (Mamba-2), `output_norm`, `output` (left out when equal to the embedding: tied);
//! * dimensions are listed fastest-first (reversed here to PyTorch's order);
//! * `ssm_a` holds `A = −exp(A_log)`, not `A_log` (used as it is: [`Found::holds_a`]);
//! * conv1d is squeezed to `(C, K)`; Mamba-2's A and D are `(H, 1)`, its norm
//!   `(G, E / G)` (reshaped back: the element order is the same);
//! * the vocabulary in the tokenizer metadata is padded to a multiple of 8 (Mamba-2:
//!   16) with `[PAD{i}]` tokens, the embedding is not: the vocabulary size here is the
//!   embedding's row count;
//! * there is no key for biases: `use_bias` / `use_conv_bias` are whether the file has
//!   `ssm_in.bias` / `ssm_conv1d.bias` tensors (every layer is then checked for them);
//! * Falcon-Mamba is `mamba` with `mamba.ssm.dt_b_c_rms = true`. The file keeps no
//!   `mixer_rms_eps`: the B/C/Δ norms get 1e-6, transformers' default and the value of
//!   every published Falcon-Mamba (llama.cpp uses `layer_norm_rms_epsilon` there).

use super::config::{Family, Mamba2Dims, MambaConfig};
use super::gguf::{GgmlType, GgufFile};
use super::tensor_io::SrcDType;
use super::weights::{Found, Index, LoadOptions, Weights, load_index};
use crate::backend::Backend;
use crate::error::{Error, Result};

/// The metadata keys of one architecture.
struct Keys {
    embedding_length: &'static str,
    block_count: &'static str,
    conv_kernel: &'static str,
    inner_size: &'static str,
    state_size: &'static str,
    time_step_rank: &'static str,
    group_count: &'static str,
    rms_eps: &'static str,
}

const MAMBA: Keys = Keys {
    embedding_length: "mamba.embedding_length",
    block_count: "mamba.block_count",
    conv_kernel: "mamba.ssm.conv_kernel",
    inner_size: "mamba.ssm.inner_size",
    state_size: "mamba.ssm.state_size",
    time_step_rank: "mamba.ssm.time_step_rank",
    group_count: "mamba.ssm.group_count",
    rms_eps: "mamba.attention.layer_norm_rms_epsilon",
};

const MAMBA2: Keys = Keys {
    embedding_length: "mamba2.embedding_length",
    block_count: "mamba2.block_count",
    conv_kernel: "mamba2.ssm.conv_kernel",
    inner_size: "mamba2.ssm.inner_size",
    state_size: "mamba2.ssm.state_size",
    time_step_rank: "mamba2.ssm.time_step_rank",
    group_count: "mamba2.ssm.group_count",
    rms_eps: "mamba2.attention.layer_norm_rms_epsilon",
};

/// The dtypes a GGUF tensor may have, for [`Error::TensorDType`].
const ACCEPTS: &str = "F32, F16, BF16 or Q8_0";

/// Falcon-Mamba's B/C/Δ norm epsilon (see the module docs).
const FALCON_MIXER_RMS_EPS: f32 = 1e-6;

/// Per-layer tensors: (GGUF suffix, Mamba-1 name, Mamba-2 name) after `blk.{i}.` and
/// `backbone.layers.{i}.`.
const LAYER: &[(&str, &str, &str)] = &[
    ("attn_norm.weight", "norm.weight", "norm.weight"),
    (
        "ssm_in.weight",
        "mixer.in_proj.weight",
        "mixer.in_proj.weight",
    ),
    ("ssm_in.bias", "mixer.in_proj.bias", "mixer.in_proj.bias"),
    (
        "ssm_conv1d.weight",
        "mixer.conv1d.weight",
        "mixer.conv1d.weight",
    ),
    ("ssm_conv1d.bias", "mixer.conv1d.bias", "mixer.conv1d.bias"),
    ("ssm_x.weight", "mixer.x_proj.weight", "mixer.x_proj.weight"),
    (
        "ssm_dt.weight",
        "mixer.dt_proj.weight",
        "mixer.dt_proj.weight",
    ),
    ("ssm_dt.bias", "mixer.dt_proj.bias", "mixer.dt_bias"),
    ("ssm_a", "mixer.A_log", "mixer.A_log"),
    ("ssm_d", "mixer.D", "mixer.D"),
    ("ssm_norm.weight", "mixer.norm.weight", "mixer.norm.weight"),
    (
        "ssm_out.weight",
        "mixer.out_proj.weight",
        "mixer.out_proj.weight",
    ),
    ("ssm_out.bias", "mixer.out_proj.bias", "mixer.out_proj.bias"),
];

/// Tensors outside the layers: (GGUF name, Hugging Face name).
const GLOBAL: &[(&str, &str)] = &[
    ("token_embd.weight", "backbone.embeddings.weight"),
    ("output_norm.weight", "backbone.norm_f.weight"),
    ("output.weight", "lm_head.weight"),
];

/// `blk.{i}.{rest}` with `i` written the one way `format!` writes it (so that no two
/// names of the file map onto one).
fn layer_of(name: &str) -> Option<(usize, &str)> {
    let (i, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let n: usize = i.parse().ok()?;
    (n.to_string() == i).then_some((n, rest))
}

/// The Hugging Face name of a GGUF tensor, `None` for a name this model has not.
fn hf_name(name: &str, mamba2: bool) -> Option<String> {
    if let Some((_, hf)) = GLOBAL.iter().find(|(g, _)| *g == name) {
        return Some(hf.to_string());
    }
    let (i, rest) = layer_of(name)?;
    let (_, m1, m2) = LAYER.iter().find(|(g, ..)| *g == rest)?;
    Some(format!(
        "backbone.layers.{i}.{}",
        if mamba2 { m2 } else { m1 }
    ))
}

/// The GGUF name of a Hugging Face tensor name (for errors about a missing tensor).
fn gguf_name(hf: &str, mamba2: bool) -> String {
    if let Some((g, _)) = GLOBAL.iter().find(|(_, h)| *h == hf) {
        return g.to_string();
    }
    let found = hf
        .strip_prefix("backbone.layers.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(i, rest)| {
            let (g, ..) = LAYER
                .iter()
                .find(|(_, m1, m2)| rest == if mamba2 { *m2 } else { *m1 })?;
            Some(format!("blk.{i}.{g}"))
        });
    found.unwrap_or_else(|| hf.to_string())
}

/// Whether any layer has the tensor `blk.{i}.{suffix}`.
fn any_layer_has(g: &GgufFile<'_>, suffix: &str) -> bool {
    g.tensors()
        .iter()
        .any(|t| layer_of(t.name).is_some_and(|(_, rest)| rest == suffix))
}

/// A token id key (`tokenizer.ggml.eos_token_id`, ...).
fn token_id(g: &GgufFile<'_>, key: &'static str) -> Result<Option<u32>> {
    match g.uint(key)? {
        None => Ok(None),
        Some(id) => u32::try_from(id).map(Some).map_err(|_| Error::ConfigValue {
            file: g.file().into(),
            key,
            why: format!("{id} does not fit a u32 token id"),
        }),
    }
}

/// The config of a GGUF Mamba model, validated as a `config.json` is (errors name the
/// GGUF keys).
pub(crate) fn config(g: &GgufFile<'_>) -> Result<MambaConfig> {
    let arch_key = "general.architecture";
    let arch = g.string(arch_key)?.ok_or_else(|| Error::ConfigMissing {
        file: g.file().into(),
        key: arch_key,
    })?;
    let k = match arch {
        "mamba" => &MAMBA,
        "mamba2" => &MAMBA2,
        other => {
            return Err(Error::ConfigUnsupported {
                file: g.file().into(),
                key: arch_key,
                why: format!("`{other}` (\"mamba\" and \"mamba2\" are implemented)"),
            });
        }
    };
    let hidden = g.req_usize(k.embedding_length)?;
    let inner = g.req_usize(k.inner_size)?;
    let rank = g.req_usize(k.time_step_rank)?;
    let eps = g.float(k.rms_eps)?.ok_or_else(|| Error::ConfigMissing {
        file: g.file().into(),
        key: k.rms_eps,
    })?;
    let emb_name = "token_embd.weight";
    let emb = g.tensor(emb_name).ok_or_else(|| Error::MissingTensor {
        file: g.file().into(),
        tensor: emb_name.into(),
    })?;
    let vocab = match emb.dims[..] {
        [_, v] => v,
        ref dims => {
            return Err(Error::CheckpointCorrupt {
                file: g.file().into(),
                why: format!(
                    "tensor `{emb_name}` has dimensions {dims:?}, expected \
                     [embedding_length, vocabulary size] (the vocabulary size is read from it)"
                ),
            });
        }
    };
    let family = if arch == "mamba2" {
        let heads = rank;
        if heads == 0 || !inner.is_multiple_of(heads) {
            return Err(Error::ConfigInconsistent {
                file: g.file().into(),
                key: k.inner_size,
                other: k.time_step_rank,
                why: format!("{inner} channels are not a whole number of heads of {heads}"),
            });
        }
        Family::Mamba2(Mamba2Dims {
            num_heads: heads,
            head_dim: inner / heads,
            n_groups: g.req_usize(k.group_count)?,
            chunk_size: 256,
            gated_norm_eps: eps,
        })
    } else if g.boolean("mamba.ssm.dt_b_c_rms")?.unwrap_or(false) {
        Family::FalconMamba {
            mixer_rms_eps: FALCON_MIXER_RMS_EPS,
        }
    } else {
        Family::Mamba1
    };
    let cfg = MambaConfig {
        family,
        hidden_size: hidden,
        num_layers: g.req_usize(k.block_count)?,
        intermediate_size: inner,
        state_size: g.req_usize(k.state_size)?,
        conv_kernel: g.req_usize(k.conv_kernel)?,
        dt_rank: rank,
        vocab_size: vocab,
        use_bias: any_layer_has(g, "ssm_in.bias"),
        use_conv_bias: any_layer_has(g, "ssm_conv1d.bias"),
        layer_norm_epsilon: eps,
        residual_in_fp32: true,
        tie_word_embeddings: g.tensor("output.weight").is_none(),
        eos_token_id: token_id(g, "tokenizer.ggml.eos_token_id")?,
        bos_token_id: token_id(g, "tokenizer.ggml.bos_token_id")?,
        pad_token_id: token_id(g, "tokenizer.ggml.padding_token_id")?,
    };
    cfg.validate(g.file()).map_err(|e| rename_keys(e, k))?;
    Ok(cfg)
}

/// The GGUF spelling of the config keys the shared validation names.
fn gguf_key(k: &Keys, hf: &'static str) -> &'static str {
    match hf {
        "hidden_size" => k.embedding_length,
        "num_hidden_layers" => k.block_count,
        "intermediate_size" => k.inner_size,
        "state_size" => k.state_size,
        "time_step_rank" | "num_heads" => k.time_step_rank,
        "conv_kernel" => k.conv_kernel,
        "layer_norm_epsilon" => k.rms_eps,
        "n_groups" => k.group_count,
        "vocab_size" => "token_embd.weight",
        "eos_token_id" => "tokenizer.ggml.eos_token_id",
        "bos_token_id" => "tokenizer.ggml.bos_token_id",
        "pad_token_id" => "tokenizer.ggml.padding_token_id",
        other => other,
    }
}

fn rename_keys(e: Error, k: &Keys) -> Error {
    match e {
        Error::ConfigValue { file, key, why } => Error::ConfigValue {
            file,
            key: gguf_key(k, key),
            why,
        },
        Error::ConfigUnsupported { file, key, why } => Error::ConfigUnsupported {
            file,
            key: gguf_key(k, key),
            why,
        },
        Error::ConfigInconsistent {
            file,
            key,
            other,
            why,
        } => Error::ConfigInconsistent {
            file,
            key: gguf_key(k, key),
            other: gguf_key(k, other),
            why,
        },
        Error::ConfigCheckpoint { file, key, why } => Error::ConfigCheckpoint {
            file,
            key: gguf_key(k, key),
            why,
        },
        e => e,
    }
}

/// The file's tensors by Hugging Face name (names this model has not are kept under
/// their own, for the loader to refuse as unexpected).
fn index<'a>(g: &GgufFile<'a>, mamba2: bool) -> Result<Index<'a>> {
    let mut index = Index::new();
    for t in g.tensors() {
        let hf = hf_name(t.name, mamba2);
        let mut shape: Vec<usize> = t.dims.iter().rev().copied().collect();
        if let Some(hf) = &hf
            && mamba2
        {
            let one_per_head = hf.ends_with("mixer.A_log") || hf.ends_with("mixer.D");
            match shape[..] {
                [h, 1] if one_per_head => shape = vec![h],
                // (G, E / G), product bounded by the element check of the parser.
                [groups, c] if hf.ends_with("mixer.norm.weight") => shape = vec![groups * c],
                _ => {}
            }
        }
        let dtype = match t.ggml_type {
            GgmlType::F32 => SrcDType::F32,
            GgmlType::F16 => SrcDType::F16,
            GgmlType::BF16 => SrcDType::BF16,
            GgmlType::Q8_0 => SrcDType::Q8_0,
            other => SrcDType::Other(other.name().unwrap_or("?").into()),
        };
        let holds_a = hf.as_deref().is_some_and(|h| h.ends_with("mixer.A_log"));
        let key = hf.unwrap_or_else(|| t.name.to_string());
        let found = Found {
            file: g.file().into(),
            name: t.name.into(),
            dtype,
            shape,
            bytes: t.data,
            holds_a,
            accepts: ACCEPTS,
        };
        if let Some(prev) = index.insert(key.clone(), found) {
            return Err(Error::CheckpointCorrupt {
                file: g.file().into(),
                why: format!("tensors `{}` and `{}` are both `{key}`", prev.name, t.name),
            });
        }
    }
    Ok(index)
}

/// The config and the device weights of a parsed GGUF file.
pub(crate) fn load<B: Backend>(
    be: &B,
    g: &GgufFile<'_>,
    opts: &LoadOptions,
) -> Result<(MambaConfig, Weights<B>)> {
    let cfg = config(g)?;
    let mamba2 = matches!(cfg.family, Family::Mamba2(_));
    let k = if mamba2 { &MAMBA2 } else { &MAMBA };
    let index = index(g, mamba2)?;
    let w = load_index(
        be,
        &cfg,
        g.file(),
        &index,
        &|hf| gguf_name(hf, mamba2),
        opts,
    )
    .map_err(|e| rename_keys(e, k))?;
    Ok((cfg, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for mamba2 in [false, true] {
            for (g, ..) in LAYER {
                let name = format!("blk.12.{g}");
                let hf = hf_name(&name, mamba2).unwrap();
                assert_eq!(gguf_name(&hf, mamba2), name);
            }
            for (g, h) in GLOBAL {
                assert_eq!(hf_name(g, mamba2).as_deref(), Some(*h));
                assert_eq!(gguf_name(h, mamba2), *g);
            }
        }
        assert_eq!(
            hf_name("blk.3.ssm_dt.bias", true).unwrap(),
            "backbone.layers.3.mixer.dt_bias"
        );
        // Other spellings of the layer number are not the same tensor.
        for odd in [
            "blk.01.ssm_a",
            "blk.+1.ssm_a",
            "blk.1",
            "blk..ssm_a",
            "blk.1.ssm_q",
        ] {
            assert_eq!(hf_name(odd, false), None, "{odd}");
        }
    }
}
