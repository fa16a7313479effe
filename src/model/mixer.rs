//! The mixer of one layer, for every family, in a prefill pass or a decode step.
//!
//! One function holds each family's data flow; only the conv and the scan differ
//! between a pass over `(batch, L)` tokens (`causal_conv1d` + `selective_scan`,
//! token-major, states carried) and a decode step (`causal_conv1d_update` +
//! `selective_state_update`), so both come from the same code:
//!
//! ```text
//! Mamba-1       x, z = in_proj(u);  xc = silu(conv(x));  dt, B, C = x_proj(xc)
//!               y = scan(xc, Δ = dt_proj(dt), B, C) · silu(z);  out_proj(y)
//! Falcon-Mamba  as Mamba-1 with dt, B, C ← rmsnorm(dt), rmsnorm(B), rmsnorm(C) (no weight)
//! Mamba-2       z, x, B, C, dt = in_proj(u);  xc, B, C = silu(conv(x, B, C))
//!               y = scan(xc, Δ = repeat(dt), B, C grouped) · silu(z)
//!               out_proj(rmsnorm_grouped(y))
//! ```

use super::config::{Family, MambaConfig};
use super::state::Extra;
use super::weights::{LayerWeights, Weights};
use crate::backend::{Backend, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::{self, Layout, ScanInputs, SsdInputs, StateIo, StepInputs};

/// Prefill over `len` tokens per sequence, or one decode step.
#[derive(Clone, Copy)]
pub(crate) enum Pass {
    Seq { batch: usize, len: usize },
    Step { batch: usize },
}

/// The activation buffers a mixer writes, `(rows..., width)` with rows `(batch, L)` or
/// `(batch)`: x, z, xc, dt, y `E`; dt_low `R`; bm, cm `G·N`.
pub(crate) struct Bufs<'a, B: Backend> {
    pub x: &'a mut B::Buffer,
    pub z: &'a mut B::Buffer,
    pub xc: &'a mut B::Buffer,
    pub dt: &'a mut B::Buffer,
    pub y: &'a mut B::Buffer,
    pub dt_low: &'a mut B::Buffer,
    pub bm: &'a mut B::Buffer,
    pub cm: &'a mut B::Buffer,
    pub extra: &'a mut Extra<B>,
}

/// A buffer a family needs but this state/scratch lacks: a bug, not bad input.
fn missing(what: &'static str) -> Error {
    Error::Arg {
        op: "mixer",
        arg: what,
        why: "this buffer was not allocated for the model's family".into(),
    }
}

fn dt_proj<B: Backend>(lw: &LayerWeights<B>) -> Result<&B::Buffer> {
    lw.dt_proj.as_ref().ok_or(missing("dt_proj"))
}

fn conv<B: Backend>(
    be: &B,
    pass: Pass,
    x: &B::Buffer,
    w: &B::Buffer,
    b: Option<&B::Buffer>,
    state: &mut B::Buffer,
    out: &mut B::Buffer,
) -> Result<()> {
    match pass {
        Pass::Seq { .. } => ops::causal_conv1d(
            be,
            x,
            w,
            b,
            true,
            Layout::TokenMajor,
            StateIo::Carry(state),
            out,
        ),
        Pass::Step { .. } => ops::causal_conv1d_update(be, x, w, b, true, state, out),
    }
}

/// The scan (prefill) or the state update (decode) with the layer's A, D, Δ bias.
#[allow(clippy::too_many_arguments)]
fn ssm<B: Backend>(
    be: &B,
    pass: Pass,
    lw: &LayerWeights<B>,
    u: &B::Buffer,
    delta: &B::Buffer,
    b: &B::Buffer,
    c: &B::Buffer,
    z: &B::Buffer,
    state: &mut B::Buffer,
    y: &mut B::Buffer,
) -> Result<()> {
    match pass {
        Pass::Seq { .. } => {
            let inputs = ScanInputs {
                u,
                delta,
                a: &lw.a,
                b,
                c,
                d: Some(&lw.d),
                z: Some(z),
                delta_bias: Some(&lw.dt_bias),
                delta_softplus: true,
                layout: Layout::TokenMajor,
            };
            ops::selective_scan(be, &inputs, StateIo::Carry(state), y)
        }
        Pass::Step { .. } => {
            let inputs = StepInputs {
                x: u,
                dt: delta,
                a: &lw.a,
                b,
                c,
                d: Some(&lw.d),
                z: Some(z),
                dt_bias: Some(&lw.dt_bias),
                dt_softplus: true,
            };
            ops::selective_state_update(be, &inputs, state, y)
        }
    }
}

