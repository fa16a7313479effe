//! The wgpu backend through the shared op suite (`tests/common/ops_suite.rs`), against
//! the CPU reference, plus what needs wgpu's own options: the shared-memory scan path
//! and weights windowed past a small binding limit.
//!
//! Without an adapter (no Vulkan/Metal/DX12 driver) the tests print
//! "wgpu tests SKIPPED: no adapter (...)" and pass, unless `MAMBA_REQUIRE=wgpu` is
//! set, in which case they fail. On a machine without a GPU, Mesa's lavapipe
//! (`mesa-vulkan-drivers`) is a real Vulkan device on the CPU; sizes here are kept
//! modest for it.
#![cfg(feature = "wgpu")]

mod common;

use std::sync::OnceLock;

use common::Tol;
use common::cases::ScanCase;
use common::checks::{check_embedding, check_matmul, check_scan, check_write, scan_cases, up};
use common::{gpu, ops_suite};
use mamba_gpu::ops::{self, ScanInputs, StateIo};
use mamba_gpu::wgpu::{WgpuBackend, WgpuOptions};
use mamba_gpu::{DType, Error};

fn make(opts: WgpuOptions) -> Option<WgpuBackend> {
    gpu::or_skip("wgpu", "wgpu tests", WgpuBackend::with_options(opts))
}

/// The default backend (subgroup scan where the adapter has it), shared by the tests.
/// With `wgpu-subgroups` in `MAMBA_REQUIRE` (CI: lavapipe has subgroups) an adapter on
/// which the subgroup scan is not chosen is a failure, not a quiet second shared run.
fn be() -> Option<&'static WgpuBackend> {
    static BE: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    BE.get_or_init(|| {
        let be = make(WgpuOptions::default())?;
        let info = be.adapter_info();
        if !be.uses_subgroup_scan() {
            gpu::skip(
                "wgpu-subgroups",
                "the subgroup scan path",
                format!(
                    "adapter `{}` has no usable subgroups (sizes {}..{}; the scan needs \
                     powers of two in 4..=64)",
                    info.name, info.subgroup_min_size, info.subgroup_max_size
                ),
            );
        }
        Some(be)
    })
    .as_ref()
}

