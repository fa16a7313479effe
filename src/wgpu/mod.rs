//! The wgpu backend: WGSL compute shaders (`shaders/*.wgsl`) on Vulkan, Metal, DX12 and
//! WebGPU. OpenGL adapters are not used unless `WgpuOptions::allow_gl` asks for them.
//!
//! # Design
//!
//! * **Recording, not running.** Every op records one or a few compute passes into a
//!   pending [`wgpu::CommandEncoder`]; [`flush`](crate::Backend::flush) submits it, and
//!   [`download`](crate::Backend::download) submits, copies into a staging buffer, maps
//!   it and waits. A whole forward pass is therefore one submission.
//! * **Pipelines are built once.** Each `Kernel` (shader entry point, plus the weight
//!   dtype where it matters) gets an explicit bind group layout mirroring the shader's
//!   bindings (never `layout: None`), a pipeline layout and a compute pipeline, created on
//!   first use and cached; shader modules are cached per file.
//! * **Uniforms per dispatch.** The validated parameter struct from [`crate::params`] is
//!   copied into a small uniform buffer created (mapped at creation) for that dispatch, so
//!   any number of dispatches can be recorded before a submit without readbacks or ring
//!   bookkeeping.
//! * **Weights stay half.** f16 and bf16 weights are stored as uploaded (two per 32-bit
//!   word) and decoded in the shaders (`unpack2x16float` / a 16-bit shift), which needs no
//!   `shader-f16` and halves weight bandwidth on every adapter.
//! * **Big weights.** Buffers may be larger than the adapter's
//!   `max_storage_buffer_binding_size` (up to `max_buffer_size`). Matmul weights and
//!   embedding tables that exceed it are bound as windows of whole rows (the window
//!   starts at the row's byte offset rounded down to `min_storage_buffer_offset_alignment`,
//!   and a `WindowParams` uniform tells the shader where its first row begins), two
//!   windows per dispatch. Other tensors must fit in one binding (an error otherwise;
//!   the fused decode step checks before it takes that path).
//! * **Errors, not panics.** wgpu validation errors are routed to a handler that records
//!   them; the next op, `flush` or `download` returns them as [`Error::Device`].
//!
//! The selective scan (`selective_scan.wgsl`) has two row-scan halves, chosen when the
//! backend is created: a shared-memory Blelloch scan (`selective_scan/shared.wgsl`)
//! everywhere, and a subgroup-shuffle scan (`selective_scan/subgroup.wgsl`) where the
//! adapter has `Features::SUBGROUP` with subgroup sizes the kernel supports. Its workgroups are sized per adapter and dstate
//! through override constants (`kernels::ScanSize::fit`): up to 4 channels of 64
//! invocations, fewer where `max_compute_invocations_per_workgroup` or the workgroup
//! memory needed to carry dstate states per channel demands it, and a typed error when
//! not even one channel fits. A scan longer than `2048 / N` chunks of 256 steps
//! runs as several dispatches that carry the (batch, dim, N) state through global memory
//! (llvmpipe stops shaders after ~2^16 loop iterations; elsewhere it costs one tiny
//! state round trip per segment). The decay factor exp(Δ·A) uses a Taylor series near 0
//! (`exp_decay` in the shaders): a hardware exp biased by ½ ulp, as on llvmpipe, made
//! long-memory states drift by 1e-2 over 2,000 steps.
//!
//! Files: this one (device, buffers, pipeline cache, dispatch), `kernels.rs` (the
//! `Kernel` list: shader file, entry point, binding slots, override constants),
//! `window.rs` (binding big weights as row windows), `web.rs` (read-backs that await
//! instead of blocking, for the browser), `replay.rs` (`Backend::replay`: a
//! decode step's dispatches kept and re-encoded) and `ops.rs` (`impl Backend`: what each
//! op binds and dispatches).

mod decode_step;
mod kernels;
#[doc(hidden)]
pub use kernels::{SHADERS, shader_source};
mod init;
mod ops;
mod replay;
mod web;
mod window;

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::backend::DeviceBuffer;
use crate::error::{Error, Result};
use crate::tensor::{DType, buffer_numel};

pub use replay::MAX_REPLAYS;

#[doc(hidden)]
pub use init::{MIN_INVOCATIONS, MIN_WORKGROUP_BYTES};
pub use kernels::{PipelineSource, pipeline_sources, window_params_layout};

use kernels::{Kernel, SCAN_CHANNELS, SCAN_LANES, ScanLimits, Slot, WDtype};
use window::WindowPair;

const BACKEND: &str = "wgpu";

fn device_err(why: impl Into<String>) -> Error {
    Error::Device {
        backend: BACKEND,
        why: why.into(),
    }
}

