//! The `Backend` trait: the seam between the model and the hardware.
//!
//! # Design
//!
//! The seam sits at the level of *ops* (embedding, matmul, RMSNorm, conv1d, selective
//! scan, ...), not of kernels or of layers: each op is something every backend can do in
//! one or a few launches, and the model in [`crate::model`] is written once against it.
//!
//! * **Buffers know their dtype and shape** ([`DeviceBuffer`]), so weights may live in
//!   f16/bf16 while activations, state and accumulation stay f32.
//! * **Nothing forces a synchronisation between ops.** Ops take device buffers and
//!   return `()`; a GPU backend only *records* the work. [`Backend::flush`] submits what
//!   was recorded; [`Backend::download`] is the one call that waits for results.
//! * **Shapes are validated once, at the front door.** Users call the free functions in
//!   [`crate::ops`], which check every shape and dtype and build a parameter struct from
//!   [`crate::params`]. The trait methods receive a *checked call*
//!   ([`crate::ops::call`]): those parameters together with the buffers they were
//!   checked against. They are the kernel launches and may trust it: the parameter
//!   structs themselves are plain `Pod` data anyone can make, but a call can only be
//!   built inside this crate, by `ops`, and it cannot be re-aimed at other buffers.
//! * **Outputs are `&mut`**, inputs `&`: the borrow checker rules out an op reading a
//!   buffer it is writing, except where the op defines in-place semantics (a state that
//!   is carried, a residual that is accumulated).
//! * **Repeated work can be replayed.** [`Backend::replay`] lets a backend capture a
//!   sequence of ops once (a CUDA graph) and launch the capture afterwards, so a decode
//!   step costs one launch instead of hundreds. wgpu keeps the recorded dispatches and
//!   re-encodes them without re-creating anything; the CPU backend just runs the ops.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::ops::call::*;
use crate::tensor::{DType, HostSlice, HostVec};

/// A device buffer: an allocation plus its element type and logical shape.
pub trait DeviceBuffer {
    fn dtype(&self) -> DType;
    fn shape(&self) -> &[usize];
    /// Reinterprets the buffer with another shape of the same element count.
    fn reshape(&mut self, shape: &[usize]) -> Result<()>;
    /// Number of elements (saturating, see [`crate::tensor::numel`]; the buffers of this
    /// crate's backends never have more than
    /// [`MAX_BUFFER_ELEMENTS`](crate::tensor::MAX_BUFFER_ELEMENTS)).
    fn numel(&self) -> usize {
        crate::tensor::numel(self.shape())
    }
}

/// Names one sequence of recorded work for [`Backend::replay`]: the owner of the
/// read-only buffers it uses (a model: its weights), the owner of the buffers it reads
/// and writes (a decode state) and a variant (the batch size, or anything else that
/// changes the launches).
///
/// Keys are built only inside this crate, from ids that are never reused; whoever
/// builds one guarantees that every call with that key records the same ops on the
/// same buffers with the same parameters, and gives the buffers a new id whenever it
/// replaces them. A backend receives a key only inside a [`ReplayCall`], together with
/// the closure it was built for, so it may trust the pair as it trusts a checked op
/// call (a key alone, copied by a wrapping backend, opens nothing: see
/// [`crate::ops::call`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey {
    owner: u64,
    target: u64,
    variant: u64,
}

impl ReplayKey {
    pub(crate) fn new(owner: u64, target: u64, variant: u64) -> Self {
        ReplayKey {
            owner,
            target,
            variant,
        }
    }

    /// Does the key name `id` as its owner or its target? (Used by the GPU backends'
    /// replay caches.)
    #[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(dead_code))]
    pub(crate) fn names(&self, id: u64) -> bool {
        self.owner == id || self.target == id
    }
}

/// A process-wide unique id (never 0, never reused) for the objects a [`ReplayKey`]
/// names.
pub(crate) fn unique_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A compute backend. See the module docs for the design.
///
/// The op methods are called by [`crate::ops`] after validation; prefer those functions.
pub trait Backend {
    type Buffer: DeviceBuffer;

    /// Short name, e.g. `"cpu"`, `"wgpu"`, `"cuda"`.
    fn name(&self) -> &'static str;

    /// Does this backend accept `dtype` as weight storage (matmul / embedding tables)?
    fn supports_weight_dtype(&self, dtype: DType) -> bool;

