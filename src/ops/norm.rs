//! The front doors of the RMS norms: the plain one (with the fused residual add) and
//! Mamba-2's grouped one. One validation serves both.

use super::NormCall;
use super::check::*;
use crate::backend::{Backend, DeviceBuffer};
use crate::error::{Error, Result};
use crate::params::NormParams;

/// RMSNorm over the last dim: `out = x / sqrt(mean(x²) + eps) · weight`. With a
/// residual (the fused add-norm of mamba_ssm): first `residual += x`, then
/// `out = rmsnorm(residual)`. x, residual, out f32 `(..., dim)`; weight `(dim)` float.
pub fn rms_norm<Bk: Backend>(
    be: &Bk,
    x: &Bk::Buffer,
    weight: &Bk::Buffer,
    eps: f32,
    residual: Option<&mut Bk::Buffer>,
    out: &mut Bk::Buffer,
) -> Result<()> {
    let p = params("rms_norm", x, weight, eps, 1, residual.as_deref(), out)?;
    be.rms_norm(NormCall {
        p: &p,
        x,
        weight,
        residual,
        out,
    })
}

/// Mamba-2's grouped RMSNorm (`RMSNormGated` of mamba_ssm with `group_size = dim / groups`,
/// the gate already applied): each row of x `(..., dim)` is split into `groups`
/// segments of `dim / groups` values, each normalised by its own RMS, then scaled by
/// `weight (dim)`. `groups = 1` is [`rms_norm`] without a residual.
pub fn rms_norm_grouped<Bk: Backend>(
    be: &Bk,
    x: &Bk::Buffer,
    weight: &Bk::Buffer,
    eps: f32,
    groups: usize,
    out: &mut Bk::Buffer,
) -> Result<()> {
    let p = params("rms_norm_grouped", x, weight, eps, groups, None, out)?;
    be.rms_norm(NormCall {
        p: &p,
        x,
        weight,
        residual: None,
        out,
    })
}

/// Validates a norm call and builds its parameters: rows of `groups` segments of
/// `dim / groups` values (see [`NormParams`]).
fn params<B: DeviceBuffer>(
    op: &'static str,
    x: &B,
    weight: &B,
    eps: f32,
    groups: usize,
    residual: Option<&B>,
    out: &B,
) -> Result<NormParams> {
    check_f32(op, "x", x)?;
    check_dtype(op, "weight", weight, FLOATS, "f32, f16 or bf16")?;
    rank(op, "weight", weight, 1, "(dim)")?;
    let dim = weight.shape()[0];
    if groups == 0 || !dim.is_multiple_of(groups) {
        return Err(Error::Arg {
            op,
            arg: "groups",
            why: format!("{groups} groups do not divide the row of {dim} values"),
        });
    }
    let xs = x.shape();
    if xs.is_empty() || xs[xs.len() - 1] != dim {
        return Err(shape_err(
            op,
            "x",
            x,
            format!("(..., {dim}) to match the weight"),
        ));
    }
    nonzero(op, "x", xs, &[])?;
    check_numel(op, "x", x)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::Arg {
            op,
            arg: "eps",
            why: format!("{eps} is not a finite non-negative number"),
        });
    }
    if let Some(r) = residual {
        check_f32(op, "residual", r)?;
        check_shape(op, "residual", r, xs)?;
    }
    check_f32(op, "out", out)?;
    check_shape(op, "out", out, xs)?;
    let seg = dim / groups;
    Ok(NormParams {
        rows: to_u32(op, "x", x.numel() / seg)?,
        dim: to_u32(op, "weight", seg)?,
        eps,
        has_residual: residual.is_some() as u32,
        groups: to_u32(op, "groups", groups)?,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    })
}
