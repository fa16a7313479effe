//! The CUDA kernels on the CPU execution model built with AddressSanitizer +
//! UndefinedBehaviorSanitizer (`-fsanitize=address,undefined`): shared arrays and device
//! buffers are exact-size heap allocations there, so an out-of-bounds read that does not
//! change the output (and would pass the plain build) is reported, as are misaligned
//! vector loads and other undefined behaviour. A subset of the op suite, to keep it fast.
#![cfg(feature = "cuda")]

mod common;

use std::path::PathBuf;

use common::Tol;
use common::cases::{Bc, ScanCase, St};
use common::checks::*;
use mamba_gpu::cuda::emu::KernelArg;
use mamba_gpu::cuda::geometry::Launch;
use mamba_gpu::cuda::{CudaCpuBackend, CudaCpuOptions, Schedule};
use mamba_gpu::ops::{Elementwise, Layout};
use mamba_gpu::{Backend, CpuBackend, DType, Error};

fn make(kernel_dir: Option<PathBuf>, schedule: Schedule) -> Option<CudaCpuBackend> {
    let o = CudaCpuOptions {
        schedule,
        sanitize: true,
        cublas: false,
        kernel_dir,
        build_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda-cpu")),
        ..Default::default()
    };
    match CudaCpuBackend::new(o) {
        Ok(be) => Some(be),
        Err(e) if std::env::var("MAMBA_CUDA_CPU").as_deref() == Ok("skip") => {
            eprintln!("cuda-cpu ASan tests SKIPPED: {e}");
            None
        }
        Err(e) => panic!("the CPU execution model (ASan) is unavailable: {e}"),
    }
}

#[test]
fn kernels_under_asan_and_ubsan() {
    let Some(be) = make(None, Schedule::Random(11)) else {
        return;
    };
    let t = std::time::Instant::now();
    let mut cases = scan_cases(false);
    for (l, n, bc, st, layout) in [
        (511, 16, Bc::Variable, St::Carry, Layout::ChannelMajor),
        (513, 9, Bc::Grouped(2), St::Final, Layout::TokenMajor),
        (300, 4, Bc::Invariant, St::Carry, Layout::ChannelMajor),
    ] {
        cases.push(ScanCase {
            bc,
            state: st,
            layout,
            ..ScanCase::full(1, 6, l, n)
        });
    }
    for c in &cases {
        check_scan(&be, c, Tol::F32);
    }
    let cpu = CpuBackend::new();
    for io in [DType::F16, DType::BF16] {
        for c in &cases[..3] {
            common::half_io::check_scan_io(&be, &cpu, c, io, Tol::F32);
        }
        common::half_io::check_scan_io(&be, &cpu, &ScanCase::full(1, 4, 512, 8), io, Tol::F32);
    }
    for dt in [DType::F32, DType::F16, DType::BF16] {
        check_matmul(&be, 3, 17, 24, true, dt, Tol::F32);
        check_matmul(&be, 9, 9, 13, true, dt, Tol::F32);
        check_embedding(&be, 5, 9, 7, dt);
    }
    check_rms_norm(&be, 3, 300, true, Tol::F32);
    check_argmax(&be, 3, 777);
    check_elementwise(&be, Elementwise::MulSilu, 1000, Tol::F32);
    check_copy(&be);
    common::ops_suite::step(&be);
    common::ops_suite::conv_update(&be);
    // ssd_scan, sequential and chunked (shared-memory tiles, partial channel tiles).
    common::ops_suite::ssd_scan_cases(&be);
    // matmul_q8: packed int8 rows, partial row blocks, m over the 8-row tile.
    common::ops_suite::matmul_q8_random(&be);
    // matmul_q8_int8: the shared-memory tiles of quantized x.
    be.set_q8_activations(mamba_gpu::Q8Activations::Int8);
    common::q8_checks::matmul_q8_int8(&be, usize::MAX);
    be.set_q8_activations(mamba_gpu::Q8Activations::F32);
    for st in [St::None, St::Carry] {
        let c = ConvCase {
            batch: 2,
            dim: 5,
            len: 33,
            width: 4,
            bias: true,
            silu: true,
            layout: Layout::TokenMajor,
            state: st,
            seed: 4,
        };
        check_conv(&be, &c, Tol::F32);
    }
    eprintln!("cuda-cpu ASan subset: {:.1?}", t.elapsed());
}

/// An overrun of a shared array by one element only reads garbage on a GPU; here it is
/// an AddressSanitizer report, returned as a typed error.
#[test]
fn asan_reports_a_shared_memory_overrun() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda-cpu/overrun-kernels");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("overrun.cu"),
        "extern \"C\" __global__ void overrun(float* out) {\n\
         __shared__ float s[32];\n\
         s[threadIdx.x] = 1.f;\n\
         __syncthreads();\n\
         out[threadIdx.x] = s[threadIdx.x + 1];\n}\n",
    )
    .unwrap();
    let Some(be) = make(Some(dir), Schedule::RoundRobin) else {
        return;
    };
    let out = be.zeros(DType::F32, &[32]).unwrap();
    let l = Launch {
        kernel: "overrun",
        grid: (1, 1, 1),
        block: (32, 1, 1),
        shared_bytes: 0,
    };
    match be.launch_kernel(&l, &[KernelArg::Buffer(&out)]) {
        Err(Error::Device { why, .. }) => {
            // UBSan's bounds check or ASan's redzone, whichever sees it first.
            let seen = why.contains("heap-buffer-overflow")
                || why.contains("index 32 out of bounds for type 'float [32]'");
            assert!(seen && why.contains("overrun.cu:5"), "{why}")
        }
        other => panic!("expected an ASan report, got {other:?}"),
    }
}
