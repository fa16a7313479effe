//! The front door of Mamba-2's scan in head form ([`ssd_scan`]).

use super::check::*;
use super::{SsdCall, StateIo};
use crate::backend::{Backend, DeviceBuffer};
use crate::error::{Error, Result};
use crate::params::SsdParams;

/// Inputs of [`ssd_scan`], token-major, all f32.
///
/// x, z `(batch, L, H·P)`; dt `(batch, L, H)`; A, D, dt_bias `(H)`; B, C
/// `(batch, L, G, N)` (or `(batch, L, N)` for one group). `head_dim` is P.
pub struct SsdInputs<'a, B> {
    pub x: &'a B,
    pub dt: &'a B,
    pub a: &'a B,
    pub b: &'a B,
    pub c: &'a B,
    pub d: Option<&'a B>,
    pub z: Option<&'a B>,
    pub dt_bias: Option<&'a B>,
    pub dt_softplus: bool,
    pub head_dim: usize,
}

/// Mamba-2's scan (the SSD recurrence of mamba_ssm's `ssd_minimal_discrete`, with the
/// discretisation, D and the z gate of `Mamba2`), per batch b, head h, channel p,
/// state n, time t, with g the group of h (`h / (H / G)`):
///
/// `Δ = softplus?(dt[t, h] + dt_bias[h])`, `h[p, n] ← exp(Δ·A[h])·h[p, n] + Δ·B[t, g, n]·x[t, h, p]`,
/// `y = Σₙ C[t, g, n]·h[p, n] + D[h]·x`, `out = y · silu(z)`.
///
/// It is [`super::selective_scan`] with A, Δ and D constant over a head, which this
/// form exploits: one `exp` per head and step instead of one per channel and state.
/// The state is `(batch, H, P, N)` (or `(batch, H·P, N)`, the same memory) f32, with
/// [`StateIo`] as for the scan. Backends without it return [`Error::Limit`]; see
/// [`Backend::has_ssd_scan`].
pub fn ssd_scan<Bk: Backend>(
    be: &Bk,
    i: &SsdInputs<'_, Bk::Buffer>,
    state: StateIo<'_, Bk::Buffer>,
    out: &mut Bk::Buffer,
) -> Result<()> {
    const OP: &str = "ssd_scan";
    check_f32(OP, "dt", i.dt)?;
    rank(OP, "dt", i.dt, 3, "(batch, L, heads)")?;
    let [batch, len, heads] = [i.dt.shape()[0], i.dt.shape()[1], i.dt.shape()[2]];
    nonzero(OP, "dt", i.dt.shape(), &["batch", "L", "heads"])?;
    let p = i.head_dim;
    if p == 0 {
        return Err(Error::Arg {
            op: OP,
            arg: "head_dim",
            why: "must be positive, got 0".into(),
        });
    }
    let e = heads.checked_mul(p).ok_or_else(|| Error::Arg {
        op: OP,
        arg: "head_dim",
        why: format!("{heads} heads x {p} overflows"),
    })?;
    check_f32(OP, "x", i.x)?;
    check_shape(OP, "x", i.x, &[batch, len, e])?;
    check_numel(OP, "x", i.x)?;
    check_f32(OP, "A", i.a)?;
    check_shape(OP, "A", i.a, &[heads])?;
    let mut shape_bc = None;
    for (name, t) in [("B", i.b), ("C", i.c)] {
        check_f32(OP, name, t)?;
        let s = t.shape();
        let (g, n) = match s.len() {
            3 => (1, s[2]),
            4 => (s[2], s[3]),
            _ => {
                return Err(shape_err(
                    OP,
                    name,
                    t,
                    "(batch, L, G, N) or (batch, L, N)".into(),
                ));
            }
        };
        if s[0] != batch || s[1] != len {
            return Err(shape_err(
                OP,
                name,
                t,
                format!("({batch}, {len}, G, N) as dt"),
            ));
        }
        nonzero(OP, name, s, &["batch", "L", "groups", "N"])?;
        check_numel(OP, name, t)?;
        if heads % g != 0 {
            return Err(Error::Groups {
                op: OP,
                groups: g,
                dim: heads,
            });
        }
        match shape_bc {
            None => shape_bc = Some((g, n)),
            Some(gn) if gn == (g, n) => {}
            Some((g0, n0)) => {
                return Err(shape_err(
                    OP,
                    name,
                    t,
                    format!("({batch}, {len}, {g0}, {n0}) as B"),
                ));
            }
        }
    }
    let (groups, n) = shape_bc.unwrap_or((1, 1));
    let has_d = check_vec(OP, "D", i.d, heads)?;
    let has_dt_bias = check_vec(OP, "dt_bias", i.dt_bias, heads)?;
    let has_z = match i.z {
        None => 0,
        Some(z) => {
            check_f32(OP, "z", z)?;
            check_shape(OP, "z", z, &[batch, len, e])?;
            1
        }
    };
    if let Some(s) = state.peek() {
        check_f32(OP, "state", s)?;
        if s.shape() != [batch, heads, p, n] && s.shape() != [batch, e, n] {
            return Err(shape_err(
                OP,
                "state",
                s,
                format!("({batch}, {heads}, {p}, {n}) or ({batch}, {e}, {n})"),
            ));
        }
        check_numel(OP, "state", s)?;
    }
    check_f32(OP, "out", out)?;
    check_shape(OP, "out", out, &[batch, len, e])?;
    let [batch, len, heads, head_dim, dstate, groups] =
        u32s(OP, [batch, len, heads, p, n, groups])?;
    let params = SsdParams {
        batch,
        len,
        heads,
        head_dim,
        dstate,
        groups,
        has_d,
        has_z,
        has_dt_bias,
        dt_softplus: i.dt_softplus as u32,
        state_mode: state.mode(),
        t_begin: 0,
        t_end: len,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    if !be.has_ssd_scan() {
        return Err(Error::limit(
            be.name(),
            OP,
            "x",
            "this backend has no ssd_scan kernel yet (Backend::has_ssd_scan)",
        ));
    }
    be.ssd_scan(SsdCall {
        p: &params,
        inputs: i,
        state,
        out,
    })
}
