//! The CPU reference backend: plain loops, f64 where it buys accuracy. It is the ground
//! truth the GPU backends are tested against, and a backend users can run (the loops
//! are parallel over independent rows: rayon for prefill, and for the short regions of a
//! decode step the pool in `pool.rs`).
//!
//! Each op lives in a file named like its shader (`shaders/<op>.wgsl`) and CUDA kernel
//! (`kernels/<op>.cu`), with the same loop structure where the hardware allows.

mod argmax;
mod buffer;
mod causal_conv1d;
mod common;
mod copy;
mod decode_step;
mod elementwise;
mod embedding;
mod gemv;
#[cfg(target_arch = "x86_64")]
mod gemv_x86;
mod matmul;
mod matmul_q8;
mod pool;
mod q8_dot;
mod rms_norm;
mod scan_lanes;
mod selective_scan;
mod selective_state_update;
mod ssd_scan;

pub use self::buffer::CpuBuffer;
pub(crate) use self::buffer::Floats;
#[doc(hidden)]
pub use self::q8_dot::{q8_dot, q8_dot_int8, q8_int8_isas, q8_isas};

use self::selective_scan::selective_scan;
use self::selective_state_update::selective_state_update;

use half::{bf16, f16};

use crate::backend::{Backend, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::call::*;
use crate::params::*;
pub use crate::quant::Q8Activations;
use crate::tensor::{DType, HostSlice, HostVec, buffer_numel};

/// Arithmetic of the CPU scan and decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f64 arithmetic with libm's `exp`: the reference GPU backends are tested against.
    #[default]
    Exact,
    /// f32 arithmetic with a vectorisable `exp` (≈2 ulp): several times faster, and well
    /// within the tolerance the model tests hold every backend to. For running models.
    Fast,
}

/// The CPU backend. Ops run eagerly; `flush` has nothing to do. Matmuls, norms and
/// convs are the same in both precisions (f32 storage, wide accumulators); the
/// precision picks the scan's arithmetic, and the Q8_0 GEMV's ([`Q8Activations`]).
#[derive(Debug, Clone, Default)]
pub struct CpuBackend {
    precision: Precision,
    q8_activations: Q8Activations,
}

impl CpuBackend {
    /// The exact reference ([`Precision::Exact`]).
    pub fn new() -> Self {
        CpuBackend::default()
    }

    /// A CPU backend with the given scan arithmetic (and its [`Q8Activations`]).
    pub fn with_precision(precision: Precision) -> Self {
        let q8_activations = match precision {
            Precision::Exact => Q8Activations::F32,
            Precision::Fast => Q8Activations::Int8,
        };
        CpuBackend {
            precision,
            q8_activations,
        }
    }

