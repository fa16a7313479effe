//! The [`Device`](super::Device) dispatch of each op: the checked call for
//! [`DeviceBuf`]s becomes the same call for the inner backend's buffers, or an
//! [`Error::WrongDevice`] naming the op and the tensor when a buffer is another
//! backend's.
//!
//! Sound for the reason the checked calls are (see [`crate::ops::call`]): the parameters
//! were checked against these very buffers, whose shapes a `DeviceBuf` reports from the
//! inner buffer; only the wrapper around each buffer is removed.

use super::DeviceBuf;
use crate::backend::Backend;
use crate::cpu::{CpuBackend, CpuBuffer};
use crate::error::{Error, Result};
use crate::ops::call::*;
use crate::ops::{MixerInInputs, ScanInputs, SsdInputs, SsmStepInputs, StateIo, StepInputs};

/// An inner backend of a [`Device`](super::Device): which `DeviceBuf` variant holds its
/// buffers.
pub(super) trait Inner: Backend {
    const NAME: &'static str;
    fn get(buf: &DeviceBuf) -> Option<&Self::Buffer>;
    fn get_mut(buf: &mut DeviceBuf) -> Option<&mut Self::Buffer>;
}

macro_rules! inner {
    ($backend:ty, $buffer:ty, $variant:ident, $name:literal) => {
        impl Inner for $backend {
            const NAME: &'static str = $name;
            fn get(buf: &DeviceBuf) -> Option<&$buffer> {
                match buf {
                    DeviceBuf::$variant(b) => Some(b),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
            fn get_mut(buf: &mut DeviceBuf) -> Option<&mut $buffer> {
                match buf {
                    DeviceBuf::$variant(b) => Some(b),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }

        impl From<$buffer> for DeviceBuf {
            fn from(b: $buffer) -> Self {
                DeviceBuf::$variant(b)
            }
        }
    };
}

inner!(CpuBackend, CpuBuffer, Cpu, "cpu");
#[cfg(feature = "wgpu")]
inner!(
    crate::wgpu::WgpuBackend,
    crate::wgpu::WgpuBuffer,
    Wgpu,
    "wgpu"
);
#[cfg(feature = "cuda")]
inner!(
    crate::cuda::CudaBackend,
    crate::cuda::CudaBuffer,
    Cuda,
    "cuda"
);

fn wrong<Bk: Inner>(op: &'static str, tensor: &'static str, buf: &DeviceBuf) -> Error {
    Error::WrongDevice {
        op,
        tensor,
        got: buf.backend(),
        expected: Bk::NAME,
    }
}

/// The inner buffer of `buf`, which must belong to the backend of `_be`.
pub(super) fn inner<'a, Bk: Inner>(
    _be: &Bk,
    op: &'static str,
    tensor: &'static str,
    buf: &'a DeviceBuf,
) -> Result<&'a Bk::Buffer> {
    get::<Bk>(op, tensor, buf)
}

/// [`inner`], mutably.
pub(super) fn inner_mut<'a, Bk: Inner>(
    _be: &Bk,
    op: &'static str,
    tensor: &'static str,
    buf: &'a mut DeviceBuf,
) -> Result<&'a mut Bk::Buffer> {
    get_mut::<Bk>(op, tensor, buf)
}

fn get<'a, Bk: Inner>(
    op: &'static str,
    tensor: &'static str,
    buf: &'a DeviceBuf,
) -> Result<&'a Bk::Buffer> {
    Bk::get(buf).ok_or_else(|| wrong::<Bk>(op, tensor, buf))
}

fn get_mut<'a, Bk: Inner>(
    op: &'static str,
    tensor: &'static str,
    buf: &'a mut DeviceBuf,
) -> Result<&'a mut Bk::Buffer> {
    let err = wrong::<Bk>(op, tensor, buf);
    Bk::get_mut(buf).ok_or(err)
}

