//! The front door of every op: validate shapes and dtypes once, build the typed
//! parameter struct, then hand it to the backend.
//!
//! Every function here returns a typed [`Error`] naming the op, the tensor and the
//! shapes when the input is wrong; none panics on input.

use crate::backend::{Backend, DeviceBuffer};
use crate::error::{Error, Result};
use crate::params::*;
use crate::tensor::DType;

/// Memory layout of the sequence tensors of the scan and the conv1d.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// The official mamba_ssm layout: u, delta, z, out are `(batch, dim, L)`;
    /// input-dependent B/C are `(batch, N, L)` or grouped `(batch, G, N, L)`.
    #[default]
    ChannelMajor,
    /// Token-major, as the projections produce it: u, delta, z, out are
    /// `(batch, L, dim)`; B/C are `(batch, L, N)` or `(batch, L, G, N)`.
    /// Converting from the official layout is a transpose of the last two axes
    /// (`x.transpose(1, 2)` in PyTorch); B/C move their L axis to position 1.
    TokenMajor,
}

/// Inputs of the selective scan, with the semantics of mamba_ssm's `selective_scan_ref`.
///
/// Shapes (`ChannelMajor`; see [`Layout`] for the other):
/// u, delta `(batch, dim, L)`; A `(dim, N)`; B, C either time-invariant `(dim, N)`,
/// input-dependent `(batch, N, L)` or grouped `(batch, G, N, L)` with G dividing dim;
/// D, delta_bias `(dim)`; z `(batch, dim, L)`. All f32.
pub struct ScanInputs<'a, B> {
    pub u: &'a B,
    pub delta: &'a B,
    pub a: &'a B,
    pub b: &'a B,
    pub c: &'a B,
    pub d: Option<&'a B>,
    pub z: Option<&'a B>,
    pub delta_bias: Option<&'a B>,
    pub delta_softplus: bool,
    pub layout: Layout,
}

/// What the scan does with an ssm state buffer `(batch, dim, N)`, f32.
pub enum StateIo<'a, B> {
    /// Start from zero; keep no state.
    None,
    /// Start from zero; write the final state into the buffer.
    Final(&'a mut B),
    /// Start from the state in the buffer; overwrite it with the final state.
    /// This is how a sequence is continued: a split sequence carried through the
    /// state gives the whole-sequence result.
    Carry(&'a mut B),
}

impl<B> StateIo<'_, B> {
    fn mode(&self) -> u32 {
        match self {
            StateIo::None => STATE_NONE,
            StateIo::Final(_) => STATE_FINAL,
            StateIo::Carry(_) => STATE_CARRY,
        }
    }

    /// The state buffer, if any.
    pub fn buffer(&mut self) -> Option<&mut B> {
        match self {
            StateIo::None => None,
            StateIo::Final(b) | StateIo::Carry(b) => Some(b),
        }
    }

    fn peek(&self) -> Option<&B> {
        match self {
            StateIo::None => None,
            StateIo::Final(b) | StateIo::Carry(b) => Some(b),
        }
    }
}

/// Inputs of one decode step, with the semantics of `selective_state_update_ref`.
///
/// x, dt, z `(batch, dim)`; A `(dim, N)`; B, C `(batch, N)` or `(batch, G, N)`;
/// D, dt_bias `(dim)`. All f32. The state `(batch, dim, N)` is updated in place.
pub struct StepInputs<'a, B> {
    pub x: &'a B,
    pub dt: &'a B,
    pub a: &'a B,
    pub b: &'a B,
    pub c: &'a B,
    pub d: Option<&'a B>,
    pub z: Option<&'a B>,
    pub dt_bias: Option<&'a B>,
    pub dt_softplus: bool,
}

/// Elementwise ops on f32 buffers. Codes mirrored in the shaders and kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Elementwise {
    /// `x · sigmoid(x)`
    Silu = 0,
    /// `log(1 + exp(x))`, as PyTorch computes it (linear above 20).
    Softplus = 1,
    /// `a + b`
    Add = 2,
    /// `a · b`
    Mul = 3,
    /// `a · silu(b)`: the output gate of the Mamba block.
    MulSilu = 4,
}

impl Elementwise {
    pub fn is_binary(self) -> bool {
        matches!(
            self,
            Elementwise::Add | Elementwise::Mul | Elementwise::MulSilu
        )
    }
}

