//! The CUDA kernels (`kernels/*.cu`) executed on the CPU execution model
//! (`mamba_gpu::cuda::CudaCpuBackend`) through the shared op suite
//! (`tests/common/ops_suite.rs`), against the CPU reference, with NaN-poisoned outputs;
//! under the default round-robin schedule for everything and under the other four
//! schedules for the kernels with barriers and shuffles. Also: every entry point runs,
//! the launch geometry's constants match what the kernels use, and the CUDA backend's
//! refusals are typed errors. cuBLAS is not modelled (its SGEMM is a host loop here).
//!
//! Needs g++ ≥ 12; without it the tests fail, unless `MAMBA_CUDA_CPU=skip`.
#![cfg(feature = "cuda")]

mod common;

use std::path::PathBuf;

use common::cases::{Bc, ScanCase, St};
use common::checks::{check_argmax, check_matmul, check_rms_norm, check_scan, scan_cases, up};
use common::{Tol, ops_suite};
use mamba_gpu::cuda::geometry::{self, SCAN_STATIC_SMEM};
use mamba_gpu::cuda::nvrtc::Kernel;
use mamba_gpu::cuda::{CudaCpuBackend, CudaCpuOptions, Schedule};
use mamba_gpu::ops::{self, Layout, ScanInputs, StateIo};
use mamba_gpu::{Backend, CpuBackend, DType, Error};

fn opts(schedule: Schedule) -> CudaCpuOptions {
    CudaCpuOptions {
        schedule,
        build_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda-cpu")),
        ..Default::default()
    }
}

fn make(o: CudaCpuOptions) -> Option<CudaCpuBackend> {
    match CudaCpuBackend::new(o) {
        Ok(be) => Some(be),
        Err(e @ Error::BackendUnavailable { .. })
            if std::env::var("MAMBA_CUDA_CPU").as_deref() == Ok("skip") =>
        {
            eprintln!("cuda-cpu tests SKIPPED (MAMBA_CUDA_CPU=skip): {e}");
            None
        }
        Err(e) => panic!("the CPU execution model is unavailable: {e}"),
    }
}

fn be() -> Option<CudaCpuBackend> {
    make(opts(Schedule::RoundRobin))
}

const OTHER_SCHEDULES: [Schedule; 4] = [
    Schedule::Reverse,
    Schedule::LowestFirst,
    Schedule::HighestFirst,
    Schedule::Random(0x5eed),
];

// The shared op suite (tests/common/ops_suite.rs), as on every backend.
op_suite_tests!(gpu CudaCpuBackend, be());

/// f16/bf16 I/O (`selective_scan_f16` / `_bf16`), vector and scalar paths, staged and
/// per-row B/C, around the 512-step chunk.
#[test]
fn scan_half_io_matches_cpu() {
    let Some(be) = be() else { return };
    let cpu = CpuBackend::new();
    let mut cases = scan_cases(false);
    for layout in [Layout::ChannelMajor, Layout::TokenMajor] {
        for (bc, state) in [
            (Bc::Variable, St::Carry),
            (Bc::Grouped(2), St::Final),
            (Bc::Invariant, St::None),
        ] {
            for &(b, d, l, n) in &[(2, 8, 512, 16), (1, 6, 513, 5), (1, 4, 300, 16)] {
                cases.push(ScanCase {
                    bc,
                    layout,
                    state,
                    ..ScanCase::full(b, d, l, n)
                });
            }
        }
    }
    for io in [DType::F16, DType::BF16] {
        for c in &cases {
            common::half_io::check_scan_io(&be, &cpu, c, io, Tol::F32);
        }
    }
}

/// Without cuBLAS every product is matmul_rows (blockIdx.y tiles m by 8).
#[test]
fn matmul_without_cublas_matches_cpu() {
    let Some(be) = make(CudaCpuOptions {
        cublas: false,
        ..opts(Schedule::RoundRobin)
    }) else {
        return;
    };
    ops_suite::matmul(&be);
}

#[test]
fn write_matches_cpu() {
    let Some(be) = be() else { return };
    common::checks::check_write(&be);
}

