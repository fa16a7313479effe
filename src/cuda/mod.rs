//! The CUDA backend: CUDA C kernels in `kernels/`, compiled at run time by NVRTC for the
//! device's compute capability, launched through cudarc; matmul through cuBLAS.
//!
//! * [`CudaBackend::new`] never panics on a machine without CUDA: it checks that the
//!   driver (`libcuda`) and NVRTC can be loaded first (cudarc panics when they cannot)
//!   and returns [`Error::BackendUnavailable`]; other failures are typed errors too.
//! * Every op is one or two kernel launches on **one stream**, in call order; nothing
//!   waits except [`Backend::download`](crate::Backend::download) (and `upload`,
//!   which copies from pageable host memory). Because there is one stream, cudarc's per-buffer event tracking is turned
//!   off: stream order alone orders every read after the write it depends on.
//! * Kernels are compiled on first use and cached per module ([`nvrtc`] has the sources
//!   and the compile step, [`CudaBackend::precompile`] compiles them all up front).
//! * All `unsafe` kernel launches live in `ops.rs` (beside `impl Backend`, as on wgpu)
//!   and `matmul.rs` (the cuBLAS path), one function per op, each with a
//!   `// SAFETY:` note tying the argument list to the kernel's signature (the one graph
//!   launch is in `graph.rs`).
//! * f16/bf16 buffers are stored as raw 16-bit words; kernels convert in registers.
//! * [`Backend::replay`](crate::Backend::replay) (the model's decode step) captures
//!   the step's launches in a CUDA graph and launches that afterwards (`graph.rs` has the details;
//!   `MAMBA_CUDA_GRAPHS=0` or [`CudaBackend::set_graphs`] turns it off).

mod backend;
mod decode_step;
pub mod emu;
pub mod geometry;
mod graph;
mod matmul;
pub mod nvrtc;
mod ops;

pub use self::emu::{CudaCpuBackend, CudaCpuBuffer, CudaCpuOptions, Schedule};
pub use self::graph::MAX_GRAPHS;

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream};

use crate::backend::DeviceBuffer;
use crate::error::{Error, Result};
use crate::tensor::DType;

use self::nvrtc::{Image, Kernel, KernelSource};

pub(crate) const BACKEND: &str = "cuda";

/// A device error with the call that failed.
pub(crate) fn dev_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Device {
        backend: BACKEND,
        why: format!("{what}: {e:?}"),
    }
}

fn unavailable(why: impl Into<String>) -> Error {
    Error::BackendUnavailable {
        backend: BACKEND,
        why: why.into(),
    }
}

/// Device memory of one buffer. f16 and bf16 share the 16-bit storage.
#[derive(Debug)]
pub(crate) enum Storage {
    F32(CudaSlice<f32>),
    Half(CudaSlice<u16>),
    U32(CudaSlice<u32>),
}

/// A CUDA buffer: device memory plus dtype and logical shape.
#[derive(Debug)]
pub struct CudaBuffer {
    data: Storage,
    dtype: DType,
    shape: Vec<usize>,
}

impl DeviceBuffer for CudaBuffer {
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

impl CudaBuffer {
    // Unreachable after `ops` validation; an error rather than a panic all the same.
    fn wrong(&self, expected: &'static str) -> Error {
        Error::DType {
            op: BACKEND,
            tensor: "buffer",
            got: self.dtype,
            expected,
        }
    }

    pub(crate) fn f32(&self) -> Result<&CudaSlice<f32>> {
        match &self.data {
            Storage::F32(s) => Ok(s),
            _ => Err(self.wrong("f32")),
        }
    }

    pub(crate) fn f32_mut(&mut self) -> Result<&mut CudaSlice<f32>> {
        match &mut self.data {
            Storage::F32(s) => Ok(s),
            _ => Err(Error::DType {
                op: BACKEND,
                tensor: "buffer",
                got: self.dtype,
                expected: "f32",
            }),
        }
    }

    pub(crate) fn u32(&self) -> Result<&CudaSlice<u32>> {
        match &self.data {
            Storage::U32(s) => Ok(s),
            _ => Err(self.wrong("u32")),
        }
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.data
    }

