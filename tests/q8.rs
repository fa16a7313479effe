//! 8-bit weights on the CPU: the Q8_0 quantizer against llama.cpp's (gguf-py), every
//! GEMV path this CPU has against a float64 dot product, and the typed errors of
//! `ops::matmul_q8`'s front door. (`matmul_q8` itself runs in every backend's op suite.)

mod common;

use half::f16;
use mamba_gpu::quant::Q8Matrix;
use mamba_gpu::{Backend, CpuBackend, CpuBuffer, Error, HostSlice, ops};

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

/// The run-time `Device` forwards the op (and reports it), as the generate example uses it.
#[test]
fn device_forwards_matmul_q8() {
    let dev = mamba_gpu::Device::cpu();
    assert!(dev.has_matmul_q8());
    common::q8_checks::matmul_q8_fixtures(&dev);
    common::q8_checks::matmul_q8_random(&dev);
}
