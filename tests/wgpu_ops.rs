//! The wgpu backend through every shared check, against the CPU reference.
//!
//! Without an adapter (no Vulkan/Metal/DX12 driver) the tests print
//! "wgpu tests SKIPPED: no adapter (...)" and pass, unless `MAMBA_GPU_REQUIRE=wgpu` is
//! set, in which case they fail. On a machine without a GPU, Mesa's lavapipe
//! (`mesa-vulkan-drivers`) is a real Vulkan device on the CPU; sizes here are kept
//! modest for it.
#![cfg(feature = "wgpu")]

mod common;

use std::io::Write;
use std::sync::{Once, OnceLock};

use common::cases::{Bc, Gen, ScanCase, St};
use common::checks::*;
use common::{Tol, assert_close};
use mamba_gpu::ops::{self, Elementwise, Layout};
use mamba_gpu::wgpu::{WgpuBackend, WgpuOptions};
use mamba_gpu::{Backend, DType, HostSlice, HostVec};

fn make(opts: WgpuOptions) -> Option<WgpuBackend> {
    match WgpuBackend::with_options(opts) {
        Ok(be) => Some(be),
        Err(e) => {
            if std::env::var("MAMBA_GPU_REQUIRE").is_ok_and(|v| v.split(',').any(|s| s == "wgpu")) {
                panic!("MAMBA_GPU_REQUIRE=wgpu but the wgpu backend is unavailable: {e}");
            }
            // Once, straight to stderr (past the test harness' capture) so it is visible.
            static NOTE: Once = Once::new();
            NOTE.call_once(|| {
                let _ = writeln!(std::io::stderr(), "wgpu tests SKIPPED: no adapter ({e})");
            });
            None
        }
    }
}

/// The default backend (subgroup scan where the adapter has it), shared by the tests.
fn be() -> Option<&'static WgpuBackend> {
    static BE: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    BE.get_or_init(|| {
        let be = make(WgpuOptions::default())?;
        let info = be.adapter_info();
        eprintln!(
            "wgpu adapter: {} ({:?}, {:?}), subgroup sizes {}..{}, subgroup scan: {}",
            info.name,
            info.backend,
            info.device_type,
            info.subgroup_min_size,
            info.subgroup_max_size,
            be.uses_subgroup_scan()
        );
        Some(be)
    })
    .as_ref()
}

/// A backend forced onto the shared-memory (Blelloch) scan, with wgpu's runtime checks
/// kept in every shader (the default backend runs the hot shaders unchecked).
fn be_shared() -> Option<&'static WgpuBackend> {
    static BE: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    BE.get_or_init(|| {
        make(WgpuOptions {
            no_subgroups: true,
            checked_shaders: true,
            ..Default::default()
        })
    })
    .as_ref()
}

/// A backend that pretends bindings may be at most 4 KiB, so weights are windowed.
fn be_small_binding() -> Option<&'static WgpuBackend> {
    static BE: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    BE.get_or_init(|| {
        make(WgpuOptions {
            max_binding_size: Some(4096),
            ..Default::default()
        })
    })
    .as_ref()
}