// ---------------------------------------------------------------------------------------
// Checks shared by the ops.

fn shape_err<B: DeviceBuffer>(op: &'static str, name: &'static str, b: &B, exp: String) -> Error {
    Error::Shape {
        op,
        tensor: name,
        got: b.shape().to_vec(),
        expected: exp,
    }
}

fn check_dtype<B: DeviceBuffer>(
    op: &'static str,
    name: &'static str,
    b: &B,
    ok: &[DType],
    expected: &'static str,
) -> Result<()> {
    if ok.contains(&b.dtype()) {
        Ok(())
    } else {
        Err(Error::DType {
            op,
            tensor: name,
            got: b.dtype(),
            expected,
        })
    }
}

fn check_f32<B: DeviceBuffer>(op: &'static str, name: &'static str, b: &B) -> Result<()> {
    check_dtype(op, name, b, &[DType::F32], "f32")
}

const FLOATS: &[DType] = &[DType::F32, DType::F16, DType::BF16];

fn check_shape<B: DeviceBuffer>(
    op: &'static str,
    name: &'static str,
    b: &B,
    exp: &[usize],
) -> Result<()> {
    if b.shape() == exp {
        Ok(())
    } else {
        Err(shape_err(op, name, b, format!("{exp:?}")))
    }
}

/// Checks an optional f32 vector of length `dim`.
fn check_vec<B: DeviceBuffer>(
    op: &'static str,
    name: &'static str,
    b: Option<&B>,
    dim: usize,
) -> Result<u32> {
    match b {
        None => Ok(0),
        Some(b) => {
            check_f32(op, name, b)?;
            check_shape(op, name, b, &[dim])?;
            Ok(1)
        }
    }
}

fn nonzero(
    op: &'static str,
    tensor: &'static str,
    shape: &[usize],
    names: &[&'static str],
) -> Result<()> {
    for (i, &n) in shape.iter().enumerate() {
        let dim = names.get(i).copied().unwrap_or("axis");
        if n == 0 {
            return Err(Error::ZeroDim {
                op,
                tensor,
                dim,
                shape: shape.to_vec(),
            });
        }
    }
    Ok(())
}

fn rank<B: DeviceBuffer>(
    op: &'static str,
    name: &'static str,
    b: &B,
    r: usize,
    what: &str,
) -> Result<()> {
    if b.shape().len() == r {
        Ok(())
    } else {
        Err(shape_err(op, name, b, what.to_string()))
    }
}

/// Converts a size to the `u32` the kernels index with.
fn to_u32(op: &'static str, arg: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Arg {
        op,
        arg,
        why: format!("{n} elements exceed the 32-bit indexing of the kernels"),
    })
}

fn check_numel<B: DeviceBuffer>(op: &'static str, name: &'static str, b: &B) -> Result<()> {
    to_u32(op, name, b.numel()).map(|_| ())
}

/// Strides of B or C in the scan: (batch, group, state, time, channels per group).
fn scan_bc_strides<B: DeviceBuffer>(
    name: &'static str,
    t: &B,
    layout: Layout,
    (batch, dim, len, n): (usize, usize, usize, usize),
) -> Result<[usize; 5]> {
    const OP: &str = "selective_scan";
    check_f32(OP, name, t)?;
    let s = t.shape();
    let g = match (s.len(), layout) {
        (2, _) => {
            check_shape(OP, name, t, &[dim, n])?;
            return Ok([0, n, 1, 0, 1]);
        }
        (3, _) => 1,
        (4, Layout::ChannelMajor) => s[1],
        (4, Layout::TokenMajor) => s[2],
        _ => {
            let exp = match layout {
                Layout::ChannelMajor => "(dim, N), (batch, N, L) or (batch, G, N, L)",
                Layout::TokenMajor => "(dim, N), (batch, L, N) or (batch, L, G, N)",
            };
            return Err(shape_err(OP, name, t, exp.into()));
        }
    };
    if g == 0 || dim % g != 0 {
        return Err(Error::Groups {
            op: OP,
            groups: g,
            dim,
        });
    }
    let (exp, strides) = match layout {
        Layout::ChannelMajor => (vec![batch, g, n, len], [g * n * len, n * len, len, 1]),
        Layout::TokenMajor => (vec![batch, len, g, n], [len * g * n, n, 1, g * n]),
    };
    if s.len() == 3 {
        let exp3 = match layout {
            Layout::ChannelMajor => vec![batch, n, len],
            Layout::TokenMajor => vec![batch, len, n],
        };
        check_shape(OP, name, t, &exp3)?;
    } else {
        check_shape(OP, name, t, &exp)?;
    }
    Ok([strides[0], strides[1], strides[2], strides[3], dim / g])
}