    /// The same backend with Q8_0 GEMVs taking their activations as `a`.
    pub fn with_q8_activations(mut self, a: Q8Activations) -> Self {
        self.q8_activations = a;
        self
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn q8_activations(&self) -> Q8Activations {
        self.q8_activations
    }

    /// The scan on f32 slices, in this backend's precision.
    fn scan_f32(
        &self,
        p: &ScanParams,
        inputs: &selective_scan::ScanSlices<'_>,
        state: Option<&mut [f32]>,
        out: &mut [f32],
    ) {
        match self.precision {
            Precision::Exact => selective_scan::<f64>(p, inputs, state, out),
            Precision::Fast if scan_lanes::applies(p) => {
                scan_lanes::selective_scan(p, inputs, state, out)
            }
            Precision::Fast => selective_scan::<f32>(p, inputs, state, out),
        }
    }
}

/// `n` copies of `v`, or the allocator's refusal (`vec!` would abort the process).
fn filled<T: Copy>(n: usize, v: T) -> Result<Vec<T>, std::collections::TryReserveError> {
    let mut out = Vec::new();
    out.try_reserve_exact(n)?;
    advise_huge_pages(&out);
    out.resize(n, v);
    Ok(out)
}

/// A copy of `s`, or the allocator's refusal.
fn copied<T: Copy>(s: &[T]) -> Result<Vec<T>, std::collections::TryReserveError> {
    let mut out = Vec::new();
    out.try_reserve_exact(s.len())?;
    advise_huge_pages(&out);
    out.extend_from_slice(s);
    Ok(out)
}

/// Asks Linux to back a large allocation, before it is first written, with transparent
/// huge pages. Where THP is in `madvise` mode (the default of many distributions) a
/// plain allocation gets 4 KiB pages, and a decode step, which streams every weight
/// once, then walks a page table every 4 KiB and the hardware prefetchers stop at each
/// page boundary: on the Zen 2 EPYC of BENCHMARKS.md f16 decode ran 52–70 tok/s from run
/// to run with 4 KiB pages and 66–68 with huge pages (f32 39–44 and 42–45). Where THP is
/// off, or the call fails, nothing changes.
#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(v: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < 2 * HUGE {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return,
    };
    let (start, end) = (v.as_ptr() as usize, v.as_ptr() as usize + bytes);
    let first = start.next_multiple_of(page);
    let len = end.saturating_sub(first) / page * page;
    // SAFETY: [first, first + len) lies inside the allocation `v` owns (page-aligned
    // as madvise requires); MADV_HUGEPAGE changes how the kernel backs those pages,
    // never their contents, and its failure is harmless, so the result is ignored.
    unsafe { libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages<T>(_: &Vec<T>) {}

fn alloc_err(
    op: &'static str,
    dtype: DType,
    shape: &[usize],
    bytes: usize,
    e: std::collections::TryReserveError,
) -> Error {
    Error::BufferSize {
        op,
        tensor: "buffer",
        dtype: Some(dtype),
        shape: shape.to_vec(),
        why: format!("cannot allocate {bytes} bytes on the host: {e}"),
    }
}

fn opt_f32(b: Option<&CpuBuffer>) -> Result<Option<&[f32]>> {
    b.map(CpuBuffer::f32).transpose()
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn supports_weight_dtype(&self, dtype: DType) -> bool {
        dtype.is_float()
    }

    fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<CpuBuffer> {
        let (n, bytes) = buffer_numel("zeros", "buffer", dtype, shape)?;
        let oom = |e| alloc_err("zeros", dtype, shape, bytes, e);
        let data = match dtype {
            DType::F32 => HostVec::F32(filled(n, 0.0).map_err(oom)?),
            DType::F16 => HostVec::F16(filled(n, f16::ZERO).map_err(oom)?),
            DType::BF16 => HostVec::BF16(filled(n, bf16::ZERO).map_err(oom)?),
            DType::U32 => HostVec::U32(filled(n, 0).map_err(oom)?),
        };
        Ok(CpuBuffer {
            shape: shape.to_vec(),
            data,
        })
    }

    fn upload(&self, data: HostSlice<'_>, shape: &[usize]) -> Result<CpuBuffer> {
        let dtype = data.dtype();
        let (n, bytes) = buffer_numel("upload", "data", dtype, shape)?;
        if data.len() != n {
            return Err(Error::UploadLen {
                len: data.len(),
                shape: shape.to_vec(),
                expected: n,
            });
        }
        let oom = |e| alloc_err("upload", dtype, shape, bytes, e);
        let data = match data {
            HostSlice::F32(s) => HostVec::F32(copied(s).map_err(oom)?),
            HostSlice::F16(s) => HostVec::F16(copied(s).map_err(oom)?),
            HostSlice::BF16(s) => HostVec::BF16(copied(s).map_err(oom)?),
            HostSlice::U32(s) => HostVec::U32(copied(s).map_err(oom)?),
        };
        Ok(CpuBuffer {
            shape: shape.to_vec(),
            data,
        })
    }

    fn write(&self, data: HostSlice<'_>, buf: &mut CpuBuffer) -> Result<()> {
        crate::ops::check_write(&data, buf)?;
        match (&mut buf.data, data) {
            (HostVec::F32(d), HostSlice::F32(s)) => d.copy_from_slice(s),
            (HostVec::F16(d), HostSlice::F16(s)) => d.copy_from_slice(s),
            (HostVec::BF16(d), HostSlice::BF16(s)) => d.copy_from_slice(s),
            (HostVec::U32(d), HostSlice::U32(s)) => d.copy_from_slice(s),
            // check_write compared the dtypes.
            _ => return Err(buf.internal_dtype(data.dtype().name())),
        }
        Ok(())
    }

    fn download(&self, buf: &CpuBuffer) -> Result<HostVec> {
        Ok(buf.data.clone())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn embedding(&self, call: EmbeddingCall<'_, CpuBuffer>) -> Result<()> {
        let EmbeddingCall { p, ids, table, out } = call;
        embedding::embedding(p, ids.u32()?, table.floats()?, out.f32_mut()?)
    }

    fn matmul(&self, call: MatmulCall<'_, CpuBuffer>) -> Result<()> {
        let MatmulCall { p, x, w, bias, out } = call;
        let bias = bias.map(CpuBuffer::floats).transpose()?;
        matmul::matmul(p, x.f32()?, w.floats()?, bias, out.f32_mut()?);
        Ok(())
    }

    fn has_matmul_q8(&self) -> bool {
        true
    }

    fn matmul_q8(&self, call: MatmulQ8Call<'_, CpuBuffer>) -> Result<()> {
        let MatmulQ8Call {
            p,
            x,
            q,
            d,
            bias,
            out,
        } = call;
        let scales = match d.floats()? {
            Floats::F16(v) => v,
            _ => return Err(d.internal_dtype("f16")),
        };
        let bias = bias.map(CpuBuffer::floats).transpose()?;
        let int8 = self.q8_activations == Q8Activations::Int8;
        matmul_q8::matmul_q8(p, x.f32()?, q.u32()?, scales, bias, out.f32_mut()?, int8);
        Ok(())
    }

    fn rms_norm(&self, call: NormCall<'_, CpuBuffer>) -> Result<()> {
        let NormCall {
            p,
            x,
            weight,
            residual,
            out,
        } = call;
        let residual = residual.map(CpuBuffer::f32_mut).transpose()?;
        rms_norm::rms_norm(p, x.f32()?, weight.floats()?, residual, out.f32_mut()?);
        Ok(())
    }

    fn causal_conv1d(&self, call: ConvCall<'_, CpuBuffer>) -> Result<()> {
        let ConvCall {
            p,
            x,
            weight,
            bias,
            state,
            out,
        } = call;
        let state = state.map(CpuBuffer::f32_mut).transpose()?;
        if self.precision == Precision::Fast && p.x_sd == 1 {
            causal_conv1d::causal_conv1d_lanes(
                p,
                x.f32()?,
                weight.f32()?,
                opt_f32(bias)?,
                state,
                out.f32_mut()?,
            );
            return Ok(());
        }
        causal_conv1d::causal_conv1d(
            p,
            x.f32()?,
            weight.f32()?,
            opt_f32(bias)?,
            state,
            out.f32_mut()?,
        );
        Ok(())
    }

    fn causal_conv1d_update(&self, call: ConvUpdateCall<'_, CpuBuffer>) -> Result<()> {
        let ConvUpdateCall {
            p,
            x,
            weight,
            bias,
            state,
            out,
        } = call;
        let (x, w, b) = (x.f32()?, weight.f32()?, opt_f32(bias)?);
        let (state, out) = (state.f32_mut()?, out.f32_mut()?);
        match self.precision {
            Precision::Exact => causal_conv1d::causal_conv1d_update::<f64>(p, x, w, b, state, out),
            Precision::Fast => causal_conv1d::causal_conv1d_update_lanes(p, x, w, b, state, out),
        }
        Ok(())
    }

    /// f32 I/O runs on the buffers as they are. f16/bf16 I/O (validated by `ops`: u,
    /// delta, z, B, C and out share it) is widened to f32 copies, scanned by the same
    /// code, and `out` rounded once at the end: the reference the CUDA half-I/O kernels,
    /// which also compute in f32 and round only `out`, are tested against.
    fn selective_scan(&self, call: ScanCall<'_, CpuBuffer>) -> Result<()> {
        let ScanCall {
            p,
            inputs: i,
            mut state,
            out,
        } = call;
        let (u, delta, b, c) = (
            i.u.widened()?,
            i.delta.widened()?,
            i.b.widened()?,
            i.c.widened()?,
        );
        let z = i.z.map(CpuBuffer::widened).transpose()?;
        let inputs = selective_scan::ScanSlices {
            u: &u,
            delta: &delta,
            a: i.a.f32()?,
            b: &b,
            c: &c,
            d: opt_f32(i.d)?,
            z: z.as_deref(),
            delta_bias: opt_f32(i.delta_bias)?,
        };
        let state = state.buffer().map(CpuBuffer::f32_mut).transpose()?;
        if out.dtype() == DType::F32 {
            self.scan_f32(p, &inputs, state, out.f32_mut()?);
            return Ok(());
        }
        let mut wide = vec![0f32; out.numel()];
        self.scan_f32(p, &inputs, state, &mut wide);
        out.store_f32(&wide)
    }

    fn has_ssd_scan(&self) -> bool {
        true
    }

    fn ssd_scan(&self, call: SsdCall<'_, CpuBuffer>) -> Result<()> {
        let SsdCall {
            p,
            inputs: i,
            mut state,
            out,
        } = call;
        let inputs = ssd_scan::SsdSlices {
            x: i.x.f32()?,
            dt: i.dt.f32()?,
            a: i.a.f32()?,
            b: i.b.f32()?,
            c: i.c.f32()?,
            d: opt_f32(i.d)?,
            z: opt_f32(i.z)?,
            dt_bias: opt_f32(i.dt_bias)?,
        };
        let state = state.buffer().map(CpuBuffer::f32_mut).transpose()?;
        let out = out.f32_mut()?;
        match self.precision {
            Precision::Exact => ssd_scan::ssd_scan::<f64>(p, &inputs, state, out),
            Precision::Fast => ssd_scan::ssd_scan::<f32>(p, &inputs, state, out),
        }
        Ok(())
    }

    fn fused_step_max_weight_bytes(&self) -> Option<u64> {
        Some(u64::MAX)
    }

    fn mixer_in(&self, call: MixerInCall<'_, CpuBuffer>) -> Result<()> {
        let MixerInCall {
            p,
            inputs: i,
            conv_state,
            xc,
            z,
        } = call;
        let inputs = decode_step::MixerIn {
            h: i.h.f32()?,
            norm_w: i.norm_w.floats()?,
            w_x: i.w_x.floats()?,
            w_z: i.w_z.floats()?,
            conv_w: i.conv_w.f32()?,
            conv_b: opt_f32(i.conv_b)?,
        };
        let (cs, xc, z) = (conv_state.f32_mut()?, xc.f32_mut()?, z.f32_mut()?);
        decode_step::mixer_in(self.precision, p, &inputs, cs, xc, z);
        Ok(())
    }

    fn x_proj(&self, call: XProjCall<'_, CpuBuffer>) -> Result<()> {
        let XProjCall {
            p,
            xc,
            w_dt,
            w_b,
            w_c,
            dbc,
        } = call;
        let w = [w_dt.floats()?, w_b.floats()?, w_c.floats()?];
        decode_step::x_proj(p, xc.f32()?, w, dbc.f32_mut()?);
        Ok(())
    }

    fn ssm_step(&self, call: SsmStepCall<'_, CpuBuffer>) -> Result<()> {
        let SsmStepCall {
            p,
            inputs: i,
            state,
            y,
        } = call;
        let inputs = decode_step::SsmStep {
            xc: i.xc.f32()?,
            dbc: i.dbc.f32()?,
            z: i.z.f32()?,
            dt_proj: i.dt_proj.floats()?,
            dt_bias: i.dt_bias.f32()?,
            a: i.a.f32()?,
            d: i.d.f32()?,
        };
        decode_step::ssm_step(self.precision, p, &inputs, state.f32_mut()?, y.f32_mut()?);
        Ok(())
    }

    fn selective_state_update(&self, call: StepCall<'_, CpuBuffer>) -> Result<()> {
        let StepCall {
            p,
            inputs: i,
            state,
            out,
        } = call;
        let inputs = selective_state_update::StepSlices {
            x: i.x.f32()?,
            dt: i.dt.f32()?,
            a: i.a.f32()?,
            b: i.b.f32()?,
            c: i.c.f32()?,
            d: opt_f32(i.d)?,
            z: opt_f32(i.z)?,
            dt_bias: opt_f32(i.dt_bias)?,
        };
        match self.precision {
            Precision::Exact => {
                selective_state_update::<f64>(p, &inputs, state.f32_mut()?, out.f32_mut()?)
            }
            Precision::Fast if scan_lanes::step_applies(p) => {
                scan_lanes::selective_state_update(p, &inputs, state.f32_mut()?, out.f32_mut()?)
            }
            Precision::Fast => {
                selective_state_update::<f32>(p, &inputs, state.f32_mut()?, out.f32_mut()?)
            }
        }
        Ok(())
    }

    fn elementwise(&self, call: ElementwiseCall<'_, CpuBuffer>) -> Result<()> {
        let ElementwiseCall {
            p: _,
            op,
            a,
            b,
            out,
        } = call;
        elementwise::elementwise(op, a.f32()?, opt_f32(b)?, out.f32_mut()?);
        Ok(())
    }

    fn argmax(&self, call: ArgmaxCall<'_, CpuBuffer>) -> Result<()> {
        let ArgmaxCall { p, x, out } = call;
        argmax::argmax(p, x.f32()?, out.u32_mut()?);
        Ok(())
    }

    fn copy(&self, call: CopyCall<'_, CpuBuffer>) -> Result<()> {
        let CopyCall { p, src, dst } = call;
        copy::copy(p, src, dst)
    }
}
