//! The CPU execution model itself: that it reports what a GPU would hang on or silently
//! get wrong (deadlocks, divergent barriers, masks naming exited lanes, argument lists
//! that do not match the kernel, blocks past `__launch_bounds__`, too much shared
//! memory), that its schedules expose a missing barrier, and that the param structs g++
//! compiled from `kernels/` have the layout of `src/params.rs`. Deliberately broken
//! kernels are written to a temporary kernel folder.
#![cfg(feature = "cuda")]

use std::path::PathBuf;

use mamba_gpu::cuda::emu::KernelArg;
use mamba_gpu::cuda::geometry::Launch;
use mamba_gpu::cuda::{CudaCpuBackend, CudaCpuOptions, Schedule};
use mamba_gpu::params::*;
use mamba_gpu::{Backend, DType, Error, HostSlice};

const BROKEN: &str = r#"
struct TestParams { unsigned int n; };
extern "C" __global__ void __launch_bounds__(64) divergent_barrier(unsigned int* out) {
    if (threadIdx.x < 32) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}
extern "C" __global__ void __launch_bounds__(64) deadlock(unsigned int* out) {
    unsigned int v = threadIdx.x;
    if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
    else __syncthreads();
    out[threadIdx.x] = v;
}
extern "C" __global__ void __launch_bounds__(64) exited_lane(unsigned int* out) {
    if (threadIdx.x % 32 == 5) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, threadIdx.x, 1);
}
// Warp 0 writes, warp 1 reads the other half: needs a __syncthreads, has only a shuffle.
extern "C" __global__ void __launch_bounds__(64) missing_barrier(TestParams p, float* out) {
    __shared__ float s[64];
    const unsigned int t = threadIdx.x;
    s[t] = (float)t;
    float v = __shfl_xor_sync(0xffffffffu, (float)t, 1);
    out[t] = s[63 - t] + 0.f * v + (float)p.n;
}
extern "C" __global__ void __launch_bounds__(64) shuffles(float* out) {
    const unsigned int t = threadIdx.x;
    float up = __shfl_up_sync(0xffffffffu, (float)t, 3);
    float down = __shfl_down_sync(0xffffffffu, (float)t, 2, 16);
    float x = __shfl_xor_sync(0xffffffffu, (float)t, 5);
    float idx = __shfl_sync(0xffffffffu, (float)t, 7, 8);
    unsigned int b = __ballot_sync(0xffffffffu, t % 3 == 0);
    out[t * 5 + 0] = up; out[t * 5 + 1] = down; out[t * 5 + 2] = x; out[t * 5 + 3] = idx;
    out[t * 5 + 4] = (float)(b & 0xffffu);
}
extern "C" __global__ void big_shared(float* out) {
    __shared__ float s[13000];
    s[threadIdx.x] = 1.f;
    out[threadIdx.x] = s[threadIdx.x];
}
"#;

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda-cpu")
}

