//! [`Backend`] for [`CudaCpuBackend`]: each op is the CUDA backend's launch (cuda/ops.rs)
//! with the same geometry (`super::super::geometry`) and the same arguments in the same
//! order, sent to the execution model. The runner checks every argument list against
//! the kernel's parameters, so an argument pushed here in another order than the
//! kernel's fails loudly. Op methods are thin shims over the `run_*` functions so the
//! trait's signatures can change without touching the launches.

use super::super::geometry::{self as geo, Launch};
use super::{Args, BACKEND, CudaCpuBackend, CudaCpuBuffer, elem_size};
use crate::backend::{Backend, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::call::*;
use crate::ops::{ScanInputs, SsdInputs, StepInputs};
use crate::params::*;
use crate::tensor::{DType, HostSlice, HostVec};

fn push_io(a: &mut Args, name: &'static str, t: &CudaCpuBuffer, io: DType) -> Result<()> {
    if t.dtype != io {
        return Err(Error::DType {
            op: "selective_scan",
            tensor: name,
            got: t.dtype,
            expected: "the I/O dtype of the scan (the dtype of `out`)",
        });
    }
    a.buf(t);
    Ok(())
}

fn run_scan(
    be: &CudaCpuBackend,
    p: &ScanParams,
    i: &ScanInputs<'_, CudaCpuBuffer>,
    state: Option<&mut CudaCpuBuffer>,
    out: &mut CudaCpuBuffer,
) -> Result<()> {
    let l = geo::selective_scan(p, out.dtype)?;
    let io = out.dtype;
    let mut a = Args::new(p);
    push_io(&mut a, "u", i.u, io)?;
    push_io(&mut a, "delta", i.delta, io)?;
    a.f32(i.a)?;
    push_io(&mut a, "B", i.b, io)?;
    push_io(&mut a, "C", i.c, io)?;
    a.opt(i.d, &be.dummy);
    match i.z {
        Some(z) => push_io(&mut a, "z", z, io)?,
        None => {
            a.opt(None, &be.dummy);
        }
    }
    a.opt(i.delta_bias, &be.dummy);
    match state {
        Some(s) => a.f32(s)?,
        None => a.opt(None, &be.dummy),
    };
    a.buf(out);
    be.launch(&l, a)
}

fn run_ssd(
    be: &CudaCpuBackend,
    p: &SsdParams,
    i: &SsdInputs<'_, CudaCpuBuffer>,
    state: Option<&mut CudaCpuBuffer>,
    out: &mut CudaCpuBuffer,
) -> Result<()> {
    let l = geo::ssd_scan(p, be.opts.ssd_sequential)?;
    let mut a = Args::new(p);
    for t in [i.x, i.dt, i.a, i.b, i.c] {
        a.f32(t)?;
    }
    a.opt(i.d, &be.dummy)
        .opt(i.z, &be.dummy)
        .opt(i.dt_bias, &be.dummy);
    match state {
        Some(s) => a.f32(s)?,
        None => a.opt(None, &be.dummy),
    };
    a.f32(out)?;
    be.launch(&l, a)
}

fn run_step(
    be: &CudaCpuBackend,
    p: &StepParams,
    i: &StepInputs<'_, CudaCpuBuffer>,
    state: &mut CudaCpuBuffer,
    out: &mut CudaCpuBuffer,
) -> Result<()> {
    let mut a = Args::new(p);
    for t in [i.x, i.dt, i.a, i.b, i.c] {
        a.f32(t)?;
    }
    a.opt(i.d, &be.dummy)
        .opt(i.z, &be.dummy)
        .opt(i.dt_bias, &be.dummy);
    a.f32(state)?.f32(out)?;
    be.launch(&geo::selective_state_update(p), a)
}

fn run_mixer_in(be: &CudaCpuBackend, call: MixerInCall<'_, CudaCpuBuffer>) -> Result<()> {
    let MixerInCall {
        p,
        inputs: i,
        conv_state,
        xc,
        z,
    } = call;
    let norm_kind = geo::bias_kind(Some(i.norm_w.dtype));
    let mut a = Args::new(p);
    a.val(&norm_kind)
        .f32(i.h)?
        .buf(i.norm_w)
        .buf(i.w_x)
        .buf(i.w_z);
    a.f32(i.conv_w)?.opt(i.conv_b, &be.dummy);
    a.f32(conv_state)?.f32(xc)?.f32(z)?;
    be.launch(&geo::mixer_in(p, i.w_x.dtype)?, a)
}

fn run_x_proj(be: &CudaCpuBackend, call: XProjCall<'_, CudaCpuBuffer>) -> Result<()> {
    let XProjCall {
        p,
        xc,
        w_dt,
        w_b,
        w_c,
        dbc,
    } = call;
    let mut a = Args::new(p);
    a.f32(xc)?.buf(w_dt).buf(w_b).buf(w_c).f32(dbc)?;
    be.launch(&geo::x_proj(p, w_dt.dtype)?, a)
}

fn run_ssm_step(be: &CudaCpuBackend, call: SsmStepCall<'_, CudaCpuBuffer>) -> Result<()> {
    let SsmStepCall {
        p,
        inputs: i,
        state,
        y,
    } = call;
    let mut a = Args::new(p);
    a.f32(i.xc)?.f32(i.dbc)?.f32(i.z)?.buf(i.dt_proj);
    a.f32(i.dt_bias)?.f32(i.a)?.f32(i.d)?;
    a.f32(state)?.f32(y)?;
    be.launch(&geo::ssm_step(p, i.dt_proj.dtype)?, a)
}

#[allow(clippy::too_many_arguments)]
fn run_conv(
    be: &CudaCpuBackend,
    p: &ConvParams,
    x: &CudaCpuBuffer,
    w: &CudaCpuBuffer,
    bias: Option<&CudaCpuBuffer>,
    state: Option<&mut CudaCpuBuffer>,
    out: &mut CudaCpuBuffer,
) -> Result<()> {
    let mut a = Args::new(p);
    a.f32(x)?.f32(w)?;
    a.opt(bias, &be.dummy).opt(state.as_deref(), &be.dummy);
    a.f32(out)?;
    be.launch(&geo::causal_conv1d(p), a)?;
    if let Some(s) = state.filter(|_| p.state_mode != STATE_NONE) {
        let mut a = Args::new(p);
        a.f32(x)?.f32(s)?;
        be.launch(&geo::causal_conv1d_state(p), a)?;
    }
    Ok(())
}

fn run_conv_update(
    be: &CudaCpuBackend,
    p: &ConvParams,
    x: &CudaCpuBuffer,
    w: &CudaCpuBuffer,
    bias: Option<&CudaCpuBuffer>,
    state: &mut CudaCpuBuffer,
    out: &mut CudaCpuBuffer,
) -> Result<()> {
    let mut a = Args::new(p);
    a.f32(x)?.f32(w)?;
    a.opt(bias, &be.dummy);
    a.f32(state)?.f32(out)?;
    be.launch(&geo::causal_conv1d_update(p), a)
}

fn run_matmul(
    be: &CudaCpuBackend,
    p: &MatmulParams,
    x: &CudaCpuBuffer,
    w: &CudaCpuBuffer,
    bias: Option<&CudaCpuBuffer>,
    out: &mut CudaCpuBuffer,
) -> Result<()> {
    let kind = geo::bias_kind(bias.map(|b| b.dtype));
    if !geo::matmul_uses_blas(p, be.opts.cublas) {
        let l = geo::matmul_rows(p, w.dtype)?;
        let mut a = Args::new(p);
        a.val(&kind).f32(x)?.buf(w).opt(bias, &be.dummy).f32(out)?;
        return be.launch(&l, a);
    }
    // The cuBLAS path: bias pre-fill and widening run as kernels, the SGEMM is a host
    // loop standing in for cuBLAS (out = x · wᵀ + beta · out, beta = 1 with a bias or
    // with accumulate).
    if p.has_bias != 0 {
        let b = bias.ok_or_else(|| Error::Device {
            backend: BACKEND,
            why: "matmul: has_bias without a bias buffer".into(),
        })?;
        let mut a = Args::new(p);
        a.val(&kind).buf(b).f32(out)?;
        be.launch(&geo::bias_rows(p), a)?;
    }
    let w32 = match geo::widen(p, w.dtype)? {
        None => be.download(w)?.to_f32(),
        Some(l) => {
            let len = p.n * p.k;
            let scratch = be.zeros(DType::F32, &[len as usize])?;
            let mut a = Args::new(&len);
            a.buf(w).f32(&scratch)?;
            be.launch(&l, a)?;
            be.download(&scratch)?.to_f32()
        }
    };
    let xs = be.download(x)?.to_f32();
    let mut o = be.download(out)?.to_f32();
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    for r in 0..m {
        for c in 0..n {
            let mut acc = 0f32;
            for j in 0..k {
                acc += xs[r * k + j] * w32[c * k + j];
            }
            let prev = if p.has_bias != 0 || p.accumulate != 0 {
                o[r * n + c]
            } else {
                0.0
            };
            o[r * n + c] = acc + prev;
        }
    }
    be.count_launch();
    be.write(HostSlice::F32(&o), out)
}

fn run_rms_norm(
    be: &CudaCpuBackend,
    p: &NormParams,
    x: &CudaCpuBuffer,
    weight: &CudaCpuBuffer,
    residual: Option<&mut CudaCpuBuffer>,
    out: &mut CudaCpuBuffer,
) -> Result<()> {
    let l = geo::rms_norm(p, weight.dtype)?;
    let mut a = Args::new(p);
    a.f32(x)?.buf(weight);
    match residual {
        Some(r) => a.f32(r)?,
        None => a.opt(None, &be.dummy),
    };
    a.f32(out)?;
    be.launch(&l, a)
}

fn run_embedding(
    be: &CudaCpuBackend,
    p: &EmbeddingParams,
    ids: &CudaCpuBuffer,
    table: &CudaCpuBuffer,
    out: &mut CudaCpuBuffer,
) -> Result<()> {
    let l = geo::embedding(p, table.dtype)?;
    if ids.dtype != DType::U32 {
        return Err(Error::DType {
            op: BACKEND,
            tensor: "buffer",
            got: ids.dtype,
            expected: "u32",
        });
    }
    let mut a = Args::new(p);
    a.buf(ids).buf(table).f32(out)?;
    be.launch(&l, a)
}

fn run_simple(
    be: &CudaCpuBackend,
    l: Launch,
    mut a: Args,
    bufs: &[(&CudaCpuBuffer, bool)],
) -> Result<()> {
    for &(b, f32_only) in bufs {
        if f32_only {
            a.f32(b)?;
        } else {
            a.buf(b);
        }
    }
    be.launch(&l, a)
}

impl Backend for CudaCpuBackend {
    type Buffer = CudaCpuBuffer;

    fn name(&self) -> &'static str {
        BACKEND
    }

    fn supports_weight_dtype(&self, dtype: DType) -> bool {
        dtype.is_float()
    }

    fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<CudaCpuBuffer> {
        self.new_buffer(dtype, shape, &[])
    }

    fn upload(&self, data: HostSlice<'_>, shape: &[usize]) -> Result<CudaCpuBuffer> {
        let (n, _) = crate::tensor::buffer_numel("upload", "data", data.dtype(), shape)?;
        if data.len() != n {
            return Err(Error::UploadLen {
                len: data.len(),
                shape: shape.to_vec(),
                expected: n,
            });
        }
        self.new_buffer(data.dtype(), shape, data.as_bytes())
    }

    fn write(&self, data: HostSlice<'_>, buf: &mut CudaCpuBuffer) -> Result<()> {
        crate::ops::check_write(&data, buf)?;
        self.runner.write(buf.id, data.as_bytes())
    }

    fn download(&self, buf: &CudaCpuBuffer) -> Result<HostVec> {
        let bytes = self.runner.read(buf.id)?;
        let n = buf.numel() * elem_size(buf.dtype) as usize;
        Ok(HostVec::from_bytes(buf.dtype, &bytes[..n.min(bytes.len())]))
    }

    fn flush(&self) -> Result<()> {
        Ok(()) // launches run to completion when made
    }

    fn embedding(&self, call: EmbeddingCall<'_, CudaCpuBuffer>) -> Result<()> {
        let EmbeddingCall { p, ids, table, out } = call;
        run_embedding(self, p, ids, table, out)
    }

    fn matmul(&self, call: MatmulCall<'_, CudaCpuBuffer>) -> Result<()> {
        let MatmulCall { p, x, w, bias, out } = call;
        run_matmul(self, p, x, w, bias, out)
    }

    fn has_matmul_q8(&self) -> bool {
        true
    }

    fn matmul_q8(&self, call: MatmulQ8Call<'_, CudaCpuBuffer>) -> Result<()> {
        let MatmulQ8Call {
            p,
            x,
            q,
            d,
            bias,
            out,
        } = call;
        let kind = geo::bias_kind(bias.map(|b| b.dtype));
        let mut a = Args::new(p);
        a.val(&kind)
            .f32(x)?
            .buf(q)
            .buf(d)
            .opt(bias, &self.dummy)
            .f32(out)?;
        let int8 = self.q8_int8.load(std::sync::atomic::Ordering::Relaxed);
        self.launch(&geo::matmul_q8(p, int8)?, a)
    }

    fn rms_norm(&self, call: NormCall<'_, CudaCpuBuffer>) -> Result<()> {
        let NormCall {
            p,
            x,
            weight,
            residual,
            out,
        } = call;
        run_rms_norm(self, p, x, weight, residual, out)
    }

    fn causal_conv1d(&self, call: ConvCall<'_, CudaCpuBuffer>) -> Result<()> {
        let ConvCall {
            p,
            x,
            weight,
            bias,
            state,
            out,
        } = call;
        run_conv(self, p, x, weight, bias, state, out)
    }

    fn causal_conv1d_update(&self, call: ConvUpdateCall<'_, CudaCpuBuffer>) -> Result<()> {
        let ConvUpdateCall {
            p,
            x,
            weight,
            bias,
            state,
            out,
        } = call;
        run_conv_update(self, p, x, weight, bias, state, out)
    }

    fn selective_scan(&self, call: ScanCall<'_, CudaCpuBuffer>) -> Result<()> {
        let ScanCall {
            p,
            inputs,
            mut state,
            out,
        } = call;
        run_scan(self, p, inputs, state.buffer(), out)
    }

    fn has_ssd_scan(&self) -> bool {
        true
    }

    fn ssd_scan(&self, call: SsdCall<'_, CudaCpuBuffer>) -> Result<()> {
        let SsdCall {
            p,
            inputs,
            mut state,
            out,
        } = call;
        run_ssd(self, p, inputs, state.buffer(), out)
    }

    fn fused_step_max_weight_bytes(&self) -> Option<u64> {
        Some(u64::MAX)
    }

    fn mixer_in(&self, call: MixerInCall<'_, CudaCpuBuffer>) -> Result<()> {
        run_mixer_in(self, call)
    }

    fn x_proj(&self, call: XProjCall<'_, CudaCpuBuffer>) -> Result<()> {
        run_x_proj(self, call)
    }

    fn ssm_step(&self, call: SsmStepCall<'_, CudaCpuBuffer>) -> Result<()> {
        run_ssm_step(self, call)
    }

    fn selective_state_update(&self, call: StepCall<'_, CudaCpuBuffer>) -> Result<()> {
        let StepCall {
            p,
            inputs,
            state,
            out,
        } = call;
        run_step(self, p, inputs, state, out)
    }

    fn elementwise(&self, call: ElementwiseCall<'_, CudaCpuBuffer>) -> Result<()> {
        let ElementwiseCall {
            p,
            op: _,
            a,
            b,
            out,
        } = call;
        let mut args = Args::new(p);
        args.f32(a)?;
        match b {
            Some(b) => args.f32(b)?,
            None => args.opt(None, &self.dummy),
        };
        run_simple(self, geo::elementwise(p), args, &[(out, true)])
    }

    fn argmax(&self, call: ArgmaxCall<'_, CudaCpuBuffer>) -> Result<()> {
        let ArgmaxCall { p, x, out } = call;
        run_simple(
            self,
            geo::argmax(p),
            Args::new(p),
            &[(x, true), (out, false)],
        )
    }

    fn copy(&self, call: CopyCall<'_, CudaCpuBuffer>) -> Result<()> {
        let CopyCall { p, src, dst } = call;
        run_simple(
            self,
            geo::copy(p),
            Args::new(p),
            &[(src, false), (dst, false)],
        )
    }
}