/// Cases around this kernel's own boundaries (chunk = 256 steps, 4 steps per
/// invocation, 4 channels per workgroup), on top of `scan_cases(true)`.
fn extra_scan_cases() -> Vec<ScanCase> {
    let mut v = Vec::new();
    for &(b, d, l, n) in &[
        (1, 3, 2, 16),
        (1, 4, 3, 16),
        (2, 5, 4, 16),
        (1, 9, 5, 16),
        (1, 4, 511, 16),
        (1, 3, 512, 8),
        (2, 2, 513, 16),
        (1, 2, 300, 64),
        (1, 2, 100, 256),
        (1, 2, 2100, 256),
    ] {
        v.push(ScanCase::full(b, d, l, n));
    }
    let base = ScanCase::full(1, 8, 257, 16);
    for st in [St::None, St::Final, St::Carry] {
        for layout in [Layout::ChannelMajor, Layout::TokenMajor] {
            for bc in [Bc::Invariant, Bc::Variable, Bc::Grouped(4)] {
                v.push(ScanCase {
                    state: st,
                    layout,
                    bc,
                    seed: v.len() as u64,
                    ..base
                });
            }
        }
    }
    v.push(ScanCase {
        d: false,
        z: true,
        delta_bias: true,
        softplus: false,
        ..ScanCase::full(2, 4, 100, 1)
    });
    // Long enough for the host to split the sequence into dispatches (2048/N chunks of
    // 256 steps each: 3 dispatches here), in every state mode and both layouts.
    let long = ScanCase::full(1, 3, 17_000, 64);
    for (i, (state, layout, bc)) in [
        (St::None, Layout::ChannelMajor, Bc::Variable),
        (St::Final, Layout::TokenMajor, Bc::Grouped(3)),
        (St::Carry, Layout::TokenMajor, Bc::Invariant),
        (St::Carry, Layout::ChannelMajor, Bc::Grouped(3)),
    ]
    .into_iter()
    .enumerate()
    {
        v.push(ScanCase {
            state,
            layout,
            bc,
            seed: 7 + i as u64,
            ..long
        });
    }
    v
}

#[test]
fn scan_matches_cpu() {
    let Some(be) = be() else { return };
    let t = std::time::Instant::now();
    let cases: Vec<ScanCase> = scan_cases(true)
        .into_iter()
        .chain(extra_scan_cases())
        .collect();
    for c in &cases {
        check_scan(be, c, Tol::F32);
    }
    eprintln!(
        "scan ({} path): {} cases in {:.1?}",
        if be.uses_subgroup_scan() {
            "subgroup"
        } else {
            "shared"
        },
        cases.len(),
        t.elapsed()
    );
}

#[test]
fn scan_shared_memory_path_matches_cpu() {
    let Some(be) = be_shared() else { return };
    assert!(!be.uses_subgroup_scan());
    let t = std::time::Instant::now();
    let cases: Vec<ScanCase> = scan_cases(false)
        .into_iter()
        .chain(extra_scan_cases())
        .chain([ScanCase::full(1, 2, 2049, 4)])
        .collect();
    for c in &cases {
        check_scan(be, c, Tol::F32);
    }
    eprintln!(
        "scan (shared path): {} cases in {:.1?}",
        cases.len(),
        t.elapsed()
    );
}

/// L > 10⁶ in one call (3,907 chunks walked by one workgroup per channel block).
#[test]
fn scan_million_steps() {
    let Some(be) = be() else { return };
    let t = std::time::Instant::now();
    let c = ScanCase {
        z: false,
        ..ScanCase::full(1, 2, 1_000_001, 2)
    };
    check_scan(be, &c, Tol::F32);
    eprintln!(
        "scan L = 1,000,001: {:.1?} (with the CPU reference)",
        t.elapsed()
    );
}