/// Which scan kernel `be` really built: the subgroup one iff `subgroup`, never the other.
/// Proof from the pipeline cache that the path asked for is the path that ran.
fn assert_scan_path(be: &WgpuBackend, subgroup: bool) {
    assert_eq!(be.uses_subgroup_scan(), subgroup, "scan variant chosen");
    let built = be.built_pipelines();
    let ran = |prefix: &str| built.iter().any(|k| k.starts_with(prefix));
    let (want, not) = if subgroup {
        ("SelectiveScanSubgroup(", "SelectiveScan(")
    } else {
        ("SelectiveScan(", "SelectiveScanSubgroup(")
    };
    assert!(
        ran(want) && !ran(not),
        "expected {want}.. only; built {built:?}"
    );
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

op_suite_tests!(gpu WgpuBackend, be());

/// The default backend ran the scan variant it reports, and only that one.
#[test]
fn default_backend_runs_its_scan_path() {
    let Some(be) = be() else { return };
    ops_suite::scan_layouts_and_bc_kinds(be);
    assert_scan_path(be, be.uses_subgroup_scan());
    gpu::say(format!(
        "default scan path: {}",
        if be.uses_subgroup_scan() {
            "subgroup"
        } else {
            "shared"
        }
    ));
}

#[test]
fn scan_shared_memory_path_matches_cpu() {
    let Some(be) = be_shared() else { return };
    assert!(!be.uses_subgroup_scan());
    let t = std::time::Instant::now();
    let cases: Vec<ScanCase> = scan_cases(false)
        .into_iter()
        .chain(ops_suite::boundary_scan_cases())
        .chain([ScanCase::full(1, 2, 2049, 4)])
        .collect();
    for c in &cases {
        check_scan(be, c, Tol::F32);
    }
    assert_scan_path(be, false);
    eprintln!(
        "scan (shared path): {} cases in {:.1?}",
        cases.len(),
        t.elapsed()
    );
}

/// The scan's workgroups are sized from the adapter's limits (`ScanSize::fit`): asked for
/// 1, 3 and 16 channels per workgroup (16 = 1,024 invocations where the adapter allows
/// it), and with the workgroup-memory budget cut to 5 KiB (one or two channels at dstate
/// 300), on both scan paths, over channel counts that leave partial workgroups and dstate
/// 1 to 300 (above the 256 a fixed-size kernel used to allow). Each backend is checked to
/// have run the path it stands for; on an adapter without usable subgroups the first pass
/// would repeat the shared path, so it is left out (a failure under `wgpu-subgroups`).
#[test]
fn scan_sized_from_adapter_limits() {
    let cases = [
        (2, 7, 300, 16),
        (1, 5, 257, 1),
        (1, 3, 100, 300),
        (1, 4, 40, 5),
    ];
    let Some(default_be) = be() else { return };
    let subgroups = default_be.uses_subgroup_scan();
    for no_subgroups in [false, true] {
        if !no_subgroups && !subgroups {
            continue; // be() has already said why (or failed under wgpu-subgroups)
        }
        for (channels, storage) in [
            (Some(1), None),
            (Some(3), None),
            (Some(16), None),
            (None, Some(5120)),
        ] {
            let opts = WgpuOptions {
                no_subgroups,
                scan_channels: channels,
                max_workgroup_storage: storage,
                ..Default::default()
            };
            let Some(be) = make(opts) else { return };
            for &(b, d, l, n) in &cases {
                let (ch, bytes) = be.scan_workgroup(n as u32).expect("scan fits");
                assert!((1..=channels.unwrap_or(4)).contains(&ch), "{ch} channels");
                assert!(bytes <= storage.unwrap_or(u32::MAX), "{bytes} bytes");
                if channels == Some(3) {
                    assert_eq!(ch, 3, "lavapipe and GPUs allow 3 × 64 invocations");
                }
                if storage.is_some() && n == 300 {
                    assert!(ch < 4, "the 5 KiB budget leaves room for fewer channels");
                }
                check_scan(&be, &ScanCase::full(b, d, l, n), Tol::F32);
            }
            assert_scan_path(&be, !no_subgroups);
        }
    }
}

/// A dstate whose carried state does not fit the workgroup memory is a typed error that
/// names the limit, before anything is dispatched.
#[test]
fn scan_too_large_for_workgroup_memory_is_an_error() {
    let opts = WgpuOptions {
        max_workgroup_storage: Some(2048),
        ..Default::default()
    };
    let Some(be) = make(opts) else { return };
    let c = ScanCase::full(1, 2, 8, 600);
    let x = common::cases::ScanData::new(&c);
    let u = up(&be, &x.u, &c.seq_shape());
    let a = up(&be, &x.a, &[c.dim, c.dstate]);
    let b = up(&be, &x.b, &c.bc_shape());
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
    let mut out = up(
        &be,
        &vec![0.0; c.seq_shape().iter().product()],
        &c.seq_shape(),
    );
    match ops::selective_scan(&be, &inputs, StateIo::None, &mut out) {
        Err(Error::Limit {
            backend: "wgpu",
            op,
            tensor,
            why,
        }) => {
            assert_eq!((op, tensor), ("selective_scan", "A"));
            assert!(
                why.contains("dstate 600") && why.contains("2048 bytes"),
                "{why}"
            );
        }
        other => panic!("expected a typed error, got {other:?}"),
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

/// `ops::write` into existing buffers: dtypes (odd half lengths padded), ordering with
/// the recorded (not yet submitted) ops around it, errors.
#[test]
fn write_into_existing_buffers() {
    let Some(be) = be() else { return };
    check_write(be);
}

/// The mamba_ssm fixtures (`tests/fixtures/`), through the default backend.
#[test]
fn scan_matches_mamba_ssm_fixtures() {
    let Some(be) = be() else { return };
    common::fixtures::check_scan_fixtures(be);
}

#[test]
fn step_matches_mamba_ssm_fixtures() {
    let Some(be) = be() else { return };
    common::fixtures::check_step_fixtures(be);
}

/// Mamba-2's scan in both forms at every length: the default backend takes the chunked
/// form from 32 steps on (and the sequential one below), a backend with
/// `ssd_sequential` only the sequential one; both are held to the f64 fixtures and the
/// CPU references, and each built exactly the pipelines it should.
#[test]
fn ssd_scan_both_forms_match_references() {
    let Some(chunked) = make(WgpuOptions::default()) else {
        return;
    };
    let Some(sequential) = make(WgpuOptions {
        ssd_sequential: true,
        ..Default::default()
    }) else {
        return;
    };
    for (be, want) in [(&chunked, true), (&sequential, false)] {
        ops_suite::ssd_scan_fixtures(be);
        ops_suite::ssd_scan_cases(be);
        let built = be.built_pipelines();
        let has = |k: &str| built.iter().any(|b| b == k);
        assert!(
            has("SsdScan"),
            "the sequential form serves short scans: {built:?}"
        );
        assert_eq!(has("SsdScanChunked"), want, "chunked form built: {built:?}");
    }
}

/// `WgpuOptions::q8_activations = Int8`: `matmul_q8_int8.wgsl` (x quantized in workgroup
/// memory, `dot4I8Packed`) against the int8 reference of `tests/common/q8_checks.rs`,
/// which also holds its prefill rows and non-finite rows; the f32 kernel is not built.
#[test]
fn matmul_q8_int8_activations() {
    let Some(be) = make(WgpuOptions {
        q8_activations: mamba_gpu::Q8Activations::Int8,
        ..Default::default()
    }) else {
        return;
    };
    common::q8_checks::matmul_q8_int8(&be, usize::MAX);
    let built = be.built_pipelines();
    assert!(
        built.iter().any(|b| b.starts_with("MatmulQ8Int8")),
        "{built:?}"
    );
    assert!(
        !built.iter().any(|b| b.starts_with("MatmulQ8 ")),
        "{built:?}"
    );
    // Switched back at run time, the same backend is the dequantized matmul again.
    be.set_q8_activations(mamba_gpu::Q8Activations::F32);
    common::q8_checks::matmul_q8_fixtures(&be);
}
