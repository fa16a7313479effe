//! Q8_0 weights (`ops::matmul_q8`, `mamba_gpu::quant`) on any backend: against
//! llama.cpp's quantizer and a float64 matmul (`tests/fixtures/q8`, written by
//! `tools/make_q8_fixtures.py` with gguf-py), and against the f32 matmul by the
//! dequantized weights on fresh random inputs. In the shared op suite.

use half::f16;
use mamba_gpu::quant::Q8Matrix;
use mamba_gpu::{Backend, CpuBackend, DType, HostSlice, ops};
use safetensors::{Dtype, SafeTensors};

use super::cases::Gen;
use super::checks::{down, poison, up, up_as};
use super::rel_l2;

/// One fixture: the gguf-py quants (int8, row-major) and scales, and the f32 tensors.
pub struct Q8Fixture {
    pub name: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub q: Vec<i8>,
    pub d: Vec<f16>,
    pub w: Vec<f32>,
    pub x: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub out: Vec<f32>,
}

pub fn load_q8_fixtures() -> Vec<Q8Fixture> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/q8");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/q8")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 6, "q8 fixtures missing in {}", dir.display());
    files
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let f32s = |name: &str| -> Option<Vec<f32>> {
                let t = st.tensor(name).ok()?;
                assert_eq!(t.dtype(), Dtype::F32, "{name}");
                Some(bytemuck::pod_collect_to_vec(t.data()))
            };
            let q = st.tensor("q").unwrap();
            assert_eq!(q.dtype(), Dtype::I8);
            let d = st.tensor("d").unwrap();
            assert_eq!(d.dtype(), Dtype::F16);
            let (n, k) = (q.shape()[0], q.shape()[1]);
            let x = f32s("x").unwrap();
            Q8Fixture {
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                m: x.len() / k,
                n,
                k,
                q: bytemuck::pod_collect_to_vec(q.data()),
                d: bytemuck::pod_collect_to_vec(d.data()),
                w: f32s("w").unwrap(),
                x,
                bias: f32s("bias"),
                out: f32s("out").unwrap(),
            }
        })
        .collect()
}

/// Four int8 per little-endian u32, weight 4j in the low byte of word j: the layout of
/// `mamba_gpu::quant`, packed here from the fixture's int8 independently of it.
pub fn pack(q: &[i8]) -> Vec<u32> {
    q.chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]))
        .collect()
}

fn run<B: Backend>(
    be: &B,
    x: &[f32],
    q: &[u32],
    d: &[f16],
    bias: Option<(&[f32], DType)>,
    [m, n, k]: [usize; 3],
) -> Vec<f32> {
    let xb = up(be, x, &[m, k]);
    let qb = be.upload(HostSlice::U32(q), &[n, k / 4]).unwrap();
    let db = be.upload(HostSlice::F16(d), &[n, k / 32]).unwrap();
    let bb = bias.map(|(v, dt)| up_as(be, v, &[n], dt));
    let mut out = poison(be, &[m, n]);
    ops::matmul_q8(be, &xb, &qb, &db, bb.as_ref(), &mut out).expect("matmul_q8");
    down(be, &out)
}

/// Every fixture through `matmul_q8` on `be`, against the f64 product by gguf's
/// dequantized weights: relative L2 ≤ 1e-5. A backend without the op must refuse it
/// with a typed `Error::Limit`.
pub fn matmul_q8_fixtures<B: Backend>(be: &B) {
    for f in load_q8_fixtures() {
        let shape = [f.m, f.n, f.k];
        if !be.has_matmul_q8() {
            let xb = up(be, &f.x, &[f.m, f.k]);
            let qb = be
                .upload(HostSlice::U32(&pack(&f.q)), &[f.n, f.k / 4])
                .unwrap();
            let db = be.upload(HostSlice::F16(&f.d), &[f.n, f.k / 32]).unwrap();
            let mut out = poison(be, &[f.m, f.n]);
            let e = ops::matmul_q8(be, &xb, &qb, &db, None, &mut out).unwrap_err();
            assert!(matches!(e, mamba_gpu::Error::Limit { .. }), "{e}");
            return;
        }
        let bias = f.bias.as_deref().map(|b| (b, DType::F32));
        let got = run(be, &f.x, &pack(&f.q), &f.d, bias, shape);
        let e = rel_l2(&got, &f.out);
        println!("{} {}: matmul_q8 rel L2 {e:.2e}", be.name(), f.name);
        assert!(e <= 1e-5, "{} {}: {e:.2e}", be.name(), f.name);
    }
}