fn opt<'a, Bk: Inner>(
    op: &'static str,
    tensor: &'static str,
    buf: Option<&'a DeviceBuf>,
) -> Result<Option<&'a Bk::Buffer>> {
    buf.map(|b| get::<Bk>(op, tensor, b)).transpose()
}

fn opt_mut<'a, Bk: Inner>(
    op: &'static str,
    tensor: &'static str,
    buf: Option<&'a mut DeviceBuf>,
) -> Result<Option<&'a mut Bk::Buffer>> {
    buf.map(|b| get_mut::<Bk>(op, tensor, b)).transpose()
}

/// The scan's state argument, its buffer unwrapped like the others.
fn state_io<'a, Bk: Inner>(
    op: &'static str,
    state: StateIo<'a, DeviceBuf>,
) -> Result<StateIo<'a, Bk::Buffer>> {
    Ok(match state {
        StateIo::None => StateIo::None,
        StateIo::Final(s) => StateIo::Final(get_mut::<Bk>(op, "state", s)?),
        StateIo::Carry(s) => StateIo::Carry(get_mut::<Bk>(op, "state", s)?),
    })
}

pub(super) fn embedding<Bk: Inner>(be: &Bk, call: EmbeddingCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "embedding";
    let EmbeddingCall { p, ids, table, out } = call;
    be.embedding(EmbeddingCall {
        p,
        ids: get::<Bk>(OP, "ids", ids)?,
        table: get::<Bk>(OP, "table", table)?,
        out: get_mut::<Bk>(OP, "out", out)?,
    })
}

pub(super) fn matmul<Bk: Inner>(be: &Bk, call: MatmulCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "matmul";
    let MatmulCall { p, x, w, bias, out } = call;
    be.matmul(MatmulCall {
        p,
        x: get::<Bk>(OP, "x", x)?,
        w: get::<Bk>(OP, "w", w)?,
        bias: opt::<Bk>(OP, "bias", bias)?,
        out: get_mut::<Bk>(OP, "out", out)?,
    })
}

pub(super) fn matmul_q8<Bk: Inner>(be: &Bk, call: MatmulQ8Call<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "matmul_q8";
    let MatmulQ8Call {
        p,
        x,
        q,
        d,
        bias,
        out,
    } = call;
    be.matmul_q8(MatmulQ8Call {
        p,
        x: get::<Bk>(OP, "x", x)?,
        q: get::<Bk>(OP, "q", q)?,
        d: get::<Bk>(OP, "d", d)?,
        bias: opt::<Bk>(OP, "bias", bias)?,
        out: get_mut::<Bk>(OP, "out", out)?,
    })
}

pub(super) fn rms_norm<Bk: Inner>(be: &Bk, call: NormCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "rms_norm";
    let NormCall {
        p,
        x,
        weight,
        residual,
        out,
    } = call;
    be.rms_norm(NormCall {
        p,
        x: get::<Bk>(OP, "x", x)?,
        weight: get::<Bk>(OP, "weight", weight)?,
        residual: opt_mut::<Bk>(OP, "residual", residual)?,
        out: get_mut::<Bk>(OP, "out", out)?,
    })
}

pub(super) fn causal_conv1d<Bk: Inner>(be: &Bk, call: ConvCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "causal_conv1d";
    let ConvCall {
        p,
        x,
        weight,
        bias,
        state,
        out,
    } = call;
    be.causal_conv1d(ConvCall {
        p,
        x: get::<Bk>(OP, "x", x)?,
        weight: get::<Bk>(OP, "weight", weight)?,
        bias: opt::<Bk>(OP, "bias", bias)?,
        state: opt_mut::<Bk>(OP, "conv_state", state)?,
        out: get_mut::<Bk>(OP, "out", out)?,
    })
}