/// Strides (batch, channel, time) of a `(batch, dim, L)` or `(batch, L, dim)` tensor.
fn seq_strides(layout: Layout, dim: usize, len: usize) -> [usize; 3] {
    match layout {
        Layout::ChannelMajor => [dim * len, len, 1],
        Layout::TokenMajor => [len * dim, 1, dim],
    }
}

/// `(batch, dim, len)` of a sequence tensor in the given layout.
fn seq_dims(layout: Layout, s: &[usize]) -> (usize, usize, usize) {
    match layout {
        Layout::ChannelMajor => (s[0], s[1], s[2]),
        Layout::TokenMajor => (s[0], s[2], s[1]),
    }
}

fn seq_names(layout: Layout) -> [&'static str; 3] {
    match layout {
        Layout::ChannelMajor => ["batch", "dim", "L"],
        Layout::TokenMajor => ["batch", "L", "dim"],
    }
}

fn u32s<const K: usize>(op: &'static str, xs: [usize; K]) -> Result<[u32; K]> {
    let mut out = [0u32; K];
    for (o, x) in out.iter_mut().zip(xs) {
        *o = to_u32(op, "stride", x)?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The ops.

/// The selective scan: `selective_scan_ref` of mamba_ssm, plus an optional initial state
/// and the final state (see [`StateIo`]).
///
/// Per batch b, channel d, state n, time t:
/// `Δ = softplus?(delta + delta_bias)`, `h = exp(Δ·A)·h + Δ·B·u`,
/// `y = Σₙ C·h + D·u`, `out = y · silu(z)`.
pub fn selective_scan<Bk: Backend>(
    be: &Bk,
    inputs: &ScanInputs<'_, Bk::Buffer>,
    state: StateIo<'_, Bk::Buffer>,
    out: &mut Bk::Buffer,
) -> Result<()> {
    let p = check_scan(inputs, &state, out)?;
    be.selective_scan(&p, inputs, state, out)
}

fn check_scan<B: DeviceBuffer>(
    i: &ScanInputs<'_, B>,
    state: &StateIo<'_, B>,
    out: &B,
) -> Result<ScanParams> {
    const OP: &str = "selective_scan";
    let layout = i.layout;
    check_f32(OP, "u", i.u)?;
    let what = match layout {
        Layout::ChannelMajor => "(batch, dim, L)",
        Layout::TokenMajor => "(batch, L, dim)",
    };
    rank(OP, "u", i.u, 3, what)?;
    nonzero(OP, "u", i.u.shape(), &seq_names(layout))?;
    check_numel(OP, "u", i.u)?;
    let useq = i.u.shape().to_vec();
    let (batch, dim, len) = seq_dims(layout, &useq);
    check_f32(OP, "delta", i.delta)?;
    check_shape(OP, "delta", i.delta, &useq)?;
    check_f32(OP, "A", i.a)?;
    rank(OP, "A", i.a, 2, "(dim, N)")?;
    nonzero(OP, "A", i.a.shape(), &["dim", "N"])?;
    let n = i.a.shape()[1];
    check_shape(OP, "A", i.a, &[dim, n])?;
    let dims = (batch, dim, len, n);
    let b = scan_bc_strides("B", i.b, layout, dims)?;
    let c = scan_bc_strides("C", i.c, layout, dims)?;
    let has_d = check_vec(OP, "D", i.d, dim)?;
    let has_delta_bias = check_vec(OP, "delta_bias", i.delta_bias, dim)?;
    let has_z = match i.z {
        None => 0,
        Some(z) => {
            check_f32(OP, "z", z)?;
            check_shape(OP, "z", z, &useq)?;
            1
        }
    };
    if let Some(s) = state.peek() {
        check_f32(OP, "state", s)?;
        check_shape(OP, "state", s, &[batch, dim, n])?;
        check_numel(OP, "state", s)?;
    }
    check_f32(OP, "out", out)?;
    check_shape(OP, "out", out, &useq)?;
    let [batch, dim, len, dstate] = u32s(OP, [batch, dim, len, n])?;
    let [x_sb, x_sd, x_st] = u32s(OP, seq_strides(layout, dim as usize, len as usize))?;
    let [b_sb, b_sg, b_sn, b_st, b_group_dim] = u32s(OP, b)?;
    let [c_sb, c_sg, c_sn, c_st, c_group_dim] = u32s(OP, c)?;
    Ok(ScanParams {
        batch,
        dim,
        len,
        dstate,
        x_sb,
        x_sd,
        x_st,
        b_sb,
        b_sg,
        b_sn,
        b_st,
        b_group_dim,
        c_sb,
        c_sg,
        c_sn,
        c_st,
        c_group_dim,
        has_d,
        has_z,
        has_delta_bias,
        delta_softplus: i.delta_softplus as u32,
        state_mode: state.mode(),
        _pad0: 0,
        _pad1: 0,
    })
}

/// One decode step: `selective_state_update_ref` of mamba_ssm. Updates `state`
/// `(batch, dim, N)` in place and writes `out` `(batch, dim)`.
pub fn selective_state_update<Bk: Backend>(
    be: &Bk,
    inputs: &StepInputs<'_, Bk::Buffer>,
    state: &mut Bk::Buffer,
    out: &mut Bk::Buffer,
) -> Result<()> {
    let p = check_step(inputs, state, out)?;
    be.selective_state_update(&p, inputs, state, out)
}

fn check_step<B: DeviceBuffer>(i: &StepInputs<'_, B>, state: &B, out: &B) -> Result<StepParams> {
    const OP: &str = "selective_state_update";
    check_f32(OP, "state", state)?;
    rank(OP, "state", state, 3, "(batch, dim, N)")?;
    nonzero(OP, "state", state.shape(), &["batch", "dim", "N"])?;
    check_numel(OP, "state", state)?;
    let (batch, dim, n) = (state.shape()[0], state.shape()[1], state.shape()[2]);
    for (name, t) in [("x", i.x), ("dt", i.dt)] {
        check_f32(OP, name, t)?;
        check_shape(OP, name, t, &[batch, dim])?;
    }
    check_f32(OP, "A", i.a)?;
    check_shape(OP, "A", i.a, &[dim, n])?;
    let mut groups = 0;
    for (name, t) in [("B", i.b), ("C", i.c)] {
        check_f32(OP, name, t)?;
        let g = match t.shape().len() {
            2 => 1,
            3 => t.shape()[1],
            _ => return Err(shape_err(OP, name, t, "(batch, N) or (batch, G, N)".into())),
        };
        if g == 0 || dim % g != 0 {
            return Err(Error::Groups {
                op: OP,
                groups: g,
                dim,
            });
        }
        let exp: Vec<usize> = if t.shape().len() == 2 {
            vec![batch, n]
        } else {
            vec![batch, g, n]
        };
        check_shape(OP, name, t, &exp)?;
        if groups != 0 && groups != g {
            return Err(shape_err(
                OP,
                name,
                t,
                format!("the same group count as B ({groups})"),
            ));
        }
        groups = g;
    }
    let has_d = check_vec(OP, "D", i.d, dim)?;
    let has_dt_bias = check_vec(OP, "dt_bias", i.dt_bias, dim)?;
    let has_z = match i.z {
        None => 0,
        Some(z) => {
            check_f32(OP, "z", z)?;
            check_shape(OP, "z", z, &[batch, dim])?;
            1
        }
    };
    check_f32(OP, "out", out)?;
    check_shape(OP, "out", out, &[batch, dim])?;
    let [batch, dim, dstate, group_dim, groups] = u32s(OP, [batch, dim, n, dim / groups, groups])?;
    Ok(StepParams {
        batch,
        dim,
        dstate,
        group_dim,
        groups,
        has_d,
        has_z,
        has_dt_bias,
        dt_softplus: i.dt_softplus as u32,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    })
}

/// Causal depthwise conv1d over a sequence: `out[b,d,t] = act(bias[d] + Σ_k w[d,k] ·
/// x[b,d,t-K+1+k])`, where positions before 0 come from the conv state (`Carry`) or are
/// zero. x, out in `layout`; weight `(dim, K)`; bias `(dim)`; state `(batch, dim, K-1)`
/// holding the last K-1 inputs, oldest first (written back with `Final`/`Carry`).
#[allow(clippy::too_many_arguments)]
pub fn causal_conv1d<Bk: Backend>(
    be: &Bk,
    x: &Bk::Buffer,
    weight: &Bk::Buffer,
    bias: Option<&Bk::Buffer>,
    silu: bool,
    layout: Layout,
    mut state: StateIo<'_, Bk::Buffer>,
    out: &mut Bk::Buffer,
) -> Result<()> {
    const OP: &str = "causal_conv1d";
    check_f32(OP, "x", x)?;
    rank(OP, "x", x, 3, "a 3-d sequence tensor")?;
    nonzero(OP, "x", x.shape(), &seq_names(layout))?;
    check_numel(OP, "x", x)?;
    let (batch, dim, len) = seq_dims(layout, x.shape());
    let (width, has_bias) = check_conv_weights(OP, weight, bias, dim, state.peek().is_some())?;
    if let Some(s) = state.peek() {
        check_f32(OP, "conv_state", s)?;
        check_shape(OP, "conv_state", s, &[batch, dim, width - 1])?;
    }
    check_f32(OP, "out", out)?;
    check_shape(OP, "out", out, x.shape())?;
    let [batch, dim, len, width] = u32s(OP, [batch, dim, len, width])?;
    let [x_sb, x_sd, x_st] = u32s(OP, seq_strides(layout, dim as usize, len as usize))?;
    let p = ConvParams {
        batch,
        dim,
        len,
        width,
        x_sb,
        x_sd,
        x_st,
        has_bias,
        silu: silu as u32,
        state_mode: state.mode(),
        _pad0: 0,
        _pad1: 0,
    };
    let st = state.buffer();
    be.causal_conv1d(&p, x, weight, bias, st, out)
}

fn check_conv_weights<B: DeviceBuffer>(
    op: &'static str,
    weight: &B,
    bias: Option<&B>,
    dim: usize,
    needs_state: bool,
) -> Result<(usize, u32)> {
    check_f32(op, "weight", weight)?;
    rank(op, "weight", weight, 2, "(dim, K)")?;
    nonzero(op, "weight", weight.shape(), &["dim", "K"])?;
    let width = weight.shape()[1];
    check_shape(op, "weight", weight, &[dim, width])?;
    if needs_state && width < 2 {
        return Err(Error::Arg {
            op,
            arg: "weight",
            why: format!("kernel width {width} has no conv state (needs K >= 2)"),
        });
    }
    let has_bias = check_vec(op, "bias", bias, dim)?;
    Ok((width, has_bias))
}

/// One decode step of the causal conv1d: x, out `(batch, dim)`, state `(batch, dim, K-1)`
/// updated in place (x shifted in), weight `(dim, K)`, bias `(dim)`.
pub fn causal_conv1d_update<Bk: Backend>(
    be: &Bk,
    x: &Bk::Buffer,
    weight: &Bk::Buffer,
    bias: Option<&Bk::Buffer>,
    silu: bool,
    state: &mut Bk::Buffer,
    out: &mut Bk::Buffer,
) -> Result<()> {
    const OP: &str = "causal_conv1d_update";
    check_f32(OP, "x", x)?;
    rank(OP, "x", x, 2, "(batch, dim)")?;
    nonzero(OP, "x", x.shape(), &["batch", "dim"])?;
    check_numel(OP, "x", x)?;
    let (batch, dim) = (x.shape()[0], x.shape()[1]);
    let (width, has_bias) = check_conv_weights(OP, weight, bias, dim, true)?;
    check_f32(OP, "conv_state", state)?;
    check_shape(OP, "conv_state", state, &[batch, dim, width - 1])?;
    check_f32(OP, "out", out)?;
    check_shape(OP, "out", out, &[batch, dim])?;
    let [batch, dim, width] = u32s(OP, [batch, dim, width])?;
    let p = ConvParams {
        batch,
        dim,
        len: 1,
        width,
        x_sb: dim,
        x_sd: 1,
        x_st: 0,
        has_bias,
        silu: silu as u32,
        state_mode: STATE_CARRY,
        _pad0: 0,
        _pad1: 0,
    };
    be.causal_conv1d_update(&p, x, weight, bias, state, out)
}

/// `out = x · wᵀ (+ bias)`: x `(..., K)` f32, w `(N, K)` and bias `(N)` in f32/f16/bf16,
/// out `(..., N)` f32 with the leading dims of x.
pub fn matmul<Bk: Backend>(
    be: &Bk,
    x: &Bk::Buffer,
    w: &Bk::Buffer,
    bias: Option<&Bk::Buffer>,
    out: &mut Bk::Buffer,
) -> Result<()> {
    const OP: &str = "matmul";
    check_f32(OP, "x", x)?;
    check_dtype(OP, "w", w, FLOATS, "f32, f16 or bf16")?;
    rank(OP, "w", w, 2, "(N, K)")?;
    nonzero(OP, "w", w.shape(), &["N", "K"])?;
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let xs = x.shape();
    if xs.is_empty() || xs[xs.len() - 1] != k {
        return Err(shape_err(
            OP,
            "x",
            x,
            format!("(..., {k}) to match w {:?}", w.shape()),
        ));
    }
    nonzero(OP, "x", xs, &[])?;
    let m = x.numel() / k;
    let has_bias = match bias {
        None => 0,
        Some(b) => {
            check_dtype(OP, "bias", b, FLOATS, "f32, f16 or bf16")?;
            check_shape(OP, "bias", b, &[n])?;
            1
        }
    };
    let mut exp = xs.to_vec();
    *exp.last_mut().expect("x has rank >= 1") = n;
    check_f32(OP, "out", out)?;
    check_shape(OP, "out", out, &exp)?;
    for (name, t) in [("x", x), ("w", w), ("out", &*out)] {
        check_numel(OP, name, t)?;
    }
    let [m, n, k] = u32s(OP, [m, n, k])?;
    be.matmul(&MatmulParams { m, n, k, has_bias }, x, w, bias, out)
}

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
    const OP: &str = "rms_norm";
    check_f32(OP, "x", x)?;
    check_dtype(OP, "weight", weight, FLOATS, "f32, f16 or bf16")?;
    rank(OP, "weight", weight, 1, "(dim)")?;
    let dim = weight.shape()[0];
    let xs = x.shape();
    if xs.is_empty() || xs[xs.len() - 1] != dim {
        return Err(shape_err(
            OP,
            "x",
            x,
            format!("(..., {dim}) to match the weight"),
        ));
    }
    nonzero(OP, "x", xs, &[])?;
    check_numel(OP, "x", x)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::Arg {
            op: OP,
            arg: "eps",
            why: format!("{eps} is not a finite non-negative number"),
        });
    }
    if let Some(r) = residual.as_deref() {
        check_f32(OP, "residual", r)?;
        check_shape(OP, "residual", r, xs)?;
    }
    check_f32(OP, "out", out)?;
    check_shape(OP, "out", out, xs)?;
    let p = NormParams {
        rows: to_u32(OP, "x", x.numel() / dim)?,
        dim: to_u32(OP, "weight", dim)?,
        eps,
        has_residual: residual.is_some() as u32,
    };
    be.rms_norm(&p, x, weight, residual, out)
}