/// A sequence split in two and carried through the state equals the whole sequence.
#[test]
fn scan_split_sequence_carries_state() {
    let Some(be) = be() else { return };
    let (batch, dim, n) = (1usize, 3usize, 16usize);
    let (l1, l2) = (300usize, 77usize);
    let len = l1 + l2;
    let mut g = Gen::new(42);
    let u = g.normal(batch * dim * len);
    let delta = g.uniform(batch * dim * len, 0.0, 0.5);
    let a = g.uniform(dim * n, -0.5, 0.0);
    let bm = g.normal(batch * n * len);
    let cm = g.normal(batch * n * len);
    // Channel-major slices of the time axis.
    let cut = |v: &[f32], rows: usize, t0: usize, t1: usize| -> Vec<f32> {
        (0..rows)
            .flat_map(|r| v[r * len + t0..r * len + t1].to_vec())
            .collect()
    };
    let run = |t0: usize, t1: usize, state: &mut <WgpuBackend as Backend>::Buffer| {
        let l = t1 - t0;
        let seq = [batch, dim, l];
        let uu = up(be, &cut(&u, dim, t0, t1), &seq);
        let dd = up(be, &cut(&delta, dim, t0, t1), &seq);
        let aa = up(be, &a, &[dim, n]);
        let bb = up(be, &cut(&bm, n, t0, t1), &[batch, n, l]);
        let cc = up(be, &cut(&cm, n, t0, t1), &[batch, n, l]);
        let inputs = ops::ScanInputs {
            u: &uu,
            delta: &dd,
            a: &aa,
            b: &bb,
            c: &cc,
            d: None,
            z: None,
            delta_bias: None,
            delta_softplus: true,
            layout: Layout::ChannelMajor,
        };
        let mut out = poison(be, &seq);
        ops::selective_scan(be, &inputs, ops::StateIo::Carry(state), &mut out).unwrap();
        down(be, &out)
    };
    let mut s_whole = be.zeros(DType::F32, &[batch, dim, n]).unwrap();
    let whole = run(0, len, &mut s_whole);
    let mut s_split = be.zeros(DType::F32, &[batch, dim, n]).unwrap();
    let first = run(0, l1, &mut s_split);
    let second = run(l1, len, &mut s_split);
    let joined: Vec<f32> = (0..dim)
        .flat_map(|d| {
            let mut r = first[d * l1..(d + 1) * l1].to_vec();
            r.extend_from_slice(&second[d * l2..(d + 1) * l2]);
            r
        })
        .collect();
    assert_close("split vs whole out", &joined, &whole, Tol::F32);
    assert_close(
        "split vs whole state",
        &down(be, &s_split),
        &down(be, &s_whole),
        Tol::F32,
    );
}

#[test]
fn step_matches_cpu() {
    let Some(be) = be() else { return };
    for (i, &(batch, dim, dstate, groups)) in [
        (1, 1, 1, 0),
        (2, 37, 16, 0),
        (3, 8, 16, 1),
        (2, 12, 4, 3),
        (1, 130, 64, 2),
    ]
    .iter()
    .enumerate()
    {
        for flags in 0..4u32 {
            let c = StepCase {
                batch,
                dim,
                dstate,
                groups,
                d: flags & 1 != 0,
                z: flags & 2 != 0,
                dt_bias: flags != 1,
                softplus: flags != 2,
                seed: (i * 10 + flags as usize) as u64,
            };
            check_step(be, &c, Tol::F32);
        }
    }
}

#[test]
fn conv_matches_cpu() {
    let Some(be) = be() else { return };
    let mut seed = 0;
    for layout in [Layout::ChannelMajor, Layout::TokenMajor] {
        for state in [St::None, St::Final, St::Carry] {
            for width in 2..=4 {
                for &(batch, dim, len) in &[(1, 3, 1), (2, 5, 2), (2, 7, 33), (1, 70, 130)] {
                    seed += 1;
                    let c = ConvCase {
                        batch,
                        dim,
                        len,
                        width,
                        bias: seed % 2 == 0,
                        silu: seed % 3 != 0,
                        layout,
                        state,
                        seed,
                    };
                    check_conv(be, &c, Tol::F32);
                }
            }
        }
    }
    // Width 1 (no state possible).
    let c = ConvCase {
        batch: 2,
        dim: 3,
        len: 9,
        width: 1,
        bias: true,
        silu: true,
        layout: Layout::ChannelMajor,
        state: St::None,
        seed: 99,
    };
    check_conv(be, &c, Tol::F32);
}