pub(super) fn causal_conv1d_update<Bk: Inner>(
    be: &Bk,
    call: ConvUpdateCall<'_, DeviceBuf>,
) -> Result<()> {
    const OP: &str = "causal_conv1d_update";
    let ConvUpdateCall {
        p,
        x,
        weight,
        bias,
        state,
        out,
    } = call;
    be.causal_conv1d_update(ConvUpdateCall {
        p,
        x: get::<Bk>(OP, "x", x)?,
        weight: get::<Bk>(OP, "weight", weight)?,
        bias: opt::<Bk>(OP, "bias", bias)?,
        state: get_mut::<Bk>(OP, "conv_state", state)?,
        out: get_mut::<Bk>(OP, "out", out)?,
    })
}

pub(super) fn selective_scan<Bk: Inner>(be: &Bk, call: ScanCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "selective_scan";
    let ScanCall {
        p,
        inputs: i,
        state,
        out,
    } = call;
    let inputs = ScanInputs {
        u: get::<Bk>(OP, "u", i.u)?,
        delta: get::<Bk>(OP, "delta", i.delta)?,
        a: get::<Bk>(OP, "A", i.a)?,
        b: get::<Bk>(OP, "B", i.b)?,
        c: get::<Bk>(OP, "C", i.c)?,
        d: opt::<Bk>(OP, "D", i.d)?,
        z: opt::<Bk>(OP, "z", i.z)?,
        delta_bias: opt::<Bk>(OP, "delta_bias", i.delta_bias)?,
        delta_softplus: i.delta_softplus,
        layout: i.layout,
    };
    let state = state_io::<Bk>(OP, state)?;
    be.selective_scan(ScanCall {
        p,
        inputs: &inputs,
        state,
        out: get_mut::<Bk>(OP, "out", out)?,
    })
}

pub(super) fn ssd_scan<Bk: Inner>(be: &Bk, call: SsdCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "ssd_scan";
    let SsdCall {
        p,
        inputs: i,
        state,
        out,
    } = call;
    let inputs = SsdInputs {
        x: get::<Bk>(OP, "x", i.x)?,
        dt: get::<Bk>(OP, "dt", i.dt)?,
        a: get::<Bk>(OP, "A", i.a)?,
        b: get::<Bk>(OP, "B", i.b)?,
        c: get::<Bk>(OP, "C", i.c)?,
        d: opt::<Bk>(OP, "D", i.d)?,
        z: opt::<Bk>(OP, "z", i.z)?,
        dt_bias: opt::<Bk>(OP, "dt_bias", i.dt_bias)?,
        dt_softplus: i.dt_softplus,
        head_dim: i.head_dim,
    };
    let state = state_io::<Bk>(OP, state)?;
    be.ssd_scan(SsdCall {
        p,
        inputs: &inputs,
        state,
        out: get_mut::<Bk>(OP, "out", out)?,
    })
}

pub(super) fn selective_state_update<Bk: Inner>(
    be: &Bk,
    call: StepCall<'_, DeviceBuf>,
) -> Result<()> {
    const OP: &str = "selective_state_update";
    let StepCall {
        p,
        inputs: i,
        state,
        out,
    } = call;
    let inputs = StepInputs {
        x: get::<Bk>(OP, "x", i.x)?,
        dt: get::<Bk>(OP, "dt", i.dt)?,
        a: get::<Bk>(OP, "A", i.a)?,
        b: get::<Bk>(OP, "B", i.b)?,
        c: get::<Bk>(OP, "C", i.c)?,
        d: opt::<Bk>(OP, "D", i.d)?,
        z: opt::<Bk>(OP, "z", i.z)?,
        dt_bias: opt::<Bk>(OP, "dt_bias", i.dt_bias)?,
        dt_softplus: i.dt_softplus,
    };
    be.selective_state_update(StepCall {
        p,
        inputs: &inputs,
        state: get_mut::<Bk>(OP, "state", state)?,
        out: get_mut::<Bk>(OP, "out", out)?,
    })
}