/// Row gather: `out[i, :] = table[ids[i], :]` as f32. ids u32 of any shape, table
/// `(rows, dim)` float, out `(ids..., dim)`. Ids out of range are an [`Error::Index`] on
/// backends that can see them (CPU); GPU backends write zeros for them, so check ids on
/// the host first (the model does).
pub fn embedding<Bk: Backend>(
    be: &Bk,
    ids: &Bk::Buffer,
    table: &Bk::Buffer,
    out: &mut Bk::Buffer,
) -> Result<()> {
    const OP: &str = "embedding";
    check_dtype(OP, "ids", ids, &[DType::U32], "u32")?;
    check_dtype(OP, "table", table, FLOATS, "f32, f16 or bf16")?;
    rank(OP, "table", table, 2, "(rows, dim)")?;
    nonzero(OP, "table", table.shape(), &["rows", "dim"])?;
    nonzero(OP, "ids", ids.shape(), &["count"; 8])?;
    let mut exp = ids.shape().to_vec();
    exp.push(table.shape()[1]);
    check_f32(OP, "out", out)?;
    check_shape(OP, "out", out, &exp)?;
    for (name, t) in [("table", table), ("out", &*out)] {
        check_numel(OP, name, t)?;
    }
    let p = EmbeddingParams {
        count: to_u32(OP, "ids", ids.numel())?,
        rows: to_u32(OP, "table", table.shape()[0])?,
        dim: to_u32(OP, "table", table.shape()[1])?,
        _pad0: 0,
    };
    be.embedding(&p, ids, table, out)
}

