//! Checked calls: what a [`Backend`](crate::Backend) op method receives.
//!
//! # Why they exist
//!
//! The GPU backends launch kernels that trust their parameters: the hot WGSL shaders
//! are built with bounds checks off and the CUDA kernels index raw pointers. The
//! parameter structs of [`crate::params`] are plain `Pod` data (they are uploaded as
//! bytes), so anyone can make one (`bytemuck::Zeroable::zeroed()`, then set `len`).
//! What a backend must be able to trust is not the struct but the *pair*: these
//! parameters were computed by [`crate::ops`] from *these* buffers.
//!
//! A call struct is that pair. Each is built only inside this crate, by the op's front
//! door in [`crate::ops`], right after validation, from the validated parameters and
//! the very buffers they were checked against, which it borrows for as long as it
//! lives (so no buffer can be reshaped or replaced in between). It has no public
//! constructor and no public field and is not `Clone`, `Default` or `Zeroable`, so code
//! outside the crate can neither build one nor change one it was handed:
//!
//! ```compile_fail,E0451
//! # use mamba_gpu::ops::MatmulCall;
//! # use mamba_gpu::CpuBuffer;
//! fn forge<'a>(x: &'a CpuBuffer, w: &'a CpuBuffer, out: &'a mut CpuBuffer) -> MatmulCall<'a, CpuBuffer> {
//!     let p = bytemuck::Zeroable::zeroed();
//!     MatmulCall { p: &p, x, w, bias: None, out } // error: private fields
//! }
//! ```
//!
//! and so an op method cannot be called with forged parameters at all; the trait
//! methods take nothing else:
//!
//! ```compile_fail,E0061
//! use mamba_gpu::{Backend, CpuBackend, DType, params::MatmulParams};
//! let be = CpuBackend::new();
//! let x = be.zeros(DType::F32, &[1, 4]).unwrap();
//! let mut out = be.zeros(DType::F32, &[1, 4]).unwrap();
//! let mut p: MatmulParams = bytemuck::Zeroable::zeroed();
//! p.m = 1 << 20; // reads far past `x`
//! be.matmul(&p, &x, &x, None, &mut out).unwrap(); // error: takes a MatmulCall
//! ```
//!
//! The only way to an op method is the front door, which validates:
//!
//! ```
//! use mamba_gpu::{Backend, CpuBackend, DType, HostSlice, ops};
//! let be = CpuBackend::new();
//! let x = be.upload(HostSlice::F32(&[1.0, 2.0]), &[1, 2]).unwrap();
//! let w = be.upload(HostSlice::F32(&[1.0, 1.0, 0.0, 1.0]), &[2, 2]).unwrap();
//! let mut out = be.zeros(DType::F32, &[1, 2]).unwrap();
//! ops::matmul(&be, &x, &w, None, &mut out).unwrap();
//! assert_eq!(be.download(&out).unwrap().to_f32(), vec![3.0, 2.0]);
//! let mut small = be.zeros(DType::F32, &[1, 1]).unwrap();
//! assert!(ops::matmul(&be, &x, &w, None, &mut small).is_err());
//! ```
//!
//! # The wrapper attack
//!
//! A downstream crate may implement [`Backend`](crate::Backend) itself, for example a
//! wrapper around a [`CudaBackend`](crate::cuda::CudaBackend). Its op methods receive
//! calls for *its* buffer type, built from checks of *its* buffers' `shape()` (which
//! may lie). That is harmless because the buffer type is part of the call's type: a
//! wrapper whose buffers are its own type cannot pass the call to the inner backend
//! (the types differ), and one whose buffers *are* the inner backend's can only pass the
//! call on unchanged (the fields are private), and then the inner backend receives
//! parameters checked against its own buffers, whose shapes it reports itself. To use
//! any other buffers the wrapper has to go through [`crate::ops`] again, which checks
//! them.
//!
//! Nor can it read or re-aim a call it was handed:
//!
//! ```compile_fail,E0616
//! use mamba_gpu::ops::ScanCall;
//! use mamba_gpu::CpuBuffer;
//! fn retarget<'a>(call: ScanCall<'a, CpuBuffer>, other: &'a mut CpuBuffer) {
//!     let mut call = call;
//!     call.out = other; // error: private field
//! }
//! ```
//!
//! Replays are sealed the same way, with the *backend* type in the call:
//! [`ReplayCall`] holds the replay key together with the closure that records the ops,
//! and `ReplayCall<'_, B>` is built only where that closure records ops on `B` itself.
//! A CUDA backend launches a captured graph later without running the closure, on the
//! buffers the capture saw; a wrapper that could hand it a real key with a closure of
//! its own (recording on buffers it then frees) would make a later launch write freed
//! memory. The wrapper receives a `ReplayCall<'_, Wrapper>`, which the inner backend
//! does not accept; all it can do is [`ReplayCall::run`] it directly. Nor can it make
//! one for the inner backend:
//!
//! ```compile_fail,E0624
//! use mamba_gpu::ops::ReplayCall;
//! use mamba_gpu::CpuBackend;
//! fn forge<'a>(record: &'a mut dyn FnMut() -> mamba_gpu::Result<()>) {
//!     let key = todo!();
//!     let _: ReplayCall<'a, CpuBackend> = ReplayCall::new(key, record); // error: private
//! }
//! ```

