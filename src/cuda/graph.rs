//! CUDA graphs behind [`Backend::replay`](crate::Backend::replay): a decode step is
//! captured once and from then on launched as one graph instead of ~10 launches per
//! layer.
//!
//! * **Per key:** the first call with a key runs the ops directly (that loads their
//!   kernels, which may not happen inside a capture; the capture stream's cuBLAS handle
//!   is likewise given its own workspace and run once before its first capture); the
//!   second captures them, instantiates the graph and launches it; later calls launch
//!   the cached graph. The cache keeps the [`MAX_GRAPHS`] most recently used graphs, so
//!   many short-lived states do not pile up graphs.
//! * **A private capture stream.** The capturing thread's ops go to a second stream
//!   (with its own cuBLAS handle) that only it uses, marked by a thread-local; other
//!   threads keep launching on the backend's stream, so nothing of theirs (a launch, a
//!   free) can end up inside the graph. The graph is launched on the backend's stream,
//!   in order with everything else. Inside a capture, allocating, uploading, writing and
//!   downloading are refused (they cannot be part of a graph).
//! * **Never worse than direct launches.** If a capture fails, the ops run directly,
//!   graphs are turned off for the backend and the reason is printed once on stderr.
//!   `MAMBA_CUDA_GRAPHS=0` (or [`CudaBackend::set_graphs`]) turns them off from the
//!   start.
//!
//! Event tracking is off for the whole context (see `CudaBackend::init`), which capture
//! needs: a tracked buffer would make the capture wait on events recorded outside it.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode, CUstreamCaptureStatus};
use cudarc::driver::{CudaGraph, CudaSlice, CudaStream, DevicePtr};

use super::{CudaBackend, dev_err};
use crate::backend::{ReplayKey, unique_id};
use crate::error::{Error, Result};

/// Graphs kept per backend (least recently used dropped first). More states than this
/// stepped in turn would be recaptured on every step, which is slower than direct
/// launches: such a workload should turn graphs off.
pub const MAX_GRAPHS: usize = 16;
/// Keys remembered as "run once directly" (a capture comes on their second use).
const MAX_SEEN: usize = 32;

thread_local! {
    /// The `uid` of the backend this thread is capturing for; 0 when none.
    static CAPTURING: Cell<u64> = const { Cell::new(0) };
}

// The backend, graph cache included, stays shareable between threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<CudaBackend>();
};

/// An instantiated graph.
/// An executable graph and the kernels captured in it (launch counts).
struct Graph(CudaGraph, u64);

// SAFETY: a CUgraph / CUgraphExec is not tied to the thread that made it; the driver
// only requires that calls on one graph are serialised. Every `Graph` lives in the
// `Cache` behind `Graphs::cache` and is only launched or dropped with that lock held
// (or by the backend's own drop, which has exclusive access).
unsafe impl Send for Graph {}

/// The stream captures record on, and a cuBLAS handle bound to it.
pub(super) struct Capture {
    pub(super) stream: Arc<CudaStream>,
    /// Declared before `_workspace`, so the handle is destroyed before its workspace.
    pub(super) blas: Option<CudaBlas>,
    _workspace: Option<CudaSlice<u8>>,
}

/// cuBLAS workspace of the capture handle (what cuBLAS recommends for Hopper).
const CAPTURE_WORKSPACE: usize = 32 << 20;

/// A cuBLAS handle on the capture stream with a workspace of its own, used once before
/// any capture: nothing cuBLAS would otherwise set up on a handle's first GEMM (its
/// workspace, lazily loaded kernels) is then allocated inside a graph, where a
/// synchronous allocation invalidates the capture and an asynchronous one would live
/// in the graph.
fn capture_blas(stream: &Arc<CudaStream>) -> Result<(CudaBlas, CudaSlice<u8>)> {
    let blas = CudaBlas::new(stream.clone()).map_err(|e| dev_err("cublasCreate", e))?;
    let workspace = stream
        .alloc_zeros::<u8>(CAPTURE_WORKSPACE)
        .map_err(|e| dev_err("cuMemAlloc", e))?;
    {
        let (ptr, _sync) = workspace.device_ptr(stream);
        // SAFETY: the handle is live; the workspace is a device allocation of
        // CAPTURE_WORKSPACE bytes in the handle's context that `Capture` keeps alive
        // for as long as the handle (field order).
        let status = unsafe {
            cudarc::cublas::sys::cublasSetWorkspace_v2(
                *blas.handle(),
                ptr as *mut std::ffi::c_void,
                CAPTURE_WORKSPACE,
            )
        };
        if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(dev_err("cublasSetWorkspace", format!("{status:?}")));
        }
    }
    let one = stream
        .alloc_zeros::<f32>(1)
        .map_err(|e| dev_err("cuMemAlloc", e))?;
    let mut out = stream
        .alloc_zeros::<f32>(1)
        .map_err(|e| dev_err("cuMemAlloc", e))?;
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: 1,
        n: 1,
        k: 1,
        alpha: 1.0f32,
        lda: 1,
        ldb: 1,
        beta: 0.0,
        ldc: 1,
    };
    // SAFETY: a 1×1×1 SGEMM on three one-element f32 buffers (lda = ldb = ldc = 1).
    unsafe { blas.gemm(cfg, &one, &one, &mut out) }.map_err(|e| dev_err("cublasSgemm", e))?;
    stream
        .synchronize()
        .map_err(|e| dev_err("cuStreamSynchronize", e))?;
    Ok((blas, workspace))
}

