//! Every kernel launch of the CUDA backend, one function per op, called by the
//! `impl Backend` in `backend.rs`; matmul's launches are in `matmul.rs`, the fused decode
//! step's in `decode_step.rs`.
//!
//! The only `unsafe` of the backend's ops is here. Each launch pushes its arguments in
//! the order of the kernel's parameter list (quoted above each launch), with the types
//! the kernel declares; the parameter structs are `#[repr(C)]` u32/f32 structs mirrored
//! field for field in the `.cu` files. Bounds: every shape was validated by
//! `crate::ops` (which built the params from those very buffers), the kernels guard
//! their last partial block, and optional pointers a kernel's flags say it never reads
//! get a small dummy buffer.

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg};

use super::geometry::{self, Launch};
use super::nvrtc::Kernel;

use super::{CudaBackend, CudaBuffer, Storage, dev_err};
use crate::error::{Error, Result};
use crate::ops::{ScanInputs, SsdInputs, StepInputs};
use crate::params::*;
use crate::tensor::DType;

// SAFETY (all seven): `#[repr(C)]` structs of u32/f32 only, no padding, no pointers;
// the kernels declare the same fields in the same order (kernels/common.cuh), so the
// bytes mean the same on both sides.
unsafe impl DeviceRepr for ScanParams {}
unsafe impl DeviceRepr for StepParams {}
// SAFETY: #[repr(C)] plain u32 fields, the layout of SsdParams in kernels/common.cuh
// (checked by tests/cuda_cpu_model.rs).
unsafe impl DeviceRepr for SsdParams {}
unsafe impl DeviceRepr for ConvParams {}
unsafe impl DeviceRepr for MatmulParams {}
unsafe impl DeviceRepr for NormParams {}
unsafe impl DeviceRepr for EmbeddingParams {}
unsafe impl DeviceRepr for ElementwiseParams {}
unsafe impl DeviceRepr for ArgmaxParams {}
unsafe impl DeviceRepr for CopyParams {}

/// A launch of `geometry` (shared with the CPU execution model) as cudarc's config.
pub(super) fn config(l: &Launch) -> LaunchConfig {
    LaunchConfig {
        grid_dim: l.grid,
        block_dim: l.block,
        shared_mem_bytes: l.shared_bytes,
    }
}

pub(super) fn launch_err(kernel: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| dev_err(&format!("launch of {kernel}"), e)
}

/// Pushes a buffer's device pointer, whatever its element type.
pub(super) fn push<'a>(a: &mut LaunchArgs<'a>, b: &'a CudaBuffer) {
    match b.storage() {
        Storage::F32(s) => a.arg(s),
        Storage::Half(s) => a.arg(s),
        Storage::U32(s) => a.arg(s),
    };
}

/// Pushes a buffer the kernel writes.
fn push_mut<'a>(a: &mut LaunchArgs<'a>, b: &'a mut CudaBuffer) {
    match b.storage_mut() {
        Storage::F32(s) => a.arg(s),
        Storage::Half(s) => a.arg(s),
        Storage::U32(s) => a.arg(s),
    };
}