/// The mixer of layer `lw` on `normed`, writing its output into `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mixer<B: Backend>(
    be: &B,
    cfg: &MambaConfig,
    w: &Weights<B>,
    lw: &LayerWeights<B>,
    pass: Pass,
    normed: &B::Buffer,
    conv_state: &mut [B::Buffer],
    ssm_state: &mut B::Buffer,
    s: Bufs<'_, B>,
    out: &mut B::Buffer,
) -> Result<()> {
    match cfg.family {
        Family::Mamba1 | Family::FalconMamba { .. } => {
            let state = conv_state.first_mut().ok_or(missing("conv_state"))?;
            lw.w_x.matmul(be, normed, lw.b_x.as_ref(), s.x)?;
            lw.w_z.matmul(be, normed, lw.b_z.as_ref(), s.z)?;
            conv(be, pass, s.x, &lw.conv_w, lw.conv_b.as_ref(), state, s.xc)?;
            ops::matmul(be, s.xc, &lw.w_dt, None, s.dt_low)?;
            if let Family::FalconMamba { mixer_rms_eps: eps } = cfg.family {
                let un = w.unit_norms.as_ref().ok_or(missing("unit norms"))?;
                let e = &mut *s.extra;
                let br = e.b_raw.as_mut().ok_or(missing("b_raw"))?;
                ops::matmul(be, s.xc, &lw.w_b, None, br)?;
                ops::rms_norm(be, br, &un.bc, eps, None, s.bm)?;
                let cr = e.c_raw.as_mut().ok_or(missing("c_raw"))?;
                ops::matmul(be, s.xc, &lw.w_c, None, cr)?;
                ops::rms_norm(be, cr, &un.bc, eps, None, s.cm)?;
                let dn = e.dt_normed.as_mut().ok_or(missing("dt_normed"))?;
                ops::rms_norm(be, s.dt_low, &un.dt, eps, None, dn)?;
                ops::matmul(be, dn, dt_proj(lw)?, None, s.dt)?;
            } else {
                ops::matmul(be, s.xc, &lw.w_b, None, s.bm)?;
                ops::matmul(be, s.xc, &lw.w_c, None, s.cm)?;
                ops::matmul(be, s.dt_low, dt_proj(lw)?, None, s.dt)?;
            }
            ssm(be, pass, lw, s.xc, s.dt, s.bm, s.cm, s.z, ssm_state, s.y)?;
            lw.out_w.matmul(be, s.y, lw.out_b.as_ref(), out)
        }
        Family::Mamba2(m2) => {
            let ex = lw.mamba2.as_ref().ok_or(missing("mamba2 weights"))?;
            let [cx, cb, cc] = conv_state else {
                return Err(missing("mamba2 conv states"));
            };
            let mut s = s;
            let e = &mut *s.extra;
            let br = e.b_raw.as_mut().ok_or(missing("b_raw"))?;
            let cr = e.c_raw.as_mut().ok_or(missing("c_raw"))?;
            lw.w_z.matmul(be, normed, lw.b_z.as_ref(), s.z)?;
            lw.w_x.matmul(be, normed, lw.b_x.as_ref(), s.x)?;
            ops::matmul(be, normed, &lw.w_b, ex.b_b.as_ref(), br)?;
            ops::matmul(be, normed, &lw.w_c, ex.b_c.as_ref(), cr)?;
            ops::matmul(be, normed, &lw.w_dt, ex.b_dt.as_ref(), s.dt_low)?;
            conv(be, pass, s.x, &lw.conv_w, lw.conv_b.as_ref(), cx, s.xc)?;
            conv(be, pass, br, &ex.conv_wb, ex.conv_bb.as_ref(), cb, s.bm)?;
            conv(be, pass, cr, &ex.conv_wc, ex.conv_bc.as_ref(), cc, s.cm)?;
            let (g, n) = (m2.n_groups, cfg.state_size);
            if be.has_ssd_scan() {
                ssd(be, pass, lw, m2.head_dim, g, n, &mut s, ssm_state)?;
            } else {
                general(be, pass, lw, g, n, &mut s, ssm_state)?;
            }
            let yn = s.extra.y_normed.as_mut().ok_or(missing("y_normed"))?;
            ops::rms_norm_grouped(be, s.y, &ex.norm, m2.gated_norm_eps, g, yn)?;
            lw.out_w.matmul(be, yn, lw.out_b.as_ref(), out)
        }
    }
}

