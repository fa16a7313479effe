//! `impl Backend for CudaBackend`: memory (zeros, upload, write, download), replay
//! (CUDA graphs, `graph.rs`), and each op handed to its launch in `ops.rs`,
//! `matmul.rs` or `decode_step.rs`. No `unsafe` here: the launches hold it.

use half::{bf16, f16};

use super::ops::*;
use super::{BACKEND, CudaBackend, CudaBuffer, Storage, dev_err};
use crate::backend::{Backend, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::call::*;
use crate::tensor::{DType, HostSlice, HostVec, buffer_numel};

impl Backend for CudaBackend {
    type Buffer = CudaBuffer;

    fn name(&self) -> &'static str {
        BACKEND
    }

    fn supports_weight_dtype(&self, dtype: DType) -> bool {
        dtype.is_float()
    }

    fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<CudaBuffer> {
        let (n, _) = buffer_numel("zeros", "buffer", dtype, shape)?;
        self.graphs.refuse_in_capture("allocation")?;
        Ok(CudaBuffer {
            data: self.alloc_storage(dtype, n)?,
            dtype,
            shape: shape.to_vec(),
        })
    }

    fn upload(&self, data: HostSlice<'_>, shape: &[usize]) -> Result<CudaBuffer> {
        let (n, _) = buffer_numel("upload", "data", data.dtype(), shape)?;
        self.graphs.refuse_in_capture("upload")?;
        if data.len() != n {
            return Err(Error::UploadLen {
                len: data.len(),
                shape: shape.to_vec(),
                expected: n,
            });
        }
        if n == 0 {
            return self.zeros(data.dtype(), shape);
        }
        let e = |e| dev_err("cuMemcpyHtoD", e);
        let s = &self.stream;
        let storage = match data {
            HostSlice::F32(v) => Storage::F32(s.clone_htod(v).map_err(e)?),
            HostSlice::F16(v) => Storage::Half(
                s.clone_htod(bytemuck::cast_slice::<f16, u16>(v))
                    .map_err(e)?,
            ),
            HostSlice::BF16(v) => Storage::Half(
                s.clone_htod(bytemuck::cast_slice::<bf16, u16>(v))
                    .map_err(e)?,
            ),
            HostSlice::U32(v) => Storage::U32(s.clone_htod(v).map_err(e)?),
        };
        Ok(CudaBuffer {
            data: storage,
            dtype: data.dtype(),
            shape: shape.to_vec(),
        })
    }

    fn write(&self, data: HostSlice<'_>, buf: &mut CudaBuffer) -> Result<()> {
        crate::ops::check_write(&data, buf)?;
        self.graphs.refuse_in_capture("write")?;
        if data.is_empty() {
            return Ok(());
        }
        let wrong = buf.wrong(data.dtype().name());
        // From pageable memory: the copy has taken the data when the call returns.
        let s = &self.stream;
        match (&mut buf.data, data) {
            (Storage::F32(d), HostSlice::F32(v)) => s.memcpy_htod(v, d),
            (Storage::Half(d), HostSlice::F16(v)) => {
                s.memcpy_htod(bytemuck::cast_slice::<f16, u16>(v), d)
            }
            (Storage::Half(d), HostSlice::BF16(v)) => {
                s.memcpy_htod(bytemuck::cast_slice::<bf16, u16>(v), d)
            }
            (Storage::U32(d), HostSlice::U32(v)) => s.memcpy_htod(v, d),
            // check_write compared the dtypes.
            _ => return Err(wrong),
        }
        .map_err(|e| dev_err("cuMemcpyHtoD", e))
    }

    fn download(&self, buf: &CudaBuffer) -> Result<HostVec> {
        self.graphs.refuse_in_capture("download")?;
        let n = buf.numel();
        let e = |e| dev_err("cuMemcpyDtoH", e);
        let s = &self.stream;
        if n == 0 {
            return Ok(HostVec::from_bytes(buf.dtype, &[]));
        }
        Ok(match (&buf.data, buf.dtype) {
            (Storage::F32(d), _) => HostVec::F32(s.clone_dtoh(&d.slice(..n)).map_err(e)?),
            (Storage::U32(d), _) => HostVec::U32(s.clone_dtoh(&d.slice(..n)).map_err(e)?),
            (Storage::Half(d), DType::BF16) => {
                let v = s.clone_dtoh(&d.slice(..n)).map_err(e)?;
                HostVec::BF16(v.into_iter().map(bf16::from_bits).collect())
            }
            (Storage::Half(d), _) => {
                let v = s.clone_dtoh(&d.slice(..n)).map_err(e)?;
                HostVec::F16(v.into_iter().map(f16::from_bits).collect())
            }
        })
    }

    fn flush(&self) -> Result<()> {
        // Launches are submitted as they are made; report any error a drop recorded.
        self.ctx
            .check_err()
            .map_err(|e| dev_err("deferred error", e))
    }

    fn replay(&self, call: ReplayCall<'_, Self>) -> Result<()> {
        let ReplayCall { key, record, .. } = call;
        self.replay_graph(key, record)
    }

    fn forget_replays(&self, id: u64) {
        self.forget_graphs(id)
    }

    fn embedding(&self, call: EmbeddingCall<'_, CudaBuffer>) -> Result<()> {
        let EmbeddingCall { p, ids, table, out } = call;
        embedding(self, p, ids, table, out)
    }

    fn matmul(&self, call: MatmulCall<'_, CudaBuffer>) -> Result<()> {
        let MatmulCall { p, x, w, bias, out } = call;
        super::matmul::matmul(self, p, x, w, bias, out)
    }

    fn has_matmul_q8(&self) -> bool {
        true
    }

    fn matmul_q8(&self, call: MatmulQ8Call<'_, CudaBuffer>) -> Result<()> {
        let MatmulQ8Call {
            p,
            x,
            q,
            d,
            bias,
            out,
        } = call;
        super::matmul::matmul_q8(self, p, x, q, d, bias, out)
    }

    fn rms_norm(&self, call: NormCall<'_, CudaBuffer>) -> Result<()> {
        let NormCall {
            p,
            x,
            weight,
            residual,
            out,
        } = call;
        rms_norm(self, p, x, weight, residual, out)
    }

    fn causal_conv1d(&self, call: ConvCall<'_, CudaBuffer>) -> Result<()> {
        let ConvCall {
            p,
            x,
            weight,
            bias,
            state,
            out,
        } = call;
        causal_conv1d(self, p, x, weight, bias, state, out)
    }

    fn causal_conv1d_update(&self, call: ConvUpdateCall<'_, CudaBuffer>) -> Result<()> {
        let ConvUpdateCall {
            p,
            x,
            weight,
            bias,
            state,
            out,
        } = call;
        causal_conv1d_update(self, p, x, weight, bias, state, out)
    }

    fn selective_scan(&self, call: ScanCall<'_, CudaBuffer>) -> Result<()> {
        let ScanCall {
            p,
            inputs,
            mut state,
            out,
        } = call;
        selective_scan(self, p, inputs, state.buffer(), out)
    }

    fn has_ssd_scan(&self) -> bool {
        true
    }

    fn ssd_scan(&self, call: SsdCall<'_, CudaBuffer>) -> Result<()> {
        let SsdCall {
            p,
            inputs,
            mut state,
            out,
        } = call;
        ssd_scan(self, p, inputs, state.buffer(), out)
    }

    fn fused_step_max_weight_bytes(&self) -> Option<u64> {
        Some(u64::MAX)
    }

    fn mixer_in(&self, call: MixerInCall<'_, CudaBuffer>) -> Result<()> {
        super::decode_step::mixer_in(self, call)
    }

    fn x_proj(&self, call: XProjCall<'_, CudaBuffer>) -> Result<()> {
        super::decode_step::x_proj(self, call)
    }

    fn ssm_step(&self, call: SsmStepCall<'_, CudaBuffer>) -> Result<()> {
        super::decode_step::ssm_step(self, call)
    }

    fn selective_state_update(&self, call: StepCall<'_, CudaBuffer>) -> Result<()> {
        let StepCall {
            p,
            inputs,
            state,
            out,
        } = call;
        selective_state_update(self, p, inputs, state, out)
    }

    fn elementwise(&self, call: ElementwiseCall<'_, CudaBuffer>) -> Result<()> {
        let ElementwiseCall {
            p,
            op: _,
            a,
            b,
            out,
        } = call;
        elementwise(self, p, a, b, out)
    }

    fn argmax(&self, call: ArgmaxCall<'_, CudaBuffer>) -> Result<()> {
        let ArgmaxCall { p, x, out } = call;
        argmax(self, p, x, out)
    }

    fn copy(&self, call: CopyCall<'_, CudaBuffer>) -> Result<()> {
        let CopyCall { p, src, dst } = call;
        copy(self, p, src, dst)
    }
}
