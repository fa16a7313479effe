//! The tensors of a Mamba-2 layer and how they map onto [`LayerWeights`].
//!
//! Checkpoint (HF and mamba_ssm name them alike): `in_proj.weight (2E + 2GN + H, D)`
//! with rows `[z | x | B | C | Δ]`; `conv1d.weight (E + 2GN, 1, K)` over `[x | B | C]`;
//! `A_log`, `D`, `dt_bias (H)`; `norm.weight (E)`; `out_proj.weight (D, E)`.
//!
//! A backend with the head-form scan ([`crate::ops::ssd_scan`]) gets `A = −exp(A_log)`,
//! D and dt_bias per head `(H)`. For one without it, the per-head values are spread
//! over the head's channels at load, so the Mamba-1 scan and decode step compute
//! Mamba-2 exactly: channel `c = h·P + p` of head `h` gets `A[c, n] = −exp(A_log[h])`
//! for every n, `D[c] = D[h]`, `dt_bias[c] = dt_bias[h]`, and Δ reaches it through
//! `dt_proj`, the 0/1 matrix `(E, H)` with a one at `(c, c / P)` (a product with one 1
//! and zeros is exact, in f16/bf16 too).

use super::config::{Mamba2Dims, MambaConfig};
use super::linear::upload_linear;
use super::tensor_io::a_values;
use super::weights::{Found, LayerWeights, LoadOptions, Mamba2Extra, Spec, to_f32, upload};
use crate::backend::Backend;
use crate::error::Result;
use crate::tensor::{DType, HostSlice};

/// The tensors of layer `l(...)`, with their shapes.
pub(super) fn specs(cfg: &MambaConfig, m2: &Mamba2Dims, l: &dyn Fn(&str) -> String) -> Vec<Spec> {
    let (d, e, n, k) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.state_size,
        cfg.conv_kernel,
    );
    let (h, gn) = (m2.num_heads, m2.n_groups * n);
    let conv = e + 2 * gn;
    let rows = 2 * e + 2 * gn + h;
    let spec = |name: &str, shape: Vec<usize>, required: bool| Spec {
        name: l(name),
        shape,
        alt_shape: None,
        required,
    };
    let mut v = vec![
        spec("mixer.A_log", vec![h], true),
        spec("mixer.D", vec![h], true),
        spec("mixer.dt_bias", vec![h], true),
        Spec {
            name: l("mixer.conv1d.weight"),
            shape: vec![conv, 1, k],
            alt_shape: Some(vec![conv, k]),
            required: true,
        },
        spec("mixer.in_proj.weight", vec![rows, d], true),
        spec("mixer.norm.weight", vec![e], true),
        spec("mixer.out_proj.weight", vec![d, e], true),
    ];
    if cfg.use_conv_bias {
        v.push(spec("mixer.conv1d.bias", vec![conv], true));
    }
    if cfg.use_bias {
        v.push(spec("mixer.in_proj.bias", vec![rows], true));
        v.push(spec("mixer.out_proj.bias", vec![d], true));
    }
    v
}