use std::marker::PhantomData;

use super::{
    Elementwise, MixerInInputs, ScanInputs, SsdInputs, SsmStepInputs, StateIo, StepInputs,
};
use crate::backend::ReplayKey;
use crate::error::Result;
use crate::params::*;

/// A checked [`Backend::embedding`](crate::Backend::embedding) call, built by
/// [`crate::ops::embedding`].
pub struct EmbeddingCall<'a, B> {
    pub(crate) p: &'a EmbeddingParams,
    pub(crate) ids: &'a B,
    pub(crate) table: &'a B,
    pub(crate) out: &'a mut B,
}

/// A checked [`Backend::matmul`](crate::Backend::matmul) call, built by
/// [`crate::ops::matmul`].
pub struct MatmulCall<'a, B> {
    pub(crate) p: &'a MatmulParams,
    pub(crate) x: &'a B,
    pub(crate) w: &'a B,
    pub(crate) bias: Option<&'a B>,
    pub(crate) out: &'a mut B,
}

/// A checked [`Backend::matmul_q8`](crate::Backend::matmul_q8) call, built by
/// [`crate::ops::matmul_q8`]: `q` `(N, K/4)` u32, `d` `(N, K/32)` f16.
pub struct MatmulQ8Call<'a, B> {
    pub(crate) p: &'a MatmulParams,
    pub(crate) x: &'a B,
    pub(crate) q: &'a B,
    pub(crate) d: &'a B,
    pub(crate) bias: Option<&'a B>,
    pub(crate) out: &'a mut B,
}

/// A checked [`Backend::mixer_in`](crate::Backend::mixer_in) call, built by
/// [`crate::ops::mixer_in`].
pub struct MixerInCall<'a, B> {
    pub(crate) p: &'a MixerInParams,
    pub(crate) inputs: &'a MixerInInputs<'a, B>,
    pub(crate) conv_state: &'a mut B,
    pub(crate) xc: &'a mut B,
    pub(crate) z: &'a mut B,
}

/// A checked [`Backend::x_proj`](crate::Backend::x_proj) call, built by
/// [`crate::ops::x_proj`].
pub struct XProjCall<'a, B> {
    pub(crate) p: &'a StepProjParams,
    pub(crate) xc: &'a B,
    pub(crate) w_dt: &'a B,
    pub(crate) w_b: &'a B,
    pub(crate) w_c: &'a B,
    pub(crate) dbc: &'a mut B,
}

/// A checked [`Backend::ssm_step`](crate::Backend::ssm_step) call, built by
/// [`crate::ops::ssm_step`].
pub struct SsmStepCall<'a, B> {
    pub(crate) p: &'a StepProjParams,
    pub(crate) inputs: &'a SsmStepInputs<'a, B>,
    pub(crate) state: &'a mut B,
    pub(crate) y: &'a mut B,
}

/// A checked [`Backend::rms_norm`](crate::Backend::rms_norm) call, built by
/// [`crate::ops::rms_norm`].
pub struct NormCall<'a, B> {
    pub(crate) p: &'a NormParams,
    pub(crate) x: &'a B,
    pub(crate) weight: &'a B,
    pub(crate) residual: Option<&'a mut B>,
    pub(crate) out: &'a mut B,
}

