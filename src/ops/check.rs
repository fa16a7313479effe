//! The checks behind the front door: shape, dtype and size rules shared by the ops, and
//! the full validation of the scan and the step (the two ops with the most inputs).

use super::{Layout, ScanInputs, StateIo, StepInputs};
use crate::backend::DeviceBuffer;
use crate::error::{Error, Result};
use crate::params::*;
use crate::tensor::DType;

pub(super) fn shape_err<B: DeviceBuffer>(
    op: &'static str,
    name: &'static str,
    b: &B,
    exp: String,
) -> Error {
    Error::Shape {
        op,
        tensor: name,
        got: b.shape().to_vec(),
        expected: exp,
    }
}

pub(super) fn check_dtype<B: DeviceBuffer>(
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

pub(super) fn check_f32<B: DeviceBuffer>(
    op: &'static str,
    name: &'static str,
    b: &B,
) -> Result<()> {
    check_dtype(op, name, b, &[DType::F32], "f32")
}

pub(super) const FLOATS: &[DType] = &[DType::F32, DType::F16, DType::BF16];

pub(super) fn check_shape<B: DeviceBuffer>(
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
pub(super) fn check_vec<B: DeviceBuffer>(
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

pub(super) fn nonzero(
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

pub(super) fn rank<B: DeviceBuffer>(
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
pub(super) fn to_u32(op: &'static str, arg: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Arg {
        op,
        arg,
        why: format!("{n} elements exceed the 32-bit indexing of the kernels"),
    })
}

pub(super) fn check_numel<B: DeviceBuffer>(
    op: &'static str,
    name: &'static str,
    b: &B,
) -> Result<()> {
    to_u32(op, name, b.numel()).map(|_| ())
}

/// Checks that a sequence tensor of the scan has the I/O dtype (the dtype of `out`).
/// The expected text names that dtype, so a mixed-precision call says what to convert to.
pub(super) fn check_io<B: DeviceBuffer>(
    op: &'static str,
    name: &'static str,
    t: &B,
    io: DType,
) -> Result<()> {
    let expected = match io {
        DType::F16 => "f16, the I/O dtype of this call (the dtype of `out`)",
        DType::BF16 => "bf16, the I/O dtype of this call (the dtype of `out`)",
        _ => "f32, the I/O dtype of this call (the dtype of `out`)",
    };
    check_dtype(op, name, t, &[io], expected)
}

/// Strides of B or C in the scan: (batch, group, state, time, channels per group).
/// B and C have the I/O dtype `io` in every shape, time-invariant `(dim, N)` included.
pub(super) fn scan_bc_strides<B: DeviceBuffer>(
    name: &'static str,
    t: &B,
    io: DType,
    layout: Layout,
    (batch, dim, len, n): (usize, usize, usize, usize),
) -> Result<[usize; 5]> {
    const OP: &str = "selective_scan";
    check_io(OP, name, t, io)?;
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
pub(super) fn seq_strides(layout: Layout, dim: usize, len: usize) -> [usize; 3] {
    match layout {
        Layout::ChannelMajor => [dim * len, len, 1],
        Layout::TokenMajor => [len * dim, 1, dim],
    }
}

/// `(batch, dim, len)` of a sequence tensor in the given layout.
pub(super) fn seq_dims(layout: Layout, s: &[usize]) -> (usize, usize, usize) {
    match layout {
        Layout::ChannelMajor => (s[0], s[1], s[2]),
        Layout::TokenMajor => (s[0], s[2], s[1]),
    }
}

pub(super) fn seq_names(layout: Layout) -> [&'static str; 3] {
    match layout {
        Layout::ChannelMajor => ["batch", "dim", "L"],
        Layout::TokenMajor => ["batch", "L", "dim"],
    }
}

pub(super) fn u32s<const K: usize>(op: &'static str, xs: [usize; K]) -> Result<[u32; K]> {
    let mut out = [0u32; K];
    for (o, x) in out.iter_mut().zip(xs) {
        *o = to_u32(op, "stride", x)?;
    }
    Ok(out)
}

pub(super) fn check_scan<B: DeviceBuffer>(
    i: &ScanInputs<'_, B>,
    state: &StateIo<'_, B>,
    out: &B,
) -> Result<ScanParams> {
    const OP: &str = "selective_scan";
    let layout = i.layout;
    // The I/O dtype is the dtype of `out`: checked first, so that an input that alone
    // disagrees with it is the tensor the error names.
    check_dtype(OP, "out", out, FLOATS, "f32, f16 or bf16")?;
    let io = out.dtype();
    check_io(OP, "u", i.u, io)?;
    let what = match layout {
        Layout::ChannelMajor => "(batch, dim, L)",
        Layout::TokenMajor => "(batch, L, dim)",
    };
    rank(OP, "u", i.u, 3, what)?;
    nonzero(OP, "u", i.u.shape(), &seq_names(layout))?;
    check_numel(OP, "u", i.u)?;
    let useq = i.u.shape().to_vec();
    let (batch, dim, len) = seq_dims(layout, &useq);
    check_io(OP, "delta", i.delta, io)?;
    check_shape(OP, "delta", i.delta, &useq)?;
    check_f32(OP, "A", i.a)?;
    rank(OP, "A", i.a, 2, "(dim, N)")?;
    nonzero(OP, "A", i.a.shape(), &["dim", "N"])?;
    let n = i.a.shape()[1];
    check_shape(OP, "A", i.a, &[dim, n])?;
    let dims = (batch, dim, len, n);
    let b = scan_bc_strides("B", i.b, io, layout, dims)?;
    let c = scan_bc_strides("C", i.c, io, layout, dims)?;
    let has_d = check_vec(OP, "D", i.d, dim)?;
    let has_delta_bias = check_vec(OP, "delta_bias", i.delta_bias, dim)?;
    let has_z = match i.z {
        None => 0,
        Some(z) => {
            check_io(OP, "z", z, io)?;
            check_shape(OP, "z", z, &useq)?;
            1
        }
    };
    if let Some(s) = state.peek() {
        check_f32(OP, "state", s)?;
        check_shape(OP, "state", s, &[batch, dim, n])?;
        check_numel(OP, "state", s)?;
    }
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

pub(super) fn check_step<B: DeviceBuffer>(
    i: &StepInputs<'_, B>,
    state: &B,
    out: &B,
) -> Result<StepParams> {
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

pub(super) fn check_conv_weights<B: DeviceBuffer>(
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