pub(super) fn elementwise<Bk: Inner>(be: &Bk, call: ElementwiseCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "elementwise";
    let ElementwiseCall { p, op, a, b, out } = call;
    be.elementwise(ElementwiseCall {
        p,
        op,
        a: get::<Bk>(OP, "a", a)?,
        b: opt::<Bk>(OP, "b", b)?,
        out: get_mut::<Bk>(OP, "out", out)?,
    })
}

pub(super) fn argmax<Bk: Inner>(be: &Bk, call: ArgmaxCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "argmax";
    let ArgmaxCall { p, x, out } = call;
    be.argmax(ArgmaxCall {
        p,
        x: get::<Bk>(OP, "x", x)?,
        out: get_mut::<Bk>(OP, "out", out)?,
    })
}

pub(super) fn copy<Bk: Inner>(be: &Bk, call: CopyCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "copy";
    let CopyCall { p, src, dst } = call;
    be.copy(CopyCall {
        p,
        src: get::<Bk>(OP, "src", src)?,
        dst: get_mut::<Bk>(OP, "dst", dst)?,
    })
}

pub(super) fn mixer_in<Bk: Inner>(be: &Bk, call: MixerInCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "mixer_in";
    let MixerInCall {
        p,
        inputs: i,
        conv_state,
        xc,
        z,
    } = call;
    let inputs = MixerInInputs {
        h: get::<Bk>(OP, "h", i.h)?,
        norm_w: get::<Bk>(OP, "norm_w", i.norm_w)?,
        eps: i.eps,
        w_x: get::<Bk>(OP, "w_x", i.w_x)?,
        w_z: get::<Bk>(OP, "w_z", i.w_z)?,
        conv_w: get::<Bk>(OP, "conv_w", i.conv_w)?,
        conv_b: opt::<Bk>(OP, "conv_b", i.conv_b)?,
    };
    be.mixer_in(MixerInCall {
        p,
        inputs: &inputs,
        conv_state: get_mut::<Bk>(OP, "conv_state", conv_state)?,
        xc: get_mut::<Bk>(OP, "xc", xc)?,
        z: get_mut::<Bk>(OP, "z", z)?,
    })
}

pub(super) fn x_proj<Bk: Inner>(be: &Bk, call: XProjCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "x_proj";
    let XProjCall {
        p,
        xc,
        w_dt,
        w_b,
        w_c,
        dbc,
    } = call;
    be.x_proj(XProjCall {
        p,
        xc: get::<Bk>(OP, "xc", xc)?,
        w_dt: get::<Bk>(OP, "w_dt", w_dt)?,
        w_b: get::<Bk>(OP, "w_b", w_b)?,
        w_c: get::<Bk>(OP, "w_c", w_c)?,
        dbc: get_mut::<Bk>(OP, "dbc", dbc)?,
    })
}

pub(super) fn ssm_step<Bk: Inner>(be: &Bk, call: SsmStepCall<'_, DeviceBuf>) -> Result<()> {
    const OP: &str = "ssm_step";
    let SsmStepCall {
        p,
        inputs: i,
        state,
        y,
    } = call;
    let inputs = SsmStepInputs {
        xc: get::<Bk>(OP, "xc", i.xc)?,
        dbc: get::<Bk>(OP, "dbc", i.dbc)?,
        z: get::<Bk>(OP, "z", i.z)?,
        dt_proj: get::<Bk>(OP, "dt_proj", i.dt_proj)?,
        dt_bias: get::<Bk>(OP, "dt_bias", i.dt_bias)?,
        a: get::<Bk>(OP, "A", i.a)?,
        d: get::<Bk>(OP, "D", i.d)?,
        norm_eps: i.norm_eps,
    };
    be.ssm_step(SsmStepCall {
        p,
        inputs: &inputs,
        state: get_mut::<Bk>(OP, "state", state)?,
        y: get_mut::<Bk>(OP, "y", y)?,
    })
}
