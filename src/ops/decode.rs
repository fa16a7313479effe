//! The fused decode step of a Mamba-1 layer: four ops in place of ten, so a decode
//! token costs four dependent launches per layer (issue 13):
//!
//! ```text
//! mixer_in            h → rmsnorm → in_proj (x, z) → conv step + SiLU on x   → xc, z
//! x_proj              xc → [Δ_low | B | C]                                    → dbc
//! ssm_step            dbc → dt_proj + bias → softplus → state update → +D·x → ·silu(z) → y
//! matmul_accumulate   h += out_proj(y)
//! ```
//!
//! The residual add moves from the next norm into the out projection (`h +=`), so the
//! norm reads the residual stream without writing it: every workgroup of `mixer_in` may
//! recompute the norm of its rows without a race. The ops hold a few sequences at a time
//! (at most [`FUSED_MAX_BATCH`], the regime where a step is bound by reading the
//! weights); more sequences take the unfused ops, whose matmul becomes a tiled GEMM.
//! Every tensor is validated here, once; the backends trust the call.

use super::check::*;
use super::{MatmulCall, MixerInCall, SsmStepCall, XProjCall};
use crate::backend::{Backend, DeviceBuffer};
use crate::error::{Error, Result};
use crate::params::*;

/// The most sequences one fused decode op takes.
pub const FUSED_MAX_BATCH: usize = 8;

/// Inputs of [`mixer_in`]: the residual stream `h (batch, D)` f32, the layer's norm
/// weight `(D)` (any float dtype) and epsilon, `in_proj` as `w_x`, `w_z (E, D)` (one
/// float dtype), the conv weight `(E, K)` and bias `(E)` f32.
pub struct MixerInInputs<'a, B> {
    pub h: &'a B,
    pub norm_w: &'a B,
    pub eps: f32,
    pub w_x: &'a B,
    pub w_z: &'a B,
    pub conv_w: &'a B,
    pub conv_b: Option<&'a B>,
}

fn batch_of<B: DeviceBuffer>(op: &'static str, name: &'static str, t: &B) -> Result<usize> {
    check_f32(op, name, t)?;
    rank(op, name, t, 2, "(batch, width)")?;
    nonzero(op, name, t.shape(), &["batch", "width"])?;
    let batch = t.shape()[0];
    if batch > FUSED_MAX_BATCH {
        return Err(Error::limit(
            "any",
            op,
            name,
            format!(
                "{batch} sequences; the fused decode ops take at most {FUSED_MAX_BATCH} \
                 (use the unfused ops)"
            ),
        ));
    }
    Ok(batch)
}

fn weight<B: DeviceBuffer>(
    op: &'static str,
    name: &'static str,
    w: &B,
    exp: &[usize],
) -> Result<()> {
    check_dtype(op, name, w, FLOATS, "f32, f16 or bf16")?;
    check_shape(op, name, w, exp)?;
    check_numel(op, name, w)
}

