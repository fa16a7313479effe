//! The CPU execution model of the CUDA backend: `kernels/*.cu` run unmodified, with
//! faithful semantics, on a machine without a GPU, behind the same [`Backend`] trait.
//!
//! No NVIDIA GPU has run these kernels in this project's tests; this is what executes
//! them instead. [`CudaCpuBackend`] launches every op with the grid, block, dynamic
//! shared memory, entry point ([`super::geometry`], shared with the real launches) and
//! parameter struct the CUDA backend uses, so the shared op checks in `tests/common` hold
//! the kernels to the CPU reference.
//!
//! # How
//!
//! * `rewrite.rs` turns each `.cu` (and `.cuh`) file into C++: `__shared__` arrays become
//!   per-block heap arrays filled with 0xff bytes (NaN as f32, and separate allocations
//!   so AddressSanitizer sees overruns that static storage would hide), the inline-PTX
//!   conversions become `_Float16` conversions, and the entry points are registered.
//!   `cuemu.h` supplies the rest of the dialect (built-in indices, vector types,
//!   intrinsics; `__restrict__` is defined away, `-fno-strict-aliasing` covers the
//!   `float4` punning).
//! * `compile.rs` builds one runner executable with g++ (≥ 12, for `_Float16`), cached by
//!   source hash under the build directory; optionally with `-fsanitize=address,undefined`.
//! * `runner.cpp` runs each block's threads as fibers on one OS thread, switching only
//!   at `__syncthreads` (a barrier over the block's live threads) and warp collectives (a
//!   rendezvous of exactly the named lanes of that warp; masks naming exited lanes are
//!   errors), in the order a [`Schedule`] picks. Deadlocks, divergent barriers, bad masks,
//!   a block larger than the kernel's `__launch_bounds__`, more than 48 KiB of shared
//!   memory and argument lists that do not match the kernel's parameters are typed
//!   errors ([`Error::Device`]) instead of hangs.
//! * The runner is a child process holding the "device memory"; `runner.rs` talks to it.
//!
//! # Not modelled
//!
//! cuBLAS: with [`CudaCpuOptions::cublas`] the matmul takes the CUDA backend's cuBLAS
//! path — the `widen_*` and `bias_rows` kernels run here, the SGEMM itself is a plain
//! host loop standing in for cuBLAS; without it, the crate's own `matmul_rows` kernel
//! does every product. Not modelled either: CUDA graphs ([`Backend::replay`] just runs
//! the ops), streams and timings, races between two threads that both run between the
//! same pair of synchronisation points (the schedules only reorder whole steps), and
//! device-specific floating point (host libm, no FMA contraction).

mod compile;
mod ops;
mod rewrite;
mod runner;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::DeviceBuffer;
use crate::error::{Error, Result};
use crate::tensor::DType;

use self::runner::{Arg, Runner};

const BACKEND: &str = "cuda-cpu";

/// The order in which runnable CUDA threads of a block (and the blocks of a grid) run.
/// Code between two synchronisation points runs uninterrupted; which thread goes next
/// is what exposes a missing barrier, so tests run several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// The next runnable thread after the one that last ran, cyclically.
    RoundRobin,
    /// The previous runnable thread, cyclically (blocks in reverse order).
    Reverse,
    /// Always the runnable thread with the lowest index: one warp runs ahead.
    LowestFirst,
    /// Always the highest (blocks in reverse order).
    HighestFirst,
    /// A seeded random runnable thread (and block order).
    Random(u64),
}

impl Schedule {
    fn code(self) -> (u32, u64) {
        match self {
            Schedule::RoundRobin => (0, 0),
            Schedule::Reverse => (1, 0),
            Schedule::LowestFirst => (2, 0),
            Schedule::HighestFirst => (3, 0),
            Schedule::Random(seed) => (4, seed),
        }
    }
}

/// Options of [`CudaCpuBackend::new`].
#[derive(Debug, Clone)]
pub struct CudaCpuOptions {
    pub schedule: Schedule,
    /// Build with AddressSanitizer + UndefinedBehaviorSanitizer (slower; device memory
    /// then has exact-size allocations, so any out-of-bounds access is reported).
    pub sanitize: bool,
    /// Model a machine with cuBLAS (see the module docs).
    pub cublas: bool,
    /// Where the runner is built and cached (default: `$MAMBA_CUDA_CPU_DIR`, else
    /// `mamba-gpu-cuda-cpu` in the temp directory).
    pub build_dir: Option<PathBuf>,
    /// The kernel sources (default: this crate's `kernels/`).
    pub kernel_dir: Option<PathBuf>,
    /// A launch running longer is killed and reported (a thread spinning forever).
    pub timeout_s: u32,
    /// Mamba-2's scan in its sequential form at every length, as
    /// `CudaBackend::set_ssd_sequential`.
    pub ssd_sequential: bool,
    /// `matmul_q8`'s activations at the start (see [`CudaCpuBackend::set_q8_activations`]).
    pub q8_activations: crate::Q8Activations,
}