/// A checked [`Backend::causal_conv1d`](crate::Backend::causal_conv1d) call, built by
/// [`crate::ops::causal_conv1d`].
pub struct ConvCall<'a, B> {
    pub(crate) p: &'a ConvParams,
    pub(crate) x: &'a B,
    pub(crate) weight: &'a B,
    pub(crate) bias: Option<&'a B>,
    pub(crate) state: Option<&'a mut B>,
    pub(crate) out: &'a mut B,
}

/// A checked [`Backend::causal_conv1d_update`](crate::Backend::causal_conv1d_update)
/// call, built by [`crate::ops::causal_conv1d_update`].
pub struct ConvUpdateCall<'a, B> {
    pub(crate) p: &'a ConvParams,
    pub(crate) x: &'a B,
    pub(crate) weight: &'a B,
    pub(crate) bias: Option<&'a B>,
    pub(crate) state: &'a mut B,
    pub(crate) out: &'a mut B,
}

/// A checked [`Backend::selective_scan`](crate::Backend::selective_scan) call, built by
/// [`crate::ops::selective_scan`].
pub struct ScanCall<'a, B> {
    pub(crate) p: &'a ScanParams,
    pub(crate) inputs: &'a ScanInputs<'a, B>,
    pub(crate) state: StateIo<'a, B>,
    pub(crate) out: &'a mut B,
}

/// A checked [`Backend::ssd_scan`](crate::Backend::ssd_scan) call, built by
/// [`crate::ops::ssd_scan`].
pub struct SsdCall<'a, B> {
    pub(crate) p: &'a SsdParams,
    pub(crate) inputs: &'a SsdInputs<'a, B>,
    pub(crate) state: StateIo<'a, B>,
    pub(crate) out: &'a mut B,
}

/// A checked [`Backend::selective_state_update`](crate::Backend::selective_state_update)
/// call, built by [`crate::ops::selective_state_update`].
pub struct StepCall<'a, B> {
    pub(crate) p: &'a StepParams,
    pub(crate) inputs: &'a StepInputs<'a, B>,
    pub(crate) state: &'a mut B,
    pub(crate) out: &'a mut B,
}

/// A checked [`Backend::elementwise`](crate::Backend::elementwise) call, built by
/// [`crate::ops::elementwise`].
pub struct ElementwiseCall<'a, B> {
    pub(crate) p: &'a ElementwiseParams,
    pub(crate) op: Elementwise,
    pub(crate) a: &'a B,
    pub(crate) b: Option<&'a B>,
    pub(crate) out: &'a mut B,
}

/// A checked [`Backend::argmax`](crate::Backend::argmax) call, built by
/// [`crate::ops::argmax`].
pub struct ArgmaxCall<'a, B> {
    pub(crate) p: &'a ArgmaxParams,
    pub(crate) x: &'a B,
    pub(crate) out: &'a mut B,
}

/// A checked [`Backend::copy`](crate::Backend::copy) call, built by [`crate::ops::copy`].
pub struct CopyCall<'a, B> {
    pub(crate) p: &'a CopyParams,
    pub(crate) src: &'a B,
    pub(crate) dst: &'a mut B,
}

/// A [`Backend::replay`](crate::Backend::replay) request: a key and the closure that
/// records its ops on the backend `Bk` (see the module docs for why both travel
/// together and why `Bk` is part of the type).
pub struct ReplayCall<'a, Bk: ?Sized> {
    pub(crate) key: &'a ReplayKey,
    pub(crate) record: &'a mut dyn FnMut() -> Result<()>,
    pub(crate) _backend: PhantomData<fn(&Bk)>,
}

impl<'a, Bk: ?Sized> ReplayCall<'a, Bk> {
    /// A request whose `record` records ops only on `Bk`, only on buffers that `key`
    /// names (see [`ReplayKey`]).
    pub(crate) fn new(key: &'a ReplayKey, record: &'a mut dyn FnMut() -> Result<()>) -> Self {
        ReplayCall {
            key,
            record,
            _backend: PhantomData,
        }
    }

    /// The same request for a backend `Other` that the closure's ops reach: crate-only,
    /// for the `&B` forwarding and the [`crate::Device`] dispatch, whose ops on `Bk`
    /// are ops on `Other`.
    pub(crate) fn forward<Other: ?Sized>(self) -> ReplayCall<'a, Other> {
        ReplayCall::new(self.key, self.record)
    }

    /// Runs the ops directly, capturing nothing. Always allowed: what a backend without
    /// replays does, and all a wrapping backend can do with a request it received.
    pub fn run(self) -> Result<()> {
        (self.record)()
    }
}