/// Fresh random weights quantized by `Q8Matrix`, `matmul_q8` on `be` against the CPU's
/// exact matmul by the dequantized weights (relative L2 ≤ 1e-5), for m on both sides of
/// the GEMV/GEMM switch, n across several row blocks, and biases in every float dtype.
pub fn matmul_q8_random<B: Backend>(be: &B) {
    if !be.has_matmul_q8() {
        return; // matmul_q8_fixtures checks the refusal.
    }
    let cpu = CpuBackend::new();
    let cases: &[(usize, usize, usize, Option<DType>)] = &[
        (1, 1, 32, None),
        (1, 300, 768, Some(DType::F32)),
        (2, 65, 64, Some(DType::F16)),
        (7, 129, 96, None),
        (8, 3, 800, Some(DType::BF16)),
        (9, 257, 160, Some(DType::F32)),
        (20, 70, 32, None),
    ];
    for &(m, n, k, bias_dt) in cases {
        let mut g = Gen::new((m * 1000 + n * 10 + k) as u64);
        let w: Vec<f32> = g.normal(n * k).iter().map(|v| v * 0.2).collect();
        let x = g.normal(m * k);
        let bias = g.normal(n);
        let qm = Q8Matrix::quantize(&w, n, k).unwrap();
        let deq = qm.dequantize();
        let bias_arg = bias_dt.map(|dt| (&bias[..], dt));
        let got = run(be, &x, &qm.q, &qm.d, bias_arg, [m, n, k]);
        let xb = up(&cpu, &x, &[m, k]);
        let wb = up(&cpu, &deq, &[n, k]);
        let bb = bias_dt.map(|dt| up_as(&cpu, &bias, &[n], dt));
        let mut out = poison(&cpu, &[m, n]);
        ops::matmul(&cpu, &xb, &wb, bb.as_ref(), &mut out).unwrap();
        let want = down(&cpu, &out);
        let e = rel_l2(&got, &want);
        assert!(e <= 1e-5, "{} m {m} n {n} k {k}: {e:.2e}", be.name());
    }
    println!(
        "{}: matmul_q8 matches the dequantized f32 matmul",
        be.name()
    );
}

/// The quantizer of `mamba_gpu::quant` gives gguf-py's Q8_0 quants and scales bit for bit.
pub fn quantizer_matches_gguf() {
    for f in load_q8_fixtures() {
        let m = Q8Matrix::quantize(&f.w, f.n, f.k).unwrap();
        assert_eq!(m.q, pack(&f.q), "{}: quants", f.name);
        let bits = |v: &[f16]| v.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&m.d), bits(&f.d), "{}: scales", f.name);
    }
}

/// `x · wᵀ (+ bias)` in f64 with each row of x quantized as the CPU's int8 activations
/// are specified: per block of 32, `d = max|x| / 127` in f32 and the quants llama.cpp's
/// quantizer gives (taken from `Q8Matrix`, which `quantizer_matches_gguf` holds to
/// gguf-py); the weights as stored (`q`, `d`).
pub fn int8_reference(x: &[f32], w: &Q8Matrix, bias: Option<&[f32]>, m: usize) -> Vec<f32> {
    let (n, k) = (w.rows, w.cols);
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        let xq = Q8Matrix::quantize(xr, 1, k).unwrap();
        let dx: Vec<f64> = xr
            .chunks(32)
            .map(|b| (b.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0) as f64)
            .collect();
        for j in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[j] as f64);
            for (blk, &dxb) in dx.iter().enumerate() {
                let s: i64 = (blk * 32..(blk + 1) * 32)
                    .map(|c| w.quant(j, c) as i64 * xq.quant(0, c) as i64)
                    .sum();
                acc += w.d[j * (k / 32) + blk].to_f64() * dxb * s as f64;
            }
            out[i * n + j] = acc as f32;
        }
    }
    out
}