fn broken(schedule: Schedule) -> Option<CudaCpuBackend> {
    // Written once per process, atomically (tests run in parallel threads, and g++ of
    // one must never read the file while another truncates it).
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR
        .get_or_init(|| {
            let dir = tmp().join(format!("broken-kernels-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let part = dir.join("broken.cu.part");
            std::fs::write(&part, BROKEN).unwrap();
            std::fs::rename(&part, dir.join("broken.cu")).unwrap();
            dir
        })
        .clone();
    let o = CudaCpuOptions {
        schedule,
        build_dir: Some(tmp()),
        kernel_dir: Some(dir),
        ..Default::default()
    };
    match CudaCpuBackend::new(o) {
        Ok(be) => Some(be),
        Err(e) if std::env::var("MAMBA_CUDA_CPU").as_deref() == Ok("skip") => {
            eprintln!("cuda-cpu tests SKIPPED: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn launch(kernel: &'static str, threads: u32) -> Launch<&'static str> {
    Launch {
        kernel,
        grid: (1, 1, 1),
        block: (threads, 1, 1),
        shared_bytes: 0,
    }
}

fn err(r: mamba_gpu::Result<()>) -> String {
    match r {
        Err(Error::Device {
            backend: "cuda-cpu",
            why,
        }) => why,
        other => panic!("expected a device error, got {other:?}"),
    }
}

#[test]
fn hangs_and_undefined_behaviour_are_reported() {
    let Some(be) = broken(Schedule::RoundRobin) else {
        return;
    };
    let out = be.zeros(DType::U32, &[64]).unwrap();
    let o = [KernelArg::Buffer(&out)];
    let e = err(be.launch_kernel(&launch("divergent_barrier", 64), &o));
    assert!(
        e.contains("different barriers") && e.contains("broken.cu:5") && e.contains("broken.cu:7"),
        "{e}"
    );
    let e = err(be.launch_kernel(&launch("deadlock", 64), &o));
    assert!(
        e.contains("deadlock")
            && e.contains("__shfl_xor_sync(mask 0xffffffff) at kernels/broken.cu:13"),
        "{e}"
    );
    assert!(e.contains("__syncthreads at kernels/broken.cu:14"), "{e}");
    let e = err(be.launch_kernel(&launch("exited_lane", 64), &o));
    assert!(e.contains("exited"), "{e}");
    // Past the launch bounds, the wrong arguments, too much shared memory.
    let e = err(be.launch_kernel(&launch("deadlock", 128), &o));
    assert!(e.contains("__launch_bounds__(64)"), "{e}");
    let e = err(be.launch_kernel(&launch("deadlock", 64), &[]));
    assert!(e.contains("takes 1 parameters, 0 arguments"), "{e}");
    let f = be.zeros(DType::F32, &[64]).unwrap();
    let e = err(be.launch_kernel(
        &launch("missing_barrier", 64),
        &[KernelArg::Buffer(&f), KernelArg::Buffer(&f)],
    ));
    assert!(
        e.contains("parameter 0 is a 4-byte value, a buffer was pushed"),
        "{e}"
    );
    let e = err(be.launch_kernel(&launch("big_shared", 32), &[KernelArg::Buffer(&f)]));
    assert!(e.contains("52000 bytes of shared memory"), "{e}");
    // The process survives reported errors.
    be.download(&out).unwrap();
}

/// Shuffle semantics (up/down/xor/idx with widths, ballot) against a loop.
#[test]
fn shuffles_follow_cuda_semantics() {
    let Some(be) = broken(Schedule::Random(3)) else {
        return;
    };
    let mut out = be.zeros(DType::F32, &[64 * 5]).unwrap();
    be.launch_kernel(&launch("shuffles", 64), &[KernelArg::Buffer(&out)])
        .unwrap();
    let got = be.download(&out).unwrap().to_f32();
    for t in 0..64u32 {
        let lane = t % 32;
        let up = if lane >= 3 { t - 3 } else { t };
        let down = if lane % 16 + 2 < 16 { t + 2 } else { t };
        let x = (t & !31) | (lane ^ 5);
        let idx = (t & !7) + 7;
        let ballot = (0..16)
            .filter(|l| ((t & !31) + l) % 3 == 0)
            .fold(0u32, |b, l| b | 1 << l);
        let want = [up, down, x, idx, ballot].map(|v| v as f32);
        assert_eq!(
            &got[t as usize * 5..t as usize * 5 + 5],
            &want,
            "thread {t}"
        );
    }
    be.write(HostSlice::F32(&[0.0; 320]), &mut out).unwrap();
}

/// The missing barrier passes round-robin (every thread writes before any reads) and
/// fails lowest-first (warp 0 runs ahead and reads unwritten, NaN-poisoned shared memory).
#[test]
fn schedules_expose_a_missing_barrier() {
    let p = 0u32.to_le_bytes();
    let mut results = Vec::new();
    for s in [Schedule::RoundRobin, Schedule::LowestFirst] {
        let Some(be) = broken(s) else { return };
        let out = be.zeros(DType::F32, &[64]).unwrap();
        be.launch_kernel(
            &launch("missing_barrier", 64),
            &[KernelArg::Value(&p), KernelArg::Buffer(&out)],
        )
        .unwrap();
        results.push(be.download(&out).unwrap().to_f32());
    }
    let want: Vec<f32> = (0..64).map(|t| (63 - t) as f32).collect();
    assert_eq!(results[0], want, "round-robin");
    assert!(
        results[1][..32].iter().all(|v| v.is_nan()),
        "lowest-first: {:?}",
        results[1]
    );
}

macro_rules! rust_layout {
    ($t:ident { $($f:ident: $ty:ty),* $(,)? }) => {{
        // Compiles only if every field has the named type.
        $( let _ = |p: &$t| -> $ty { p.$f }; )*
        (stringify!($t), std::mem::size_of::<$t>(), vec![$((stringify!($f), std::mem::offset_of!($t, $f), std::mem::size_of::<$ty>(), stringify!($ty) == "f32")),*])
    }};
}

/// offsetof/sizeof of every kernel param struct as g++ compiled it from `kernels/`,
/// against `src/params.rs`: same fields in the same order, offsets, sizes, float or not.
#[test]
fn param_layouts_match_src_params() {
    let o = CudaCpuOptions {
        build_dir: Some(tmp()),
        ..Default::default()
    };
    let be = match CudaCpuBackend::new(o) {
        Ok(be) => be,
        Err(e) if std::env::var("MAMBA_CUDA_CPU").as_deref() == Ok("skip") => {
            return eprintln!("SKIPPED: {e}");
        }
        Err(e) => panic!("{e}"),
    };
    let rust = [
        rust_layout!(ScanParams {
            batch: u32,
            dim: u32,
            len: u32,
            dstate: u32,
            x_sb: u32,
            x_sd: u32,
            x_st: u32,
            b_sb: u32,
            b_sg: u32,
            b_sn: u32,
            b_st: u32,
            b_group_dim: u32,
            c_sb: u32,
            c_sg: u32,
            c_sn: u32,
            c_st: u32,
            c_group_dim: u32,
            has_d: u32,
            has_z: u32,
            has_delta_bias: u32,
            delta_softplus: u32,
            state_mode: u32,
            _pad0: u32,
            _pad1: u32
        }),
        rust_layout!(SsdParams {
            batch: u32,
            len: u32,
            heads: u32,
            head_dim: u32,
            dstate: u32,
            groups: u32,
            has_d: u32,
            has_z: u32,
            has_dt_bias: u32,
            dt_softplus: u32,
            state_mode: u32,
            t_begin: u32,
            t_end: u32,
            _pad0: u32,
            _pad1: u32,
            _pad2: u32
        }),
        rust_layout!(StepParams {
            batch: u32,
            dim: u32,
            dstate: u32,
            group_dim: u32,
            groups: u32,
            has_d: u32,
            has_z: u32,
            has_dt_bias: u32,
            dt_softplus: u32,
            _pad0: u32,
            _pad1: u32,
            _pad2: u32
        }),
        rust_layout!(ConvParams {
            batch: u32,
            dim: u32,
            len: u32,
            width: u32,
            x_sb: u32,
            x_sd: u32,
            x_st: u32,
            has_bias: u32,
            silu: u32,
            state_mode: u32,
            _pad0: u32,
            _pad1: u32
        }),
        rust_layout!(MatmulParams {
            m: u32,
            n: u32,
            k: u32,
            has_bias: u32,
            accumulate: u32,
            _pad0: u32,
            _pad1: u32,
            _pad2: u32
        }),
        rust_layout!(MixerInParams {
            batch: u32,
            d_model: u32,
            d_inner: u32,
            width: u32,
            eps: f32,
            has_conv_bias: u32,
            _pad0: u32,
            _pad1: u32
        }),
        rust_layout!(StepProjParams {
            batch: u32,
            d_inner: u32,
            dt_rank: u32,
            dstate: u32,
            has_norm: u32,
            norm_eps: f32,
            _pad0: u32,
            _pad1: u32
        }),
        rust_layout!(NormParams {
            rows: u32,
            dim: u32,
            eps: f32,
            has_residual: u32,
            groups: u32,
            _pad0: u32,
            _pad1: u32,
            _pad2: u32
        }),
        rust_layout!(EmbeddingParams {
            count: u32,
            rows: u32,
            dim: u32,
            _pad0: u32
        }),
        rust_layout!(ElementwiseParams {
            len: u32,
            op: u32,
            _pad0: u32,
            _pad1: u32
        }),
        rust_layout!(ArgmaxParams {
            rows: u32,
            cols: u32,
            _pad0: u32,
            _pad1: u32
        }),
        rust_layout!(CopyParams {
            len: u32,
            src_offset: u32,
            dst_offset: u32,
            _pad0: u32
        }),
    ];
    let info = be.kernel_info().unwrap();
    let mut seen = 0;
    for line in info.lines().filter_map(|l| l.strip_prefix("layout ")) {
        let mut w = line.split(' ');
        let (name, file, size) = (w.next().unwrap(), w.next().unwrap(), w.next().unwrap());
        let _align = w.next();
        let fields: Vec<(String, usize, usize, bool)> = w
            .map(|f| {
                let p: Vec<&str> = f.split(':').collect();
                (
                    p[0].to_string(),
                    p[1].parse().unwrap(),
                    p[2].parse().unwrap(),
                    p[3] == "1",
                )
            })
            .collect();
        let (_, rsize, rfields) = rust
            .iter()
            .find(|r| r.0 == name)
            .unwrap_or_else(|| panic!("{file}: struct {name} has no counterpart in src/params.rs"));
        assert_eq!(
            size.parse::<usize>().unwrap(),
            *rsize,
            "{file}: sizeof({name})"
        );
        let rf: Vec<(String, usize, usize, bool)> = rfields
            .iter()
            .map(|f| (f.0.to_string(), f.1, f.2, f.3))
            .collect();
        assert_eq!(fields, rf, "{file}: fields of {name}");
        // Nothing left out of the Rust list: the fields tile the struct.
        assert_eq!(rf.iter().map(|f| f.2).sum::<usize>(), *rsize, "{name}");
        seen += 1;
    }
    let mut names: Vec<&str> = info
        .lines()
        .filter_map(|l| l.strip_prefix("layout ")?.split(' ').next())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        rust.len(),
        "every param struct is declared in kernels/: {names:?}"
    );
    assert!(seen >= rust.len());
}