impl Default for CudaCpuOptions {
    fn default() -> Self {
        CudaCpuOptions {
            schedule: Schedule::RoundRobin,
            sanitize: false,
            cublas: true,
            build_dir: None,
            kernel_dir: None,
            timeout_s: 300,
            ssd_sequential: false,
            q8_activations: crate::Q8Activations::F32,
        }
    }
}

/// A buffer in the runner's memory.
pub struct CudaCpuBuffer {
    id: u64,
    dtype: DType,
    shape: Vec<usize>,
    runner: Arc<Runner>,
}

impl std::fmt::Debug for CudaCpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaCpuBuffer")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .finish()
    }
}

impl Drop for CudaCpuBuffer {
    fn drop(&mut self) {
        self.runner.free(self.id);
    }
}

impl DeviceBuffer for CudaCpuBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn reshape(&mut self, shape: &[usize]) -> Result<()> {
        self.shape = crate::tensor::reshaped(&self.shape, shape)?;
        Ok(())
    }
}

/// The CUDA backend's kernels on the CPU execution model. See the module docs.
pub struct CudaCpuBackend {
    runner: Arc<Runner>,
    opts: CudaCpuOptions,
    next_id: AtomicU64,
    /// Passed for absent optional pointers, as the CUDA backend's dummy; full of NaN so
    /// a kernel reading it against its flags poisons its output.
    dummy: CudaCpuBuffer,
    /// Entry points launched so far, with the static shared memory a block used.
    launched: Mutex<Vec<(&'static str, u64)>>,
    /// Launches so far ([`CudaCpuBackend::launch_count`]).
    launches: std::sync::atomic::AtomicU64,
    /// `matmul_q8` quantizes its activations (from the options, or set later).
    q8_int8: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for CudaCpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaCpuBackend")
            .field("options", &self.opts)
            .finish()
    }
}