#[derive(Default)]
struct Cache {
    graphs: VecDeque<(ReplayKey, Graph)>,
    seen: VecDeque<ReplayKey>,
}

/// The graph state of one [`CudaBackend`].
pub(super) struct Graphs {
    uid: u64,
    enabled: AtomicBool,
    capture: OnceLock<Capture>,
    cache: Mutex<Cache>,
}

/// Is `MAMBA_CUDA_GRAPHS` unset or set to something other than an "off" value?
fn enabled_by_env() -> bool {
    !std::env::var("MAMBA_CUDA_GRAPHS").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "false" | "no"
        )
    })
}

impl Graphs {
    pub(super) fn new() -> Self {
        Graphs {
            uid: unique_id(),
            enabled: AtomicBool::new(enabled_by_env()),
            capture: OnceLock::new(),
            cache: Mutex::default(),
        }
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A panic while the lock was held leaves a consistent cache behind.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The capture stream and handle, while this thread captures for this backend.
    pub(super) fn capturing_here(&self) -> Option<&Capture> {
        if CAPTURING.get() == self.uid {
            self.capture.get()
        } else {
            None
        }
    }

    /// An error if this thread is capturing for this backend: `what` cannot be part of
    /// a graph.
    pub(super) fn refuse_in_capture(&self, what: &str) -> Result<()> {
        match self.capturing_here() {
            None => Ok(()),
            Some(_) => Err(dev_err(
                what,
                "not allowed inside Backend::replay's closure (only ops can be captured)",
            )),
        }
    }
}

/// Clears the thread's capture mark and, unless `finish` ran, ends the capture (on an
/// early return or a panic inside the closure), so the stream is never left capturing.
struct Capturing<'a> {
    stream: &'a Arc<CudaStream>,
    open: bool,
}

impl<'a> Capturing<'a> {
    fn begin(stream: &'a Arc<CudaStream>, uid: u64) -> Result<Self> {
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| dev_err("cuStreamBeginCapture", e))?;
        CAPTURING.set(uid);
        Ok(Capturing { stream, open: true })
    }

    fn finish(mut self) -> Result<Option<CudaGraph>> {
        CAPTURING.set(0);
        self.open = false;
        // Auto-free: should a library (cuBLAS's workspace) allocate inside the capture
        // without freeing, a relaunch frees it first instead of failing.
        let flags = CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH;
        let graph = self.stream.end_capture(flags);
        if graph.is_err() {
            discard_capture(self.stream);
        }
        graph.map_err(|e| dev_err("cuStreamEndCapture / cuGraphInstantiate", e))
    }
}

/// Ends a capture whose graph is not wanted, if the stream is still capturing. cudarc's
/// `end_capture` first reports (and clears) any error recorded earlier in the context,
/// returning before `cuStreamEndCapture`: asking again reaches the driver, so the
/// stream is never left capturing.
fn discard_capture(stream: &Arc<CudaStream>) {
    for _ in 0..2 {
        match stream.capture_status() {
            Ok(CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE) => return,
            _ => {
                let _ = stream.end_capture(CUgraphInstantiate_flags(0));
            }
        }
    }
}

impl Drop for Capturing<'_> {
    fn drop(&mut self) {
        CAPTURING.set(0);
        if self.open {
            discard_capture(self.stream);
        }
    }
}

impl CudaBackend {
    /// Turns CUDA graphs for [`Backend::replay`](crate::Backend::replay) (the decode
    /// step) on or off; off drops the cached graphs. They start on unless the
    /// environment has `MAMBA_CUDA_GRAPHS=0`, and turn themselves off if a capture
    /// fails.
    pub fn set_graphs(&self, on: bool) {
        self.graphs.enabled.store(on, Ordering::Relaxed);
        if !on {
            let mut cache = self.graphs.cache();
            cache.graphs.clear();
            cache.seen.clear();
        }
    }

