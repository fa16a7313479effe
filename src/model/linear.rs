//! Projection matrices as the model stores them: in a float dtype, or in Q8_0
//! (`WeightDType::Q8_0`, quantized at load, or a GGUF file's Q8_0 blocks as they are;
//! format in [`crate::quant`]).

use super::tensor_io::{Q8_BLOCK_BYTES, SrcDType};
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
/// in `dtype`, as llama.cpp keeps them), else in `dtype`. A Q8_0 tensor (GGUF) keeps
/// its own blocks: ggml's `block_q8_0` is our layout (f16 `d`, 32 int8 `q`), and our
/// quantizer is ggml's reference, so a float file quantized here and the same file
/// converted to Q8_0 by llama.cpp give the same bits.
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
    if t.dtype == SrcDType::Q8_0 {
        return q8_blocks(be, t, start, [n, k]);
    }
    let w = to_f32(t, start, n * k);
    let m = Q8Matrix::quantize(&w, n, k).map_err(|e| {
        let (file, tensor) = (t.file.clone(), t.name.clone());
        let why = format!("cannot be quantized to Q8_0: {e}");
        // Only reached with `allow_non_finite` (the loader refused them before), or
        // for a finite block whose scale overflows.
        match w.iter().all(|v| v.is_finite()) {
            true => Error::WeightValue { file, tensor, why },
            false => Error::NonFiniteWeight { file, tensor, why },
        }
    })?;
    Ok(Linear::Q8 {
        q: be.upload(HostSlice::U32(&m.q), &[n, k / 4])?,
        d: be.upload(HostSlice::F16(&m.d), &[n, k / Q8_BLOCK])?,
    })
}

/// Uploads the Q8_0 blocks of rows `[start / k, start / k + n)` (whole blocks: `k` and
/// `start` are multiples of 32) as our two buffers: the quants packed four to a u32
/// (little-endian, weight `4j` in the low byte of word `j`) and the f16 scales.
fn q8_blocks<B: Backend>(
    be: &B,
    t: &Found<'_>,
    start: usize,
    [n, k]: [usize; 2],
) -> Result<Linear<B>> {
    let first = start / Q8_BLOCK;
    let blocks = n * k / Q8_BLOCK;
    let bytes = &t.bytes[first * Q8_BLOCK_BYTES..(first + blocks) * Q8_BLOCK_BYTES];
    let mut q = Vec::with_capacity(n * k / 4);
    let mut d = Vec::with_capacity(blocks);
    for b in bytes.chunks_exact(Q8_BLOCK_BYTES) {
        d.push(half::f16::from_le_bytes([b[0], b[1]]));
        q.extend(
            b[2..]
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])),
        );
    }
    Ok(Linear::Q8 {
        q: be.upload(HostSlice::U32(&q), &[n, k / 4])?,
        d: be.upload(HostSlice::F16(&d), &[n, k / Q8_BLOCK])?,
    })
}
