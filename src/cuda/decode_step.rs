//! The fused decode step's launches (`kernels/decode_step.cu`), called from the
//! `impl Backend` in `ops.rs`; the same geometry and argument order as the CPU
//! execution model's (`emu/ops.rs`). The same `// SAFETY:` rules as `ops.rs` apply.

use cudarc::driver::{DeviceRepr, PushKernelArg};

use super::geometry;
use super::ops::{config, launch_err, push, push_opt};
use super::{CudaBackend, CudaBuffer};
use crate::error::Result;
use crate::ops::call::*;
use crate::params::*;

// SAFETY: `#[repr(C)]` structs of u32/f32 only, no padding, no pointers; the kernels
// declare the same fields in the same order (kernels/common.cuh, checked by
// tests/cuda_cpu_model.rs).
unsafe impl DeviceRepr for MixerInParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for StepProjParams {}

pub(super) fn mixer_in(be: &CudaBackend, call: MixerInCall<'_, CudaBuffer>) -> Result<()> {
    let MixerInCall {
        p,
        inputs: i,
        conv_state,
        xc,
        z,
    } = call;
    let l = geometry::mixer_in(p, i.w_x.dtype)?;
    let norm_kind = geometry::bias_kind(Some(i.norm_w.dtype));
    let f = be.function(l.kernel)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    a.arg(&norm_kind);
    a.arg(i.h.f32()?);
    push(&mut a, i.norm_w);
    push(&mut a, i.w_x);
    push(&mut a, i.w_z);
    a.arg(i.conv_w.f32()?);
    push_opt(&mut a, i.conv_b, &be.dummy);
    a.arg(conv_state.f32_mut()?);
    a.arg(xc.f32_mut()?);
    a.arg(z.f32_mut()?);
    // SAFETY: mixer_in_<w dtype>(MixerInParams p, unsigned int norm_kind, const float* h,
    // const void* norm_w, const W* w_x, const W* w_z, const float* conv_w,
    // const float* conv_b, float* conv_state, float* xc, float* z): same order, the
    // kernel chosen by w_x's dtype (ops checked w_z has it too), norm_kind naming
    // norm_w's. ops validated h (batch <= 8, D), norm_w (D), w_x / w_z (E, D), conv_w
    // (E, K), conv_b (E, read only if has_conv_bias), conv_state (batch, E, K-1), xc / z
    // (batch, E). One warp per row of [x; z], whole warps exit past 2E.
    unsafe { a.launch(config(&l)) }.map_err(launch_err("mixer_in"))?;
    Ok(())
}

pub(super) fn x_proj(be: &CudaBackend, call: XProjCall<'_, CudaBuffer>) -> Result<()> {
    let XProjCall {
        p,
        xc,
        w_dt,
        w_b,
        w_c,
        dbc,
    } = call;
    let l = geometry::x_proj(p, w_dt.dtype)?;
    let f = be.function(l.kernel)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    a.arg(xc.f32()?);
    push(&mut a, w_dt);
    push(&mut a, w_b);
    push(&mut a, w_c);
    a.arg(dbc.f32_mut()?);
    // SAFETY: x_proj_<w dtype>(StepProjParams p, const float* xc, const W* w_dt,
    // const W* w_b, const W* w_c, float* dbc): same order, one weight dtype (ops
    // checked); xc (batch <= 8, E), w_dt (R, E), w_b / w_c (N, E), dbc (batch, R + 2N).
    // One warp per row, whole warps exit past R + 2N.
    unsafe { a.launch(config(&l)) }.map_err(launch_err("x_proj"))?;
    Ok(())
}

pub(super) fn ssm_step(be: &CudaBackend, call: SsmStepCall<'_, CudaBuffer>) -> Result<()> {
    let SsmStepCall {
        p,
        inputs: i,
        state,
        y,
    } = call;
    let l = geometry::ssm_step(p, i.dt_proj.dtype)?;
    let f = be.function(l.kernel)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    a.arg(i.xc.f32()?);
    a.arg(i.dbc.f32()?);
    a.arg(i.z.f32()?);
    push(&mut a, i.dt_proj);
    for t in [i.dt_bias, i.a, i.d] {
        a.arg(t.f32()?);
    }
    a.arg(state.f32_mut()?);
    a.arg(y.f32_mut()?);
    // SAFETY: ssm_step_<w dtype>(StepProjParams p, const float* xc, const float* dbc,
    // const float* z, const W* dt_proj, const float* dt_bias, const float* A,
    // const float* Dv, float* state, float* y): same order; ops validated xc / z / y
    // (batch, E), dbc (batch, R + 2N), dt_proj (E, R), dt_bias / D (E), A (E, N), state
    // (batch, E, N). One thread per (sequence, channel), guarded by batch * E; the
    // float4 state path is taken only for 16-byte aligned rows.
    unsafe { a.launch(config(&l)) }.map_err(launch_err("ssm_step"))?;
    Ok(())
}