#[test]
fn scan_and_step_match_mamba_ssm_fixtures() {
    let Some(be) = be() else { return };
    common::fixtures::check_scan_fixtures(&be);
    common::fixtures::check_step_fixtures(&be);
}

/// The kernels with barriers and shuffles under the four other schedules: the scan at
/// its chunk boundaries (511/512/513, carry, grouped, token-major), rms_norm, argmax and
/// matmul_rows reductions.
#[test]
fn other_schedules_match_cpu() {
    let mut cases = scan_cases(false);
    for &(b, d, l, n) in &[
        (1, 4, 511, 16),
        (1, 3, 512, 8),
        (2, 6, 513, 16),
        (1, 5, 1025, 9),
    ] {
        for (bc, state, layout) in [
            (Bc::Variable, St::Carry, Layout::ChannelMajor),
            (Bc::Grouped(3), St::Final, Layout::TokenMajor),
            (Bc::Invariant, St::Carry, Layout::TokenMajor),
        ] {
            if matches!(bc, Bc::Grouped(g) if d % g != 0) {
                continue;
            }
            cases.push(ScanCase {
                bc,
                state,
                layout,
                ..ScanCase::full(b, d, l, n)
            });
        }
    }
    for s in OTHER_SCHEDULES {
        let Some(be) = make(CudaCpuOptions {
            cublas: false,
            ..opts(s)
        }) else {
            return;
        };
        let t = std::time::Instant::now();
        for c in &cases {
            check_scan(&be, c, Tol::F32);
        }
        for &(rows, dim) in &[(3, 1), (2, 255), (2, 257), (1, 2048)] {
            check_rms_norm(&be, rows, dim, true, Tol::F32);
        }
        for &(rows, cols) in &[(2, 1), (3, 257), (2, 5000)] {
            check_argmax(&be, rows, cols);
        }
        for dt in [DType::F32, DType::BF16] {
            check_matmul(&be, 9, 33, 40, true, dt, Tol::F32);
            check_matmul(&be, 2, 17, 13, false, dt, Tol::F32);
        }
        ops_suite::step(&be);
        // Mamba-2's kernels: the grouped norm (a block reduction) and ssd_scan in both
        // forms (the chunked one has five barriers per chunk).
        ops_suite::rms_norm_grouped(&be);
        ops_suite::ssd_scan_fixtures(&be);
        ops_suite::ssd_scan_cases(&be);
        eprintln!(
            "cuda-cpu {s:?}: {} scan cases + reductions in {:.1?}",
            cases.len(),
            t.elapsed()
        );
    }
}

