//! Scoring text: the mean next-token negative log-likelihood of a sequence, the number
//! behind a validation loss or a perplexity (`exp` of it), as decode computes it.

use super::mamba::MambaModel;
use crate::backend::Backend;
use crate::error::{Error, Result};

impl<B: Backend> MambaModel<B> {
    /// Mean next-token cross-entropy of `ids` in nats per token: from a fresh state, one
    /// decode step per id (so with the decode path's numerics, e.g. the CPU's int8
    /// activations for Q8_0 weights), each step's logits scored against the next id by
    /// a log-softmax in f64. `ids.len() - 1` predictions; at least two ids are needed.
    pub fn mean_nll(&self, ids: &[u32]) -> Result<f64> {
        if ids.len() < 2 {
            return Err(Error::Arg {
                op: "mean_nll",
                arg: "ids",
                why: format!("{} ids: scoring needs at least 2", ids.len()),
            });
        }
        self.check_ids(&[ids])?;
        let mut st = self.new_state(1)?;
        let mut total = 0f64;
        for w in ids.windows(2) {
            self.step(&mut st, &w[..1])?;
            let logits = self.download_logits(&st)?;
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = max
                + logits
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            total += lse - logits[w[1] as usize] as f64;
        }
        Ok(total / (ids.len() - 1) as f64)
    }
}
