//! The fused decode step of a Mamba-1 model (see [`crate::ops::mixer_in`] and the
//! module docs of `src/ops/decode.rs`): four ops per layer instead of ten.
//!
//! ```text
//! residual = embedding(ids)
//! per layer:  xc, z = mixer_in(residual);  dbc = x_proj(xc)
//!             y = ssm_step(xc, dbc, z);     residual += out_proj(y)
//! logits = lm_head(rmsnorm_f(residual))
//! ```
//!
//! Falcon-Mamba is the same step with its weightless norms of Δ_low, B and C inside
//! `ssm_step`. It is taken for layers without in_proj bias, for at most
//! [`ops::FUSED_MAX_BATCH`] sequences, on backends with the fused ops whose bindings
//! hold every projection; otherwise (and with [`MambaModel::set_fused_decode`]`(false)`)
//! the step runs the unfused ops.

use super::MambaModel;
use crate::backend::{Backend, DeviceBuffer};
use crate::error::{Error, Result};
use crate::model::Linear;
use crate::model::config::Family;
use crate::model::state::StepScratch;
use crate::ops;

impl<B: Backend> MambaModel<B> {
    /// Turns the fused decode step on (the default, where it applies) or off.
    pub fn set_fused_decode(&mut self, on: bool) {
        self.fused_decode = on;
    }

    /// Does a decode step of `batch` sequences take the fused ops?
    pub fn uses_fused_decode(&self, batch: usize) -> bool {
        let Some(limit) = self.be.fused_step_max_weight_bytes() else {
            return false;
        };
        let fits = |b: &B::Buffer| (b.numel() * b.dtype().size()) as u64 <= limit;
        self.fused_decode
            && matches!(self.cfg.family, Family::Mamba1 | Family::FalconMamba { .. })
            && batch <= ops::FUSED_MAX_BATCH
            && self.w.layers.iter().all(|lw| {
                lw.b_x.is_none()
                    && lw.b_z.is_none()
                    && lw.mamba2.is_none()
                    && lw.dt_proj.as_ref().is_some_and(fits)
                    && [lw.w_x.float(), lw.w_z.float(), lw.out_w.float()]
                        .into_iter()
                        .all(|w| w.is_some_and(fits))
                    && [&lw.w_dt, &lw.w_b, &lw.w_c].into_iter().all(fits)
            })
    }

    /// Embedding → fused layers → final norm → LM head for one token per sequence.
    pub(super) fn forward_step_fused(
        &self,
        conv: &mut [Vec<B::Buffer>],
        ssm: &mut [B::Buffer],
        s: &mut StepScratch<B>,
    ) -> Result<()> {
        let be = &self.be;
        let eps = self.cfg.layer_norm_epsilon;
        let StepScratch {
            act: a,
            logits,
            ids,
            dbc,
        } = s;
        ops::embedding(be, ids, &self.w.embedding, &mut a.residual)?;
        for ((lw, conv), ssm) in self.w.layers.iter().zip(conv).zip(ssm) {
            let state = conv.first_mut().ok_or(crate::Error::Arg {
                op: "decode step",
                arg: "conv_state",
                why: "no conv state for the layer".into(),
            })?;
            let inputs = ops::MixerInInputs {
                h: &a.residual,
                norm_w: &lw.norm,
                eps,
                w_x: float(&lw.w_x)?,
                w_z: float(&lw.w_z)?,
                conv_w: &lw.conv_w,
                conv_b: lw.conv_b.as_ref(),
            };
            ops::mixer_in(be, &inputs, state, &mut a.xc, &mut a.z)?;
            ops::x_proj(be, &a.xc, &lw.w_dt, &lw.w_b, &lw.w_c, dbc)?;
            let dt_proj = lw.dt_proj.as_ref().ok_or(crate::Error::Arg {
                op: "decode step",
                arg: "dt_proj",
                why: "the fused step needs dt_proj".into(),
            })?;
            let inputs = ops::SsmStepInputs {
                xc: &a.xc,
                dbc,
                z: &a.z,
                dt_proj,
                dt_bias: &lw.dt_bias,
                a: &lw.a,
                d: &lw.d,
                norm_eps: match self.cfg.family {
                    Family::FalconMamba { mixer_rms_eps } => Some(mixer_rms_eps),
                    _ => None,
                },
            };
            ops::ssm_step(be, &inputs, ssm, &mut a.y)?;
            ops::matmul_accumulate(
                be,
                &a.y,
                float(&lw.out_w)?,
                lw.out_b.as_ref(),
                &mut a.residual,
            )?;
        }
        ops::rms_norm(be, &a.residual, &self.w.norm_f, eps, None, &mut a.normed)?;
        self.lm_head_matmul(&a.normed, logits)
    }
}

/// The float matrix of a projection the fused ops take (`uses_fused_decode` admits no
/// Q8_0 layer, so this only fails if that check was skipped).
fn float<B: Backend>(w: &Linear<B>) -> Result<&B::Buffer> {
    w.float().ok_or_else(|| Error::Device {
        backend: "model",
        why: "the fused decode step was given Q8_0 weights".into(),
    })
}
