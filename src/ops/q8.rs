//! The front door of the matmul with 8-bit weights ([`matmul_q8`]).

use super::MatmulQ8Call;
use super::check::*;
use crate::backend::{Backend, DeviceBuffer};
use crate::error::{Error, Result};
use crate::params::MatmulParams;
use crate::quant::Q8_BLOCK;
use crate::tensor::DType;

/// `out = x · wᵀ (+ bias)` with `w` in Q8_0 ([`crate::quant`]): `q` `(N, K/4)` u32
/// (packed int8), `d` `(N, K/32)` f16; x `(..., K)` and out `(..., N)` f32, bias `(N)`
/// in any float dtype. Exactly the f32 matmul by the dequantized weights `d·q`: the
/// activations stay f32 (no second rounding), so the result is held to
/// [`super::matmul`] of [`crate::quant::Q8Matrix::dequantize`]. Backends without it
/// return [`Error::Limit`]; see [`Backend::has_matmul_q8`].
pub fn matmul_q8<Bk: Backend>(
    be: &Bk,
    x: &Bk::Buffer,
    q: &Bk::Buffer,
    d: &Bk::Buffer,
    bias: Option<&Bk::Buffer>,
    out: &mut Bk::Buffer,
) -> Result<()> {
    const OP: &str = "matmul_q8";
    check_f32(OP, "x", x)?;
    check_dtype(OP, "q", q, &[DType::U32], "u32 (four int8 per word)")?;
    rank(OP, "q", q, 2, "(N, K/4)")?;
    nonzero(OP, "q", q.shape(), &["N", "K/4"])?;
    let (n, k4) = (q.shape()[0], q.shape()[1]);
    let k = k4.checked_mul(4).ok_or_else(|| Error::Arg {
        op: OP,
        arg: "q",
        why: format!("K = 4 x {k4} overflows"),
    })?;
    if k % Q8_BLOCK != 0 {
        return Err(shape_err(
            OP,
            "q",
            q,
            format!("(N, K/4) with K a multiple of {Q8_BLOCK}, got K = {k}"),
        ));
    }
    check_dtype(OP, "d", d, &[DType::F16], "f16")?;
    check_shape(OP, "d", d, &[n, k / Q8_BLOCK])?;
    let w = format!("q {:?} (K = 4 x {k4})", q.shape());
    let (m, has_bias) = super::matmul_io(OP, x, [n, k], &w, bias, out)?;
    for (name, t) in [("x", x), ("q", q), ("d", d), ("out", out)] {
        check_numel(OP, name, t)?;
    }
    let [m, n, k] = u32s(OP, [m, n, k])?;
    let p = MatmulParams {
        m,
        n,
        k,
        has_bias,
        accumulate: 0,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    if !be.has_matmul_q8() {
        return Err(Error::limit(
            be.name(),
            OP,
            "q",
            "this backend has no matmul_q8 kernel yet (Backend::has_matmul_q8)",
        ));
    }
    be.matmul_q8(MatmulQ8Call {
        p: &p,
        x,
        q,
        d,
        bias,
        out,
    })
}