/// `matmul_q8` on a backend set to `Q8Activations::Int8`: with fewer than `int8_below`
/// rows of x against [`int8_reference`] (the CPU quantizes decode's GEMV only: 8; the
/// GPU kernels every matmul: `usize::MAX`), with more against the dequantized f32
/// matmul, relative L2 ≤ 1e-5 both; a row holding a NaN or inf gives non-finite outputs
/// in its own row only.
pub fn matmul_q8_int8<B: Backend>(be: &B, int8_below: usize) {
    let cpu = CpuBackend::new();
    for &(m, n, k, biased) in &[
        (1, 1, 32, false),
        (1, 300, 768, true),
        (2, 65, 64, true),
        (3, 40, 1536, false),
        (7, 129, 96, false),
        (8, 33, 160, true),
        (20, 70, 64, false),
        (9, 17, 1056, true),
    ] {
        let mut g = Gen::new((m * 7919 + n * 31 + k) as u64);
        let w: Vec<f32> = g.normal(n * k).iter().map(|v| v * 0.2).collect();
        let x = g.normal(m * k);
        let bias = g.normal(n);
        let qm = Q8Matrix::quantize(&w, n, k).unwrap();
        let bias_arg = biased.then_some((&bias[..], DType::F32));
        let got = run(be, &x, &qm.q, &qm.d, bias_arg, [m, n, k]);
        let f32_ref = {
            let (xb, wb) = (up(&cpu, &x, &[m, k]), up(&cpu, &qm.dequantize(), &[n, k]));
            let bb = biased.then(|| up(&cpu, &bias, &[n]));
            let mut out = poison(&cpu, &[m, n]);
            ops::matmul(&cpu, &xb, &wb, bb.as_ref(), &mut out).unwrap();
            down(&cpu, &out)
        };
        let int8 = m < int8_below;
        let (e, e_f32) = if int8 {
            let want = int8_reference(&x, &qm, biased.then_some(&bias[..]), m);
            (rel_l2(&got, &want), rel_l2(&got, &f32_ref))
        } else {
            (rel_l2(&got, &f32_ref), 0.0)
        };
        assert!(e <= 1e-5, "{} int8 m {m} n {n} k {k}: {e:.2e}", be.name());
        if int8 {
            // The kernel did round x (it is not the f32-activation path), by a little.
            assert!(
                (1e-4..0.05).contains(&e_f32),
                "{} int8 m {m} n {n} k {k}: {e_f32:.2e} from f32 activations",
                be.name()
            );
        }
    }
    // Non-finite rows: row 1 holds a NaN, row 2 an inf; row 0 stays finite and exact.
    let (m, n, k) = (3, 9, 64);
    let mut g = Gen::new(77);
    let qm = Q8Matrix::quantize(&g.normal(n * k), n, k).unwrap();
    let mut x = g.normal(m * k);
    x[k + 5] = f32::NAN;
    x[2 * k + 40] = f32::INFINITY;
    let got = run(be, &x, &qm.q, &qm.d, None, [m, n, k]);
    assert!(got[n..].iter().all(|v| !v.is_finite()), "{got:?}");
    let want = int8_reference(&x[..k], &qm, None, 1);
    assert!(rel_l2(&got[..n], &want) <= 1e-5);
    println!(
        "{}: matmul_q8 with int8 activations matches its reference",
        be.name()
    );
}