#[test]
fn conv_update_matches_cpu() {
    let Some(be) = be() else { return };
    for width in 2..=4 {
        for &(batch, dim) in &[(1, 1), (2, 37), (3, 130)] {
            for (bias, silu) in [(false, false), (true, true)] {
                let c = ConvCase {
                    batch,
                    dim,
                    len: 1,
                    width,
                    bias,
                    silu,
                    layout: Layout::ChannelMajor,
                    state: St::Carry,
                    seed: (width * 100 + dim) as u64,
                };
                check_conv_update(be, &c, Tol::F32);
            }
        }
    }
}

/// f16/bf16 weights are compared with the CPU fed the same 16-bit values, so only the
/// summation order differs.
#[test]
fn matmul_matches_cpu() {
    let Some(be) = be() else { return };
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 37, 29),
            (3, 67, 131),
            (4, 9, 300),
            (5, 33, 17),
            (64, 67, 131),
            (130, 65, 33),
        ] {
            for bias in [false, true] {
                check_matmul(be, m, n, k, bias, dt, Tol::F32);
            }
        }
    }
}

/// Weights larger than the (forced, 4 KiB) binding limit are bound in row windows, for
/// the decode and the tiled matmul and for the embedding; activations stay below it.
#[test]
fn big_weights_are_windowed() {
    let Some(be) = be_small_binding() else { return };
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for &(m, n, k) in &[
            (1, 300, 40),
            (3, 130, 41),
            (4, 200, 101),
            (5, 150, 100),
            (7, 99, 77),
        ] {
            check_matmul(be, m, n, k, true, dt, Tol::F32);
            check_matmul(be, m, n, k, false, dt, Tol::F32);
        }
        check_embedding(be, 40, 400, 13, dt);
    }
}

#[test]
fn rms_norm_matches_cpu() {
    let Some(be) = be() else { return };
    for &(rows, dim) in &[(1, 1), (3, 37), (4, 300), (2, 1030)] {
        for residual in [false, true] {
            check_rms_norm(be, rows, dim, residual, Tol::F32);
        }
    }
}

#[test]
fn embedding_matches_cpu() {
    let Some(be) = be() else { return };
    for dt in [DType::F32, DType::F16, DType::BF16] {
        check_embedding(be, 1, 1, 1, dt);
        check_embedding(be, 7, 50, 33, dt);
        check_embedding(be, 20, 1000, 64, dt);
    }
}

