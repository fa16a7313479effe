//! The op-by-op suite every GPU backend runs: one function per op family, generic over
//! [`Backend`], each comparing against the CPU reference through the checks of
//! [`super::checks`] (or, where a test says so, against fixed expected values). A
//! backend's test file has one `#[test]` per function here, named as the function plus
//! `_matches_cpu` where it compares with the CPU, and keeps only what needs its own
//! options or hardware.
//!
//! The case lists are the union of what the backends' files used to list on their own;
//! sizes are kept modest for lavapipe (Mesa's CPU Vulkan driver).

use mamba_gpu::ops::{self, Elementwise, Layout};
use mamba_gpu::{Backend, CpuBackend, DType, HostSlice, HostVec};

use super::cases::{Bc, Gen, ScanCase, St};
use super::checks::*;
use super::{Tol, assert_close};

/// Cases around the scan kernels' own boundaries, on top of `scan_cases(true)`: wgpu's
/// chunk of 256 steps, 4 steps per invocation and 4 channels per workgroup; CUDA's chunk
/// of 512 steps (511 / 512 / 513); state sizes up to 256; sequences long enough for the
/// wgpu host to split them into several dispatches.
pub fn boundary_scan_cases() -> Vec<ScanCase> {
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
    // Long enough for the wgpu host to split the sequence into dispatches (2048/N chunks
    // of 256 steps each: 3 dispatches here), in every state mode and both layouts.
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

/// `scan_cases(true)` and [`boundary_scan_cases`]: L = 1 to 17,000, dstate 1 to 256, with
/// and without D / z / delta_bias. Returns the number of cases run.
pub fn scan<B: Backend>(be: &B) -> usize {
    let cases: Vec<ScanCase> = scan_cases(true)
        .into_iter()
        .chain(boundary_scan_cases())
        .collect();
    for c in &cases {
        check_scan(be, c, Tol::F32);
    }
    cases.len()
}

/// Both layouts × every kind of B/C × every state mode, over channel counts that leave
/// partial blocks of 4 channels, groups that do / do not align with them, a sequence
/// over several chunks, odd lengths (the scalar tail of CUDA's float4 path) and a large
/// dstate (several state tiles).
pub fn scan_layouts_and_bc_kinds<B: Backend>(be: &B) {
    for layout in [Layout::ChannelMajor, Layout::TokenMajor] {
        for bc in [Bc::Invariant, Bc::Variable, Bc::Grouped(2), Bc::Grouped(4)] {
            for state in [St::None, St::Final, St::Carry] {
                for &(b, d, l, n) in &[(2, 8, 300, 16), (1, 12, 1027, 5), (1, 4, 64, 40)] {
                    let c = ScanCase {
                        bc,
                        layout,
                        state,
                        ..ScanCase::full(b, d, l, n)
                    };
                    check_scan(be, &c, Tol::F32);
                }
            }
        }
    }
}

/// L > 10⁶ in one call (3,907 wgpu chunks, 1,954 CUDA chunks).
pub fn scan_million_steps<B: Backend>(be: &B) {
    let c = ScanCase {
        z: false,
        ..ScanCase::full(1, 2, 1_000_001, 2)
    };
    check_scan(be, &c, Tol::F32);
}

/// A sequence split in two and carried through the state equals the whole sequence.
pub fn scan_split_sequence_carries_state<B: Backend>(be: &B) {
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
    let run = |t0: usize, t1: usize, state: &mut B::Buffer| {
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

/// The decode step: every option on and every option off over sizes with partial
/// blocks, B/C shared or grouped, then the four mixed combinations over odd channel
/// counts.
pub fn step<B: Backend>(be: &B) {
    for &(batch, dim, dstate, groups) in &[
        (1, 1, 1, 0),
        (1, 16, 16, 0),
        (3, 24, 16, 2),
        (2, 10, 5, 1),
        (2, 64, 64, 4),
    ] {
        for (d, z, dt_bias, softplus) in [(true, true, true, true), (false, false, false, false)] {
            let c = StepCase {
                batch,
                dim,
                dstate,
                groups,
                d,
                z,
                dt_bias,
                softplus,
                seed: (batch * 97 + dim * 13 + dstate) as u64,
            };
            check_step(be, &c, Tol::F32);
        }
    }
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

/// The sequence conv in both layouts and every state mode: widths 2 to 4 with bias and
/// SiLU on / off together and mixed, and width 1 (no state possible).
pub fn conv<B: Backend>(be: &B) {
    for layout in [Layout::ChannelMajor, Layout::TokenMajor] {
        for state in [St::None, St::Final, St::Carry] {
            for &(batch, dim, len, width) in
                &[(1, 1, 1, 2), (2, 5, 3, 4), (2, 8, 64, 4), (1, 3, 257, 3)]
            {
                for (bias, silu) in [(true, true), (false, false)] {
                    let c = ConvCase {
                        batch,
                        dim,
                        len,
                        width,
                        bias,
                        silu,
                        layout,
                        state,
                        seed: (batch * 7 + dim * 31 + len) as u64,
                    };
                    check_conv(be, &c, Tol::F32);
                }
            }
        }
    }
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

/// One conv decode step, widths 2 to 4.
pub fn conv_update<B: Backend>(be: &B) {
    for &(batch, dim, width) in &[(1, 1, 2), (2, 16, 4), (3, 7, 3)] {
        for (bias, silu) in [(true, true), (false, false)] {
            let c = ConvCase {
                batch,
                dim,
                len: 1,
                width,
                bias,
                silu,
                layout: Layout::ChannelMajor,
                state: St::Carry,
                seed: (batch * 5 + dim + width) as u64,
            };
            check_conv_update(be, &c, Tol::F32);
        }
    }
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

/// Matmul sums k products of N(0,1) values (|out| ~ sqrt(k)) in another order than
/// the CPU: the absolute floor of 1e-4 of [`Tol::F32`] covers that at k ≤ 1024.
///
/// f16/bf16 weights are compared with the CPU fed the same 16-bit values, so only the
/// summation order differs. m = 1 and m ≤ 8 take CUDA's matmul_rows kernel, larger m
/// cuBLAS; k % 8 ≠ 0 takes its scalar tail. wgpu takes its decode kernel up to m = 4 and
/// 64 × 64 tiles above; the shapes straddle both splits and the tile edges.
pub fn matmul<B: Backend>(be: &B) {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 64, 256),
            (3, 50, 37),
            (8, 33, 128),
            (9, 40, 64),
            (64, 96, 200),
            (1, 37, 29),
            (3, 67, 131),
            (4, 9, 300),
            (5, 33, 17),
            (64, 67, 131),
            (130, 65, 33),
        ] {
            for bias in [false, true] {
                check_matmul(be, m, n, k, bias, dtype, Tol::F32);
            }
        }
    }
}

pub fn rms_norm<B: Backend>(be: &B) {
    for &(rows, dim) in &[
        (1, 1),
        (1, 64),
        (7, 768),
        (3, 1000),
        (3, 37),
        (4, 300),
        (2, 1030),
    ] {
        for residual in [false, true] {
            check_rms_norm(be, rows, dim, residual, Tol::F32);
        }
    }
}

/// The grouped norm of Mamba-2, groups 1 (the plain norm) to 8, segments from 1 value
/// to more than one workgroup/block of 256.
pub fn rms_norm_grouped<B: Backend>(be: &B) {
    for &(rows, dim, groups) in &[(1, 8, 8), (3, 64, 1), (5, 96, 2), (2, 1024, 8), (4, 600, 2)] {
        check_rms_norm_grouped(be, rows, dim, groups);
    }
}

/// Embedding lookups from f32, f16 and bf16 tables (exact).
pub fn embedding<B: Backend>(be: &B) {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        check_embedding(be, 1, 1, 1, dtype);
        check_embedding(be, 1, 10, 8, dtype);
        check_embedding(be, 7, 50, 33, dtype);
        check_embedding(be, 37, 100, 65, dtype);
        check_embedding(be, 20, 1000, 64, dtype);
    }
}

/// GPU backends write zeros for ids past the table (documented in `ops::embedding`).
pub fn embedding_out_of_range_ids_write_zeros<B: Backend>(be: &B) {
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

pub fn elementwise<B: Backend>(be: &B) {
    for op in [
        Elementwise::Silu,
        Elementwise::Softplus,
        Elementwise::Add,
        Elementwise::Mul,
        Elementwise::MulSilu,
    ] {
        for len in [1, 1000, 4097, 70_001] {
            check_elementwise(be, op, len, Tol::F32);
        }
    }
}

pub fn argmax<B: Backend>(be: &B) {
    for &(rows, cols) in &[
        (1, 1),
        (1, 7),
        (1, 100),
        (5, 257),
        (3, 1000),
        (2, 50_280),
        (5, 50_280),
    ] {
        check_argmax(be, rows, cols);
    }
}

/// Ties go to the first index; NaN never wins; a row of -inf gives 0.
pub fn argmax_ties_and_nan<B: Backend>(be: &B) {
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
    let mut want = cpu_argmax(&x, cols);
    want.truncate(3);
    assert_eq!(got, HostVec::U32(want.clone()));
    assert_eq!(want, vec![0, 10, 0]);
}

fn cpu_argmax(x: &[f32], cols: usize) -> Vec<u32> {
    let cpu = CpuBackend::new();
    let xb = up(&cpu, x, &[x.len() / cols, cols]);
    let mut out = cpu.zeros(DType::U32, &[x.len() / cols]).unwrap();
    ops::argmax(&cpu, &xb, &mut out).unwrap();
    match cpu.download(&out).unwrap() {
        HostVec::U32(v) => v,
        _ => unreachable!(),
    }
}

/// A middle range of f32 (the rest of the destination untouched), and of u32.
pub fn copy<B: Backend>(be: &B) {
    check_copy(be);
    let src = be.upload(HostSlice::U32(&[1, 2, 3, 4, 5]), &[5]).unwrap();
    let mut dst = be.zeros(DType::U32, &[4]).unwrap();
    ops::copy(be, &src, 2, &mut dst, 1, 3).unwrap();
    assert_eq!(be.download(&dst).unwrap(), HostVec::U32(vec![0, 3, 4, 5]));
}

/// Uploads round-trip in every dtype (f16/bf16 keep their bits; odd lengths are padded).
pub fn upload_download_roundtrip<B: Backend>(be: &B) {
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

/// Many ops queued before one flush give the same result as op-by-op.
pub fn recorded_ops_flush_once<B: Backend>(be: &B) {
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

/// One `#[test]` per check of this suite, for the backend `$be` evaluates to (an
/// `Option` of the backend or of a reference to it; `None` skips, after the getter said
/// why). Every backend's op test file invokes this, so a check added to the list runs on
/// every backend: `op_suite_tests!(WgpuBackend, be());`. The second list holds what only
/// the GPU backends do (the CPU reference reports bad ids instead of writing zeros).
#[macro_export]
macro_rules! op_suite_tests {
    ($ty:ty, $be:expr) => {
        $crate::op_suite_tests!(@tests $ty, $be;
            scan_matches_cpu => scan,
            scan_layouts_and_bc_kinds => scan_layouts_and_bc_kinds,
            scan_million_steps => scan_million_steps,
            scan_split_sequence_carries_state => scan_split_sequence_carries_state,
            step_matches_cpu => step,
            conv_matches_cpu => conv,
            conv_update_matches_cpu => conv_update,
            matmul_matches_cpu => matmul,
            rms_norm_matches_cpu => rms_norm,
            rms_norm_grouped_matches_f64 => rms_norm_grouped,
            ssd_scan_matches_f64_fixtures => ssd_scan_fixtures,
            ssd_scan_matches_cpu_and_general_scan => ssd_scan_cases,
            matmul_q8_matches_f64_fixtures => matmul_q8_fixtures,
            matmul_q8_matches_dequantized_matmul => matmul_q8_random,
            embedding_matches_cpu => embedding,
            elementwise_matches_cpu => elementwise,
            argmax_matches_cpu => argmax,
            argmax_ties_and_nan => argmax_ties_and_nan,
            copy_matches_cpu => copy,
            upload_download_roundtrip => upload_download_roundtrip,
            recorded_ops_flush_once => recorded_ops_flush_once,
        );
    };
    (gpu $ty:ty, $be:expr) => {
        $crate::op_suite_tests!($ty, $be);
        $crate::op_suite_tests!(@tests $ty, $be;
            embedding_out_of_range_ids_write_zeros => embedding_out_of_range_ids_write_zeros,
        );
    };
    (@tests $ty:ty, $be:expr; $($test:ident => $check:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let Some(be) = $be else { return };
                let be: &$ty = ::std::borrow::Borrow::borrow(&be);
                $crate::common::ops_suite::$check(be);
            }
        )*
    };
}

/// See [`super::ssd_checks::ssd_scan_fixtures`].
pub fn ssd_scan_fixtures<B: Backend>(be: &B) {
    super::ssd_checks::ssd_scan_fixtures(be)
}

/// See [`super::q8_checks::matmul_q8_fixtures`].
pub fn matmul_q8_fixtures<B: Backend>(be: &B) {
    super::q8_checks::matmul_q8_fixtures(be)
}

/// See [`super::q8_checks::matmul_q8_random`].
pub fn matmul_q8_random<B: Backend>(be: &B) {
    super::q8_checks::matmul_q8_random(be)
}

/// See [`super::ssd_checks::ssd_scan_cases`].
pub fn ssd_scan_cases<B: Backend>(be: &B) {
    super::ssd_checks::ssd_scan_cases(be)
}
