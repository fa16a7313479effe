//! The front door of every op: validate shapes and dtypes once, build the typed
//! parameter struct, then hand it to the backend.
//!
//! Every function here returns a typed [`Error`] naming the op, the tensor and the
//! shapes when the input is wrong; none panics on input.

pub mod call;
mod check;
mod decode;
mod norm;
mod q8;
mod ssd;

use crate::backend::{Backend, DeviceBuffer};
use crate::error::{Error, Result};
use crate::params::*;
use crate::tensor::{DType, HostSlice};
pub use call::*;
use check::*;
pub use decode::{
    FUSED_MAX_BATCH, MixerInInputs, SsmStepInputs, matmul_accumulate, mixer_in, ssm_step, x_proj,
};
pub use norm::{rms_norm, rms_norm_grouped};
pub use q8::matmul_q8;
pub use ssd::{SsdInputs, ssd_scan};

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
/// D, delta_bias `(dim)`; z `(batch, dim, L)`.
///
/// Dtypes: u, delta, z, B and C (in every shape, time-invariant `(dim, N)` included) and
/// `out` are the call's *I/O dtype*, the dtype of `out`: f32, f16 or bf16, one for all
/// of them (a tensor that differs is an [`Error::DType`] naming it). A half I/O dtype
/// halves the bytes of the sequence tensors, which bound the scan's time; the arithmetic
/// is f32 (f64 on the exact CPU reference) whatever the I/O dtype, and `out` is rounded
/// to nearest-even once at the end. A, D and delta_bias are parameters and stay f32, as
/// does the state (see [`StateIo`]): rounding the carried state to 16 bits at every
/// split would compound. B and C share the I/O dtype even when time-invariant so that
/// each backend reads one element type per kernel; cast them when they are held in f32.
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

// The ops.

/// The selective scan: `selective_scan_ref` of mamba_ssm, plus an optional initial state
/// and the final state (see [`StateIo`]).
///
/// Per batch b, channel d, state n, time t:
/// `Δ = softplus?(delta + delta_bias)`, `h = exp(Δ·A)·h + Δ·B·u`,
/// `y = Σₙ C·h + D·u`, `out = y · silu(z)`.
///
/// f16/bf16 I/O (see [`ScanInputs`]) runs on the CPU and CUDA backends; the wgpu backend
/// returns an [`Error::DType`] for it.
pub fn selective_scan<Bk: Backend>(
    be: &Bk,
    inputs: &ScanInputs<'_, Bk::Buffer>,
    state: StateIo<'_, Bk::Buffer>,
    out: &mut Bk::Buffer,
) -> Result<()> {
    let p = check_scan(inputs, &state, out)?;
    be.selective_scan(ScanCall {
        p: &p,
        inputs,
        state,
        out,
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
    be.selective_state_update(StepCall {
        p: &p,
        inputs,
        state,
        out,
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
    be.causal_conv1d(ConvCall {
        p: &p,
        x,
        weight,
        bias,
        state: state.buffer(),
        out,
    })
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
    be.causal_conv1d_update(ConvUpdateCall {
        p: &p,
        x,
        weight,
        bias,
        state,
        out,
    })
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
    let p = matmul_params(x, w, bias, out)?;
    be.matmul(MatmulCall {
        p: &p,
        x,
        w,
        bias,
        out,
    })
}

/// The checks a matmul by an `(n, k)` weight makes of x `(..., k)`, bias `(n)` (any
/// float dtype) and out `(..., n)` f32: `(m, has_bias)`. `w` names the weight in errors.
pub(crate) fn matmul_io<B: DeviceBuffer>(
    op: &'static str,
    x: &B,
    [n, k]: [usize; 2],
    w: &str,
    bias: Option<&B>,
    out: &B,
) -> Result<(usize, u32)> {
    check_f32(op, "x", x)?;
    let xs = x.shape();
    if xs.is_empty() || xs[xs.len() - 1] != k {
        return Err(shape_err(op, "x", x, format!("(..., {k}) to match {w}")));
    }
    nonzero(op, "x", xs, &[])?;
    let has_bias = match bias {
        None => 0,
        Some(b) => {
            check_dtype(op, "bias", b, FLOATS, "f32, f16 or bf16")?;
            check_shape(op, "bias", b, &[n])?;
            1
        }
    };
    let mut exp = xs.to_vec();
    *exp.last_mut().expect("x has rank >= 1") = n;
    check_f32(op, "out", out)?;
    check_shape(op, "out", out, &exp)?;
    Ok((x.numel() / k, has_bias))
}

/// The checks of [`matmul`] (and of [`matmul_accumulate`]).
fn matmul_params<B: DeviceBuffer>(x: &B, w: &B, bias: Option<&B>, out: &B) -> Result<MatmulParams> {
    const OP: &str = "matmul";
    check_f32(OP, "x", x)?;
    check_dtype(OP, "w", w, FLOATS, "f32, f16 or bf16")?;
    rank(OP, "w", w, 2, "(N, K)")?;
    nonzero(OP, "w", w.shape(), &["N", "K"])?;
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let (m, has_bias) = matmul_io(OP, x, [n, k], &format!("w {:?}", w.shape()), bias, out)?;
    for (name, t) in [("x", x), ("w", w), ("out", out)] {
        check_numel(OP, name, t)?;
    }
    let [m, n, k] = u32s(OP, [m, n, k])?;
    Ok(MatmulParams {
        m,
        n,
        k,
        has_bias,
        accumulate: 0,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    })
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
    be.embedding(EmbeddingCall {
        p: &p,
        ids,
        table,
        out,
    })
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
    be.elementwise(ElementwiseCall {
        p: &p,
        op,
        a,
        b,
        out,
    })
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
    be.argmax(ArgmaxCall { p: &p, x, out })
}

/// Copies host `data` into the existing buffer `dst`, which must have the same dtype and
/// element count (it keeps its shape). Unlike [`Backend::upload`] nothing is allocated
/// and the buffer keeps its address. Ops recorded before the write see the old
/// contents, ops recorded after it the new ones.
pub fn write<Bk: Backend>(be: &Bk, data: HostSlice<'_>, dst: &mut Bk::Buffer) -> Result<()> {
    check_write(&data, dst)?;
    be.write(data, dst)
}

/// The checks of [`write`]; each backend's `Backend::write` repeats them, since it can
/// be called directly.
pub(crate) fn check_write<B: DeviceBuffer>(data: &HostSlice<'_>, dst: &B) -> Result<()> {
    const OP: &str = "write";
    if data.dtype() != dst.dtype() {
        return Err(Error::DType {
            op: OP,
            tensor: "data",
            got: data.dtype(),
            expected: dst.dtype().name(),
        });
    }
    if data.len() != dst.numel() {
        return Err(Error::Shape {
            op: OP,
            tensor: "data",
            got: vec![data.len()],
            expected: format!("{} elements to fill dst {:?}", dst.numel(), dst.shape()),
        });
    }
    Ok(())
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
    be.copy(CopyCall { p: &p, src, dst })
}
