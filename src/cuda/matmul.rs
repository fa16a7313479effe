//! The matmul launches of the CUDA backend: cuBLAS for large m (f16/bf16 weights widened
//! into an f32 scratch first, the bias broadcast into `out` before an accumulating
//! SGEMM), the crate's own `matmul_rows` kernel for decode-sized products and when
//! libcublas is missing. Split from `ops.rs` (the other launches and `impl Backend`)
//! because the cuBLAS path is the longest; the same `// SAFETY:` rules apply.

use cudarc::cublas::{Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::geometry;
use super::nvrtc::Kernel;
use super::ops::{config, launch_err, push, push_opt};
use super::{CudaBackend, CudaBuffer, dev_err};
use crate::error::Result;
use crate::params::*;

pub(super) fn matmul(
    be: &CudaBackend,
    p: &MatmulParams,
    x: &CudaBuffer,
    w: &CudaBuffer,
    bias: Option<&CudaBuffer>,
    out: &mut CudaBuffer,
) -> Result<()> {
    let kind = geometry::bias_kind(bias.map(|b| b.dtype));
    let blas = match be.cur_blas() {
        Some(blas) if geometry::matmul_uses_blas(p, true) => blas,
        _ => return matmul_rows(be, p, kind, x, w, bias, out),
    };
    // cuBLAS path: out (m, n) row-major = x (m, k) · w (n, k)ᵀ. Column-major, that is
    // outᵀ (n x m) = op(w as k x n, transposed) · (x as k x m).
    let dims = |v: u32| i32::try_from(v).map_err(|_| dev_err("cuBLAS dimension", v));
    let (m, n, k) = (dims(p.m)?, dims(p.n)?, dims(p.k)?);
    if p.has_bias != 0 {
        let b = bias.ok_or_else(|| dev_err("matmul", "has_bias without a bias buffer"))?;
        let f = be.function(Kernel::BiasRows)?;
        let mut a = be.cur().launch_builder(&f);
        a.arg(p);
        a.arg(&kind);
        push(&mut a, b);
        a.arg(out.f32_mut()?);
        // SAFETY: bias_rows(MatmulParams p, unsigned int bias_kind, const void* bias,
        // float* out): same order; bias_kind names the bias dtype the kernel reads
        // (bias (n) validated by ops); one thread per element of the (m, n) f32 out,
        // guarded by m * n < 2^32 (ops checked numel).
        unsafe { a.launch(config(&geometry::bias_rows(p))) }.map_err(launch_err("bias_rows"))?;
    }
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n,
        n: m,
        k,
        alpha: 1.0f32,
        lda: k,
        ldb: k,
        // Accumulate into what is there: the bias written above, or the old out.
        beta: if p.has_bias != 0 || p.accumulate != 0 {
            1.0
        } else {
            0.0
        },
        ldc: n,
    };
    let widened;
    let w32: &CudaSlice<f32> = match geometry::widen(p, w.dtype)? {
        None => w.f32()?,
        Some(l) => {
            // Widen f16/bf16 weights to f32 in a scratch buffer (stream-ordered
            // allocation, freed in stream order after the GEMM), then SGEMM: the
            // same arithmetic as the CPU reference.
            let len = p.n * p.k;
            // SAFETY: the scratch is fully written by `widen_*` below before the GEMM
            // reads it; both run on this stream in order.
            let mut scratch = unsafe { be.cur().alloc::<f32>(len as usize) }
                .map_err(|e| dev_err("cuMemAlloc", e))?;
            let name = l.kernel.entry();
            let f = be.function(l.kernel)?;
            let mut a = be.cur().launch_builder(&f);
            a.arg(&len);
            push(&mut a, w);
            a.arg(&mut scratch);
            // SAFETY: widen_{f16,bf16}(unsigned int len, const F16/BF16* src,
            // float* dst): same order; w holds n * k 16-bit values (validated (n, k))
            // and the scratch n * k f32; one thread per element, guarded by len.
            unsafe { a.launch(config(&l)) }.map_err(launch_err(name))?;
            widened = scratch;
            &widened
        }
    };
    // SAFETY: column-major SGEMM with m' = n, n' = m, k: A = w (k x n, lda = k,
    // transposed), B = x (k x m, ldb = k), C = out (n x m, ldc = n); the buffers hold
    // n * k, m * k and m * n f32 as ops validated. Runs on the backend's stream.
    // cuBLAS runs in whatever context is current on this thread and nothing above
    // necessarily bound ours (another backend's may be current).
    be.ctx
        .bind_to_thread()
        .map_err(|e| dev_err("cuCtxSetCurrent", e))?;
    unsafe { blas.gemm(cfg, w32, x.f32()?, out.f32_mut()?) }
        .map_err(|e| dev_err("cublasSgemm", e))?;
    be.count_launch();
    Ok(())
}

