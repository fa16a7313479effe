//! `MambaConfig`: the model hyper-parameters, read from a Hugging Face `config.json`
//! (`MambaForCausalLM`) or from the original state-spaces `config.json`.
//!
//! Values are validated here, once, with errors naming the file and the key.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Hyper-parameters of a Mamba (v1) language model.
#[derive(Debug, Clone, PartialEq)]
pub struct MambaConfig {
    /// d_model.
    pub hidden_size: usize,
    pub num_layers: usize,
    /// E = expand · d_model: the width of the mixer.
    pub intermediate_size: usize,
    /// N, the SSM state size per channel.
    pub state_size: usize,
    /// K, the causal conv1d width (≥ 2).
    pub conv_kernel: usize,
    /// R, the rank of the Δ projection.
    pub dt_rank: usize,
    /// Rows of the embedding table (padded up to `pad_vocab_size_multiple` for the
    /// original layout).
    pub vocab_size: usize,
    /// in_proj / out_proj have biases.
    pub use_bias: bool,
    /// conv1d has a bias.
    pub use_conv_bias: bool,
    pub layer_norm_epsilon: f32,
    /// Always true in effect here: the residual stream is f32.
    pub residual_in_fp32: bool,
    /// lm_head shares the embedding table.
    pub tie_word_embeddings: bool,
    pub eos_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

impl MambaConfig {
    /// Reads and validates `path` (a `config.json`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let file = path.display().to_string();
        let bytes = super::checkpoint::read_small(path, super::checkpoint::MAX_JSON_BYTES)?;
        Self::from_json_bytes(&bytes, &file)
    }

    /// Parses and validates config JSON; `file` names it in errors.
    pub fn from_json_bytes(bytes: &[u8], file: &str) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::ConfigJson {
            file: file.into(),
            why: e.to_string(),
        })?;
        let Value::Object(m) = v else {
            return Err(Error::ConfigJson {
                file: file.into(),
                why: "the top level is not a JSON object".into(),
            });
        };
        let r = Reader { file, m: &m };
        let cfg = if m.contains_key("d_model") {
            r.original()?
        } else {
            r.hf()?
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// `ceil(hidden / 16)`, the "auto" Δ rank of both layouts.
    pub fn auto_dt_rank(hidden_size: usize) -> usize {
        hidden_size.div_ceil(16)
    }

    fn validate(&self, file: &str) -> Result<()> {
        let val = |key, why: String| Error::ConfigValue {
            file: file.into(),
            key,
            why,
        };
        for (key, v) in [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_layers),
            ("intermediate_size", self.intermediate_size),
            ("state_size", self.state_size),
            ("time_step_rank", self.dt_rank),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                return Err(val(key, "must be positive, got 0".into()));
            }
        }
        if self.conv_kernel < 2 {
            return Err(Error::ConfigUnsupported {
                file: file.into(),
                key: "conv_kernel",
                why: format!(
                    "a conv kernel of width {} keeps no conv state (needs >= 2)",
                    self.conv_kernel
                ),
            });
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return Err(val(
                "layer_norm_epsilon",
                format!("{} is not a positive number", self.layer_norm_epsilon),
            ));
        }
        if self.vocab_size > u32::MAX as usize {
            return Err(val("vocab_size", "exceeds u32 token ids".into()));
        }
        for (key, id) in [
            ("eos_token_id", self.eos_token_id),
            ("bos_token_id", self.bos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(id) = id {
                if id as usize >= self.vocab_size {
                    return Err(Error::ConfigInconsistent {
                        file: file.into(),
                        key,
                        other: "vocab_size",
                        why: format!(
                            "token id {id} is not below the vocabulary size {}",
                            self.vocab_size
                        ),
                    });
                }
            }
        }
        self.check_sizes(file)
    }

    /// Every tensor size the loader and the forward pass derive from the config, in
    /// checked arithmetic: a hostile config.json (hidden_size 2^63, state_size
    /// 2^63 − 1, ...) must give a typed error naming the key, not an overflow panic
    /// (debug) or a wrapped size (release). Element counts are capped at
    /// [`MAX_TENSOR_ELEMS`] so that byte sizes of f32 copies cannot overflow either.
    /// (Whether the checkpoint really holds tensors that large is checked against its
    /// header before anything is allocated.)
    fn check_sizes(&self, file: &str) -> Result<()> {
        let (d, e, n, k, r, v) = (
            self.hidden_size,
            self.intermediate_size,
            self.state_size,
            self.conv_kernel,
            self.dt_rank,
            self.vocab_size,
        );
        let too_big = |key: &'static str, what: &str| Error::ConfigValue {
            file: file.into(),
            key,
            why: format!(
                "{what} overflows the largest tensor this crate loads ({MAX_TENSOR_ELEMS} elements)"
            ),
        };
        let mul = |a: usize, b: usize, key: &'static str, what: &str| {
            a.checked_mul(b)
                .filter(|&x| x <= MAX_TENSOR_ELEMS)
                .ok_or_else(|| too_big(key, what))
        };
        // Each single dimension first, so the key named is the one that is too big.
        for (key, x) in [
            ("hidden_size", d),
            ("intermediate_size", e),
            ("state_size", n),
            ("conv_kernel", k),
            ("time_step_rank", r),
        ] {
            mul(x, 2, key, key)?;
        }
        mul(v, d, "vocab_size", "vocab_size x hidden_size")?;
        mul(
            2 * e,
            d,
            "intermediate_size",
            "2 x intermediate_size x hidden_size",
        )?;
        mul(e, n, "state_size", "intermediate_size x state_size")?;
        mul(e, k, "conv_kernel", "intermediate_size x conv_kernel")?;
        let rows = r
            .checked_add(2 * n)
            .ok_or_else(|| too_big("time_step_rank", "time_step_rank + 2 x state_size"))?;
        mul(
            rows,
            e,
            "time_step_rank",
            "(time_step_rank + 2 x state_size) x intermediate_size",
        )?;
        Ok(())
    }
}

