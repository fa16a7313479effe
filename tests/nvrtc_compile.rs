//! Compiles every `kernels/*.cu` with NVRTC for sm_80 and sm_90, on any machine where
//! libnvrtc can be loaded: no GPU and no driver needed. (`tools/install_nvrtc.sh`
//! installs NVRTC from PyPI and prints the `LD_LIBRARY_PATH` to export.)
//!
//! Without libnvrtc the tests print "... SKIPPED" (past the harness' capture, so a plain
//! `cargo test` log shows it) and pass, unless `MAMBA_REQUIRE` names `nvrtc`, which turns
//! the skip into a failure (CI sets it).
#![cfg(feature = "cuda")]

#[path = "common/gpu.rs"]
mod gpu;

use std::collections::BTreeSet;
use std::path::Path;

use mamba_gpu::cuda::nvrtc::{self, Image, KERNELS, Kernel};

/// The architectures checked: A100 (sm_80) and H100/H200 (sm_90).
const ARCHS: &[(i32, i32)] = &[(8, 0), (9, 0)];

/// Returns false (after the skip banner) when NVRTC cannot be loaded and that is allowed.
fn nvrtc_or_skip(test: &str) -> bool {
    if nvrtc::nvrtc_available() {
        return true;
    }
    gpu::skip(
        "nvrtc",
        &format!("nvrtc_compile::{test}"),
        "libnvrtc cannot be loaded (cudarc searched libnvrtc.so, libnvrtc.so.13, ...). Run \
         `eval \"$(tools/install_nvrtc.sh)\"` or add the CUDA toolkit's lib64 to \
         LD_LIBRARY_PATH.",
    );
    false
}

#[test]
fn every_kernel_file_is_embedded() {
    // Needs no NVRTC: the list in src/cuda/nvrtc.rs must match the folder.
    // The run-time variable first: tools/gpu_check.sh runs this binary in another tree.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let dir = Path::new(&root).join("kernels");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("kernels/ folder")
        .filter_map(|e| {
            let p = e.ok()?.path();
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            (p.extension()? == "cu").then_some(stem)
        })
        .collect();
    let embedded: BTreeSet<String> = KERNELS.iter().map(|k| k.name.to_string()).collect();
    assert_eq!(
        on_disk, embedded,
        "kernels/*.cu and src/cuda/nvrtc.rs KERNELS differ"
    );
    for k in KERNELS {
        let disk = std::fs::read_to_string(dir.join(format!("{}.cu", k.name))).expect("read");
        assert_eq!(disk, k.source, "{}.cu: embedded copy is stale", k.name);
        assert!(
            k.source.contains("#include \"common.cuh\""),
            "{}.cu: must take its param struct from common.cuh",
            k.name
        );
    }
    let header = std::fs::read_to_string(dir.join("common.cuh")).expect("read common.cuh");
    assert_eq!(
        header,
        nvrtc::COMMON_HEADER.source,
        "common.cuh: embedded copy is stale"
    );
}

#[test]
fn all_kernels_compile_for_sm80_and_sm90() {
    if !nvrtc_or_skip("all_kernels_compile_for_sm80_and_sm90") {
        return;
    }
    let version = nvrtc::nvrtc_version().expect("nvrtcVersion");
    let archs = nvrtc::supported_archs().expect("supported archs");
    gpu::say(format!(
        "NVRTC {}.{}; supported sm_{archs:?}",
        version.0, version.1
    ));
    let mut failures = Vec::new();
    for k in KERNELS {
        // The entry points the backend loads from this file (src/cuda/nvrtc.rs, Kernel).
        let entries: Vec<&str> = Kernel::ALL
            .iter()
            .filter(|e| e.source().name == k.name)
            .map(|e| e.entry())
            .collect();
        assert!(
            !entries.is_empty(),
            "{}.cu: no Kernel loads from it",
            k.name
        );
        for &cc in ARCHS {
            // CUBIN (what the backend loads) ...
            match nvrtc::compile(k, cc, true) {
                Ok(Image::Cubin(bin)) => {
                    assert!(
                        bin.starts_with(b"\x7fELF"),
                        "{}: CUBIN is not an ELF",
                        k.name
                    );
                    eprintln!(
                        "  {}.cu sm_{}{}: CUBIN {} bytes",
                        k.name,
                        cc.0,
                        cc.1,
                        bin.len()
                    );
                }
                Ok(Image::Ptx(_)) => failures.push(format!("{}: asked CUBIN, got PTX", k.name)),
                Err(e) => failures.push(e.to_string()),
            }
            // ... and PTX, to check the exported entry points by name.
            match nvrtc::compile(k, cc, false) {
                Ok(Image::Ptx(ptx)) => {
                    for e in &entries {
                        if !ptx.contains(&format!(".entry {e}(")) {
                            failures.push(format!(
                                "{}.cu compute_{}{}: entry point `{e}` missing",
                                k.name, cc.0, cc.1
                            ));
                        }
                    }
                }
                Ok(Image::Cubin(_)) => failures.push(format!("{}: asked PTX, got CUBIN", k.name)),
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "NVRTC failures:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn compile_errors_carry_the_nvrtc_log() {
    if !nvrtc_or_skip("compile_errors_carry_the_nvrtc_log") {
        return;
    }
    let bad = nvrtc::KernelSource {
        name: "broken",
        source: "extern \"C\" __global__ void k() { undeclared_thing = 1; }",
    };
    let err = nvrtc::compile(&bad, (9, 0), true).expect_err("must not compile");
    let msg = err.to_string();
    assert!(
        msg.contains("broken.cu") && msg.contains("undeclared_thing"),
        "error lacks the file name or the log: {msg}"
    );
}
