//! `MambaConfig`: the model hyper-parameters, read from a Hugging Face `config.json`
//! (`MambaForCausalLM`, `FalconMambaForCausalLM`, `Mamba2ForCausalLM`) or from the
//! original state-spaces `config.json` (Mamba-1 or Mamba-2 layers).
//!
//! Values are validated here, once, with errors naming the file and the key. The
//! bare tokens `Infinity`, `-Infinity` and `NaN` that Python's json writes (transformers
//! saves Mamba-2's `time_step_limit` as `[0.0, Infinity]`) are read as Python reads them.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The mixer the layers use: the Mamba family of the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Family {
    /// Mamba-1 (`model_type: "mamba"`, state-spaces `Mamba1`).
    Mamba1,
    /// Falcon-Mamba (`model_type: "falcon_mamba"`): Mamba-1 plus weightless RMS norms
    /// (epsilon `mixer_rms_eps`) on B and C over the state axis and on the Δ input
    /// over `dt_rank`, before `dt_proj`.
    FalconMamba { mixer_rms_eps: f32 },
    /// Mamba-2 (`model_type: "mamba2"`, state-spaces `Mamba2`): per-head scalar A, D
    /// and Δ bias; B/C in `n_groups` groups, produced by `in_proj` and passed through
    /// the causal conv with x; the output `out_proj(rmsnorm_grouped(y · silu(z)))`.
    Mamba2(Mamba2Dims),
}

/// The Mamba-2 sizes beyond Mamba-1's. `intermediate_size = num_heads · head_dim`; the
/// Δ projection has one row per head (`MambaConfig::dt_rank` is `num_heads`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mamba2Dims {
    pub num_heads: usize,
    pub head_dim: usize,
    /// G: head h reads B/C group `h / (num_heads / G)`; the gated norm's RMS is taken
    /// per group of `intermediate_size / G` channels.
    pub n_groups: usize,
    /// The SSD chunk length of the reference kernels (no effect on the result).
    pub chunk_size: usize,
    /// Epsilon of the gated grouped norm (transformers: `layer_norm_epsilon`;
    /// mamba_ssm: 1e-5).
    pub gated_norm_eps: f32,
}

impl Family {
    /// A short name for messages and benchmark rows.
    pub fn name(&self) -> &'static str {
        match self {
            Family::Mamba1 => "mamba",
            Family::FalconMamba { .. } => "falcon_mamba",
            Family::Mamba2(_) => "mamba2",
        }
    }
}