/// `xc = silu(conv_step(x))`, `z` with `x, z = rmsnorm(h)·norm_w · [w_x; w_z]ᵀ`: the
/// conv state `(batch, E, K−1)` takes `x` in (oldest value out). xc, z `(batch, E)`.
pub fn mixer_in<Bk: Backend>(
    be: &Bk,
    i: &MixerInInputs<'_, Bk::Buffer>,
    conv_state: &mut Bk::Buffer,
    xc: &mut Bk::Buffer,
    z: &mut Bk::Buffer,
) -> Result<()> {
    const OP: &str = "mixer_in";
    let batch = batch_of(OP, "h", i.h)?;
    let d = i.h.shape()[1];
    check_dtype(OP, "norm_w", i.norm_w, FLOATS, "f32, f16 or bf16")?;
    check_shape(OP, "norm_w", i.norm_w, &[d])?;
    rank(OP, "w_x", i.w_x, 2, "(E, D)")?;
    let e = i.w_x.shape()[0];
    nonzero(OP, "w_x", i.w_x.shape(), &["E", "D"])?;
    weight(OP, "w_x", i.w_x, &[e, d])?;
    weight(OP, "w_z", i.w_z, &[e, d])?;
    if i.w_z.dtype() != i.w_x.dtype() {
        return Err(Error::DType {
            op: OP,
            tensor: "w_z",
            got: i.w_z.dtype(),
            expected: "the dtype of w_x",
        });
    }
    let (width, has_conv_bias) = check_conv_weights(OP, i.conv_w, i.conv_b, e, true)?;
    check_f32(OP, "conv_state", conv_state)?;
    check_shape(OP, "conv_state", conv_state, &[batch, e, width - 1])?;
    for (name, t) in [("xc", &*xc), ("z", &*z)] {
        check_f32(OP, name, t)?;
        check_shape(OP, name, t, &[batch, e])?;
    }
    if !i.eps.is_finite() || i.eps < 0.0 {
        return Err(Error::Arg {
            op: OP,
            arg: "eps",
            why: format!("{} is not a finite non-negative number", i.eps),
        });
    }
    let [batch, d_model, d_inner, width] = u32s(OP, [batch, d, e, width])?;
    let p = MixerInParams {
        batch,
        d_model,
        d_inner,
        width,
        eps: i.eps,
        has_conv_bias,
        _pad0: 0,
        _pad1: 0,
    };
    be.mixer_in(MixerInCall {
        p: &p,
        inputs: i,
        conv_state,
        xc,
        z,
    })
}

/// `dbc[b] = [w_dt; w_b; w_c] · xc[b]`: Δ's low-rank input `(R)`, B and C `(N)` of each
/// sequence side by side. xc `(batch, E)`; w_dt `(R, E)`, w_b, w_c `(N, E)` (one float
/// dtype); dbc `(batch, R + 2N)`.
pub fn x_proj<Bk: Backend>(
    be: &Bk,
    xc: &Bk::Buffer,
    w_dt: &Bk::Buffer,
    w_b: &Bk::Buffer,
    w_c: &Bk::Buffer,
    dbc: &mut Bk::Buffer,
) -> Result<()> {
    const OP: &str = "x_proj";
    let batch = batch_of(OP, "xc", xc)?;
    let e = xc.shape()[1];
    rank(OP, "w_dt", w_dt, 2, "(R, E)")?;
    rank(OP, "w_b", w_b, 2, "(N, E)")?;
    nonzero(OP, "w_dt", w_dt.shape(), &["R", "E"])?;
    nonzero(OP, "w_b", w_b.shape(), &["N", "E"])?;
    let (r, n) = (w_dt.shape()[0], w_b.shape()[0]);
    weight(OP, "w_dt", w_dt, &[r, e])?;
    weight(OP, "w_b", w_b, &[n, e])?;
    weight(OP, "w_c", w_c, &[n, e])?;
    for (name, w) in [("w_b", w_b), ("w_c", w_c)] {
        if w.dtype() != w_dt.dtype() {
            return Err(Error::DType {
                op: OP,
                tensor: name,
                got: w.dtype(),
                expected: "the dtype of w_dt",
            });
        }
    }
    check_f32(OP, "dbc", dbc)?;
    check_shape(OP, "dbc", dbc, &[batch, r + 2 * n])?;
    let [batch, d_inner, dt_rank, dstate] = u32s(OP, [batch, e, r, n])?;
    let p = StepProjParams {
        batch,
        d_inner,
        dt_rank,
        dstate,
        has_norm: 0,
        norm_eps: 0.0,
        _pad0: 0,
        _pad1: 0,
    };
    be.x_proj(XProjCall {
        p: &p,
        xc,
        w_dt,
        w_b,
        w_c,
        dbc,
    })
}