/// Pushes an optional input, or the dummy buffer when absent.
pub(super) fn push_opt<'a>(
    a: &mut LaunchArgs<'a>,
    b: Option<&'a CudaBuffer>,
    dummy: &'a CudaSlice<f32>,
) {
    match b {
        Some(b) => push(a, b),
        None => {
            a.arg(dummy);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Selective scan and state update.

/// Pushes a sequence tensor of the scan, refusing one whose dtype is not the I/O dtype:
/// unreachable after `ops`, but it is what makes the kernel's element type right.
fn push_io<'a>(
    a: &mut LaunchArgs<'a>,
    name: &'static str,
    t: &'a CudaBuffer,
    io: DType,
) -> Result<()> {
    if t.dtype != io {
        return Err(Error::DType {
            op: "selective_scan",
            tensor: name,
            got: t.dtype,
            expected: "the I/O dtype of the scan (the dtype of `out`)",
        });
    }
    push(a, t);
    Ok(())
}

pub(super) fn selective_scan(
    be: &CudaBackend,
    p: &ScanParams,
    i: &ScanInputs<'_, CudaBuffer>,
    state: Option<&mut CudaBuffer>,
    out: &mut CudaBuffer,
) -> Result<()> {
    let l = geometry::selective_scan(p, out.dtype)?;
    let (io, name) = (out.dtype, l.kernel.entry());
    let f = be.function(l.kernel)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    push_io(&mut a, "u", i.u, io)?;
    push_io(&mut a, "delta", i.delta, io)?;
    a.arg(i.a.f32()?);
    push_io(&mut a, "B", i.b, io)?;
    push_io(&mut a, "C", i.c, io)?;
    push_opt(&mut a, i.d, &be.dummy);
    match i.z {
        Some(z) => push_io(&mut a, "z", z, io)?,
        None => {
            a.arg(&be.dummy);
        }
    }
    push_opt(&mut a, i.delta_bias, &be.dummy);
    match state {
        Some(s) => {
            a.arg(s.f32_mut()?);
        }
        None => {
            a.arg(&be.dummy);
        }
    }
    push_mut(&mut a, out);
    // SAFETY: selective_scan_<io>(ScanParams p, const T* u, const T* delta,
    // const float* A, const T* B, const T* C, const float* D, const T* z,
    // const float* delta_bias, float* state, T* out): 11 arguments in that order, with
    // T = float / F16 / BF16 the entry point chosen from out's dtype, and
    // u, delta, B, C, z pushed only after `push_io` checked they have that dtype (f16
    // and bf16 storage is 16-bit words, the layout of the kernel's F16/BF16 structs);
    // A, D, delta_bias, state are f32 (`f32()` / ops). The one absent-z dummy is f32,
    // but the kernel never reads z unless has_z. `p` was built by ops::selective_scan
    // from these buffers (it came with them in one ScanCall, see crate::ops::call), so
    // every index the kernel forms from p's sizes and strides is in bounds; D / z / delta_bias / state are read or written only when has_d /
    // has_z / has_delta_bias / state_mode say they were given. The 16-byte vector loads
    // and stores happen only where the kernel checked time stride 1 and channel/batch
    // strides that are multiples of 16 bytes, on allocations cudarc aligns to 256
    // bytes. The grid covers ceil(dim/4) channel blocks x batch, with (64, 4) threads as
    // the kernel's NT and CPB expect, and the dynamic shared memory holds its
    // carry[CPB][dstate].
    unsafe { a.launch(config(&l)) }.map_err(launch_err(name))?;
    Ok(())
}

pub(super) fn ssd_scan(
    be: &CudaBackend,
    p: &SsdParams,
    i: &SsdInputs<'_, CudaBuffer>,
    state: Option<&mut CudaBuffer>,
    out: &mut CudaBuffer,
) -> Result<()> {
    let l = geometry::ssd_scan(
        p,
        be.ssd_sequential.load(std::sync::atomic::Ordering::Relaxed),
    )?;
    let f = be.function(l.kernel)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    for t in [i.x, i.dt, i.a, i.b, i.c] {
        a.arg(t.f32()?);
    }
    push_opt(&mut a, i.d, &be.dummy);
    push_opt(&mut a, i.z, &be.dummy);
    push_opt(&mut a, i.dt_bias, &be.dummy);
    match state {
        Some(s) => {
            a.arg(s.f32_mut()?);
        }
        None => {
            a.arg(&be.dummy);
        }
    }
    a.arg(out.f32_mut()?);
    // SAFETY: ssd_scan and ssd_scan_chunked both take (SsdParams p, const float* x, dt,
    // A, B, C, D, z, dt_bias, float* state, float* out): same order, all f32.
    // ops::ssd_scan validated x/z/out (batch, L, E), dt (batch, L, heads), B/C
    // (batch, L, G, N), A/D/dt_bias (heads) and the state (batch, E, N) against p;
    // optional inputs and the state are read only when their flag / state_mode says
    // so; the grid is guarded in the kernels (batch * E threads, or batch * heads *
    // ceil(P / SSD_PT) blocks of SSD_THREADS); N <= SSD_MAX_N (geometry::ssd_scan).
    unsafe { a.launch(config(&l)) }.map_err(launch_err("ssd_scan"))?;
    Ok(())
}

pub(super) fn selective_state_update(
    be: &CudaBackend,
    p: &StepParams,
    i: &StepInputs<'_, CudaBuffer>,
    state: &mut CudaBuffer,
    out: &mut CudaBuffer,
) -> Result<()> {
    let f = be.function(Kernel::SelectiveStateUpdate)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    for t in [i.x, i.dt, i.a, i.b, i.c] {
        a.arg(t.f32()?);
    }
    push_opt(&mut a, i.d, &be.dummy);
    push_opt(&mut a, i.z, &be.dummy);
    push_opt(&mut a, i.dt_bias, &be.dummy);
    a.arg(state.f32_mut()?);
    a.arg(out.f32_mut()?);
    // SAFETY: selective_state_update(StepParams p, const float* x, dt, A, B, C, D, z,
    // dt_bias, float* state, float* out): same order, all f32. ops validated
    // state (batch, dim, N), B/C (batch, groups, N) and the rest against p; optional
    // inputs are read only when their has_* flag is set; one thread per (batch,
    // channel), guarded by batch * dim in the kernel. State rows are 16-byte aligned for
    // the float4 path because N % 4 == 0 there and allocations are 256-byte aligned.
    unsafe { a.launch(config(&geometry::selective_state_update(p))) }
        .map_err(launch_err("selective_state_update"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Causal conv1d.

pub(super) fn causal_conv1d(
    be: &CudaBackend,
    p: &ConvParams,
    x: &CudaBuffer,
    weight: &CudaBuffer,
    bias: Option<&CudaBuffer>,
    state: Option<&mut CudaBuffer>,
    out: &mut CudaBuffer,
) -> Result<()> {
    let f = be.function(Kernel::CausalConv1d)?;
    {
        let mut a = be.cur().launch_builder(&f);
        a.arg(p);
        a.arg(x.f32()?);
        a.arg(weight.f32()?);
        push_opt(&mut a, bias, &be.dummy);
        push_opt(&mut a, state.as_deref(), &be.dummy);
        a.arg(out.f32_mut()?);
        // SAFETY: causal_conv1d(ConvParams p, const float* x, w, bias, state,
        // float* out): same order, all f32. One thread per output element, guarded by
        // batch * dim * len < 2^32 (ops checked numel); x/out indices come from p's
        // strides of the validated shape; w is (dim, K); the state (batch, dim, K-1) is
        // read only when state_mode is carry, bias only when has_bias.
        unsafe { a.launch(config(&geometry::causal_conv1d(p))) }
            .map_err(launch_err("causal_conv1d"))?;
    }
    if let Some(s) = state.filter(|_| p.state_mode != STATE_NONE) {
        let f = be.function(Kernel::CausalConv1dState)?;
        let mut a = be.cur().launch_builder(&f);
        a.arg(p);
        a.arg(x.f32()?);
        a.arg(s.f32_mut()?);
        // SAFETY: causal_conv1d_state(ConvParams p, const float* x, float* state):
        // same order, f32. One thread per (batch, channel) row of the validated
        // (batch, dim, K-1) state (ops requires K >= 2 with a state). Launched after
        // the conv on the same stream, so the conv has read the old state.
        unsafe { a.launch(config(&geometry::causal_conv1d_state(p))) }
            .map_err(launch_err("causal_conv1d_state"))?;
    }
    Ok(())
}

pub(super) fn causal_conv1d_update(
    be: &CudaBackend,
    p: &ConvParams,
    x: &CudaBuffer,
    weight: &CudaBuffer,
    bias: Option<&CudaBuffer>,
    state: &mut CudaBuffer,
    out: &mut CudaBuffer,
) -> Result<()> {
    let f = be.function(Kernel::CausalConv1dUpdate)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    a.arg(x.f32()?);
    a.arg(weight.f32()?);
    push_opt(&mut a, bias, &be.dummy);
    a.arg(state.f32_mut()?);
    a.arg(out.f32_mut()?);
    // SAFETY: causal_conv1d_update(ConvParams p, const float* x, w, bias,
    // float* state, float* out): same order, all f32. ops validated x/out (batch, dim),
    // w (dim, K), state (batch, dim, K-1) with K >= 2; one thread per (batch, channel).
    unsafe { a.launch(config(&geometry::causal_conv1d_update(p))) }
        .map_err(launch_err("causal_conv1d_update"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Norm, embedding, elementwise, argmax, copy.

pub(super) fn rms_norm(
    be: &CudaBackend,
    p: &NormParams,
    x: &CudaBuffer,
    weight: &CudaBuffer,
    residual: Option<&mut CudaBuffer>,
    out: &mut CudaBuffer,
) -> Result<()> {
    let l = geometry::rms_norm(p, weight.dtype)?;
    let name = l.kernel.entry();
    let f = be.function(l.kernel)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    a.arg(x.f32()?);
    push(&mut a, weight);
    match residual {
        Some(r) => {
            a.arg(r.f32_mut()?);
        }
        None => {
            a.arg(&be.dummy);
        }
    }
    a.arg(out.f32_mut()?);
    // SAFETY: rms_norm_<w dtype>(NormParams p, const float* x, const W* w,
    // float* residual, float* out): same order, kernel chosen by the weight's dtype.
    // One block of 256 threads (the kernel's THREADS) per row of the validated
    // (rows, dim) x / residual / out; weight (dim); residual touched only if
    // has_residual.
    unsafe { a.launch(config(&l)) }.map_err(launch_err(name))?;
    Ok(())
}

pub(super) fn embedding(
    be: &CudaBackend,
    p: &EmbeddingParams,
    ids: &CudaBuffer,
    table: &CudaBuffer,
    out: &mut CudaBuffer,
) -> Result<()> {
    let l = geometry::embedding(p, table.dtype)?;
    let name = l.kernel.entry();
    let f = be.function(l.kernel)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    a.arg(ids.u32()?);
    push(&mut a, table);
    a.arg(out.f32_mut()?);
    // SAFETY: embedding_<dtype>(EmbeddingParams p, const unsigned int* ids,
    // const T* table, float* out): same order, kernel chosen by the table's dtype.
    // One thread per element of the validated (count, dim) out (< 2^32); ids at or
    // past `rows` are not dereferenced (zeros are written).
    unsafe { a.launch(config(&l)) }.map_err(launch_err(name))?;
    Ok(())
}

pub(super) fn elementwise(
    be: &CudaBackend,
    p: &ElementwiseParams,
    x: &CudaBuffer,
    y: Option<&CudaBuffer>,
    out: &mut CudaBuffer,
) -> Result<()> {
    let f = be.function(Kernel::Elementwise)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    a.arg(x.f32()?);
    match y {
        Some(y) => {
            a.arg(y.f32()?);
        }
        None => {
            a.arg(&be.dummy);
        }
    }
    a.arg(out.f32_mut()?);
    // SAFETY: elementwise(ElementwiseParams p, const float* a, const float* b,
    // float* out): same order, f32. ops validated a, b, out to one shape of `len`
    // elements and gave b exactly for the binary op codes, the only ones reading it.
    unsafe { a.launch(config(&geometry::elementwise(p))) }.map_err(launch_err("elementwise"))?;
    Ok(())
}

pub(super) fn argmax(
    be: &CudaBackend,
    p: &ArgmaxParams,
    x: &CudaBuffer,
    out: &mut CudaBuffer,
) -> Result<()> {
    let f = be.function(Kernel::Argmax)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    a.arg(x.f32()?);
    push_mut(&mut a, out);
    // SAFETY: argmax(ArgmaxParams p, const float* x, unsigned int* out): same order;
    // x f32 (rows, cols) and out u32 (rows) validated by ops; one block of 256 threads
    // (the kernel's THREADS) per row.
    unsafe { a.launch(config(&geometry::argmax(p))) }.map_err(launch_err("argmax"))?;
    Ok(())
}

pub(super) fn copy(
    be: &CudaBackend,
    p: &CopyParams,
    src: &CudaBuffer,
    dst: &mut CudaBuffer,
) -> Result<()> {
    let f = be.function(Kernel::Copy)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    push(&mut a, src);
    push_mut(&mut a, dst);
    // SAFETY: copy(CopyParams p, const unsigned int* src, unsigned int* dst): same
    // order; both buffers hold 4-byte elements of one dtype (ops), and ops checked
    // offset + len against each buffer's length. One thread per copied element.
    unsafe { a.launch(config(&geometry::copy(p))) }.map_err(launch_err("copy"))?;
    Ok(())
}
