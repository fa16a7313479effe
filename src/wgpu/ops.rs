//! `impl Backend for WgpuBackend`: each op binds its buffers (the order of the shader's
//! `@binding`s, see `kernels.rs`) and records its dispatches.

use super::kernels::{
    DECODE_MAX_M, DECODE_ROWS, Kernel, MATMUL_TILE, SCAN_CHUNK, SCAN_SEGMENT_STATE_CHUNKS, WDtype,
};
use super::{BACKEND, Bind, WgpuBackend, WgpuBuffer, WindowPair, device_err, lock, wdtype};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::call::*;
use crate::params::*;

/// `SSD_MAX_N` of shaders/ssd_scan.wgsl: the states its private array holds.
const SSD_MAX_N: u32 = 256;
/// `SSD_Q` / `SSD_PT` of shaders/ssd_scan.wgsl: the chunked form's steps per chunk and
/// channels per workgroup.
const SSD_Q: u32 = 32;
const SSD_PT: u32 = 8;
use crate::tensor::{DType, HostSlice, HostVec, buffer_numel};

impl Backend for WgpuBackend {
    type Buffer = WgpuBuffer;

    fn name(&self) -> &'static str {
        BACKEND
    }

    /// f32, f16 and bf16 weights are all accepted and all stored as uploaded: f16/bf16
    /// stay 16-bit in device memory (decoded in the shaders), on every adapter.
    fn supports_weight_dtype(&self, dtype: DType) -> bool {
        dtype.is_float()
    }

    fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<WgpuBuffer> {
        buffer_numel("zeros", "buffer", dtype, shape)?;
        self.new_buffer(dtype, shape, None)
    }

    fn upload(&self, data: HostSlice<'_>, shape: &[usize]) -> Result<WgpuBuffer> {
        let (n, _) = buffer_numel("upload", "data", data.dtype(), shape)?;
        if data.len() != n {
            return Err(Error::UploadLen {
                len: data.len(),
                shape: shape.to_vec(),
                expected: n,
            });
        }
        self.new_buffer(data.dtype(), shape, Some(data.as_bytes()))
    }

    fn write(&self, data: HostSlice<'_>, buf: &mut WgpuBuffer) -> Result<()> {
        crate::ops::check_write(&data, buf)?;
        self.replays.break_capture();
        if data.is_empty() {
            return Ok(());
        }
        // A queue write lands at the start of the next submission, so it would overtake
        // the work recorded before it: submit that first, under the encoder lock so that
        // no other thread records in between. Odd f16/bf16 counts are padded to the
        // 4-byte multiple every buffer is allocated with.
        let bytes = data.as_bytes();
        let mut pending = lock(&self.encoder);
        if let Some(enc) = pending.take() {
            self.queue.submit([enc.finish()]);
        }
        if bytes.len().is_multiple_of(4) {
            self.queue.write_buffer(&buf.buf, 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().div_ceil(4) * 4, 0);
            self.queue.write_buffer(&buf.buf, 0, &padded);
        }
        drop(pending);
        self.check()
    }

    /// Blocks until the copy is mapped. In the browser a blocking wait is impossible
    /// (the map callback only runs once control returns to the event loop): there this
    /// is an [`Error::Device`] pointing to `WgpuBackend::download_async`.
    fn download(&self, buf: &WgpuBuffer) -> Result<HostVec> {
        if cfg!(target_arch = "wasm32") {
            return Err(device_err(
                "a blocking download cannot wait for the GPU in the browser; \
                 use WgpuBackend::download_async (or the async model calls in \
                 mamba_gpu::model::browser)",
            ));
        }
        let staging = self.stage_download(buf)?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| device_err(format!("poll: {e}")))?;
        rx.recv()
            .map_err(|_| device_err("map callback dropped"))?
            .map_err(|e| device_err(format!("map_async: {e}")))?;
        self.read_staged(&staging, buf)
    }

    fn flush(&self) -> Result<()> {
        self.replays.break_capture();
        self.submit(None)
    }

    fn replay(&self, call: ReplayCall<'_, Self>) -> Result<()> {
        let ReplayCall { key, record, .. } = call;
        self.replay_dispatches(key, record)
    }

    fn forget_replays(&self, id: u64) {
        self.forget(id)
    }

    fn embedding(&self, call: EmbeddingCall<'_, WgpuBuffer>) -> Result<()> {
        let EmbeddingCall { p, ids, table, out } = call;
        let kernel = Kernel::Embedding { w: wdtype(table) };
        let groups = self.grid((p.count * p.dim).div_ceil(64))?;
        for WindowPair { params, a, b } in self.window_pairs(table, p.rows, p.dim)? {
            self.dispatch(
                kernel,
                &[
                    Bind::Uniform(bytemuck::bytes_of(p)),
                    self.whole("ids", ids)?,
                    Bind::Range(&table.buf, a.0, a.1),
                    self.whole("out", out)?,
                    Bind::Uniform(bytemuck::bytes_of(&params)),
                    Bind::Range(&table.buf, b.0, b.1),
                ],
                groups,
            )?;
        }
        Ok(())
    }

    fn matmul(&self, call: MatmulCall<'_, WgpuBuffer>) -> Result<()> {
        let MatmulCall { p, x, w, bias, out } = call;
        let (wd, bd) = (wdtype(w), bias.map_or(WDtype::F32, wdtype));
        let decode = p.m <= DECODE_MAX_M;
        let kernel = if decode {
            Kernel::MatmulDecode { w: wd, bias: bd }
        } else {
            Kernel::Matmul { w: wd, bias: bd }
        };
        for WindowPair { params, a, b } in self.window_pairs(w, p.n, p.k)? {
            let groups = if decode {
                self.grid(params.rows.div_ceil(DECODE_ROWS))?
            } else {
                (params.rows.div_ceil(MATMUL_TILE), p.m.div_ceil(MATMUL_TILE))
            };
            self.dispatch(
                kernel,
                &[
                    Bind::Uniform(bytemuck::bytes_of(p)),
                    self.whole("x", x)?,
                    Bind::Range(&w.buf, a.0, a.1),
                    self.opt_read("bias", bias)?,
                    self.whole("out", out)?,
                    Bind::Uniform(bytemuck::bytes_of(&params)),
                    Bind::Range(&w.buf, b.0, b.1),
                ],
                groups,
            )?;
        }
        Ok(())
    }

    fn rms_norm(&self, call: NormCall<'_, WgpuBuffer>) -> Result<()> {
        let NormCall {
            p,
            x,
            weight,
            residual,
            out,
        } = call;
        let res = match residual {
            Some(r) => self.whole("residual", r)?,
            None => Bind::Whole(&self.dummy_rw),
        };
        self.dispatch(
            Kernel::RmsNorm { w: wdtype(weight) },
            &[
                Bind::Uniform(bytemuck::bytes_of(p)),
                self.whole("x", x)?,
                self.whole("weight", weight)?,
                res,
                self.whole("out", out)?,
            ],
            self.grid(p.rows)?,
        )
    }

    fn causal_conv1d(&self, call: ConvCall<'_, WgpuBuffer>) -> Result<()> {
        let ConvCall {
            p,
            x,
            weight,
            bias,
            state,
            out,
        } = call;
        let keep_state = state.is_some() && p.state_mode != STATE_NONE && p.width > 1;
        let st = match &state {
            Some(s) => self.whole("conv_state", s)?,
            None => Bind::Whole(&self.dummy_rw),
        };
        let binds = [
            Bind::Uniform(bytemuck::bytes_of(p)),
            self.whole("x", x)?,
            self.whole("weight", weight)?,
            self.opt_read("bias", bias)?,
            st,
            self.whole("out", out)?,
        ];
        let groups = self.grid((p.batch * p.dim * p.len).div_ceil(64))?;
        self.dispatch(Kernel::CausalConv1d, &binds, groups)?;
        if keep_state {
            // After the sequence pass: it reads the old state this pass overwrites.
            let groups = self.grid((p.batch * p.dim).div_ceil(64))?;
            self.dispatch(Kernel::CausalConv1dState, &binds, groups)?;
        }
        Ok(())
    }

    fn causal_conv1d_update(&self, call: ConvUpdateCall<'_, WgpuBuffer>) -> Result<()> {
        let ConvUpdateCall {
            p,
            x,
            weight,
            bias,
            state,
            out,
        } = call;
        self.dispatch(
            Kernel::CausalConv1dUpdate,
            &[
                Bind::Uniform(bytemuck::bytes_of(p)),
                self.whole("x", x)?,
                self.whole("weight", weight)?,
                self.opt_read("bias", bias)?,
                self.whole("conv_state", state)?,
                self.whole("out", out)?,
            ],
            self.grid((p.batch * p.dim).div_ceil(64))?,
        )
    }

    fn selective_scan(&self, call: ScanCall<'_, WgpuBuffer>) -> Result<()> {
        let ScanCall {
            p,
            inputs: i,
            mut state,
            out,
        } = call;
        // The shaders read and write f32 sequence tensors. `ops` made u, delta, z, B, C
        // and out share one dtype, so checking `out` covers them all; half I/O is a typed
        // refusal here rather than f32 shaders reading 16-bit data.
        if out.dtype != DType::F32 {
            return Err(Error::DType {
                op: "selective_scan",
                tensor: "out",
                got: out.dtype,
                expected: "f32 on the wgpu backend (f16/bf16 scan I/O runs on cpu and cuda)",
            });
        }
        let size = self.scan_size(p.dstate)?;
        let groups = (p.dim.div_ceil(size.channels), p.batch);
        let max = self.limits.max_compute_workgroups_per_dimension;
        if groups.0 > max || groups.1 > max {
            return Err(Error::limit(
                "wgpu",
                "selective_scan",
                "u",
                format!("grid {groups:?} exceeds max_compute_workgroups_per_dimension {max}"),
            ));
        }
        let kernel = if self.subgroup_scan {
            Kernel::SelectiveScanSubgroup(size)
        } else {
            Kernel::SelectiveScan(size)
        };
        // Long sequences run as several dispatches of at most `seg` steps, the state
        // carried between them through the (batch, dim, N) state buffer (a scratch one
        // when the caller keeps none). Each dispatch binds the sequence tensors from its
        // first step on (`seg` is a multiple of 256 steps, so the byte offsets are
        // multiples of 1024, above any storage offset alignment). This bounds the loop
        // trip count per invocation, which some drivers limit (llvmpipe stops a shader
        // after about 2^16 loop iterations), at the cost of one tiny state round trip
        // per 2^19 / N steps.
        let seg = (SCAN_SEGMENT_STATE_CHUNKS / p.dstate).max(1) * SCAN_CHUNK;
        let mut scratch = None;
        let st_buf: Option<&WgpuBuffer> = match state.buffer() {
            Some(s) => Some(&*s),
            None if p.len > seg => Some(&*scratch.insert(self.zeros(
                DType::F32,
                &[p.batch as usize, p.dim as usize, p.dstate as usize],
            )?)),
            None => None,
        };
        let mut t0 = 0u32;
        while t0 < p.len {
            let len = seg.min(p.len - t0);
            let mut q = *p;
            q.len = len;
            if t0 > 0 {
                q.state_mode = STATE_CARRY;
            } else if p.state_mode == STATE_NONE && st_buf.is_some() {
                q.state_mode = STATE_FINAL;
            }
            let st = match st_buf {
                Some(s) => self.whole("state", s)?,
                None => Bind::Whole(&self.dummy_rw),
            };
            let z = match i.z {
                Some(z) => self.bind_from_step("z", z, t0, p.x_st)?,
                None => Bind::Whole(&self.dummy_read),
            };
            self.dispatch(
                kernel,
                &[
                    Bind::Uniform(bytemuck::bytes_of(&q)),
                    self.bind_from_step("u", i.u, t0, p.x_st)?,
                    self.bind_from_step("delta", i.delta, t0, p.x_st)?,
                    self.whole("A", i.a)?,
                    self.bind_from_step("B", i.b, t0, p.b_st)?,
                    self.bind_from_step("C", i.c, t0, p.c_st)?,
                    self.opt_read("D", i.d)?,
                    z,
                    self.opt_read("delta_bias", i.delta_bias)?,
                    st,
                    self.bind_from_step("out", out, t0, p.x_st)?,
                ],
                groups,
            )?;
            t0 += len;
        }
        Ok(())
    }

    fn selective_state_update(&self, call: StepCall<'_, WgpuBuffer>) -> Result<()> {
        let StepCall {
            p,
            inputs: i,
            state,
            out,
        } = call;
        self.dispatch(
            Kernel::SelectiveStateUpdate,
            &[
                Bind::Uniform(bytemuck::bytes_of(p)),
                self.whole("x", i.x)?,
                self.whole("dt", i.dt)?,
                self.whole("A", i.a)?,
                self.whole("B", i.b)?,
                self.whole("C", i.c)?,
                self.opt_read("D", i.d)?,
                self.opt_read("z", i.z)?,
                self.opt_read("dt_bias", i.dt_bias)?,
                self.whole("state", state)?,
                self.whole("out", out)?,
            ],
            self.grid((p.batch * p.dim).div_ceil(64))?,
        )
    }

    fn has_ssd_scan(&self) -> bool {
        true
    }

    fn has_matmul_q8(&self) -> bool {
        true
    }

    fn matmul_q8(&self, call: MatmulQ8Call<'_, WgpuBuffer>) -> Result<()> {
        let MatmulQ8Call {
            p,
            x,
            q,
            d,
            bias,
            out,
        } = call;
        let bias_dt = bias.map_or(WDtype::F32, wdtype);
        let kernel = match self.q8_int8.load(std::sync::atomic::Ordering::Relaxed) {
            true => Kernel::MatmulQ8Int8 { bias: bias_dt },
            false => Kernel::MatmulQ8 { bias: bias_dt },
        };
        self.dispatch(
            kernel,
            &[
                Bind::Uniform(bytemuck::bytes_of(p)),
                self.whole("x", x)?,
                self.whole("q", q)?,
                self.whole("d", d)?,
                self.opt_read("bias", bias)?,
                self.whole("out", out)?,
            ],
            self.grid(p.n.div_ceil(8))?,
        )
    }

    fn fused_step_max_weight_bytes(&self) -> Option<u64> {
        Some(self.max_binding)
    }

    fn mixer_in(&self, call: MixerInCall<'_, WgpuBuffer>) -> Result<()> {
        self.mixer_in_launch(call)
    }

    fn x_proj(&self, call: XProjCall<'_, WgpuBuffer>) -> Result<()> {
        self.x_proj_launch(call)
    }

    fn ssm_step(&self, call: SsmStepCall<'_, WgpuBuffer>) -> Result<()> {
        self.ssm_step_launch(call)
    }

    fn ssd_scan(&self, call: SsdCall<'_, WgpuBuffer>) -> Result<()> {
        let SsdCall {
            p,
            inputs: i,
            mut state,
            out,
        } = call;
        if p.dstate > SSD_MAX_N {
            return Err(Error::limit(
                "wgpu",
                "ssd_scan",
                "B",
                format!("N = {} states exceed the shader's {SSD_MAX_N}", p.dstate),
            ));
        }
        // Prefills take the chunked form (one workgroup per head and channel tile); decode
        // and short prompts the sequential one (one invocation per channel).
        let chunked = p.len >= SSD_Q && !self.ssd_sequential;
        // At most ~2^15 loop iterations per invocation and dispatch (llvmpipe stops a
        // shader after about 2^16): longer sequences run as several dispatches over
        // t_begin..t_end, the state carried through the state buffer (a scratch one
        // when the caller keeps none). A chunk costs an invocation ~6N + 2Q iterations
        // (its C·Bᵀ entries, an output, its share of the state update).
        let (kernel, seg, groups) = if chunked {
            let chunks = (32768 / (6 * p.dstate + 2 * SSD_Q + 16)).max(1);
            let tiles = p.batch * p.heads * p.head_dim.div_ceil(SSD_PT);
            (Kernel::SsdScanChunked, chunks * SSD_Q, tiles)
        } else {
            let e = p.batch * p.heads * p.head_dim;
            (
                Kernel::SsdScan,
                (32768 / (p.dstate + 2)).max(1),
                e.div_ceil(64),
            )
        };
        let mut scratch = None;
        let st_buf: Option<&WgpuBuffer> = match state.buffer() {
            Some(s) => Some(&*s),
            None if p.len > seg => Some(&*scratch.insert(self.zeros(
                DType::F32,
                &[
                    p.batch as usize,
                    (p.heads * p.head_dim) as usize,
                    p.dstate as usize,
                ],
            )?)),
            None => None,
        };
        let mut t0 = 0;
        while t0 < p.len {
            let mut q = *p;
            q.t_begin = t0;
            q.t_end = (t0 + seg).min(p.len);
            if t0 > 0 {
                q.state_mode = STATE_CARRY;
            } else if p.state_mode == STATE_NONE && st_buf.is_some() {
                q.state_mode = STATE_FINAL;
            }
            let st = match st_buf {
                Some(s) => self.whole("state", s)?,
                None => Bind::Whole(&self.dummy_rw),
            };
            self.dispatch(
                kernel,
                &[
                    Bind::Uniform(bytemuck::bytes_of(&q)),
                    self.whole("x", i.x)?,
                    self.whole("dt", i.dt)?,
                    self.whole("A", i.a)?,
                    self.whole("B", i.b)?,
                    self.whole("C", i.c)?,
                    self.opt_read("D", i.d)?,
                    self.opt_read("z", i.z)?,
                    self.opt_read("dt_bias", i.dt_bias)?,
                    st,
                    self.whole("out", out)?,
                ],
                self.grid(groups)?,
            )?;
            t0 = q.t_end;
        }
        Ok(())
    }

    fn elementwise(&self, call: ElementwiseCall<'_, WgpuBuffer>) -> Result<()> {
        let ElementwiseCall {
            p,
            op: _,
            a,
            b,
            out,
        } = call;
        self.dispatch(
            Kernel::Elementwise,
            &[
                Bind::Uniform(bytemuck::bytes_of(p)),
                self.whole("a", a)?,
                self.opt_read("b", b)?,
                self.whole("out", out)?,
            ],
            self.grid(p.len.div_ceil(256))?,
        )
    }

    fn argmax(&self, call: ArgmaxCall<'_, WgpuBuffer>) -> Result<()> {
        let ArgmaxCall { p, x, out } = call;
        self.dispatch(
            Kernel::Argmax,
            &[
                Bind::Uniform(bytemuck::bytes_of(p)),
                self.whole("x", x)?,
                self.whole("out", out)?,
            ],
            self.grid(p.rows)?,
        )
    }

    fn copy(&self, call: CopyCall<'_, WgpuBuffer>) -> Result<()> {
        let CopyCall { p, src, dst } = call;
        self.dispatch(
            Kernel::Copy,
            &[
                Bind::Uniform(bytemuck::bytes_of(p)),
                self.whole("src", src)?,
                self.whole("dst", dst)?,
            ],
            self.grid(p.len.div_ceil(256))?,
        )
    }
}
