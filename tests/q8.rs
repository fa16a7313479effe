//! 8-bit weights on the CPU: the Q8_0 quantizer against llama.cpp's (gguf-py), every
//! GEMV path this CPU has against a float64 dot product, and the typed errors of
//! `ops::matmul_q8`'s front door. (`matmul_q8` itself runs in every backend's op suite.)

mod common;

use half::f16;
use mamba_gpu::quant::Q8Matrix;
use mamba_gpu::{Backend, CpuBackend, CpuBuffer, Error, HostSlice, Precision, Q8Activations, ops};

use common::cases::Gen;

#[test]
fn quantizer_matches_gguf_bit_for_bit() {
    common::q8_checks::quantizer_matches_gguf();
}

/// Every dot-product path of the CPU GEMV (portable, AVX2, AVX-512 where present) on
/// rows of 1 to 33 blocks, against the same sum in f64.
#[test]
fn every_cpu_gemv_path_matches_f64() {
    let isas = mamba_gpu::cpu::q8_isas();
    println!("q8 GEMV paths on this CPU: {isas:?}");
    assert!(isas.contains(&"portable"));
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        assert!(isas.contains(&"avx2"), "{isas:?}");
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        assert!(isas.contains(&"avx512"), "{isas:?}");
    }
    for blocks in [1, 2, 3, 8, 24, 33] {
        let k = blocks * 32;
        let mut g = Gen::new(k as u64);
        let w = g.normal(k);
        let x = g.normal(k);
        let m = Q8Matrix::quantize(&w, 1, k).unwrap();
        let want: f64 = m
            .dequantize()
            .iter()
            .zip(&x)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        let scale: f64 = x.iter().map(|v| v.abs() as f64).sum::<f64>() * 0.1;
        for isa in &isas {
            let got = mamba_gpu::cpu::q8_dot(isa, &x, &m.q, &m.d).unwrap() as f64;
            assert!(
                (got - want).abs() <= 1e-5 * scale.max(1.0),
                "{isa} K {k}: {got} vs {want}"
            );
        }
        assert!(mamba_gpu::cpu::q8_dot("portable", &x[1..], &m.q, &m.d).is_none());
    }
}

fn f(shape: &[usize]) -> CpuBuffer {
    let n: usize = shape.iter().product();
    CpuBackend::new()
        .upload(HostSlice::F32(&vec![0.25; n]), shape)
        .unwrap()
}

fn qb(shape: &[usize]) -> CpuBuffer {
    let n: usize = shape.iter().product();
    CpuBackend::new()
        .upload(HostSlice::U32(&vec![0x01ff_7f80; n]), shape)
        .unwrap()
}

fn db(shape: &[usize]) -> CpuBuffer {
    let n: usize = shape.iter().product();
    CpuBackend::new()
        .upload(HostSlice::F16(&vec![f16::from_f32(0.5); n]), shape)
        .unwrap()
}

fn named(r: mamba_gpu::Result<()>, tensor: &str) {
    match r {
        Err(Error::Shape { op, tensor: t, .. }) | Err(Error::DType { op, tensor: t, .. }) => {
            assert_eq!((op, t), ("matmul_q8", tensor))
        }
        Err(Error::ZeroDim { op, tensor: t, .. }) => assert_eq!((op, t), ("matmul_q8", tensor)),
        other => panic!("expected an error naming {tensor}, got {other:?}"),
    }
}

#[test]
fn matmul_q8_errors_name_the_tensor() {
    let be = CpuBackend::new();
    let (x, q, d) = (f(&[2, 3, 64]), qb(&[5, 16]), db(&[5, 2]));
    let mut out = f(&[2, 3, 5]);
    ops::matmul_q8(&be, &x, &q, &d, None, &mut out).unwrap();
    // K = 4 · 12 = 48 is not a multiple of 32.
    named(
        ops::matmul_q8(
            &be,
            &f(&[1, 48]),
            &qb(&[5, 12]),
            &db(&[5, 1]),
            None,
            &mut f(&[1, 5]),
        ),
        "q",
    );
    named(
        ops::matmul_q8(&be, &f(&[2, 32]), &q, &d, None, &mut f(&[2, 5])),
        "x",
    );
    named(
        ops::matmul_q8(&be, &x, &q, &db(&[5, 3]), None, &mut out),
        "d",
    );
    named(
        ops::matmul_q8(&be, &x, &q, &f(&[5, 2]), None, &mut out),
        "d",
    );
    named(
        ops::matmul_q8(&be, &x, &f(&[5, 16]), &d, None, &mut out),
        "q",
    );
    named(
        ops::matmul_q8(&be, &x, &q, &d, Some(&f(&[4])), &mut out),
        "bias",
    );
    named(
        ops::matmul_q8(&be, &x, &q, &d, None, &mut f(&[2, 3, 4])),
        "out",
    );
    named(
        ops::matmul_q8(&be, &f(&[0, 64]), &q, &d, None, &mut f(&[0, 5])),
        "x",
    );
    named(
        ops::matmul_q8(&be, &x, &qb(&[5, 16, 1]), &d, None, &mut out),
        "q",
    );
    // The quantizer refuses what it cannot represent, naming the value.
    assert!(Q8Matrix::quantize(&[0.0; 48], 1, 48).is_err());
    let e = Q8Matrix::quantize(&[f32::INFINITY; 32], 1, 32).unwrap_err();
    assert!(e.to_string().contains("not finite"), "{e}");
}