/// The small-m kernel (also the whole matmul when cuBLAS is missing).
fn matmul_rows(
    be: &CudaBackend,
    p: &MatmulParams,
    kind: u32,
    x: &CudaBuffer,
    w: &CudaBuffer,
    bias: Option<&CudaBuffer>,
    out: &mut CudaBuffer,
) -> Result<()> {
    let l = geometry::matmul_rows(p, w.dtype)?;
    let name = l.kernel.entry();
    let f = be.function(l.kernel)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    a.arg(&kind);
    a.arg(x.f32()?);
    push(&mut a, w);
    push_opt(&mut a, bias, &be.dummy);
    a.arg(out.f32_mut()?);
    // SAFETY: matmul_rows_<w dtype>(MatmulParams p, unsigned int bias_kind,
    // const float* x, const W* w, const void* bias, float* out): same order, the kernel
    // chosen by w's dtype and bias_kind naming the bias dtype (read only if has_bias).
    // ops validated x (m, k), w (n, k), bias (n), out (m, n). One warp per column
    // (whole warps exit past n), blockIdx.y tiles m by 8 as the kernel's MAXM; the
    // 16-byte vector loads are used only when k % 8 == 0, which keeps rows aligned.
    unsafe { a.launch(config(&l)) }.map_err(launch_err(name))?;
    Ok(())
}

/// `ops::matmul_q8`: the int8 weights widened in registers, or with
/// `set_q8_activations(Int8)` dotted with x quantized to int8 (kernels/matmul_q8.cu).
pub(super) fn matmul_q8(
    be: &CudaBackend,
    p: &MatmulParams,
    x: &CudaBuffer,
    q: &CudaBuffer,
    d: &CudaBuffer,
    bias: Option<&CudaBuffer>,
    out: &mut CudaBuffer,
) -> Result<()> {
    let int8 = be.q8_int8.load(std::sync::atomic::Ordering::Relaxed);
    let l = geometry::matmul_q8(p, int8)?;
    let kind = geometry::bias_kind(bias.map(|b| b.dtype));
    let f = be.function(l.kernel)?;
    let mut a = be.cur().launch_builder(&f);
    a.arg(p);
    a.arg(&kind);
    a.arg(x.f32()?);
    push(&mut a, q);
    push(&mut a, d);
    push_opt(&mut a, bias, &be.dummy);
    a.arg(out.f32_mut()?);
    // SAFETY: matmul_q8(MatmulParams p, unsigned int bias_kind, const float* x,
    // const unsigned int* q, const F16* d, const void* bias, float* out): same order;
    // ops::matmul_q8 validated x (m, k), q (n, k/4) u32, d (n, k/32) f16, bias (n) of
    // bias_kind (read only if has_bias) and out (m, n), with k a multiple of 32. One
    // warp per row (whole warps exit past n, in matmul_q8_int8 after the block's tiles
    // of x are quantized), blockIdx.y tiles m by 8 as Q8_MAXM; both kernels take the
    // same arguments.
    unsafe { a.launch(config(&l)) }.map_err(launch_err("matmul_q8"))?;
    Ok(())
}