/// Inputs of [`ssm_step`]: xc, z `(batch, E)` and dbc `(batch, R + 2N)` f32 (from
/// [`mixer_in`] and [`x_proj`]); `dt_proj (E, R)` in any float dtype; dt_bias, D `(E)`
/// and A `(E, N)` f32. `norm_eps`: Falcon-Mamba's weightless RMSNorm of Δ_low, B and C
/// (each on its own) before they are used.
pub struct SsmStepInputs<'a, B> {
    pub xc: &'a B,
    pub dbc: &'a B,
    pub z: &'a B,
    pub dt_proj: &'a B,
    pub dt_bias: &'a B,
    pub a: &'a B,
    pub d: &'a B,
    pub norm_eps: Option<f32>,
}

/// One state update per channel with Δ computed in place:
/// `Δ = softplus(dt_proj · dbc[..R] + dt_bias)`, `h = exp(Δ·A)·h + Δ·B·x`,
/// `y = (C·h + D·x) · silu(z)`. The state `(batch, E, N)` is updated in place.
pub fn ssm_step<Bk: Backend>(
    be: &Bk,
    i: &SsmStepInputs<'_, Bk::Buffer>,
    state: &mut Bk::Buffer,
    y: &mut Bk::Buffer,
) -> Result<()> {
    const OP: &str = "ssm_step";
    let batch = batch_of(OP, "xc", i.xc)?;
    let e = i.xc.shape()[1];
    check_f32(OP, "state", state)?;
    rank(OP, "state", state, 3, "(batch, E, N)")?;
    nonzero(OP, "state", state.shape(), &["batch", "E", "N"])?;
    let n = state.shape()[2];
    check_shape(OP, "state", state, &[batch, e, n])?;
    check_numel(OP, "state", state)?;
    rank(OP, "dt_proj", i.dt_proj, 2, "(E, R)")?;
    nonzero(OP, "dt_proj", i.dt_proj.shape(), &["E", "R"])?;
    let r = i.dt_proj.shape()[1];
    weight(OP, "dt_proj", i.dt_proj, &[e, r])?;
    check_f32(OP, "dbc", i.dbc)?;
    check_shape(OP, "dbc", i.dbc, &[batch, r + 2 * n])?;
    check_f32(OP, "z", i.z)?;
    check_shape(OP, "z", i.z, &[batch, e])?;
    check_f32(OP, "A", i.a)?;
    check_shape(OP, "A", i.a, &[e, n])?;
    check_vec(OP, "dt_bias", Some(i.dt_bias), e)?;
    check_vec(OP, "D", Some(i.d), e)?;
    check_f32(OP, "y", y)?;
    check_shape(OP, "y", y, &[batch, e])?;
    if let Some(eps) = i.norm_eps
        && (!eps.is_finite() || eps < 0.0)
    {
        return Err(Error::Arg {
            op: OP,
            arg: "norm_eps",
            why: format!("{eps} is not a finite non-negative number"),
        });
    }
    let [batch, d_inner, dt_rank, dstate] = u32s(OP, [batch, e, r, n])?;
    let p = StepProjParams {
        batch,
        d_inner,
        dt_rank,
        dstate,
        has_norm: i.norm_eps.is_some() as u32,
        norm_eps: i.norm_eps.unwrap_or(0.0),
        _pad0: 0,
        _pad1: 0,
    };
    be.ssm_step(SsmStepCall {
        p: &p,
        inputs: i,
        state,
        y,
    })
}

/// `out += x · wᵀ (+ bias)`: [`crate::ops::matmul`] adding into `out` (the residual
/// stream, for the out projection of the fused step). Shapes and dtypes as there.
pub fn matmul_accumulate<Bk: Backend>(
    be: &Bk,
    x: &Bk::Buffer,
    w: &Bk::Buffer,
    bias: Option<&Bk::Buffer>,
    out: &mut Bk::Buffer,
) -> Result<()> {
    let mut p = super::matmul_params(x, w, bias, out)?;
    p.accumulate = 1;
    be.matmul(MatmulCall {
        p: &p,
        x,
        w,
        bias,
        out,
    })
}