/// Elementwise op on f32 buffers of one shape. Binary ops need `b`; unary ones refuse it.
pub fn elementwise<Bk: Backend>(
    be: &Bk,
    op: Elementwise,
    a: &Bk::Buffer,
    b: Option<&Bk::Buffer>,
    out: &mut Bk::Buffer,
) -> Result<()> {
    const OP: &str = "elementwise";
    check_f32(OP, "a", a)?;
    nonzero(OP, "a", a.shape(), &[])?;
    check_numel(OP, "a", a)?;
    match (op.is_binary(), b) {
        (true, Some(b)) => {
            check_f32(OP, "b", b)?;
            check_shape(OP, "b", b, a.shape())?;
        }
        (true, None) => {
            return Err(Error::Arg {
                op: OP,
                arg: "b",
                why: format!("{op:?} is binary and needs a second input"),
            });
        }
        (false, Some(_)) => {
            return Err(Error::Arg {
                op: OP,
                arg: "b",
                why: format!("{op:?} is unary and takes no second input"),
            });
        }
        (false, None) => {}
    }
    check_f32(OP, "out", out)?;
    check_shape(OP, "out", out, a.shape())?;
    let p = ElementwiseParams {
        len: a.numel() as u32,
        op: op as u32,
        _pad0: 0,
        _pad1: 0,
    };
    be.elementwise(&p, op, a, b, out)
}