    pub(crate) fn storage_mut(&mut self) -> &mut Storage {
        &mut self.data
    }
}

/// The CUDA backend. See the module docs.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// `None` when libcublas cannot be loaded: matmul then uses its own kernel only.
    blas: Option<CudaBlas>,
    cc: (i32, i32),
    device_name: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
    /// Kernel launches so far ([`CudaBackend::launch_count`]).
    launches: AtomicU64,
    /// Passed for optional pointer arguments that a kernel's flags say it never touches.
    dummy: CudaSlice<f32>,
    /// CUDA graphs of [`Backend::replay`](crate::Backend::replay).
    graphs: graph::Graphs,
    /// See [`CudaBackend::set_ssd_sequential`].
    ssd_sequential: std::sync::atomic::AtomicBool,
    /// See [`CudaBackend::set_q8_activations`].
    q8_int8: std::sync::atomic::AtomicBool,
}

impl Drop for CudaBackend {
    /// Work still queued may use the modules and graphs dropped next (fields drop in
    /// order, modules before graphs): wait for it, then drop the graphs first.
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
        self.set_graphs(false);
    }
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.device_name)
            .field("compute_capability", &self.cc)
            .field("cublas", &self.blas.is_some())
            .field("graphs", &self.graphs_enabled())
            .finish()
    }
}

