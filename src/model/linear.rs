//! Projection matrices as the model stores them: in a float dtype, or in Q8_0
//! (`WeightDType::Q8_0`, quantized at load; format in [`crate::quant`]).

use super::weights::{Found, to_f32, upload};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops;
use crate::quant::{Q8_BLOCK, Q8Matrix};
use crate::tensor::{DType, HostSlice};

/// One projection `(N, K)`: `out = x · wᵀ (+ bias)` by [`Linear::matmul`].
pub enum Linear<B: Backend> {
    /// f32, f16 or bf16 ([`ops::matmul`]).
    Float(B::Buffer),
    /// Q8_0: quants `(N, K/4)` u32 and scales `(N, K/32)` f16 ([`ops::matmul_q8`]).
    Q8 { q: B::Buffer, d: B::Buffer },
}

impl<B: Backend> Linear<B> {
    pub fn matmul(
        &self,
        be: &B,
        x: &B::Buffer,
        bias: Option<&B::Buffer>,
        out: &mut B::Buffer,
    ) -> Result<()> {
        match self {
            Linear::Float(w) => ops::matmul(be, x, w, bias, out),
            Linear::Q8 { q, d } => ops::matmul_q8(be, x, q, d, bias, out),
        }
    }

    /// The float matrix, for the ops that take one (the fused decode step); `None` in Q8_0.
    pub fn float(&self) -> Option<&B::Buffer> {
        match self {
            Linear::Float(w) => Some(w),
            Linear::Q8 { .. } => None,
        }
    }
}

/// Elements `[start, start + n·k)` of a checkpoint tensor as an `(n, k)` projection: in
/// Q8_0 when `q8` and K is a multiple of 32 (others, such as a dt_proj of rank 48, stay
/// in `dtype`, as llama.cpp keeps them), else in `dtype`.
pub(super) fn upload_linear<B: Backend>(
    be: &B,
    t: &Found<'_>,
    start: usize,
    [n, k]: [usize; 2],
    dtype: DType,
    q8: bool,
) -> Result<Linear<B>> {
    if !q8 || k % Q8_BLOCK != 0 {
        return Ok(Linear::Float(upload(be, t, start, n * k, &[n, k], dtype)?));
    }
    let w = to_f32(t, start, n * k);
    let m = Q8Matrix::quantize(&w, n, k).map_err(|e| Error::NonFiniteWeight {
        file: t.file.clone(),
        tensor: t.name.clone(),
        why: format!("cannot be quantized to Q8_0: {e}"),
    })?;
    Ok(Linear::Q8 {
        q: be.upload(HostSlice::U32(&m.q), &[n, k / 4])?,
        d: be.upload(HostSlice::F16(&m.d), &[n, k / Q8_BLOCK])?,
    })
}
