//! Unit tests of `kernels.rs`: the include step, the kernel list and the scan sizing.
use super::*;

#[test]
fn every_module_joins_without_include_lines_and_each_file_once() {
    for &name in SHADERS {
        let src = shader_source(name).unwrap();
        assert!(
            !src.lines().any(|l| l.trim().starts_with(INCLUDE)),
            "{name}: include left"
        );
        for (path, _) in FILES {
            let n = src
                .matches(&format!("// ---- shaders/{path} ----\n"))
                .count();
            assert!(n <= 1, "{name}: {path} joined {n} times");
        }
        // Everything declared in common.wgsl reaches every module.
        assert!(
            src.contains("struct ScanParams {"),
            "{name}: common.wgsl missing"
        );
    }
    // Both scan halves bring the one body.
    for half in ["selective_scan/shared.wgsl", "selective_scan/subgroup.wgsl"] {
        assert!(
            shader_source(half)
                .unwrap()
                .contains("fn selective_scan(inv: ScanInvocation)")
        );
    }
    assert!(
        shader_source("nope.wgsl")
            .unwrap_err()
            .contains("shaders/nope.wgsl")
    );
}

#[test]
fn every_kernel_names_a_module() {
    let size = ScanSize {
        channels: 1,
        max_dstate: 1,
    };
    let w = WDtype::F32;
    for k in [
        Kernel::SelectiveScan(size),
        Kernel::SelectiveScanSubgroup(size),
        Kernel::SelectiveStateUpdate,
        Kernel::SsdScan,
        Kernel::SsdScanChunked,
        Kernel::CausalConv1d,
        Kernel::Matmul { w, bias: w },
        Kernel::MatmulQ8 { bias: w },
        Kernel::RmsNorm { w },
        Kernel::Embedding { w },
        Kernel::Elementwise,
        Kernel::Argmax,
        Kernel::Copy,
    ] {
        assert!(SHADERS.contains(&k.shader().name), "{k:?}");
    }
}

const WEBGPU_DEFAULT: ScanLimits = ScanLimits {
    invocations: 256,
    workgroup_bytes: 16 * 1024,
};

#[test]
fn scan_size_prefers_four_channels_and_rounds_dstate_up() {
    for subgroup in [false, true] {
        let s = ScanSize::fit(16, SCAN_CHANNELS, WEBGPU_DEFAULT, subgroup).unwrap();
        assert_eq!((s.channels, s.max_dstate), (4, 16));
        let s = ScanSize::fit(1, SCAN_CHANNELS, WEBGPU_DEFAULT, subgroup).unwrap();
        assert_eq!((s.channels, s.max_dstate), (4, 1));
        let s = ScanSize::fit(17, SCAN_CHANNELS, WEBGPU_DEFAULT, subgroup).unwrap();
        assert_eq!(s.max_dstate, 32);
        assert!(s.workgroup_bytes(subgroup) <= WEBGPU_DEFAULT.workgroup_bytes);
    }
}

#[test]
fn scan_size_shrinks_to_the_limits() {
    // 128 invocations (Vulkan's minimum): two channels of 64 lanes.
    let small = ScanLimits {
        invocations: 128,
        workgroup_bytes: 16 * 1024,
    };
    assert_eq!(ScanSize::fit(16, 4, small, false).unwrap().channels, 2);
    // Large dstate: the carried state decides. Shared path, N 2048 → 2176 words per
    // channel = 8704 bytes: one channel in 16 KiB.
    let s = ScanSize::fit(2000, 4, WEBGPU_DEFAULT, false).unwrap();
    assert_eq!((s.channels, s.max_dstate), (1, 2048));
    assert!(s.workgroup_bytes(false) <= WEBGPU_DEFAULT.workgroup_bytes);
    // Subgroup path keeps two parities: N 1024 → 2080 words = 8320 bytes, one channel.
    assert_eq!(
        ScanSize::fit(1024, 4, WEBGPU_DEFAULT, true)
            .unwrap()
            .channels,
        1
    );
    // More channels only when asked for and allowed.
    let big = ScanLimits {
        invocations: 1024,
        workgroup_bytes: 48 * 1024,
    };
    assert_eq!(ScanSize::fit(16, 16, big, true).unwrap().channels, 16);
    assert_eq!(ScanSize::fit(16, 64, big, true).unwrap().channels, 16);
}

#[test]
fn scan_size_refuses_what_cannot_fit() {
    let why = ScanSize::fit(4096, 4, WEBGPU_DEFAULT, true).unwrap_err();
    assert!(
        why.contains("dstate 4096") && why.contains("16384 bytes"),
        "{why}"
    );
    let tiny = ScanLimits {
        invocations: 32,
        workgroup_bytes: 16 * 1024,
    };
    let why = ScanSize::fit(16, 4, tiny, false).unwrap_err();
    assert!(why.contains("32 invocations"), "{why}");
}