impl CudaBackend {
    /// Opens device `ordinal`. Returns [`Error::BackendUnavailable`] when there is no
    /// driver, no NVRTC or no such device; never panics.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only tries to dlopen libcuda's candidate names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(unavailable(
                "libcuda (the NVIDIA driver) cannot be loaded: no NVIDIA driver on this machine",
            ));
        }
        if !nvrtc::nvrtc_available() {
            return Err(unavailable(
                "libnvrtc cannot be loaded: add the CUDA toolkit's lib64 (or the folder \
                 tools/install_nvrtc.sh prints) to LD_LIBRARY_PATH",
            ));
        }
        // cudarc panics on a few conditions (e.g. a symbol missing from an old driver);
        // turn those into errors too.
        match catch_unwind(AssertUnwindSafe(|| Self::init(ordinal))) {
            Ok(r) => r,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "cudarc panicked".into());
                Err(unavailable(why))
            }
        }
    }

    fn init(ordinal: usize) -> Result<Self> {
        let count = CudaContext::device_count()
            .map_err(|e| unavailable(format!("cuInit / device count failed: {e:?}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(unavailable(format!(
                "device {ordinal} requested, {count} CUDA device(s) present"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| {
            unavailable(format!(
                "cannot create a context on device {ordinal}: {e:?}"
            ))
        })?;
        // SAFETY: everything this backend does runs on the single stream created below
        // (cuBLAS included), so stream order already orders every use of every buffer
        // and no event tracking is needed; no buffer exists yet. (The graph capture
        // stream of graph.rs only records: what it captures runs on this stream too.)
        // Stream capture needs tracking off as well.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| dev_err("cuStreamCreate", e))?;
        let cc = ctx
            .compute_capability()
            .map_err(|e| dev_err("compute capability", e))?;
        let device_name = ctx.name().map_err(|e| dev_err("device name", e))?;
        // SAFETY: only tries to dlopen libcublas's candidate names.
        let blas = if unsafe { cudarc::cublas::sys::is_culib_present() } {
            Some(CudaBlas::new(stream.clone()).map_err(|e| dev_err("cublasCreate", e))?)
        } else {
            None
        };
        let dummy = stream
            .alloc_zeros::<f32>(4)
            .map_err(|e| dev_err("cuMemAlloc", e))?;
        Ok(CudaBackend {
            ctx,
            stream,
            blas,
            cc,
            device_name,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            launches: AtomicU64::new(0),
            dummy,
            graphs: graph::Graphs::new(),
            ssd_sequential: Default::default(),
            q8_int8: Default::default(),
        })
    }

    /// Runs Mamba-2's scan in its sequential form at every length (by default prefills
    /// of 32 steps or more take the chunked one, `ssd_scan_chunked`); for comparisons.
    pub fn set_ssd_sequential(&self, on: bool) {
        self.ssd_sequential
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// How `matmul_q8` takes the activations (default f32; `Int8` quantizes them and
    /// runs `__dp4a`, see [`crate::Q8Activations`]). Set it before the first decode
    /// step: a CUDA graph already captured keeps the kernel it recorded.
    pub fn set_q8_activations(&self, a: crate::Q8Activations) {
        self.q8_int8.store(
            a == crate::Q8Activations::Int8,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// The device's compute capability, e.g. `(9, 0)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// Whether matmul can use cuBLAS (libcublas was found).
    pub fn has_cublas(&self) -> bool {
        self.blas.is_some()
    }

    /// Compiles and loads every kernel now (otherwise each is compiled on first use),
    /// e.g. to keep NVRTC time out of a benchmark.
    pub fn precompile(&self) -> Result<()> {
        for k in nvrtc::KERNELS {
            self.module(k)?;
        }
        Ok(())
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| dev_err("cuStreamSynchronize", e))
    }

    /// The stream every op runs on (for timing with CUDA events).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn module(&self, k: &'static KernelSource) -> Result<Arc<CudaModule>> {
        let mut modules = self
            .modules
            .lock()
            .map_err(|_| dev_err("module cache", "poisoned lock"))?;
        if let Some(m) = modules.get(k.name) {
            return Ok(m.clone());
        }
        let ptx = match nvrtc::compile_for_device_cached(k, self.cc)? {
            Image::Cubin(bin) => cudarc::nvrtc::Ptx::from_binary(bin),
            Image::Ptx(src) => cudarc::nvrtc::Ptx::from_src(src),
        };
        let m = self
            .ctx
            .load_module(ptx)
            .map_err(|e| dev_err(&format!("cuModuleLoadData(kernels/{}.cu)", k.name), e))?;
        modules.insert(k.name, m.clone());
        Ok(m)
    }

    /// A kernel entry point, compiling its file on first use.
    /// Kernel launches so far: direct ones, and a replayed graph's kernels each time it
    /// is launched (a cuBLAS GEMM counts as one). What `examples/bench` reports per
    /// decode step and tests/dispatch_counts.rs bounds.
    pub fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    /// Counts a launch that does not go through [`Self::function`] (cuBLAS).
    pub(crate) fn count_launch(&self) {
        self.launches.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves the launch count back to `n` (a failed graph capture launched nothing).
    fn reset_launches(&self, n: u64) {
        self.launches.store(n, Ordering::Relaxed);
    }

    /// Counts the `n` kernels of a replayed graph.
    fn launches_add(&self, n: u64) {
        self.launches.fetch_add(n, Ordering::Relaxed);
    }

    /// The entry point of `kernel`, fetched once per launch (which is what counts it).
    pub(crate) fn function(&self, kernel: Kernel) -> Result<CudaFunction> {
        self.launches.fetch_add(1, Ordering::Relaxed);
        let (k, name) = (kernel.source(), kernel.entry());
        let key = (k.name, name);
        if let Some(f) = self
            .functions
            .lock()
            .map_err(|_| dev_err("function cache", "poisoned lock"))?
            .get(&key)
        {
            return Ok(f.clone());
        }
        let m = self.module(k)?;
        let f = m
            .load_function(name)
            .map_err(|e| dev_err(&format!("cuModuleGetFunction({name})"), e))?;
        self.functions
            .lock()
            .map_err(|_| dev_err("function cache", "poisoned lock"))?
            .insert(key, f.clone());
        Ok(f)
    }

    fn alloc_storage(&self, dtype: DType, n: usize) -> Result<Storage> {
        // Zero-size allocations are not portable: keep at least one element.
        let n = n.max(1);
        let e = |e| dev_err("cuMemAlloc", e);
        Ok(match dtype {
            DType::F32 => Storage::F32(self.stream.alloc_zeros::<f32>(n).map_err(e)?),
            DType::F16 | DType::BF16 => {
                Storage::Half(self.stream.alloc_zeros::<u16>(n).map_err(e)?)
            }
            DType::U32 => Storage::U32(self.stream.alloc_zeros::<u32>(n).map_err(e)?),
        })
    }
}
