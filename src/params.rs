//! Validated op parameters, shared with the GPU kernels.
//!
//! They are `#[repr(C)]` + `Pod` and consist of `u32`/`f32` only, so the same bytes are
//! a WGSL uniform and a CUDA kernel argument. Being `Pod`, any value of them can be made
//! anywhere (`bytemuck::Zeroable::zeroed()`, then set the public fields; the
//! `#[non_exhaustive]` only stops struct literals): a parameter struct on its own proves
//! nothing. What a backend trusts is a checked call ([`crate::ops::call`]), which only
//! the op's front door in [`crate::ops`] builds, from these parameters *and* the buffers
//! they were validated against. No backend method accepts a parameter struct alone.
//!
//! The kernels declare each struct once, field for field: WGSL in `shaders/common.wgsl`,
//! CUDA C in `kernels/common.cuh`.

use bytemuck::{Pod, Zeroable};

/// How a scan treats its state buffer. Mirrored as `state_mode` in the kernels.
pub const STATE_NONE: u32 = 0;
/// Start from zero, write the final state.
pub const STATE_FINAL: u32 = 1;
/// Read the initial state from the buffer, overwrite it with the final state.
pub const STATE_CARRY: u32 = 2;

/// Selective scan.
///
/// Element strides describe where `u[b, d, t]` lives for u, delta, z and out (they share
/// one layout), and where `B[b, g, n, t]` / `C[b, g, n, t]` live; time-invariant B/C are
/// the special case `g = d` (`groups = dim`) with zero batch and time strides.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct ScanParams {
    pub batch: u32,
    pub dim: u32,
    pub len: u32,
    pub dstate: u32,
    /// Strides of u / delta / z / out: batch, channel, time.
    pub x_sb: u32,
    pub x_sd: u32,
    pub x_st: u32,
    /// Strides of B: batch, group, state, time; and channels per group.
    pub b_sb: u32,
    pub b_sg: u32,
    pub b_sn: u32,
    pub b_st: u32,
    pub b_group_dim: u32,
    /// Strides of C, as for B.
    pub c_sb: u32,
    pub c_sg: u32,
    pub c_sn: u32,
    pub c_st: u32,
    pub c_group_dim: u32,
    /// 1 if D / z / delta_bias are given, 1 if softplus is applied to delta.
    pub has_d: u32,
    pub has_z: u32,
    pub has_delta_bias: u32,
    pub delta_softplus: u32,
    /// One of [`STATE_NONE`], [`STATE_FINAL`], [`STATE_CARRY`].
    pub state_mode: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// Mamba-2's scan in head form ([`crate::ops::ssd_scan`]): x / z / out
/// `(batch, len, heads·head_dim)`, dt `(batch, len, heads)`, B / C
/// `(batch, len, groups, dstate)`, A / D / dt_bias `(heads)`, state
/// `(batch, heads, head_dim, dstate)`. Head h reads group `h / (heads / groups)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct SsdParams {
    pub batch: u32,
    pub len: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub dstate: u32,
    pub groups: u32,
    pub has_d: u32,
    pub has_z: u32,
    pub has_dt_bias: u32,
    pub dt_softplus: u32,
    /// One of [`STATE_NONE`], [`STATE_FINAL`], [`STATE_CARRY`].
    pub state_mode: u32,
    /// The time steps this launch walks, `t_begin..t_end` (the front door sets
    /// `0..len`; a backend may split a long sequence into launches carrying the state).
    pub t_begin: u32,
    pub t_end: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// Single-step state update (decode).
///
/// state (batch, dim, dstate), x / dt / z / out (batch, dim), B / C (batch, groups, dstate).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct StepParams {
    pub batch: u32,
    pub dim: u32,
    pub dstate: u32,
    pub group_dim: u32,
    pub groups: u32,
    pub has_d: u32,
    pub has_z: u32,
    pub has_dt_bias: u32,
    pub dt_softplus: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// Causal depthwise conv1d over a sequence.
///
/// x / out element `[b, d, t]` at `b*x_sb + d*x_sd + t*x_st`; weight (dim, width);
/// conv_state (batch, dim, width-1) holds the last width-1 inputs, oldest first.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct ConvParams {
    pub batch: u32,
    pub dim: u32,
    pub len: u32,
    pub width: u32,
    pub x_sb: u32,
    pub x_sd: u32,
    pub x_st: u32,
    pub has_bias: u32,
    pub silu: u32,
    /// One of [`STATE_NONE`], [`STATE_FINAL`], [`STATE_CARRY`].
    pub state_mode: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// `out[m, n] = Σ_k x[m, k] · w[n, k] (+ bias[n])`, or with `accumulate` `out[m, n] +=`
/// the same (a residual add folded into the projection that feeds it).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub has_bias: u32,
    pub accumulate: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// The fused decode step's first op ([`crate::ops::mixer_in`]): RMSNorm of the residual
/// `h (batch, d_model)`, `in_proj` as `w_x`, `w_z (d_inner, d_model)`, and the conv step
/// of width `width` with SiLU on the x half.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct MixerInParams {
    pub batch: u32,
    pub d_model: u32,
    pub d_inner: u32,
    pub width: u32,
    pub eps: f32,
    pub has_conv_bias: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// The fused decode step's `x_proj` ([`crate::ops::x_proj`]) and state update
/// ([`crate::ops::ssm_step`]): `dbc (batch, dt_rank + 2·dstate)` holds Δ's low-rank
/// input, B and C of each sequence, side by side. With `has_norm` (Falcon-Mamba) the
/// state update first RMS-normalises each of the three (no weight, `norm_eps`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct StepProjParams {
    pub batch: u32,
    pub d_inner: u32,
    pub dt_rank: u32,
    pub dstate: u32,
    pub has_norm: u32,
    pub norm_eps: f32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// RMSNorm over segments of `dim` values, optionally adding `x` into a residual first.
///
/// `rows` counts segments. With `groups` G > 1 (Mamba-2's grouped gated norm) each
/// row of the tensor is G consecutive segments, normalised separately, and segment
/// `s` is scaled by weight elements `(s % G)·dim ..`: the weight spans the whole row.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct NormParams {
    pub rows: u32,
    pub dim: u32,
    pub eps: f32,
    pub has_residual: u32,
    pub groups: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// Row gather: `out[i, :] = table[ids[i], :]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct EmbeddingParams {
    pub count: u32,
    pub rows: u32,
    pub dim: u32,
    pub _pad0: u32,
}

/// Elementwise ops over `len` elements.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct ElementwiseParams {
    pub len: u32,
    /// See [`crate::ops::Elementwise`] for the codes.
    pub op: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// Row-wise argmax: `out[r] = argmax_j x[r, j]` (first index on ties).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct ArgmaxParams {
    pub rows: u32,
    pub cols: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// Copy of `len` elements from `src[src_offset..]` to `dst[dst_offset..]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[non_exhaustive]
pub struct CopyParams {
    pub len: u32,
    pub src_offset: u32,
    pub dst_offset: u32,
    pub _pad0: u32,
}