/// A wgpu storage buffer with its element type and logical shape.
///
/// The allocation is rounded up to a multiple of 4 bytes (f16/bf16 data is packed two
/// elements per 32-bit word).
#[derive(Debug)]
pub struct WgpuBuffer {
    buf: Arc<wgpu::Buffer>,
    dtype: DType,
    shape: Vec<usize>,
}

impl WgpuBuffer {
    /// The underlying wgpu buffer.
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buf
    }

    fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
}

impl DeviceBuffer for WgpuBuffer {
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

/// Options of [`WgpuBackend::with_options`]; `Default` is what [`WgpuBackend::new`] uses.
#[derive(Debug, Clone, Default)]
pub struct WgpuOptions {
    /// Never use the subgroup variant of the scan, even where the adapter supports it.
    pub no_subgroups: bool,
    /// Treat bindings larger than this many bytes as too large (as if the adapter's
    /// `max_storage_buffer_binding_size` were this small), to exercise the windowed
    /// binding of big weights in tests. At least 1024.
    pub max_binding_size: Option<u64>,
    /// Keep wgpu's runtime checks (bounds checks, loop bounding) in every shader; by
    /// default the hot ones (scan, matmul) are created with
    /// `create_shader_module_trusted` and the checks off.
    pub checked_shaders: bool,
    /// Channels per scan workgroup to aim for (default 4; each is 64 invocations). The
    /// adapter's limits still cap it; for tuning on a given GPU.
    pub scan_channels: Option<u32>,
    /// Treat the adapter's `max_compute_workgroup_storage_size` as this many bytes (never
    /// more than the adapter's), to exercise how the scan sizes itself on small adapters.
    pub max_workgroup_storage: Option<u32>,
    /// Run every `Backend::replay` closure directly instead of replaying the dispatches
    /// it recorded the first time (see `replay.rs`); for comparisons.
    pub no_replay: bool,
    /// Also consider OpenGL (GLES/WebGL) adapters. Off by default: the kernels are
    /// written and tested for Vulkan, Metal, DX12 and WebGPU, and on a machine with Mesa
    /// but no Vulkan driver the GL backend would quietly run them on llvmpipe.
    pub allow_gl: bool,
    /// Run Mamba-2's scan in its sequential form at every length (by default prefills of
    /// 32 steps or more take the chunked one, `ssd_scan_chunked`); for comparisons.
    pub ssd_sequential: bool,
    /// How `matmul_q8` takes the activations (default f32; `Int8` quantizes them and
    /// runs `dot4I8Packed`, see [`crate::Q8Activations`]).
    pub q8_activations: crate::Q8Activations,
}

/// A cached pipeline with its bind group layout.
struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// A resource for one binding slot.
enum Bind<'a> {
    /// Bytes of a uniform struct.
    Uniform(&'a [u8]),
    /// A whole buffer.
    Whole(&'a wgpu::Buffer),
    /// A byte range of a buffer.
    Range(&'a wgpu::Buffer, u64, u64),
}

/// The wgpu backend. See the module docs.
pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    /// Largest byte size bound at once (the adapter's, or smaller for tests).
    max_binding: u64,
    subgroup_scan: bool,
    checked_shaders: bool,
    /// What the scan's workgroups are sized from (see `kernels::ScanSize::fit`).
    scan_limits: ScanLimits,
    scan_channels: u32,
    /// See [`WgpuOptions::ssd_sequential`].
    ssd_sequential: bool,
    /// See [`WgpuOptions::q8_activations`] and [`WgpuBackend::set_q8_activations`].
    q8_int8: std::sync::atomic::AtomicBool,
    replays: replay::Replays,
    pipelines: Mutex<HashMap<Kernel, Arc<Pipeline>>>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    encoder: Mutex<Option<wgpu::CommandEncoder>>,
    /// First wgpu error reported since the last check.
    error: Arc<Mutex<Option<String>>>,
    /// Bound in place of absent optional inputs (read-only) and outputs (read-write).
    dummy_read: wgpu::Buffer,
    dummy_rw: wgpu::Buffer,
    /// Dispatches encoded so far (direct and replayed): see [`WgpuBackend::dispatch_count`].
    dispatches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuBackend")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("subgroup_scan", &self.subgroup_scan)
            .field("max_binding", &self.max_binding)
            .field("checked_shaders", &self.checked_shaders)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The weight dtypes the shaders decode.
fn wdtype(b: &WgpuBuffer) -> WDtype {
    WDtype::of(b.dtype)
}

impl WgpuBackend {
    /// Picks the best adapter (high-performance preference), requests a device with the
    /// adapter's own limits and, where present, `SHADER_F16` and `SUBGROUP`.
    ///
    /// Returns [`Error::BackendUnavailable`] when there is no adapter (for example no
    /// Vulkan driver), never panics for that reason.
    pub fn new() -> Result<Self> {
        Self::with_options(WgpuOptions::default())
    }

    /// [`WgpuBackend::new`] with options (mostly for tests and benchmarks).
    ///
    /// Natively this blocks on [`WgpuBackend::with_options_async`] (one code path). In
    /// the browser nothing may block: there it is [`Error::BackendUnavailable`], and
    /// [`WgpuBackend::new_async`] is the way in.
    pub fn with_options(opts: WgpuOptions) -> Result<Self> {
        if cfg!(target_arch = "wasm32") {
            return Err(Error::BackendUnavailable {
                backend: BACKEND,
                why: "a blocking constructor cannot wait for the adapter in the browser; \
                      use WgpuBackend::new_async / with_options_async"
                    .into(),
            });
        }
        pollster::block_on(Self::with_options_async(opts))
    }

    /// [`WgpuBackend::new`] without blocking: the constructor for the browser (WebGPU),
    /// where the adapter and device arrive as JavaScript promises.
    pub async fn new_async() -> Result<Self> {
        Self::with_options_async(WgpuOptions::default()).await
    }

    /// Compute dispatches encoded since the backend was made, direct and replayed. Each
    /// is a dependent step on the device (a pass boundary or barrier), so the count per
    /// decode step is what bounds decode speed once the kernels are small: the bench
    /// reports it per token.
    pub fn dispatch_count(&self) -> u64 {
        self.dispatches.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_dispatches(&self, n: u64) {
        self.dispatches
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The adapter this backend runs on.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The pipelines built so far (their `Kernel`s as `Debug` prints them), so a test can
    /// tell which scan variant really ran. Not an API.
    #[doc(hidden)]
    pub fn built_pipelines(&self) -> Vec<String> {
        lock(&self.pipelines)
            .keys()
            .map(|k| format!("{k:?}"))
            .collect()
    }

    /// How `matmul_q8` takes the activations from now on ([`WgpuOptions::q8_activations`]).
    /// Set it before the first decode step: a replay already recorded keeps the
    /// pipelines it recorded.
    pub fn set_q8_activations(&self, a: crate::Q8Activations) {
        self.q8_int8.store(
            a == crate::Q8Activations::Int8,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Does the selective scan use the subgroup variant?
    pub fn uses_subgroup_scan(&self) -> bool {
        self.subgroup_scan
    }

    /// Channels per workgroup and workgroup-memory bytes of the selective scan for this
    /// dstate on this adapter, or why it cannot run (the error `selective_scan` returns).
    pub fn scan_workgroup(&self, dstate: u32) -> Result<(u32, u32)> {
        let s = self.scan_size(dstate)?;
        Ok((s.channels, s.workgroup_bytes(self.subgroup_scan)))
    }

    fn scan_size(&self, dstate: u32) -> Result<kernels::ScanSize> {
        kernels::ScanSize::fit(
            dstate,
            self.scan_channels,
            self.scan_limits,
            self.subgroup_scan,
        )
        .map_err(|why| {
            let why = format!("on adapter `{}`: {why}", self.info.name);
            Error::limit("wgpu", "selective_scan", "A", why)
        })
    }

    /// The device, for callers that record their own work.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// Returns (and clears) the first wgpu error reported since the last check.
    fn check(&self) -> Result<()> {
        match lock(&self.error).take() {
            Some(why) => Err(device_err(why)),
            None => Ok(()),
        }
    }

    /// Splits `groups` workgroups over x (and y when x would exceed the adapter's limit).
    /// Shaders rebuild the flat index from `num_workgroups.x`.
    fn grid(&self, groups: u32) -> Result<(u32, u32)> {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        let groups = groups.max(1);
        if groups <= max {
            return Ok((groups, 1));
        }
        let y = groups.div_ceil(max);
        if y > max {
            return Err(Error::limit(
                "wgpu",
                "dispatch",
                "grid",
                format!("{groups} workgroups exceed the adapter's dispatch limits"),
            ));
        }
        Ok((max, y))
    }

    /// Checks that a whole buffer can be bound at once.
    fn whole<'a>(&self, what: &'static str, b: &'a WgpuBuffer) -> Result<Bind<'a>> {
        if b.buf.size() > self.max_binding {
            return Err(Error::limit(
                "wgpu",
                "bind",
                what,
                format!(
                    "{} bytes exceed the adapter's max_storage_buffer_binding_size ({} bytes); \
                     only matmul weights and embedding tables are bound in windows",
                    b.buf.size(),
                    self.max_binding
                ),
            ));
        }
        Ok(Bind::Whole(&b.buf))
    }

    /// A sequence tensor bound from time step `t0` on (time stride `stride` elements).
    fn bind_from_step<'a>(
        &self,
        what: &'static str,
        b: &'a WgpuBuffer,
        t0: u32,
        stride: u32,
    ) -> Result<Bind<'a>> {
        let whole = self.whole(what, b)?;
        let off = (t0 as u64 * stride as u64 * 4).min(b.buf.size());
        if off == 0 {
            return Ok(whole);
        }
        Ok(Bind::Range(&b.buf, off, b.buf.size() - off))
    }

    fn opt_read<'a>(&'a self, what: &'static str, b: Option<&'a WgpuBuffer>) -> Result<Bind<'a>> {
        match b {
            Some(b) => self.whole(what, b),
            None => Ok(Bind::Whole(&self.dummy_read)),
        }
    }

    /// Records one dispatch of `kernel` into the pending encoder.
    fn dispatch(&self, kernel: Kernel, binds: &[Bind<'_>], groups: (u32, u32)) -> Result<()> {
        let pipe = self.pipeline(kernel)?;
        debug_assert_eq!(binds.len(), kernel.slots().len(), "{kernel:?} bindings");
        let uniforms: Vec<Option<wgpu::Buffer>> = binds
            .iter()
            .map(|b| match b {
                Bind::Uniform(bytes) => {
                    // Uniform buffer sizes must be multiples of 16.
                    let mut data = bytes.to_vec();
                    data.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
                    Some(
                        self.device
                            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                                label: Some("params"),
                                contents: &data,
                                usage: wgpu::BufferUsages::UNIFORM,
                            }),
                    )
                }
                _ => None,
            })
            .collect();
        let entries: Vec<wgpu::BindGroupEntry> = binds
            .iter()
            .zip(&uniforms)
            .enumerate()
            .map(|(i, (b, u))| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: match (b, u) {
                    (Bind::Uniform(_), Some(u)) => u.as_entire_binding(),
                    (Bind::Whole(buf), _) => buf.as_entire_binding(),
                    (Bind::Range(buf, offset, size), _) => {
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: buf,
                            offset: *offset,
                            size: NonZeroU64::new(*size),
                        })
                    }
                    (Bind::Uniform(_), None) => unreachable!("uniform buffers are created above"),
                },
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry()),
            layout: &pipe.layout,
            entries: &entries,
        });
        {
            let mut enc = lock(&self.encoder);
            let enc = enc.get_or_insert_with(|| self.new_encoder());
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.entry()),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipe.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
            self.count_dispatches(1);
        }
        self.replays.keep(|| replay::Dispatch {
            pipeline: pipe,
            bind_group,
            groups,
        });
        self.check()
    }

    fn new_encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("mamba-gpu ops"),
            })
    }

    /// A new buffer; its size was checked by the caller ([`buffer_numel`]).
    fn new_buffer(&self, dtype: DType, shape: &[usize], data: Option<&[u8]>) -> Result<WgpuBuffer> {
        self.replays.break_capture();
        let (_, bytes) = buffer_numel("new_buffer", "buffer", dtype, shape)?;
        let size = (bytes as u64).div_ceil(4).max(1) * 4;
        if size > self.limits.max_buffer_size {
            return Err(Error::limit(
                "wgpu",
                "new_buffer",
                "buffer",
                format!(
                    "a {dtype:?} buffer of shape {shape:?} ({size} bytes) exceeds the \
                     adapter's max_buffer_size ({} bytes)",
                    self.limits.max_buffer_size
                ),
            ));
        }
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let buf = match data {
            Some(d) => {
                let mut padded;
                let contents = if d.len() as u64 == size {
                    d
                } else {
                    padded = d.to_vec();
                    padded.resize(size as usize, 0);
                    &padded[..]
                };
                self.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: None,
                        contents,
                        usage,
                    })
            }
            // wgpu zero-initialises new buffers.
            None => self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage,
                mapped_at_creation: false,
            }),
        };
        self.check()?;
        // On wasm32 wgpu's handles are neither Send nor Sync (WebGPU objects live on one
        // thread), and nothing crosses threads there; the Arc only shares the buffer with
        // the replays that bind it.
        #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
        let buf = Arc::new(buf);
        Ok(WgpuBuffer {
            buf,
            dtype,
            shape: shape.to_vec(),
        })
    }

    /// Submits the pending encoder, then `extra`. The encoder lock is held until the
    /// submission is queued, so work recorded by another thread can never be submitted
    /// after a later download of its output.
    fn submit(&self, extra: Option<wgpu::CommandEncoder>) -> Result<()> {
        let mut pending = lock(&self.encoder);
        let cmds: Vec<wgpu::CommandBuffer> = pending
            .take()
            .into_iter()
            .chain(extra)
            .map(|e| e.finish())
            .collect();
        if !cmds.is_empty() {
            self.queue.submit(cmds);
        }
        drop(pending);
        self.check()
    }
}