/// Hyper-parameters of a Mamba language model (Mamba-1, Falcon-Mamba or Mamba-2; see
/// [`Family`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MambaConfig {
    /// The mixer of every layer.
    pub family: Family,
    /// d_model.
    pub hidden_size: usize,
    pub num_layers: usize,
    /// E = expand · d_model: the width of the mixer.
    pub intermediate_size: usize,
    /// N, the SSM state size per channel.
    pub state_size: usize,
    /// K, the causal conv1d width (≥ 2).
    pub conv_kernel: usize,
    /// R, the rank of the Δ projection (Mamba-2: the number of heads, one Δ each).
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

    /// The config in a GGUF file's metadata (`general.architecture` `mamba` or `mamba2`;
    /// the vocabulary size is the embedding's row count, the head is tied when the file
    /// has no `output.weight`); `file` names it in errors.
    pub fn from_gguf_bytes(bytes: &[u8], file: &str) -> Result<Self> {
        super::gguf_model::config(&super::gguf::GgufFile::parse(bytes, file)?)
    }

    /// Parses and validates config JSON; `file` names it in errors.
    pub fn from_json_bytes(bytes: &[u8], file: &str) -> Result<Self> {
        let bytes = quote_python_numbers(bytes);
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| Error::ConfigJson {
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
            match Reader::get_in(&m, "model_type").and_then(Value::as_str) {
                Some("mamba2") => r.hf_mamba2()?,
                _ => r.hf()?,
            }
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// `ceil(hidden / 16)`, the "auto" Δ rank of both layouts.
    pub fn auto_dt_rank(hidden_size: usize) -> usize {
        hidden_size.div_ceil(16)
    }

    pub(super) fn validate(&self, file: &str) -> Result<()> {
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
            if let Some(id) = id
                && id as usize >= self.vocab_size
            {
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
        self.check_sizes(file)?;
        if let Family::Mamba2(m2) = self.family {
            self.check_mamba2(file, &m2)?;
        }
        Ok(())
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

/// Python's json writes the floats inf and nan as the bare tokens `Infinity`,
/// `-Infinity` and `NaN`, which JSON has not; here they become the strings
/// `"Infinity"`, `"-Infinity"` and `"NaN"` (outside string literals only), which the
/// number readers accept (`Reader::f64_value`). Everything else is left as it is.
fn quote_python_numbers(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !(bytes.windows(3).any(|w| w == b"NaN") || bytes.windows(8).any(|w| w == b"Infinity")) {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let (mut in_str, mut esc, mut i) = (false, false, 0);
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            out.push(c);
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let rest = &bytes[i..];
        if let Some(tok) = [&b"-Infinity"[..], b"Infinity", b"NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push(b'"');
            out.extend_from_slice(tok);
            out.push(b'"');
            i += tok.len();
            continue;
        }
        in_str = c == b'"';
        out.push(c);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

pub(super) struct Reader<'a> {
    pub(super) file: &'a str,
    pub(super) m: &'a Map<String, Value>,
}

impl Reader<'_> {
    /// A number, or one of Python's `"Infinity"`, `"-Infinity"`, `"NaN"`.
    pub(super) fn f64_value(v: &Value) -> Option<f64> {
        match v {
            Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
            Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
            Value::String(s) if s == "NaN" => Some(f64::NAN),
            v => v.as_f64(),
        }
    }

    pub(super) fn err(&self, key: &'static str, why: impl Into<String>) -> Error {
        Error::ConfigValue {
            file: self.file.into(),
            key,
            why: why.into(),
        }
    }

    pub(super) fn get_in<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
        m.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn usize_in(
        &self,
        m: &Map<String, Value>,
        key: &'static str,
    ) -> Result<Option<usize>> {
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

    pub(super) fn req_usize(&self, key: &'static str) -> Result<usize> {
        self.usize_in(self.m, key)?.ok_or(Error::ConfigMissing {
            file: self.file.into(),
            key,
        })
    }

    pub(super) fn bool_in(
        &self,
        m: &Map<String, Value>,
        key: &'static str,
        default: bool,
    ) -> Result<bool> {
        match Self::get_in(m, key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(key, format!("expected true or false, got {v}"))),
        }
    }

    pub(super) fn f32_key(&self, key: &'static str, default: f32) -> Result<f32> {
        match Self::get_in(self.m, key) {
            None => Ok(default),
            Some(v) => Self::f64_value(v)
                .map(|x| x as f32)
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }

    /// A token id: an integer, a list of integers (the first is used), or null.
    pub(super) fn token_id(&self, key: &'static str, default: Option<u32>) -> Result<Option<u32>> {
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
    pub(super) fn dt_rank_in(
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

    pub(super) fn unsupported(&self, key: &'static str, why: impl Into<String>) -> Error {
        Error::ConfigUnsupported {
            file: self.file.into(),
            key,
            why: why.into(),
        }
    }

    /// transformers' `MambaConfig` (model_type "mamba", the default when the key is
    /// absent) and `FalconMambaConfig` ("falcon_mamba").
    fn hf(&self) -> Result<MambaConfig> {
        let falcon = match Self::get_in(self.m, "model_type") {
            None => false,
            Some(t) => match t.as_str() {
                Some("mamba") => false,
                Some("falcon_mamba") => true,
                _ => {
                    return Err(self.unsupported(
                        "model_type",
                        format!("{t} (\"mamba\", \"falcon_mamba\" and \"mamba2\" are implemented)"),
                    ));
                }
            },
        };
        if let Some(act) = Self::get_in(self.m, "hidden_act")
            && act.as_str() != Some("silu")
        {
            return Err(self.unsupported("hidden_act", format!("{act} (only \"silu\")")));
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
            // FalconMambaConfig takes intermediate_size as given (falcon-mamba-7b says
            // expand 16 with intermediate_size 8192 = 2 x 4096).
            Some(e) if falcon => e,
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
        let family = if falcon {
            let eps = self.f32_key("mixer_rms_eps", 1e-6)?;
            if !(eps.is_finite() && eps > 0.0) {
                return Err(self.err("mixer_rms_eps", format!("{eps} is not a positive number")));
            }
            Family::FalconMamba { mixer_rms_eps: eps }
        } else {
            Family::Mamba1
        };
        Ok(MambaConfig {
            family,
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
        if let Some(d) = self.usize_in(self.m, "d_intermediate")?
            && d != 0
        {
            return Err(self.unsupported(
                "d_intermediate",
                format!("{d} (MLP blocks are not implemented)"),
            ));
        }
        if let Some(Value::Array(a)) = self.m.get("attn_layer_idx")
            && !a.is_empty()
        {
            return Err(self.unsupported("attn_layer_idx", "attention layers are not implemented"));
        }
        let empty = Map::new();
        let ssm = match self.m.get("ssm_cfg") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(v) => return Err(self.err("ssm_cfg", format!("expected an object, got {v}"))),
        };
        let padded = self.padded_vocab(vocab)?;
        match Self::get_in(ssm, "layer").map(|l| (l, l.as_str())) {
            None | Some((_, Some("Mamba1"))) => {}
            Some((_, Some("Mamba2"))) => return self.original_mamba2(ssm, hidden, layers, padded),
            Some((layer, _)) => {
                return Err(self.unsupported(
                    "ssm_cfg",
                    format!("layer {layer} (Mamba1 and Mamba2 are implemented)"),
                ));
            }
        }
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
            family: Family::Mamba1,
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