    /// Whether `replay` captures and launches CUDA graphs.
    pub fn graphs_enabled(&self) -> bool {
        self.graphs.enabled.load(Ordering::Relaxed)
    }

    /// Number of graphs in the cache (at most [`MAX_GRAPHS`]).
    pub fn cached_graphs(&self) -> usize {
        self.graphs.cache().graphs.len()
    }

    /// `Backend::forget_replays`: drops the graphs (and first-use marks) naming `id`.
    pub(super) fn forget_graphs(&self, id: u64) {
        let mut cache = self.graphs.cache();
        cache.graphs.retain(|(k, _)| !k.names(id));
        cache.seen.retain(|k| !k.names(id));
    }

    /// The stream ops record on: the capture stream while this thread captures a graph
    /// for this backend, the backend's stream otherwise.
    pub(crate) fn cur(&self) -> &Arc<CudaStream> {
        match self.graphs.capturing_here() {
            Some(c) => &c.stream,
            None => &self.stream,
        }
    }

    /// The cuBLAS handle bound to [`Self::cur`].
    pub(crate) fn cur_blas(&self) -> Option<&CudaBlas> {
        match self.graphs.capturing_here() {
            Some(c) => c.blas.as_ref(),
            None => self.blas.as_ref(),
        }
    }

    /// `Backend::replay`: see the module docs.
    pub(super) fn replay_graph(
        &self,
        key: &ReplayKey,
        record: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let g = &self.graphs;
        // A replay nested in a capture is simply part of the outer graph.
        if !self.graphs_enabled() || g.capturing_here().is_some() {
            return record();
        }
        let mut cache = g.cache();
        if let Some(i) = cache.graphs.iter().position(|(k, _)| k == key) {
            let entry = cache.graphs.remove(i).expect("index from position");
            let launched = self.launch_graph(&entry.1);
            self.launches_add(entry.1.1);
            cache.graphs.push_back(entry);
            return launched;
        }
        if !cache.seen.contains(key) {
            if cache.seen.len() == MAX_SEEN {
                cache.seen.pop_front();
            }
            cache.seen.push_back(*key);
            drop(cache);
            return record();
        }
        // The lock stays held: one capture at a time per backend. A graph whose first
        // launch is refused counts as a failed capture.
        // The capture's launches are counted as they are recorded, and they are what
        // its first launch runs.
        let before = self.launch_count();
        let captured = self
            .capture(record)
            .map(|g| Graph(g.0, self.launch_count() - before))
            .and_then(|graph| self.launch_graph(&graph).map(|()| graph));
        match captured {
            Ok(graph) => {
                if cache.graphs.len() == MAX_GRAPHS {
                    cache.graphs.pop_front();
                }
                cache.graphs.push_back((*key, graph));
                Ok(())
            }
            Err(why) => {
                drop(cache);
                self.reset_launches(before);
                // Nothing captured has run: run the ops directly. If that fails too, the
                // error is the ops' own and graphs stay on.
                record()?;
                self.set_graphs(false);
                eprintln!(
                    "mamba-gpu: CUDA graph capture failed ({why}); using direct launches \
                     from now on (MAMBA_CUDA_GRAPHS=0 skips the attempt)"
                );
                Ok(())
            }
        }
    }

    fn capture(&self, record: &mut dyn FnMut() -> Result<()>) -> Result<Graph> {
        let g = &self.graphs;
        if g.capture.get().is_none() {
            // Only the thread holding the cache lock gets here: no race to set it.
            let stream = self
                .ctx
                .new_stream()
                .map_err(|e| dev_err("cuStreamCreate", e))?;
            let (blas, workspace) = match self.blas {
                Some(_) => {
                    let (blas, ws) = capture_blas(&stream)?;
                    (Some(blas), Some(ws))
                }
                None => (None, None),
            };
            let _ = g.capture.set(Capture {
                stream,
                blas,
                _workspace: workspace,
            });
        }
        let cap = g
            .capture
            .get()
            .ok_or_else(|| dev_err("capture stream", "not created"))?;
        let capturing = Capturing::begin(&cap.stream, g.uid)?;
        let recorded = record();
        let graph = capturing.finish();
        recorded?;
        match graph? {
            Some(graph) => Ok(Graph(graph, 0)),
            None => Err(Error::Device {
                backend: super::BACKEND,
                why: "stream capture produced no graph".into(),
            }),
        }
    }

