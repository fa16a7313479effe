//! 8-bit weights: the Q8_0 format of llama.cpp (ggml), as [`crate::ops::matmul_q8`] reads
//! it. A row of K weights is cut into blocks of [`Q8_BLOCK`] = 32; a block keeps one f16
//! scale `d = max|w| / 127` and 32 int8 values `q = round(w / d)`, so `w ≈ d·q`. That is
//! 34 bytes per 32 weights, about half of bf16's traffic in a decode GEMV, which is bound
//! by reading the weights.
//!
//! Stored as two buffers, so that every backend can bind them (WGSL has no 8-bit type):
//! the quants `(N, K/4)` u32, four int8 per word in little-endian order (weight `4j` in
//! the low byte of word `j`), and the scales `(N, K/32)` f16. The quantizer matches
//! llama.cpp's reference bit for bit (held to gguf-py's `Q8_0` by
//! `tests/fixtures/q8`, written by `tools/make_q8_fixtures.py`).

use half::f16;

use crate::error::{Error, Result};

/// Weights per scale.
pub const Q8_BLOCK: usize = 32;

/// How a backend multiplies activations by Q8_0 weights in [`crate::ops::matmul_q8`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Q8Activations {
    /// f32 activations times the widened weights: the f32 matmul by the dequantized
    /// weights up to the order of the additions. The default everywhere but the fast
    /// CPU backend.
    #[default]
    F32,
    /// Each row of x quantized to Q8_0 blocks first (llama.cpp's rounding: per block
    /// `d = max|x| / 127` kept in f32, `q = round(x / d)`), then integer dot products
    /// scaled by `d_w·d_x`: AVX-512 VNNI or AVX2 on the CPU (decode's GEMV only; its
    /// prefill GEMM keeps f32 activations; the default of `Precision::Fast`), WGSL's
    /// `dot4I8Packed` (hardware integer dot where the device has it, unpacked where not)
    /// and CUDA's `__dp4a`. Adds the activations' rounding, at most half a step of
    /// `max|x| / 127` per block of 32; a block holding a NaN or inf gives non-finite
    /// outputs in its row.
    Int8,
}

/// One matrix in Q8_0, on the host: `q` `(rows, cols/4)` packed int8, `d` `(rows, cols/32)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Q8Matrix {
    pub rows: usize,
    pub cols: usize,
    pub q: Vec<u32>,
    pub d: Vec<f16>,
}

impl Q8Matrix {
    /// Quantizes a row-major `(rows, cols)` f32 matrix as llama.cpp does
    /// (`quantize_row_q8_0_ref`): per block `d = amax / 127`, `q = roundf(w · (1/d))`
    /// (0 where `d = 0`), `d` stored as f16. `cols` must be a multiple of 32, and `w`
    /// finite (a NaN or inf would poison its whole block), with every block's scale in
    /// f16's range (max|w| ≤ 127 · 65504 ≈ 8.3e6).
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Q8Matrix> {
        let arg = |why: String| Error::Arg {
            op: "quantize_q8",
            arg: "w",
            why,
        };
        if cols == 0 || !cols.is_multiple_of(Q8_BLOCK) {
            return Err(arg(format!(
                "K = {cols} columns are not a positive multiple of {Q8_BLOCK}"
            )));
        }
        if rows.checked_mul(cols) != Some(w.len()) {
            return Err(arg(format!(
                "{} values for a ({rows}, {cols}) matrix",
                w.len()
            )));
        }
        if let Some(i) = w.iter().position(|v| !v.is_finite()) {
            return Err(arg(format!(
                "value {} at ({}, {}) is not finite",
                w[i],
                i / cols,
                i % cols
            )));
        }
        let mut q = Vec::with_capacity(w.len() / 4);
        let mut d = Vec::with_capacity(w.len() / Q8_BLOCK);
        let mut b = [0i8; Q8_BLOCK];
        for (i, block) in w.chunks_exact(Q8_BLOCK).enumerate() {
            let scale = f16::from_f32(quantize_block(block, &mut b));
            if scale.is_infinite() {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                return Err(arg(format!(
                    "the block of 32 at ({}, {}) has max |w| = {amax}: its scale \
                     max|w| / 127 is beyond f16's range (65504)",
                    i * Q8_BLOCK / cols,
                    i * Q8_BLOCK % cols
                )));
            }
            d.push(scale);
            for four in b.as_chunks::<4>().0 {
                q.push(u32::from_le_bytes(four.map(|v| v as u8)));
            }
        }
        Ok(Q8Matrix { rows, cols, q, d })
    }

    /// The int8 value of weight `(r, c)`.
    pub fn quant(&self, r: usize, c: usize) -> i8 {
        let word = self.q[(r * self.cols + c) / 4];
        (word >> (8 * (c % 4))) as u8 as i8
    }

    /// `d·q` for every weight, row-major `(rows, cols)`: the matrix the kernels multiply by.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                let d = self.d[(r * self.cols + c) / Q8_BLOCK].to_f32();
                out.push(d * self.quant(r, c) as f32);
            }
        }
        out
    }
}

/// One block of [`Q8_BLOCK`] finite values as llama.cpp's reference quantizer does it:
/// returns `d = amax / 127` (in f32; the weights store it as f16) and writes
/// `q = roundf(v · (1/d))` (0 where `d = 0`). Shared by the weights ([`Q8Matrix`]) and
/// the CPU's int8 activations, so both round the same way.
pub(crate) fn quantize_block(block: &[f32], q: &mut [i8; Q8_BLOCK]) -> f32 {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = amax / 127.0;
    let inv = if scale == 0.0 { 0.0 } else { 1.0 / scale };
    for (o, &v) in q.iter_mut().zip(block) {
        // |v·inv| <= 127 up to rounding: the cast saturates at ±127/128.
        *o = (v * inv).round() as i8;
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let w: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let m = Q8Matrix::quantize(&w, 1, 64).unwrap();
        assert_eq!((m.q.len(), m.d.len()), (16, 2));
        let back = m.dequantize();
        for (blk, (a, b)) in w.chunks(32).zip(back.chunks(32)).enumerate() {
            let d = m.d[blk].to_f32();
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 0.5 * d * 1.01, "{x} vs {y} (d {d})");
            }
        }
        // The largest |weight| of a block maps to ±127: w[0] = -7.4 in the first block,
        // w[63] = 15.91 in the second.
        assert_eq!((m.quant(0, 0), m.quant(0, 63)), (-127, 127));
        assert!(Q8Matrix::quantize(&w, 2, 32).is_ok());
        assert!(Q8Matrix::quantize(&w, 1, 48).is_err());
        assert!(Q8Matrix::quantize(&w, 3, 32).is_err());
        let mut bad = w.clone();
        bad[5] = f32::NAN;
        let e = Q8Matrix::quantize(&bad, 1, 64).unwrap_err().to_string();
        assert!(e.contains("(0, 5)"), "{e}");
        // A finite block whose scale max|w| / 127 overflows f16 (the largest that fits:
        // 127 · 65504; f16 rounds 1e7 / 127 ≈ 78740 to inf).
        let mut big = w.clone();
        big[40] = 127.0 * 65504.0;
        assert!(Q8Matrix::quantize(&big, 1, 64).is_ok());
        big[40] = 1e7;
        let e = Q8Matrix::quantize(&big, 1, 64).unwrap_err().to_string();
        assert!(e.contains("(0, 32)") && e.contains("f16"), "{e}");
    }
}
