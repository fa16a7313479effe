//! Reading Mamba-2 configs: transformers' `Mamba2Config` (`model_type: "mamba2"`) and
//! the original mamba_ssm layout (`ssm_cfg: {"layer": "Mamba2", ...}`).
//!
//! What is not implemented is refused with a typed error naming the key, never run
//! with other numbers: a Δ clamp other than (0, ∞), `rms_norm: false`, a norm before
//! the gate, a per-channel D, an MLP part in `in_proj`.

use serde_json::{Map, Value};

use super::config::{Family, MAX_TENSOR_ELEMS, Mamba2Dims, MambaConfig, Reader};
use crate::error::{Error, Result};

impl Reader<'_> {
    /// `vocab_size` rounded up to `pad_vocab_size_multiple` (default 8), as mamba_ssm
    /// sizes its embedding table.
    pub(super) fn padded_vocab(&self, vocab: usize) -> Result<usize> {
        let mult = self
            .usize_in(self.m, "pad_vocab_size_multiple")?
            .unwrap_or(8);
        if mult == 0 {
            return Err(self.err("pad_vocab_size_multiple", "must be positive, got 0"));
        }
        vocab.div_ceil(mult).checked_mul(mult).ok_or_else(|| {
            self.err(
                "vocab_size",
                format!("{vocab} padded to a multiple of {mult} overflows"),
            )
        })
    }

    /// A `[low, high]` Δ clamp: only (≤ 0, +∞) is accepted. Δ = softplus(·) ≥ 0, so
    /// such a clamp changes nothing; any other would need a clamp in the scan.
    fn dt_limit(&self, m: &Map<String, Value>, key: &'static str) -> Result<()> {
        let Some(v) = Self::get_in(m, key) else {
            return Ok(());
        };
        let pair = match v {
            Value::Array(a) if a.len() == 2 => (Self::f64_value(&a[0]), Self::f64_value(&a[1])),
            _ => (None, None),
        };
        match pair {
            (Some(lo), Some(hi)) if lo.is_nan() || hi.is_nan() || lo > hi => {
                Err(self.err(key, format!("{v} is not an interval")))
            }
            (Some(lo), Some(hi)) if lo <= 0.0 && hi == f64::INFINITY => Ok(()),
            (Some(_), Some(_)) => Err(self.unsupported(
                key,
                format!("{v}: clamping the time step is not implemented (only [0, Infinity])"),
            )),
            _ => Err(self.err(key, format!("expected [low, high], got {v}"))),
        }
    }

    fn positive(&self, m: &Map<String, Value>, key: &'static str, default: usize) -> Result<usize> {
        match self.usize_in(m, key)?.unwrap_or(default) {
            0 => Err(self.err(key, "must be positive, got 0")),
            n => Ok(n),
        }
    }

    /// transformers' `Mamba2Config`; missing keys take its defaults.
    pub(super) fn hf_mamba2(&self) -> Result<MambaConfig> {
        if let Some(act) = Self::get_in(self.m, "hidden_act")
            && act.as_str() != Some("silu")
        {
            return Err(self.unsupported("hidden_act", format!("{act} (only \"silu\")")));
        }
        if !self.bool_in(self.m, "rms_norm", true)? {
            return Err(self.unsupported(
                "rms_norm",
                "false (the ungated output without the grouped norm is not implemented)",
            ));
        }
        self.dt_limit(self.m, "time_step_limit")?;
        let hidden = self.req_usize("hidden_size")?;
        let expand = self.positive(self.m, "expand", 2)?;
        let heads = self.positive(self.m, "num_heads", 128)?;
        let head_dim = self.positive(self.m, "head_dim", 64)?;
        let inter = expand.checked_mul(hidden);
        if inter.is_none() || inter != heads.checked_mul(head_dim) {
            return Err(Error::ConfigInconsistent {
                file: self.file.into(),
                key: "num_heads",
                other: "hidden_size",
                why: format!(
                    "hidden_size {hidden} x expand {expand} must equal num_heads {heads} x head_dim {head_dim}"
                ),
            });
        }
        let eps = self.f32_key("layer_norm_epsilon", 1e-5)?;
        let m2 = Mamba2Dims {
            num_heads: heads,
            head_dim,
            n_groups: self.positive(self.m, "n_groups", 8)?,
            chunk_size: self.positive(self.m, "chunk_size", 256)?,
            gated_norm_eps: eps,
        };
        Ok(MambaConfig {
            family: Family::Mamba2(m2),
            hidden_size: hidden,
            num_layers: self.req_usize("num_hidden_layers")?,
            intermediate_size: heads * head_dim,
            state_size: self.usize_in(self.m, "state_size")?.unwrap_or(128),
            conv_kernel: self.usize_in(self.m, "conv_kernel")?.unwrap_or(4),
            dt_rank: heads,
            vocab_size: self.req_usize("vocab_size")?,
            use_bias: self.bool_in(self.m, "use_bias", false)?,
            use_conv_bias: self.bool_in(self.m, "use_conv_bias", true)?,
            layer_norm_epsilon: eps,
            residual_in_fp32: self.bool_in(self.m, "residual_in_fp32", true)?,
            tie_word_embeddings: self.bool_in(self.m, "tie_word_embeddings", false)?,
            eos_token_id: self.token_id("eos_token_id", Some(2))?,
            bos_token_id: self.token_id("bos_token_id", Some(0))?,
            pad_token_id: self.token_id("pad_token_id", Some(1))?,
        })
    }

    /// The original mamba_ssm layout with `ssm_cfg.layer == "Mamba2"`; missing keys take
    /// the defaults of mamba_ssm's `Mamba2` module (d_state 128, headdim 64, ngroups 1,
    /// the gated norm's epsilon 1e-5).
    pub(super) fn original_mamba2(
        &self,
        ssm: &Map<String, Value>,
        hidden: usize,
        layers: usize,
        vocab: usize,
    ) -> Result<MambaConfig> {
        let refuse = |cond: bool, why: &str| {
            if cond {
                Err(self.unsupported("ssm_cfg", why.to_string()))
            } else {
                Ok(())
            }
        };
        refuse(
            !self.bool_in(ssm, "rmsnorm", true)?,
            "rmsnorm false (the output without the grouped norm is not implemented)",
        )?;
        refuse(
            self.bool_in(ssm, "norm_before_gate", false)?,
            "norm_before_gate true is not implemented",
        )?;
        refuse(
            self.bool_in(ssm, "D_has_hdim", false)?,
            "D_has_hdim true (a D per channel) is not implemented",
        )?;
        self.dt_limit(ssm, "dt_limit")?;
        let expand = self.positive(ssm, "expand", 2)?;
        let inter = expand.checked_mul(hidden).ok_or_else(|| {
            self.err(
                "ssm_cfg",
                format!("expand {expand} x d_model {hidden} overflows"),
            )
        })?;
        if let Some(d_ssm) = self.usize_in(ssm, "d_ssm")? {
            refuse(
                d_ssm != inter,
                "d_ssm other than expand x d_model (a partial SSM) is not implemented",
            )?;
        }
        let head_dim = self.positive(ssm, "headdim", 64)?;
        if inter % head_dim != 0 {
            return Err(self.err(
                "ssm_cfg",
                format!("headdim {head_dim} does not divide d_inner {inter}"),
            ));
        }
        let heads = inter / head_dim;
        let m2 = Mamba2Dims {
            num_heads: heads,
            head_dim,
            n_groups: self.positive(ssm, "ngroups", 1)?,
            chunk_size: self.positive(ssm, "chunk_size", 256)?,
            gated_norm_eps: 1e-5,
        };
        Ok(MambaConfig {
            family: Family::Mamba2(m2),
            hidden_size: hidden,
            num_layers: layers,
            intermediate_size: inter,
            state_size: self.usize_in(ssm, "d_state")?.unwrap_or(128),
            conv_kernel: self.usize_in(ssm, "d_conv")?.unwrap_or(4),
            dt_rank: heads,
            vocab_size: vocab,
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

impl MambaConfig {
    /// Mamba-2's own consistency: groups divide the heads, and the `in_proj` rows
    /// (`2E + 2GN + H`) fit in a tensor.
    pub(super) fn check_mamba2(&self, file: &str, m2: &Mamba2Dims) -> Result<()> {
        if !m2.num_heads.is_multiple_of(m2.n_groups) {
            return Err(Error::ConfigInconsistent {
                file: file.into(),
                key: "n_groups",
                other: "num_heads",
                why: format!(
                    "{} groups do not divide {} heads",
                    m2.n_groups, m2.num_heads
                ),
            });
        }
        if !(m2.gated_norm_eps.is_finite() && m2.gated_norm_eps > 0.0) {
            return Err(Error::ConfigValue {
                file: file.into(),
                key: "layer_norm_epsilon",
                why: format!("{} is not a positive number", m2.gated_norm_eps),
            });
        }
        let (e, n, g, h, d) = (
            self.intermediate_size,
            self.state_size,
            m2.n_groups,
            m2.num_heads,
            self.hidden_size,
        );
        let rows = g
            .checked_mul(n)
            .and_then(|gn| gn.checked_mul(2))
            .and_then(|x| x.checked_add(e.checked_mul(2)?))
            .and_then(|x| x.checked_add(h))
            .and_then(|x| x.checked_mul(d))
            .filter(|&x| x <= MAX_TENSOR_ELEMS);
        if rows.is_none() {
            return Err(Error::ConfigValue {
                file: file.into(),
                key: "n_groups",
                why: format!(
                    "in_proj (2 x {e} + 2 x {g} x {n} + {h}) x {d} overflows the largest tensor this crate loads ({MAX_TENSOR_ELEMS} elements)"
                ),
            });
        }
        Ok(())
    }
}