/// Mamba-2 through the general scan: Δ spread over each head's channels by `dt_proj`.
fn general<B: Backend>(
    be: &B,
    pass: Pass,
    lw: &LayerWeights<B>,
    g: usize,
    n: usize,
    s: &mut Bufs<'_, B>,
    ssm_state: &mut B::Buffer,
) -> Result<()> {
    ops::matmul(be, s.dt_low, dt_proj(lw)?, None, s.dt)?;
    // B and C as groups for the scan: (rows..., G, N), and back afterwards
    // (the conv writes them flat), whatever the scan returned.
    let flat = s.bm.shape().to_vec();
    if g > 1 {
        let grouped = match pass {
            Pass::Seq { batch, len } => vec![batch, len, g, n],
            Pass::Step { batch } => vec![batch, g, n],
        };
        s.bm.reshape(&grouped)?;
        s.cm.reshape(&grouped)?;
    }
    let r = ssm(be, pass, lw, s.xc, s.dt, s.bm, s.cm, s.z, ssm_state, s.y);
    s.bm.reshape(&flat)?;
    s.cm.reshape(&flat)?;
    r
}

/// Mamba-2 through the head-form scan ([`ops::ssd_scan`]) with the per-head A, D,
/// dt_bias: one `exp` per head and step. A decode step is a scan of length 1; the
/// buffers are viewed as `(batch, L, ...)` for it and restored afterwards.
#[allow(clippy::too_many_arguments)]
fn ssd<B: Backend>(
    be: &B,
    pass: Pass,
    lw: &LayerWeights<B>,
    head_dim: usize,
    g: usize,
    n: usize,
    s: &mut Bufs<'_, B>,
    ssm_state: &mut B::Buffer,
) -> Result<()> {
    let (batch, len) = match pass {
        Pass::Seq { batch, len } => (batch, len),
        Pass::Step { batch } => (batch, 1),
    };
    let heads = s.dt_low.shape().last().copied().unwrap_or(0);
    let e = heads * head_dim;
    let before: Vec<Vec<usize>> = [&*s.xc, &*s.z, &*s.y, &*s.dt_low, &*s.bm, &*s.cm]
        .iter()
        .map(|b| b.shape().to_vec())
        .collect();
    let views = [
        vec![batch, len, e],
        vec![batch, len, e],
        vec![batch, len, e],
        vec![batch, len, heads],
        vec![batch, len, g, n],
        vec![batch, len, g, n],
    ];
    let mut r = Ok(());
    for (b, v) in [
        &mut *s.xc,
        &mut *s.z,
        &mut *s.y,
        &mut *s.dt_low,
        &mut *s.bm,
        &mut *s.cm,
    ]
    .into_iter()
    .zip(&views)
    {
        r = r.and(b.reshape(v));
    }
    if r.is_ok() {
        let inputs = SsdInputs {
            x: s.xc,
            dt: s.dt_low,
            a: &lw.a,
            b: s.bm,
            c: s.cm,
            d: Some(&lw.d),
            z: Some(s.z),
            dt_bias: Some(&lw.dt_bias),
            dt_softplus: true,
            head_dim,
        };
        r = ops::ssd_scan(be, &inputs, StateIo::Carry(ssm_state), s.y);
    }
    for (b, v) in [
        &mut *s.xc,
        &mut *s.z,
        &mut *s.y,
        &mut *s.dt_low,
        &mut *s.bm,
        &mut *s.cm,
    ]
    .into_iter()
    .zip(&before)
    {
        b.reshape(v)?;
    }
    r
}