/// Q8_0 fixture models on the CPU: equal to the dequantized f32 checkpoint, and close
/// to the float model (numbers printed).
#[test]
fn q8_models_match_dequantized_checkpoints() {
    common::q8_model::check_q8_models(CpuBackend::new);
}

/// The run-time `Device` forwards the op (and reports it), as the generate example uses
/// it: `Device::cpu()` takes int8 activations (the default of `Precision::Fast`), and
/// with f32 activations it is the dequantized matmul.
#[test]
fn device_forwards_matmul_q8() {
    let dev = mamba_gpu::Device::cpu();
    assert!(dev.has_matmul_q8());
    common::q8_checks::matmul_q8_int8(&dev, 8);
    let f32_acts = mamba_gpu::Device::cpu().with_q8_activations(Q8Activations::F32);
    common::q8_checks::matmul_q8_fixtures(&f32_acts);
    common::q8_checks::matmul_q8_random(&f32_acts);
}

/// Every int8-activation dot-product path of the CPU (portable, AVX2, AVX-512 VNNI where
/// present) on 1 to 6 rows of 1 to 67 blocks (odd counts reach the VNNI path's masked
/// half pair, 17 and 67 its groups of sixteen scales and the AVX2 path's passes),
/// against `int8_reference` in f64.
#[test]
fn every_cpu_int8_path_matches_f64() {
    let isas = mamba_gpu::cpu::q8_int8_isas();
    println!("q8 int8 GEMV paths on this CPU: {isas:?}");
    assert!(isas.contains(&"portable"));
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        assert!(isas.contains(&"avx2"), "{isas:?}");
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni") {
        assert!(isas.contains(&"avx512vnni"), "{isas:?}");
    }
    for blocks in [1, 2, 3, 8, 15, 16, 17, 24, 33, 67] {
        let k = blocks * 32;
        // One to eleven rows: whole groups of four, partial ones, and up to three runs of
        // contiguous rows in the kernels' grouping.
        let rows = 1 + blocks % 11;
        let mut g = Gen::new(k as u64 + 5);
        let w = g.normal(rows * k);
        // Large and tiny blocks side by side: the scales differ by orders of magnitude.
        let x: Vec<f32> = g
            .normal(k)
            .iter()
            .enumerate()
            .map(|(i, v)| if (i / 32) % 3 == 1 { v * 1e-3 } else { v * 4.0 })
            .collect();
        let m = Q8Matrix::quantize(&w, rows, k).unwrap();
        let want = common::q8_checks::int8_reference(&x, &m, None, 1);
        let scale: f64 = x.iter().map(|v| v.abs() as f64).sum::<f64>() * 0.1;
        for isa in &isas {
            let got = mamba_gpu::cpu::q8_dot_int8(isa, &x, &m.q, &m.d).unwrap();
            assert_eq!(got.len(), rows);
            for (r, (&a, &b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a as f64 - b as f64).abs() <= 1e-5 * scale.max(1.0),
                    "{isa} K {k} row {r}: {a} vs {b}"
                );
            }
        }
        let mut bad = x.clone();
        bad[k - 1] = f32::NAN;
        assert!(mamba_gpu::cpu::q8_dot_int8("portable", &bad, &m.q, &m.d).is_none());
        assert!(mamba_gpu::cpu::q8_dot_int8("portable", &x[1..], &m.q, &m.d).is_none());
        assert!(mamba_gpu::cpu::q8_dot_int8("no-such-path", &x, &m.q, &m.d).is_none());
    }
}

/// `ops::matmul_q8` on the fast CPU backend (int8 activations by default).
#[test]
fn fast_cpu_matmul_q8_takes_int8_activations() {
    let be = CpuBackend::with_precision(Precision::Fast);
    assert_eq!(be.q8_activations(), Q8Activations::Int8);
    assert_eq!(CpuBackend::new().q8_activations(), Q8Activations::F32);
    common::q8_checks::matmul_q8_int8(&be, 8);
}

/// Q8_0 fixture models with int8 activations against the same models with f32 ones and
/// against the float model (numbers printed).
#[test]
fn q8_models_with_int8_activations() {
    common::q8_model::check_int8_activations();
}
