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
//!   [`crate::params`]. The trait methods receive that struct: they are the kernel
//!   launches and may trust it (the structs cannot be built outside this crate).
//! * **Outputs are `&mut`**, inputs `&`: the borrow checker rules out an op reading a
//!   buffer it is writing, except where the op defines in-place semantics (a state that
//!   is carried, a residual that is accumulated).
//! * **Repeated work can be replayed.** [`Backend::replay`] lets a backend capture a
//!   sequence of ops once (a CUDA graph) and launch the capture afterwards, so a decode
//!   step costs one launch instead of hundreds. wgpu keeps the recorded dispatches and
//!   re-encodes them without re-creating anything; the CPU backend just runs the ops.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;
use crate::ops::{Elementwise, ScanInputs, StateIo, StepInputs};
use crate::params::*;
use crate::tensor::{DType, HostSlice, HostVec};

/// A device buffer: an allocation plus its element type and logical shape.
pub trait DeviceBuffer {
    fn dtype(&self) -> DType;
    fn shape(&self) -> &[usize];
    /// Reinterprets the buffer with another shape of the same element count.
    fn reshape(&mut self, shape: &[usize]) -> Result<()>;
    /// Number of elements.
    fn numel(&self) -> usize {
        self.shape().iter().product()
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
/// replaces them. A backend may therefore trust a key as it trusts the parameter
/// structs.
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

    /// Does the key name `id` as its owner or its target?
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

    /// Records the ops of `record`, or replays an earlier capture of them.
    ///
    /// `record` must only record ops on this backend (the methods below, through
    /// [`crate::ops`]): no allocation, upload, write, download or flush, and no
    /// host-side effect that has to happen every time, because a backend may run it
    /// once, capture what it launches and from then on launch the capture for the same
    /// `key` without calling `record` at all; it may also call it twice for one request
    /// (a failed capture, then directly). The CUDA backend does that with CUDA graphs;
    /// the default, used by the CPU and wgpu backends, simply calls `record`.
    fn replay(&self, key: &ReplayKey, record: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let _ = key;
        record()
    }

    /// The object with this id (a model, see [`ReplayKey`]) is gone: drop what was kept
    /// to replay work that names it. A hint that frees memory early (a wgpu replay holds
    /// the buffers it binds); replays are never wrong without it, since ids are not
    /// reused.
    fn forget_replays(&self, id: u64) {
        let _ = id;
    }

    /// `out[i, :] = table[ids[i], :]`, converted to f32.
    fn embedding(
        &self,
        p: &EmbeddingParams,
        ids: &Self::Buffer,
        table: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// `out = x · wᵀ (+ bias)`; x, out f32, w and bias in any float dtype.
    fn matmul(
        &self,
        p: &MatmulParams,
        x: &Self::Buffer,
        w: &Self::Buffer,
        bias: Option<&Self::Buffer>,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// RMSNorm; with a residual, first `residual += x`, then normalise the residual.
    fn rms_norm(
        &self,
        p: &NormParams,
        x: &Self::Buffer,
        weight: &Self::Buffer,
        residual: Option<&mut Self::Buffer>,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// Causal depthwise conv1d over a sequence, optionally with SiLU and a conv state.
    #[allow(clippy::too_many_arguments)]
    fn causal_conv1d(
        &self,
        p: &ConvParams,
        x: &Self::Buffer,
        weight: &Self::Buffer,
        bias: Option<&Self::Buffer>,
        state: Option<&mut Self::Buffer>,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// One step of the causal conv1d: shifts `x` into the conv state and convolves.
    fn causal_conv1d_update(
        &self,
        p: &ConvParams,
        x: &Self::Buffer,
        weight: &Self::Buffer,
        bias: Option<&Self::Buffer>,
        state: &mut Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// The selective scan (see [`crate::ops::selective_scan`]).
    fn selective_scan(
        &self,
        p: &ScanParams,
        inputs: &ScanInputs<'_, Self::Buffer>,
        state: StateIo<'_, Self::Buffer>,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// One decode step of the selective state space (see [`crate::ops::selective_state_update`]).
    fn selective_state_update(
        &self,
        p: &StepParams,
        inputs: &StepInputs<'_, Self::Buffer>,
        state: &mut Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// Elementwise op on f32 buffers: `out = op(a[, b])`.
    fn elementwise(
        &self,
        p: &ElementwiseParams,
        op: Elementwise,
        a: &Self::Buffer,
        b: Option<&Self::Buffer>,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// Row-wise argmax of an f32 matrix into u32 indices.
    fn argmax(&self, p: &ArgmaxParams, x: &Self::Buffer, out: &mut Self::Buffer) -> Result<()>;

    /// Copies a range of 4-byte elements between buffers of the same dtype.
    fn copy(&self, p: &CopyParams, src: &Self::Buffer, dst: &mut Self::Buffer) -> Result<()>;
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

    fn replay(&self, key: &ReplayKey, record: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        (**self).replay(key, record)
    }

    fn forget_replays(&self, id: u64) {
        (**self).forget_replays(id)
    }

    fn embedding(
        &self,
        p: &EmbeddingParams,
        ids: &B::Buffer,
        table: &B::Buffer,
        out: &mut B::Buffer,
    ) -> Result<()> {
        (**self).embedding(p, ids, table, out)
    }

    fn matmul(
        &self,
        p: &MatmulParams,
        x: &B::Buffer,
        w: &B::Buffer,
        bias: Option<&B::Buffer>,
        out: &mut B::Buffer,
    ) -> Result<()> {
        (**self).matmul(p, x, w, bias, out)
    }

    fn rms_norm(
        &self,
        p: &NormParams,
        x: &B::Buffer,
        weight: &B::Buffer,
        residual: Option<&mut B::Buffer>,
        out: &mut B::Buffer,
    ) -> Result<()> {
        (**self).rms_norm(p, x, weight, residual, out)
    }

    fn causal_conv1d(
        &self,
        p: &ConvParams,
        x: &B::Buffer,
        weight: &B::Buffer,
        bias: Option<&B::Buffer>,
        state: Option<&mut B::Buffer>,
        out: &mut B::Buffer,
    ) -> Result<()> {
        (**self).causal_conv1d(p, x, weight, bias, state, out)
    }

    fn causal_conv1d_update(
        &self,
        p: &ConvParams,
        x: &B::Buffer,
        weight: &B::Buffer,
        bias: Option<&B::Buffer>,
        state: &mut B::Buffer,
        out: &mut B::Buffer,
    ) -> Result<()> {
        (**self).causal_conv1d_update(p, x, weight, bias, state, out)
    }

    fn selective_scan(
        &self,
        p: &ScanParams,
        inputs: &ScanInputs<'_, B::Buffer>,
        state: StateIo<'_, B::Buffer>,
        out: &mut B::Buffer,
    ) -> Result<()> {
        (**self).selective_scan(p, inputs, state, out)
    }

    fn selective_state_update(
        &self,
        p: &StepParams,
        inputs: &StepInputs<'_, B::Buffer>,
        state: &mut B::Buffer,
        out: &mut B::Buffer,
    ) -> Result<()> {
        (**self).selective_state_update(p, inputs, state, out)
    }

    fn elementwise(
        &self,
        p: &ElementwiseParams,
        op: Elementwise,
        a: &B::Buffer,
        b: Option<&B::Buffer>,
        out: &mut B::Buffer,
    ) -> Result<()> {
        (**self).elementwise(p, op, a, b, out)
    }

    fn argmax(&self, p: &ArgmaxParams, x: &B::Buffer, out: &mut B::Buffer) -> Result<()> {
        (**self).argmax(p, x, out)
    }

    fn copy(&self, p: &CopyParams, src: &B::Buffer, dst: &mut B::Buffer) -> Result<()> {
        (**self).copy(p, src, dst)
    }
}