/// GPU backends write zeros for ids past the table (documented in `ops::embedding`).
#[test]
fn embedding_out_of_range_ids_write_zeros() {
    let Some(be) = be() else { return };
    let table: Vec<f32> = (0..12).map(|v| v as f32 + 1.0).collect();
    let t = up(be, &table, &[4, 3]);
    let ids = be.upload(HostSlice::U32(&[2, 4, 0, 1000]), &[4]).unwrap();
    let mut out = poison(be, &[4, 3]);
    ops::embedding(be, &ids, &t, &mut out).unwrap();
    assert_eq!(
        down(be, &out),
        vec![7.0, 8.0, 9.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn elementwise_matches_cpu() {
    let Some(be) = be() else { return };
    for op in [
        Elementwise::Silu,
        Elementwise::Softplus,
        Elementwise::Add,
        Elementwise::Mul,
        Elementwise::MulSilu,
    ] {
        for len in [1, 1000, 70_001] {
            check_elementwise(be, op, len, Tol::F32);
        }
    }
}

#[test]
fn argmax_matches_cpu() {
    let Some(be) = be() else { return };
    for &(rows, cols) in &[(1, 1), (1, 7), (3, 1000), (5, 50_280)] {
        check_argmax(be, rows, cols);
    }
}

/// Ties go to the first index; NaN never wins; a row of -inf gives 0.
#[test]
fn argmax_ties_and_nan() {
    let Some(be) = be() else { return };
    let cols = 600;
    let mut x = vec![0.5f32; 3 * cols];
    x[cols + 10] = 2.0;
    x[cols + 300] = 2.0;
    x[cols + 599] = 2.0;
    x[cols + 5] = f32::NAN;
    x[2 * cols..].fill(f32::NEG_INFINITY);
    x[2 * cols + 7] = f32::NAN;
    let xb = up(be, &x, &[3, cols]);
    let mut out = be.zeros(DType::U32, &[3]).unwrap();
    ops::argmax(be, &xb, &mut out).unwrap();
    let got = be.download(&out).unwrap();
    let mut want = be_cpu_argmax(&x, cols);
    want.truncate(3);
    assert_eq!(got, HostVec::U32(want.clone()));
    assert_eq!(want, vec![0, 10, 0]);
}

fn be_cpu_argmax(x: &[f32], cols: usize) -> Vec<u32> {
    let cpu = mamba_gpu::CpuBackend::new();
    let xb = up(&cpu, x, &[x.len() / cols, cols]);
    let mut out = cpu.zeros(DType::U32, &[x.len() / cols]).unwrap();
    ops::argmax(&cpu, &xb, &mut out).unwrap();
    match cpu.download(&out).unwrap() {
        HostVec::U32(v) => v,
        _ => unreachable!(),
    }
}

#[test]
fn copy_matches_cpu() {
    let Some(be) = be() else { return };
    check_copy(be);
    // u32 too.
    let src = be.upload(HostSlice::U32(&[1, 2, 3, 4, 5]), &[5]).unwrap();
    let mut dst = be.zeros(DType::U32, &[4]).unwrap();
    ops::copy(be, &src, 2, &mut dst, 1, 3).unwrap();
    assert_eq!(be.download(&dst).unwrap(), HostVec::U32(vec![0, 3, 4, 5]));
}

/// Uploads round-trip in every dtype (f16/bf16 keep their bits; odd lengths are padded).
#[test]
fn upload_download_roundtrip() {
    let Some(be) = be() else { return };
    let v: Vec<f32> = (0..7).map(|i| i as f32 * 0.25 - 1.0).collect();
    for dt in [DType::F32, DType::F16, DType::BF16] {
        let b = up_as(be, &v, &[7], dt);
        let got = be.download(&b).unwrap();
        assert_eq!(got.dtype(), dt);
        assert_eq!(got.to_f32(), v);
    }
    let z = be.zeros(DType::BF16, &[3]).unwrap();
    assert_eq!(be.download(&z).unwrap().to_f32(), vec![0.0; 3]);
    assert!(be.supports_weight_dtype(DType::F16));
    assert!(be.supports_weight_dtype(DType::BF16));
    assert!(!be.supports_weight_dtype(DType::U32));
}

/// `ops::write` into existing buffers: dtypes (odd half lengths padded), ordering with
/// the recorded (not yet submitted) ops around it, errors.
#[test]
fn write_into_existing_buffers() {
    let Some(be) = be() else { return };
    check_write(be);
}

/// Many ops recorded before one submit give the same result as op-by-op.
#[test]
fn recorded_ops_flush_once() {
    let Some(be) = be() else { return };
    let mut g = Gen::new(3);
    let av = g.normal(1000);
    let a = up(be, &av, &[1000]);
    let mut x = up(be, &av, &[1000]);
    let mut tmp = be.zeros(DType::F32, &[1000]).unwrap();
    for _ in 0..20 {
        ops::elementwise(be, Elementwise::Add, &x, Some(&a), &mut tmp).unwrap();
        std::mem::swap(&mut x, &mut tmp);
    }
    be.flush().unwrap();
    let want: Vec<f32> = av.iter().map(|v| v * 21.0).collect();
    assert_close("20 recorded adds", &down(be, &x), &want, Tol::F32);
}

/// The mamba_ssm fixtures (`tests/fixtures/`), through the default backend.
#[test]
fn mamba_ssm_fixtures() {
    let Some(be) = be() else { return };
    common::fixtures::check_scan_fixtures(be);
    common::fixtures::check_step_fixtures(be);
}