    /// A zero-filled buffer.
    fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<Self::Buffer>;
    /// Copies host data into a new device buffer of the given shape.
    fn upload(&self, data: HostSlice<'_>, shape: &[usize]) -> Result<Self::Buffer>;
    /// Copies host data into an existing buffer of the same dtype and element count
    /// (see [`crate::ops::write`]). Work recorded before the call sees the old contents,
    /// work recorded after it the new ones. The buffer keeps its address, so a replayed
    /// capture that reads it sees the new data.
    fn write(&self, data: HostSlice<'_>, buf: &mut Self::Buffer) -> Result<()>;
    /// Waits for all queued work and copies a buffer back to the host.
    fn download(&self, buf: &Self::Buffer) -> Result<HostVec>;
    /// Submits all recorded work without waiting for it.
    fn flush(&self) -> Result<()>;

    /// Records the ops of the request, or replays an earlier capture of them.
    ///
    /// The request's closure records ops on this backend only (the methods below,
    /// through [`crate::ops`]): no allocation, upload, write, download or flush, and no
    /// host-side effect that has to happen every time, because a backend may run it
    /// once, capture what it launches and from then on launch the capture for the same
    /// key without calling the closure at all; it may also call it twice for one request
    /// (a failed capture, then directly). The CUDA backend does that with CUDA graphs;
    /// the default, used by the CPU and wgpu backends, simply runs it
    /// ([`ReplayCall::run`]). Requests are built only inside this crate (see
    /// [`crate::ops::call`]).
    fn replay(&self, call: ReplayCall<'_, Self>) -> Result<()> {
        call.run()
    }

    /// The object with this id (a model, see [`ReplayKey`]) is gone: drop what was kept
    /// to replay work that names it. A hint that frees memory early (a wgpu replay holds
    /// the buffers it binds); replays are never wrong without it, since ids are not
    /// reused.
    fn forget_replays(&self, id: u64) {
        let _ = id;
    }

    // The op methods. Each takes a checked call that only `crate::ops` builds (from
    // validated parameters and the buffers they were checked against), so it may trust
    // the parameters; see `crate::ops::call`.

    /// `out[i, :] = table[ids[i], :]`, converted to f32 ([`crate::ops::embedding`]).
    fn embedding(&self, call: EmbeddingCall<'_, Self::Buffer>) -> Result<()>;

    /// `out = x · wᵀ (+ bias)`; x, out f32, w and bias in any float dtype
    /// ([`crate::ops::matmul`]).
    fn matmul(&self, call: MatmulCall<'_, Self::Buffer>) -> Result<()>;

    /// Whether [`Backend::matmul_q8`] is implemented.
    fn has_matmul_q8(&self) -> bool {
        false
    }

    /// `out = x · wᵀ (+ bias)` with Q8_0 weights ([`crate::ops::matmul_q8`]). Not every
    /// backend has it: the default refuses with [`Error::Limit`].
    fn matmul_q8(&self, call: MatmulQ8Call<'_, Self::Buffer>) -> Result<()> {
        let _ = call;
        Err(Error::limit(
            self.name(),
            "matmul_q8",
            "q",
            "this backend has no matmul_q8 kernel",
        ))
    }

    /// RMSNorm; with a residual, first `residual += x`, then normalise the residual
    /// ([`crate::ops::rms_norm`]).
    fn rms_norm(&self, call: NormCall<'_, Self::Buffer>) -> Result<()>;

    /// Causal depthwise conv1d over a sequence, optionally with SiLU and a conv state
    /// ([`crate::ops::causal_conv1d`]).
    fn causal_conv1d(&self, call: ConvCall<'_, Self::Buffer>) -> Result<()>;

    /// One step of the causal conv1d: shifts `x` into the conv state and convolves
    /// ([`crate::ops::causal_conv1d_update`]).
    fn causal_conv1d_update(&self, call: ConvUpdateCall<'_, Self::Buffer>) -> Result<()>;

    /// The selective scan (see [`crate::ops::selective_scan`]).
    fn selective_scan(&self, call: ScanCall<'_, Self::Buffer>) -> Result<()>;

    /// One decode step of the selective state space (see
    /// [`crate::ops::selective_state_update`]).
    fn selective_state_update(&self, call: StepCall<'_, Self::Buffer>) -> Result<()>;

    /// Whether [`Backend::ssd_scan`] is implemented (the model uses the general scan
    /// for Mamba-2 where it is not).
    fn has_ssd_scan(&self) -> bool {
        false
    }

    /// Mamba-2's scan in head form ([`crate::ops::ssd_scan`]). Not every backend has
    /// it yet: the default refuses with [`crate::Error::Limit`].
    fn ssd_scan(&self, call: SsdCall<'_, Self::Buffer>) -> Result<()> {
        let _ = call;
        Err(crate::Error::limit(
            self.name(),
            "ssd_scan",
            "x",
            "not implemented on this backend",
        ))
    }

    /// Whether the fused decode ops ([`Backend::mixer_in`], [`Backend::x_proj`],
    /// [`Backend::ssm_step`]) are implemented, and for weights of how many bytes at most
    /// (a wgpu binding's limit): `None` where they are not (the model then decodes with
    /// the unfused ops).
    fn fused_step_max_weight_bytes(&self) -> Option<u64> {
        None
    }

    /// Norm, in_proj and conv step of the fused decode step ([`crate::ops::mixer_in`]).
    /// The default refuses with [`crate::Error::Limit`].
    fn mixer_in(&self, call: MixerInCall<'_, Self::Buffer>) -> Result<()> {
        let _ = call;
        Err(crate::Error::limit(
            self.name(),
            "mixer_in",
            "h",
            "not implemented on this backend",
        ))
    }

    /// `x_proj` of the fused decode step ([`crate::ops::x_proj`]).
    fn x_proj(&self, call: XProjCall<'_, Self::Buffer>) -> Result<()> {
        let _ = call;
        Err(crate::Error::limit(
            self.name(),
            "x_proj",
            "xc",
            "not implemented on this backend",
        ))
    }

    /// `dt_proj` and the state update of the fused decode step ([`crate::ops::ssm_step`]).
    fn ssm_step(&self, call: SsmStepCall<'_, Self::Buffer>) -> Result<()> {
        let _ = call;
        Err(crate::Error::limit(
            self.name(),
            "ssm_step",
            "xc",
            "not implemented on this backend",
        ))
    }

    /// Elementwise op on f32 buffers: `out = op(a[, b])` ([`crate::ops::elementwise`]).
    fn elementwise(&self, call: ElementwiseCall<'_, Self::Buffer>) -> Result<()>;

    /// Row-wise argmax of an f32 matrix into u32 indices ([`crate::ops::argmax`]).
    fn argmax(&self, call: ArgmaxCall<'_, Self::Buffer>) -> Result<()>;

    /// Copies a range of 4-byte elements between buffers of the same dtype
    /// ([`crate::ops::copy`]).
    fn copy(&self, call: CopyCall<'_, Self::Buffer>) -> Result<()>;
}

/// A shared reference to a backend is a backend, so several models (or a model and its
/// tests) can share one device without the backend being `Clone`:
/// `MambaModel::load(&wgpu, ...)`. Buffers are those of `B`.
impl<B: Backend> Backend for &B {
    type Buffer = B::Buffer;

    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn supports_weight_dtype(&self, dtype: DType) -> bool {
        (**self).supports_weight_dtype(dtype)
    }

    fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<B::Buffer> {
        (**self).zeros(dtype, shape)
    }

    fn upload(&self, data: HostSlice<'_>, shape: &[usize]) -> Result<B::Buffer> {
        (**self).upload(data, shape)
    }

    fn write(&self, data: HostSlice<'_>, buf: &mut B::Buffer) -> Result<()> {
        (**self).write(data, buf)
    }

    fn download(&self, buf: &B::Buffer) -> Result<HostVec> {
        (**self).download(buf)
    }

    fn flush(&self) -> Result<()> {
        (**self).flush()
    }

    fn replay(&self, call: ReplayCall<'_, Self>) -> Result<()> {
        // The closure's ops on `&B` are ops on `B`.
        (**self).replay(call.forward())
    }

    fn forget_replays(&self, id: u64) {
        (**self).forget_replays(id)
    }

    fn embedding(&self, call: EmbeddingCall<'_, B::Buffer>) -> Result<()> {
        (**self).embedding(call)
    }

    fn matmul(&self, call: MatmulCall<'_, B::Buffer>) -> Result<()> {
        (**self).matmul(call)
    }

    fn has_matmul_q8(&self) -> bool {
        (**self).has_matmul_q8()
    }

    fn matmul_q8(&self, call: MatmulQ8Call<'_, B::Buffer>) -> Result<()> {
        (**self).matmul_q8(call)
    }

    fn rms_norm(&self, call: NormCall<'_, B::Buffer>) -> Result<()> {
        (**self).rms_norm(call)
    }

    fn causal_conv1d(&self, call: ConvCall<'_, B::Buffer>) -> Result<()> {
        (**self).causal_conv1d(call)
    }

    fn causal_conv1d_update(&self, call: ConvUpdateCall<'_, B::Buffer>) -> Result<()> {
        (**self).causal_conv1d_update(call)
    }

    fn selective_scan(&self, call: ScanCall<'_, B::Buffer>) -> Result<()> {
        (**self).selective_scan(call)
    }

    fn selective_state_update(&self, call: StepCall<'_, B::Buffer>) -> Result<()> {
        (**self).selective_state_update(call)
    }

    fn has_ssd_scan(&self) -> bool {
        (**self).has_ssd_scan()
    }

    fn ssd_scan(&self, call: SsdCall<'_, B::Buffer>) -> Result<()> {
        (**self).ssd_scan(call)
    }

    fn fused_step_max_weight_bytes(&self) -> Option<u64> {
        (**self).fused_step_max_weight_bytes()
    }

    fn mixer_in(&self, call: MixerInCall<'_, B::Buffer>) -> Result<()> {
        (**self).mixer_in(call)
    }

    fn x_proj(&self, call: XProjCall<'_, B::Buffer>) -> Result<()> {
        (**self).x_proj(call)
    }

    fn ssm_step(&self, call: SsmStepCall<'_, B::Buffer>) -> Result<()> {
        (**self).ssm_step(call)
    }

    fn elementwise(&self, call: ElementwiseCall<'_, B::Buffer>) -> Result<()> {
        (**self).elementwise(call)
    }

    fn argmax(&self, call: ArgmaxCall<'_, B::Buffer>) -> Result<()> {
        (**self).argmax(call)
    }

    fn copy(&self, call: CopyCall<'_, B::Buffer>) -> Result<()> {
        (**self).copy(call)
    }
}