/// The largest element count of one tensor (or one size derived from the config)
/// accepted: `isize::MAX / 16` leaves room for f32 (and f64 host) byte sizes and for
/// the sums of a few such sizes without overflow.
pub const MAX_TENSOR_ELEMS: usize = (isize::MAX as usize) / 16;

struct Reader<'a> {
    file: &'a str,
    m: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn err(&self, key: &'static str, why: impl Into<String>) -> Error {
        Error::ConfigValue {
            file: self.file.into(),
            key,
            why: why.into(),
        }
    }

    fn get_in<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
        m.get(key).filter(|v| !v.is_null())
    }

    fn usize_in(&self, m: &Map<String, Value>, key: &'static str) -> Result<Option<usize>> {
        match Self::get_in(m, key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) => usize::try_from(n)
                    .map(Some)
                    .map_err(|_| self.err(key, format!("{n} is too large"))),
                None => Err(self.err(key, format!("expected a non-negative integer, got {v}"))),
            },
        }
    }

    fn req_usize(&self, key: &'static str) -> Result<usize> {
        self.usize_in(self.m, key)?.ok_or(Error::ConfigMissing {
            file: self.file.into(),
            key,
        })
    }

    fn bool_in(&self, m: &Map<String, Value>, key: &'static str, default: bool) -> Result<bool> {
        match Self::get_in(m, key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(key, format!("expected true or false, got {v}"))),
        }
    }

    fn f32_key(&self, key: &'static str, default: f32) -> Result<f32> {
        match Self::get_in(self.m, key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }

    /// A token id: an integer, a list of integers (the first is used), or null.
    fn token_id(&self, key: &'static str, default: Option<u32>) -> Result<Option<u32>> {
        let bad = |v: &Value| self.err(key, format!("expected a token id, got {v}"));
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(v))
        };
        match self.m.get(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a.first().map(one).transpose(),
            Some(v) => one(v).map(Some),
        }
    }

    /// `"auto"` or a positive integer.
    fn dt_rank_in(
        &self,
        m: &Map<String, Value>,
        key: &'static str,
        hidden: usize,
    ) -> Result<usize> {
        match Self::get_in(m, key) {
            None => Ok(MambaConfig::auto_dt_rank(hidden)),
            Some(Value::String(s)) if s == "auto" => Ok(MambaConfig::auto_dt_rank(hidden)),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => {
                    usize::try_from(n).map_err(|_| self.err(key, format!("{n} is too large")))
                }
                _ => Err(self.err(
                    key,
                    format!("expected \"auto\" or a positive integer, got {v}"),
                )),
            },
        }
    }

    fn unsupported(&self, key: &'static str, why: impl Into<String>) -> Error {
        Error::ConfigUnsupported {
            file: self.file.into(),
            key,
            why: why.into(),
        }
    }

    /// transformers' `MambaConfig` (model_type "mamba").
    fn hf(&self) -> Result<MambaConfig> {
        if let Some(t) = Self::get_in(self.m, "model_type") {
            if t.as_str() != Some("mamba") {
                return Err(self.unsupported(
                    "model_type",
                    format!("{t} (only \"mamba\", Mamba 1, is implemented)"),
                ));
            }
        }
        if let Some(act) = Self::get_in(self.m, "hidden_act") {
            if act.as_str() != Some("silu") {
                return Err(self.unsupported("hidden_act", format!("{act} (only \"silu\")")));
            }
        }
        let hidden = self.req_usize("hidden_size")?;
        let layers = self.req_usize("num_hidden_layers")?;
        let vocab = self.req_usize("vocab_size")?;
        let expand = self.usize_in(self.m, "expand")?.unwrap_or(2);
        if expand == 0 {
            return Err(self.err("expand", "must be positive, got 0"));
        }
        let product = expand.checked_mul(hidden).ok_or_else(|| {
            self.err(
                if hidden >= expand {
                    "hidden_size"
                } else {
                    "expand"
                },
                format!("expand {expand} x hidden_size {hidden} overflows"),
            )
        })?;
        let inter = match self.usize_in(self.m, "intermediate_size")? {
            None => product,
            Some(e) => {
                if e != product {
                    return Err(Error::ConfigInconsistent {
                        file: self.file.into(),
                        key: "intermediate_size",
                        other: "expand",
                        why: format!(
                            "intermediate_size {e} != expand {expand} x hidden_size {hidden}"
                        ),
                    });
                }
                e
            }
        };
        Ok(MambaConfig {
            hidden_size: hidden,
            num_layers: layers,
            intermediate_size: inter,
            state_size: self.usize_in(self.m, "state_size")?.unwrap_or(16),
            conv_kernel: self.usize_in(self.m, "conv_kernel")?.unwrap_or(4),
            dt_rank: self.dt_rank_in(self.m, "time_step_rank", hidden)?,
            vocab_size: vocab,
            use_bias: self.bool_in(self.m, "use_bias", false)?,
            use_conv_bias: self.bool_in(self.m, "use_conv_bias", true)?,
            layer_norm_epsilon: self.f32_key("layer_norm_epsilon", 1e-5)?,
            residual_in_fp32: self.bool_in(self.m, "residual_in_fp32", true)?,
            tie_word_embeddings: self.bool_in(self.m, "tie_word_embeddings", true)?,
            eos_token_id: self.token_id("eos_token_id", Some(0))?,
            bos_token_id: self.token_id("bos_token_id", Some(0))?,
            pad_token_id: self.token_id("pad_token_id", Some(0))?,
        })
    }

    /// The original state-spaces `MambaConfig` (mamba_ssm.models.config_mamba).
    fn original(&self) -> Result<MambaConfig> {
        let hidden = self.req_usize("d_model")?;
        let layers = self.req_usize("n_layer")?;
        let vocab = self.req_usize("vocab_size")?;
        if !self.bool_in(self.m, "rms_norm", true)? {
            return Err(
                self.unsupported("rms_norm", "false (LayerNorm models are not implemented)")
            );
        }
        if let Some(d) = self.usize_in(self.m, "d_intermediate")? {
            if d != 0 {
                return Err(self.unsupported(
                    "d_intermediate",
                    format!("{d} (MLP blocks are not implemented)"),
                ));
            }
        }
        if let Some(Value::Array(a)) = self.m.get("attn_layer_idx") {
            if !a.is_empty() {
                return Err(
                    self.unsupported("attn_layer_idx", "attention layers are not implemented")
                );
            }
        }
        let empty = Map::new();
        let ssm = match self.m.get("ssm_cfg") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(v) => return Err(self.err("ssm_cfg", format!("expected an object, got {v}"))),
        };
        if let Some(layer) = Self::get_in(ssm, "layer") {
            if layer.as_str() != Some("Mamba1") {
                return Err(self.unsupported("ssm_cfg", format!("layer {layer} (only Mamba1)")));
            }
        }
        let mult = self
            .usize_in(self.m, "pad_vocab_size_multiple")?
            .unwrap_or(8);
        if mult == 0 {
            return Err(self.err("pad_vocab_size_multiple", "must be positive, got 0"));
        }
        let padded = vocab.div_ceil(mult).checked_mul(mult).ok_or_else(|| {
            self.err(
                "vocab_size",
                format!("{vocab} padded to a multiple of {mult} overflows"),
            )
        })?;
        let expand = self.usize_in(ssm, "expand")?.unwrap_or(2);
        if expand == 0 {
            return Err(self.err("ssm_cfg", "expand must be positive, got 0"));
        }
        let inter = expand.checked_mul(hidden).ok_or_else(|| {
            self.err(
                if hidden >= expand {
                    "d_model"
                } else {
                    "ssm_cfg"
                },
                format!("expand {expand} x d_model {hidden} overflows"),
            )
        })?;
        Ok(MambaConfig {
            hidden_size: hidden,
            num_layers: layers,
            intermediate_size: inter,
            state_size: self.usize_in(ssm, "d_state")?.unwrap_or(16),
            conv_kernel: self.usize_in(ssm, "d_conv")?.unwrap_or(4),
            dt_rank: self.dt_rank_in(ssm, "dt_rank", hidden)?,
            vocab_size: padded,
            use_bias: self.bool_in(ssm, "bias", false)?,
            use_conv_bias: self.bool_in(ssm, "conv_bias", true)?,
            layer_norm_epsilon: self.f32_key("norm_epsilon", 1e-5)?,
            residual_in_fp32: self.bool_in(self.m, "residual_in_fp32", true)?,
            tie_word_embeddings: self.bool_in(self.m, "tie_embeddings", true)?,
            eos_token_id: self.token_id("eos_token_id", None)?,
            bos_token_id: self.token_id("bos_token_id", None)?,
            pad_token_id: self.token_id("pad_token_id", None)?,
        })
    }
}