    fn launch_graph(&self, graph: &Graph) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| dev_err("cuCtxSetCurrent", e))?;
        // SAFETY: the executable graph is alive (owned by `graph`, borrowed here, and
        // its cache lock is held by the caller) and `self.stream` is a live stream of
        // the context it was instantiated in. The buffers its nodes use are alive: the
        // graph was captured for `key`, and a key names the objects that own those
        // buffers with ids that are never reused, so a caller holding the key again
        // holds those very buffers (see `ReplayKey`). Launching on the backend's stream
        // orders it after all work issued before, as a direct launch would be.
        unsafe {
            cudarc::driver::result::graph::launch(graph.0.cu_graph_exec(), self.stream.cu_stream())
        }
        .map_err(|e| dev_err("cuGraphLaunch", e))
    }
}

#[cfg(test)]
mod tests {
    //! Replay itself, with keys only the crate can make. Skipped without a GPU (fails
    //! instead when `MAMBA_REQUIRE` names `cuda`, as in tests/common/gpu.rs).
    use super::*;
    use crate::backend::{Backend, ReplayKey};
    use crate::ops::{self, call::ReplayCall};
    use crate::tensor::{DType, HostSlice, HostVec};

    fn backend() -> Option<CudaBackend> {
        match CudaBackend::new(0) {
            Ok(be) => Some(be),
            Err(e) => {
                if std::env::var("MAMBA_REQUIRE")
                    .is_ok_and(|v| v.split(',').any(|s| s.trim() == "cuda"))
                {
                    panic!("MAMBA_REQUIRE names cuda, but the CUDA backend is unavailable: {e}");
                }
                // Past the harness' capture (`eprintln!` would be swallowed).
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "cuda graph tests SKIPPED: {e}");
                None
            }
        }
    }

    /// A replayed graph reads the current contents of a written buffer: run, capture,
    /// replay, each after a new write.
    #[test]
    fn replay_reads_written_inputs() {
        let Some(be) = backend() else { return };
        be.set_graphs(true);
        let key = ReplayKey::new(unique_id(), unique_id(), 4);
        let mut x = be.zeros(DType::U32, &[4]).unwrap();
        let mut y = be.zeros(DType::U32, &[4]).unwrap();
        for round in 0..5u32 {
            let data: Vec<u32> = (0..4).map(|i| i * 10 + round).collect();
            ops::write(&be, HostSlice::U32(&data), &mut x).unwrap();
            be.replay(ReplayCall::new(&key, &mut || {
                ops::copy(&be, &x, 0, &mut y, 0, 4)
            }))
            .unwrap();
            assert_eq!(
                be.download(&y).unwrap(),
                HostVec::U32(data),
                "round {round}"
            );
            assert_eq!(be.cached_graphs(), usize::from(round >= 1), "round {round}");
        }
        assert!(be.graphs_enabled());
    }

    /// What cannot be captured (here an allocation) is refused inside the capture; the
    /// ops then run directly, and graphs are turned off, not the call failed.
    #[test]
    fn failed_capture_falls_back_to_direct_launches() {
        let Some(be) = backend() else { return };
        be.set_graphs(true);
        let key = ReplayKey::new(unique_id(), unique_id(), 1);
        let src = be.upload(HostSlice::F32(&[1.0, 2.0]), &[2]).unwrap();
        let mut out = be.zeros(DType::F32, &[2]).unwrap();
        for _ in 0..3 {
            be.replay(ReplayCall::new(&key, &mut || {
                let tmp = be.zeros(DType::F32, &[2])?;
                ops::copy(&be, &src, 0, &mut out, 0, 2)?;
                drop(tmp);
                Ok(())
            }))
            .unwrap();
            assert_eq!(be.download(&out).unwrap(), HostVec::F32(vec![1.0, 2.0]));
        }
        assert!(!be.graphs_enabled(), "the failed capture turned graphs off");
        assert_eq!(be.cached_graphs(), 0);
        // Outside a capture the same calls are fine.
        assert!(be.zeros(DType::F32, &[2]).is_ok());
    }

    /// A replay's own error (not a capture problem) is returned, graphs stay on.
    #[test]
    fn errors_of_the_ops_are_returned() {
        let Some(be) = backend() else { return };
        be.set_graphs(true);
        let key = ReplayKey::new(unique_id(), unique_id(), 1);
        let src = be.zeros(DType::F32, &[2]).unwrap();
        let mut out = be.zeros(DType::F32, &[2]).unwrap();
        for _ in 0..3 {
            let r = be.replay(ReplayCall::new(&key, &mut || {
                ops::copy(&be, &src, 0, &mut out, 1, 2)
            }));
            assert!(matches!(r, Err(Error::Arg { op: "copy", .. })), "{r:?}");
        }
        assert!(be.graphs_enabled());
    }
}