/// Every entry point the geometry can name is in `kernels/` and runs; nothing in
/// `kernels/` is left unlaunched; the scan's static shared memory is what the geometry
/// assumes; the model compiles the very sources NVRTC does.
#[test]
fn every_entry_point_runs() {
    let Some(be) = be() else { return };
    let info = be.kernel_info().unwrap();
    let mut found: Vec<&str> = info
        .lines()
        .filter_map(|l| l.strip_prefix("entry "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    found.sort();
    let mut named: Vec<&str> = Kernel::ALL.iter().map(|k| k.entry()).collect();
    named.sort();
    assert_eq!(
        found, named,
        "entry points in kernels/ vs nvrtc::Kernel::ALL"
    );

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels");
    for k in mamba_gpu::cuda::nvrtc::KERNELS {
        let disk = std::fs::read_to_string(dir.join(format!("{}.cu", k.name))).unwrap();
        assert_eq!(
            disk, k.source,
            "kernels/{}.cu differs from the NVRTC source",
            k.name
        );
        assert!(Kernel::ALL.iter().any(|e| e.source().name == k.name));
    }

    // One small run of every op and dtype; m = 9 takes the cuBLAS path.
    for dt in [DType::F32, DType::F16, DType::BF16] {
        check_matmul(&be, 9, 5, 8, true, dt, Tol::F32);
        check_matmul(&be, 1, 5, 8, true, dt, Tol::F32);
        common::checks::check_embedding(&be, 3, 7, 5, dt);
        let cpu = CpuBackend::new();
        let c = ScanCase::full(1, 3, 20, 4);
        common::half_io::check_scan_io(&be, &cpu, &c, dt, Tol::F32);
        let w = common::checks::up_as(&be, &[1.0; 8], &[8], dt);
        let x = up(&be, &[0.5; 16], &[2, 8]);
        let mut out = be.zeros(DType::F32, &[2, 8]).unwrap();
        ops::rms_norm(&be, &x, &w, 1e-5, None, &mut out).unwrap();
    }
    ops_suite::conv_update(&be);
    ops_suite::step(&be);
    ops_suite::elementwise(&be);
    ops_suite::argmax(&be);
    ops_suite::copy(&be);
    ops_suite::ssd_scan_fixtures(&be);
    ops_suite::matmul_q8_fixtures(&be);
    be.set_q8_activations(mamba_gpu::Q8Activations::Int8);
    common::q8_checks::matmul_q8_int8(&be, usize::MAX);
    be.set_q8_activations(mamba_gpu::Q8Activations::F32);
    common::fused_checks::check_fused_ops(&be, Tol::F32);
    let c = common::checks::ConvCase {
        batch: 1,
        dim: 2,
        len: 5,
        width: 3,
        bias: true,
        silu: true,
        layout: Layout::ChannelMajor,
        state: St::Carry,
        seed: 1,
    };
    common::checks::check_conv(&be, &c, Tol::F32);
    let launched = be.launched();
    let mut ran: Vec<&str> = launched.iter().map(|e| e.0).collect();
    ran.sort();
    assert_eq!(ran, named, "entry points launched");
    let scan_smem = launched
        .iter()
        .find(|e| e.0 == "selective_scan_f32")
        .unwrap()
        .1;
    assert_eq!(
        scan_smem, SCAN_STATIC_SMEM as u64,
        "geometry::SCAN_STATIC_SMEM"
    );
}

fn scan_inputs_run(be: &CudaCpuBackend, batch: usize, dstate: usize) -> mamba_gpu::Result<()> {
    let c = ScanCase::full(batch, 1, 1, dstate);
    let x = common::cases::ScanData::new(&c);
    let u = up(be, &x.u, &c.seq_shape());
    let a = up(be, &x.a, &[c.dim, c.dstate]);
    let b = up(be, &x.b, &c.bc_shape());
    let inputs = ScanInputs {
        u: &u,
        delta: &u,
        a: &a,
        b: &b,
        c: &b,
        d: None,
        z: None,
        delta_bias: None,
        delta_softplus: false,
        layout: c.layout,
    };
    let mut out = be.zeros(DType::F32, &c.seq_shape()).unwrap();
    ops::selective_scan(be, &inputs, StateIo::None, &mut out)
}

/// The CUDA backend's limits (shared code in `geometry`) are typed errors naming the
/// argument; just inside them the kernels run and match the CPU.
#[test]
fn cuda_limits_are_typed_errors() {
    let Some(be) = be() else { return };
    let max_n = ((geometry::SMEM_LIMIT - SCAN_STATIC_SMEM) / (geometry::SCAN_CPB * 4)) as usize;
    match scan_inputs_run(&be, 1, max_n + 1) {
        Err(Error::Limit {
            backend: "cuda",
            op,
            tensor,
            why,
        }) => {
            assert_eq!((op, tensor), ("selective_scan", "A"));
            assert!(why.contains(&format!("dstate {}", max_n + 1)), "{why}");
        }
        other => panic!("expected a typed dstate error, got {other:?}"),
    }
    check_scan(&be, &ScanCase::full(1, 2, 3, max_n), Tol::F32);
    match scan_inputs_run(&be, 65_536, 1) {
        Err(Error::Limit {
            backend: "cuda",
            op,
            tensor,
            why,
        }) => {
            assert_eq!((op, tensor), ("selective_scan", "u"));
            assert!(why.contains("65536"), "{why}");
        }
        other => panic!("expected a typed batch error, got {other:?}"),
    }
    scan_inputs_run(&be, 2, 1).expect("a small batch runs");

    let no_blas = make(CudaCpuOptions {
        cublas: false,
        ..opts(Schedule::RoundRobin)
    })
    .unwrap();
    let m = 8 * 65_535 + 1;
    let x = up(&no_blas, &vec![1.0; m], &[m, 1]);
    let w = up(&no_blas, &[2.0], &[1, 1]);
    let mut out = no_blas.zeros(DType::F32, &[m, 1]).unwrap();
    match ops::matmul(&no_blas, &x, &w, None, &mut out) {
        Err(Error::Limit {
            backend: "cuda",
            op: "matmul",
            tensor: "x",
            why,
        }) => assert!(why.contains("cuBLAS"), "{why}"),
        other => panic!("expected a typed matmul error, got {other:?}"),
    }
}

/// A whole fixture model (tests/fixtures/models) on the execution model: logits and
/// greedy ids as the fixture's reference.
#[test]
fn fixture_models_match_reference() {
    let Some(be) = be() else { return };
    let reports =
        common::model_fixtures::check_model_fixtures_where(&be, |n| !n.ends_with("_layout"));
    assert!(reports.len() >= 9, "{} fixture models", reports.len());
    for r in &reports {
        eprintln!("cuda-cpu model {}: {r:?}", r.name);
    }
}

fn argmax_of<B: Backend>(be: &B, x: &[f32], rows: usize) -> mamba_gpu::HostVec {
    let xb = up(be, x, &[rows, x.len() / rows]);
    let mut out = be.zeros(DType::U32, &[rows]).unwrap();
    ops::argmax(be, &xb, &mut out).unwrap();
    be.download(&out).unwrap()
}

/// Rows whose values are all negative: the reduction must start from -inf, not 0 (the
/// shared suite's N(0, 1) rows always hold a positive value).
#[test]
fn argmax_all_negative_rows() {
    let Some(be) = be() else { return };
    let x: Vec<f32> = (0..3 * 700)
        .map(|i| -1.0 - ((i * 37) % 101) as f32 - (i % 700) as f32 * 1e-3)
        .collect();
    let want = argmax_of(&CpuBackend::new(), &x, 3);
    assert_eq!(argmax_of(&be, &x, 3), want);
}

/// Mamba-2's scan in both forms at every length on the execution model: by default the
/// chunked kernel serves 32 steps and more, with `ssd_sequential` only the sequential
/// one runs; both match the f64 fixtures and the CPU references.
#[test]
fn ssd_scan_both_forms_match_references() {
    for sequential in [false, true] {
        let Some(be) = make(CudaCpuOptions {
            ssd_sequential: sequential,
            ..opts(Schedule::RoundRobin)
        }) else {
            return;
        };
        ops_suite::ssd_scan_fixtures(&be);
        ops_suite::ssd_scan_cases(&be);
        let ran = |k: &str| be.launched().iter().any(|(e, _)| *e == k);
        assert!(ran("ssd_scan"), "the sequential form serves short scans");
        assert_eq!(
            ran("ssd_scan_chunked"),
            !sequential,
            "chunked form launched"
        );
    }
}

/// `matmul_q8_int8` (x quantized in shared memory, `__dp4a`) on the execution model,
/// under every schedule (the tile's barriers must hold), against the int8 reference;
/// only that kernel launched.
#[test]
fn matmul_q8_int8_activations() {
    for schedule in std::iter::once(Schedule::RoundRobin).chain(OTHER_SCHEDULES) {
        let Some(be) = make(CudaCpuOptions {
            q8_activations: mamba_gpu::Q8Activations::Int8,
            ..opts(schedule)
        }) else {
            return;
        };
        common::q8_checks::matmul_q8_int8(&be, usize::MAX);
        let ran = |k: &str| be.launched().iter().any(|(e, _)| *e == k);
        assert!(ran("matmul_q8_int8") && !ran("matmul_q8"));
    }
}

/// Q8_0 fixture models on the CPU execution model (`matmul_q8.cu`), one per family (all
/// nine take minutes here; CPU and wgpu run them all): equal to the dequantized f32
/// checkpoint, and close to the float model (numbers printed).
#[test]
fn q8_models_match_dequantized_checkpoints() {
    let Some(be) = be() else { return };
    let one_per_family = ["tiny_tied", "falcon_tiny_tied", "mamba2_g2_untied_bias"];
    common::q8_model::check_q8_models_where(|| &be, |n| one_per_family.contains(&n), 3);
}