/// Row-wise argmax over the last dim (first index on ties, NaN never wins):
/// x `(..., cols)` f32 → out `(...)` u32; a 1-d x gives out `[1]`.
pub fn argmax<Bk: Backend>(be: &Bk, x: &Bk::Buffer, out: &mut Bk::Buffer) -> Result<()> {
    const OP: &str = "argmax";
    check_f32(OP, "x", x)?;
    nonzero(OP, "x", x.shape(), &[])?;
    check_numel(OP, "x", x)?;
    let xs = x.shape();
    if xs.is_empty() {
        return Err(shape_err(OP, "x", x, "(..., cols)".into()));
    }
    let cols = xs[xs.len() - 1];
    let exp: Vec<usize> = if xs.len() == 1 {
        vec![1]
    } else {
        xs[..xs.len() - 1].to_vec()
    };
    check_dtype(OP, "out", out, &[DType::U32], "u32")?;
    check_shape(OP, "out", out, &exp)?;
    let p = ArgmaxParams {
        rows: (x.numel() / cols) as u32,
        cols: cols as u32,
        _pad0: 0,
        _pad1: 0,
    };
    be.argmax(&p, x, out)
}

/// Copies `len` elements from `src[src_offset..]` to `dst[dst_offset..]`. Both buffers
/// must have the same 4-byte dtype (f32 or u32); ranges must lie inside them.
pub fn copy<Bk: Backend>(
    be: &Bk,
    src: &Bk::Buffer,
    src_offset: usize,
    dst: &mut Bk::Buffer,
    dst_offset: usize,
    len: usize,
) -> Result<()> {
    const OP: &str = "copy";
    check_dtype(OP, "src", src, &[DType::F32, DType::U32], "f32 or u32")?;
    if dst.dtype() != src.dtype() {
        return Err(Error::DType {
            op: OP,
            tensor: "dst",
            got: dst.dtype(),
            expected: "the dtype of src",
        });
    }
    if len == 0 {
        return Err(Error::Arg {
            op: OP,
            arg: "len",
            why: "is zero".into(),
        });
    }
    for (name, t, off) in [("src", src, src_offset), ("dst", &*dst, dst_offset)] {
        check_numel(OP, name, t)?;
        if off.checked_add(len).is_none_or(|end| end > t.numel()) {
            return Err(Error::Arg {
                op: OP,
                arg: name,
                why: format!(
                    "range {off}..{off}+{len} exceeds its {} elements",
                    t.numel()
                ),
            });
        }
    }
    let p = CopyParams {
        len: len as u32,
        src_offset: src_offset as u32,
        dst_offset: dst_offset as u32,
        _pad0: 0,
    };
    be.copy(&p, src, dst)
}
