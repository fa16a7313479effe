//! The CPU reference's matmul (every weight dtype, GEMV and GEMM paths, with and without
//! bias) and RMSNorm (with and without the fused residual) against naive f64 loops on
//! fresh seeded data, and `ops::write` into existing buffers.

mod common;

use common::cases::Gen;
use common::checks::{down, poison, up, up_as};
use common::{Tol, assert_close, assert_rel_l2};
use half::{bf16, f16};
use mamba_gpu::ops;
use mamba_gpu::{Backend, CpuBackend, DType};

const TOL: Tol = Tol::EXACTISH;

/// The values a weight stored as `dtype` holds.
fn rounded(v: &[f32], dtype: DType) -> Vec<f64> {
    match dtype {
        DType::F16 => v.iter().map(|&x| f16::from_f32(x).to_f64()).collect(),
        DType::BF16 => v.iter().map(|&x| bf16::from_f32(x).to_f64()).collect(),
        _ => v.iter().map(|&x| x as f64).collect(),
    }
}

#[test]
fn matmul_equals_naive_f64() {
    let be = CpuBackend::new();
    for &(m, n, k) in &[
        (1, 1, 1),
        (1, 70, 33),
        (3, 130, 64),
        (7, 65, 100),
        (8, 64, 64),
        (33, 100, 96),
        (64, 17, 256),
    ] {
        for wdtype in [DType::F32, DType::F16, DType::BF16] {
            if !be.supports_weight_dtype(wdtype) {
                continue;
            }
            for has_bias in [false, true] {
                let mut g = Gen::new((m * 7919 + n * 31 + k) as u64);
                let (xv, wv, bv) = (g.normal(m * k), g.normal(n * k), g.normal(n));
                let x = up(&be, &xv, &[m, k]);
                let w = up_as(&be, &wv, &[n, k], wdtype);
                let bias = has_bias.then(|| up_as(&be, &bv, &[n], wdtype));
                let mut out = poison(&be, &[m, n]);
                ops::matmul(&be, &x, &w, bias.as_ref(), &mut out).expect("matmul");
                let (wr, br) = (rounded(&wv, wdtype), rounded(&bv, wdtype));
                let mut want = vec![0f32; m * n];
                let mut mag = vec![0f64; m * n];
                for i in 0..m {
                    for j in 0..n {
                        let mut acc = if has_bias { br[j] } else { 0.0 };
                        let mut abs = acc.abs();
                        for l in 0..k {
                            let t = xv[i * k + l] as f64 * wr[j * k + l];
                            acc += t;
                            abs += t.abs();
                        }
                        want[i * n + j] = acc as f32;
                        mag[i * n + j] = abs;
                    }
                }
                let got = down(&be, &out);
                let what = format!("matmul {m}x{n}x{k} {wdtype:?} bias {has_bias}");
                // The CPU matmul accumulates in f32 (by design), so an element that
                // cancels to near zero carries the rounding of its terms: the error is
                // held to EXACTISH relative to the magnitude of the dot product,
                // Σ|x·w| (+|bias|), the scale of f32 accumulation error, and the whole
                // to EXACTISH in relative L2.
                for (e, ((&gv, &wv), &mv)) in got.iter().zip(&want).zip(&mag).enumerate() {
                    let lim = TOL.rel as f64 * mv + TOL.abs as f64;
                    assert!(
                        (gv as f64 - wv as f64).abs() <= lim,
                        "{what}: element {e}: {gv} vs {wv} (limit {lim:.2e})"
                    );
                }
                assert_rel_l2(&what, &got, &want, TOL.rel as f64);
            }
        }
    }
}

#[test]
fn rms_norm_equals_naive_f64() {
    let be = CpuBackend::new();
    let eps = 1e-5f32;
    for &(rows, dim) in &[(1, 1), (1, 7), (3, 64), (17, 768), (2, 1000)] {
        for wdtype in [DType::F32, DType::F16, DType::BF16] {
            if !be.supports_weight_dtype(wdtype) {
                continue;
            }
            for residual in [false, true] {
                let mut g = Gen::new((rows * 131 + dim) as u64);
                let (xv, wv, rv) = (
                    g.normal(rows * dim),
                    g.uniform(dim, 0.5, 1.5),
                    g.normal(rows * dim),
                );
                let x = up(&be, &xv, &[rows, dim]);
                let w = up_as(&be, &wv, &[dim], wdtype);
                let mut r = up(&be, &rv, &[rows, dim]);
                let mut out = poison(&be, &[rows, dim]);
                ops::rms_norm(&be, &x, &w, eps, residual.then_some(&mut r), &mut out)
                    .expect("rms_norm");
                let wr = rounded(&wv, wdtype);
                // residual += x is an f32 add; the norm is taken of the sum.
                let src: Vec<f32> = if residual {
                    rv.iter().zip(&xv).map(|(a, b)| a + b).collect()
                } else {
                    xv.clone()
                };
                let mut want = vec![0f32; rows * dim];
                for i in 0..rows {
                    let row = &src[i * dim..(i + 1) * dim];
                    let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
                    let inv = 1.0 / (ms + eps as f64).sqrt();
                    for j in 0..dim {
                        want[i * dim + j] = (row[j] as f64 * inv * wr[j]) as f32;
                    }
                }
                let what = format!("{rows}x{dim} {wdtype:?} residual {residual}");
                assert_close(
                    &format!("rms_norm out {what}"),
                    &down(&be, &out),
                    &want,
                    TOL,
                );
                let want_r = if residual { src } else { rv };
                assert_close(
                    &format!("rms_norm residual {what}"),
                    &down(&be, &r),
                    &want_r,
                    TOL,
                );
            }
        }
    }
}

/// `ops::write` into existing buffers: dtypes, ordering, errors.
#[test]
fn write_into_existing_buffers() {
    common::checks::check_write(&CpuBackend::new());
}