/// Uploads layer `l(...)` (its shapes already checked against [`specs`]); `q8`: the
/// projections in Q8_0.
#[allow(clippy::too_many_arguments)]
pub(super) fn load_layer<'a, B: Backend>(
    be: &B,
    cfg: &MambaConfig,
    m2: &Mamba2Dims,
    norm: B::Buffer,
    get: &dyn Fn(&str) -> Found<'a>,
    l: &dyn Fn(&str) -> String,
    dtype: DType,
    q8: bool,
    opts: &LoadOptions,
) -> Result<LayerWeights<B>> {
    let (d, e, n, k) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.state_size,
        cfg.conv_kernel,
    );
    let (h, p, gn) = (m2.num_heads, m2.head_dim, m2.n_groups * n);
    let f32_at = |t: &Found<'_>, start: usize, len: usize, shape: &[usize]| {
        upload(be, t, start, len, shape, DType::F32)
    };
    // Per-head values: as they are for the head-form scan, or spread over each head's
    // channels (and states) for the general one. Only the form the backend runs is kept.
    let head_form = be.has_ssd_scan();
    let (rep_a, rep) = if head_form { (1, 1) } else { (p * n, p) };
    let spread = |t: &Found<'_>, r: usize| -> Vec<f32> {
        let v = to_f32(t, 0, h);
        (0..h * r).map(|i| v[i / r]).collect()
    };
    let shape = |r: usize, last: &[usize]| -> Vec<usize> {
        if head_form {
            vec![h]
        } else {
            [&[h * r / last.iter().product::<usize>()][..], last].concat()
        }
    };
    let a_heads = a_values(&get(&l("mixer.A_log")), 0, h, "head", opts.allow_non_finite)?;
    let a: Vec<f32> = (0..h * rep_a).map(|i| a_heads[i / rep_a]).collect();
    let a = be.upload(HostSlice::F32(&a), &shape(rep_a, &[n]))?;
    let dd = be.upload(
        HostSlice::F32(&spread(&get(&l("mixer.D")), rep)),
        &shape(rep, &[]),
    )?;
    let dt_bias = be.upload(
        HostSlice::F32(&spread(&get(&l("mixer.dt_bias")), rep)),
        &shape(rep, &[]),
    )?;
    let dt_proj = if head_form {
        None
    } else {
        Some(expansion(be, e, h, p, dtype)?)
    };

    let conv_t = get(&l("mixer.conv1d.weight"));
    let conv_w = f32_at(&conv_t, 0, e * k, &[e, k])?;
    let conv_wb = f32_at(&conv_t, e * k, gn * k, &[gn, k])?;
    let conv_wc = f32_at(&conv_t, (e + gn) * k, gn * k, &[gn, k])?;
    let (conv_b, conv_bb, conv_bc) = if cfg.use_conv_bias {
        let t = get(&l("mixer.conv1d.bias"));
        (
            Some(f32_at(&t, 0, e, &[e])?),
            Some(f32_at(&t, e, gn, &[gn])?),
            Some(f32_at(&t, e + gn, gn, &[gn])?),
        )
    } else {
        (None, None, None)
    };

    // in_proj rows: [z | x | B | C | Δ].
    let inp = get(&l("mixer.in_proj.weight"));
    let rows =
        |start: usize, count: usize| upload(be, &inp, start * d, count * d, &[count, d], dtype);
    let w_z = upload_linear(be, &inp, 0, [e, d], dtype, q8)?;
    let w_x = upload_linear(be, &inp, e * d, [e, d], dtype, q8)?;
    let w_b = rows(2 * e, gn)?;
    let w_c = rows(2 * e + gn, gn)?;
    let w_dt = rows(2 * e + 2 * gn, h)?;
    let (b_z, b_x, b_b, b_c, b_dt, out_b) = if cfg.use_bias {
        let t = get(&l("mixer.in_proj.bias"));
        (
            Some(f32_at(&t, 0, e, &[e])?),
            Some(f32_at(&t, e, e, &[e])?),
            Some(f32_at(&t, 2 * e, gn, &[gn])?),
            Some(f32_at(&t, 2 * e + gn, gn, &[gn])?),
            Some(f32_at(&t, 2 * e + 2 * gn, h, &[h])?),
            Some(f32_at(&get(&l("mixer.out_proj.bias")), 0, d, &[d])?),
        )
    } else {
        (None, None, None, None, None, None)
    };
    let gated = f32_at(&get(&l("mixer.norm.weight")), 0, e, &[e])?;
    let out_w = upload_linear(be, &get(&l("mixer.out_proj.weight")), 0, [d, e], dtype, q8)?;
    Ok(LayerWeights {
        norm,
        w_x,
        w_z,
        b_x,
        b_z,
        conv_w,
        conv_b,
        w_dt,
        w_b,
        w_c,
        dt_proj,
        dt_bias,
        a,
        d: dd,
        out_w,
        out_b,
        mamba2: Some(Mamba2Extra {
            conv_wb,
            conv_wc,
            conv_bb,
            conv_bc,
            b_b,
            b_c,
            b_dt,
            norm: gated,
        }),
    })
}

/// The 0/1 matrix `(E, H)` with a one at `(c, c / P)`: `dt_proj` of the general-scan
/// form, repeating each head's Δ over its channels (exact in every dtype).
fn expansion<B: Backend>(be: &B, e: usize, h: usize, p: usize, dtype: DType) -> Result<B::Buffer> {
    let mut m = vec![0f32; e * h];
    for c in 0..e {
        m[c * h + c / p] = 1.0;
    }
    match dtype {
        DType::F16 => {
            let v: Vec<half::f16> = m.iter().map(|&x| half::f16::from_f32(x)).collect();
            be.upload(HostSlice::F16(&v), &[e, h])
        }
        DType::BF16 => {
            let v: Vec<half::bf16> = m.iter().map(|&x| half::bf16::from_f32(x)).collect();
            be.upload(HostSlice::BF16(&v), &[e, h])
        }
        _ => be.upload(HostSlice::F32(&m), &[e, h]),
    }
}