impl CudaCpuBackend {
    /// Builds (or finds cached) and starts the runner. [`Error::BackendUnavailable`]
    /// without a suitable g++.
    pub fn new(opts: CudaCpuOptions) -> Result<Self> {
        let build_dir = opts.build_dir.clone().unwrap_or_else(|| {
            std::env::var_os("MAMBA_CUDA_CPU_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("mamba-gpu-cuda-cpu"))
        });
        let kernel_dir = opts
            .kernel_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels")));
        let exe = compile::runner(&kernel_dir, &build_dir, opts.sanitize)?;
        let runner = Arc::new(Runner::spawn(&exe, &build_dir.join("logs"))?);
        let nan = vec![0xffu8; 16];
        runner.alloc(0, 16, &nan)?;
        let dummy = CudaCpuBuffer {
            id: 0,
            dtype: DType::F32,
            shape: vec![4],
            runner: runner.clone(),
        };
        let q8_int8 = (opts.q8_activations == crate::Q8Activations::Int8).into();
        Ok(CudaCpuBackend {
            runner,
            q8_int8,
            opts,
            next_id: AtomicU64::new(1),
            dummy,
            launched: Mutex::new(Vec::new()),
            launches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// As `CudaBackend::set_q8_activations`: how `matmul_q8` takes its activations.
    pub fn set_q8_activations(&self, a: crate::Q8Activations) {
        self.q8_int8.store(
            a == crate::Q8Activations::Int8,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The options this backend runs with.
    pub fn options(&self) -> &CudaCpuOptions {
        &self.opts
    }

    /// Every entry point launched so far and the static shared memory (bytes) one of its
    /// blocks used, as measured by the model.
    pub fn launched(&self) -> Vec<(&'static str, u64)> {
        self.launched.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Kernel launches so far, as `CudaBackend::launch_count` counts them (this model
    /// has no graphs: a replayed step runs its launches again). The cuBLAS stand-in
    /// counts as one launch, as a real GEMM does.
    pub fn launch_count(&self) -> u64 {
        self.launches.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn count_launch(&self) {
        self.launches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The runner's entry points (`entry NAME FILE LAUNCH_BOUND SIZE:POINTEE...`) and
    /// param-struct layouts (`layout NAME FILE SIZE ALIGN FIELD:OFFSET:SIZE:IS_FLOAT...`),
    /// one per line, as g++ compiled them.
    pub fn kernel_info(&self) -> Result<String> {
        self.runner.info()
    }

    /// Launches any entry point of the kernel sources with raw arguments (the
    /// execution model's own tests: deliberately broken kernels).
    #[doc(hidden)]
    pub fn launch_kernel(
        &self,
        l: &super::geometry::Launch<&'static str>,
        args: &[KernelArg<'_>],
    ) -> Result<()> {
        let args = args
            .iter()
            .map(|a| match a {
                KernelArg::Value(v) => Arg::Value(v.to_vec()),
                KernelArg::Buffer(b) => Arg::Buffer(b.id, elem_size(b.dtype)),
            })
            .collect();
        self.launch_named(l, Args(args))
    }

    fn new_buffer(&self, dtype: DType, shape: &[usize], data: &[u8]) -> Result<CudaCpuBuffer> {
        let (n, _) = crate::tensor::buffer_numel("alloc", "buffer", dtype, shape)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Zero-size allocations are not portable: keep at least one element, as the
        // CUDA backend does.
        let bytes = n.max(1) * elem_size(dtype) as usize;
        self.runner.alloc(id, bytes, data)?;
        Ok(CudaCpuBuffer {
            id,
            dtype,
            shape: shape.to_vec(),
            runner: self.runner.clone(),
        })
    }

    /// Runs one launch of `geometry` with `args` (pushed in the kernel's order).
    fn launch(&self, l: &super::geometry::Launch, args: Args) -> Result<()> {
        let named = super::geometry::Launch {
            kernel: l.kernel.entry(),
            grid: l.grid,
            block: l.block,
            shared_bytes: l.shared_bytes,
        };
        self.launch_named(&named, args)
    }

    fn launch_named(&self, l: &super::geometry::Launch<&'static str>, args: Args) -> Result<()> {
        let (schedule, seed) = self.opts.schedule.code();
        let smem = self.runner.launch(&runner::LaunchReq {
            kernel: l.kernel,
            grid: l.grid,
            block: l.block,
            shared_bytes: l.shared_bytes,
            schedule,
            seed,
            timeout_s: self.opts.timeout_s,
            args: &args.0,
        })?;
        self.count_launch();
        if let Ok(mut v) = self.launched.lock()
            && !v.iter().any(|e| e.0 == l.kernel)
        {
            v.push((l.kernel, smem));
        }
        Ok(())
    }
}

/// An argument of [`CudaCpuBackend::launch_kernel`].
#[doc(hidden)]
pub enum KernelArg<'a> {
    Value(&'a [u8]),
    Buffer(&'a CudaCpuBuffer),
}

fn elem_size(dtype: DType) -> u32 {
    match dtype {
        DType::F16 | DType::BF16 => 2,
        DType::F32 | DType::U32 => 4,
    }
}

/// A kernel's argument list, pushed in its parameter order (as cudarc's launch builder).
struct Args(Vec<Arg>);

impl Args {
    fn new<P: bytemuck::Pod>(params: &P) -> Args {
        Args(vec![Arg::Value(bytemuck::bytes_of(params).to_vec())])
    }
    fn val<T: bytemuck::Pod>(&mut self, v: &T) -> &mut Self {
        self.0.push(Arg::Value(bytemuck::bytes_of(v).to_vec()));
        self
    }
    /// A buffer whatever its dtype (cuda/ops.rs's `push`).
    fn buf(&mut self, b: &CudaCpuBuffer) -> &mut Self {
        self.0.push(Arg::Buffer(b.id, elem_size(b.dtype)));
        self
    }
    /// An f32 buffer (cuda/ops.rs's `.f32()?`).
    fn f32(&mut self, b: &CudaCpuBuffer) -> Result<&mut Self> {
        if b.dtype != DType::F32 {
            return Err(Error::DType {
                op: BACKEND,
                tensor: "buffer",
                got: b.dtype,
                expected: "f32",
            });
        }
        Ok(self.buf(b))
    }
    /// An optional buffer, or the dummy (cuda/ops.rs's `push_opt`).
    fn opt(&mut self, b: Option<&CudaCpuBuffer>, dummy: &CudaCpuBuffer) -> &mut Self {
        match b {
            Some(b) => self.buf(b),
            None => {
                self.0.push(Arg::Buffer(dummy.id, 0));
                self
            }
        }
    }
}
