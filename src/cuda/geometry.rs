//! The launch geometry of every CUDA kernel: which entry point, grid, block and dynamic
//! shared memory each op launches with, and the limits it refuses.
//!
//! Pure functions of the op's validated params (no driver, no cudarc), so that the two
//! callers cannot drift apart: the real launches in `ops.rs` and `matmul.rs` and the CPU execution
//! model in `emu/`, which runs the very same `kernels/*.cu` with these launches. The
//! constants mirror the `#define`s of the kernels; the execution model checks the ones
//! it can observe (block size against `__launch_bounds__`, static shared memory).

use super::nvrtc::{Float, Kernel};
use crate::error::{Error, Result};
use crate::params::*;
use crate::tensor::DType;

/// One kernel launch: entry point, grid, block, dynamic shared memory in bytes. The
/// entry point is a [`Kernel`]; the execution model's self-tests launch deliberately
/// broken kernels by name (`Launch<&str>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch<K = Kernel> {
    pub kernel: K,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

/// Threads per block of the one-thread-per-element kernels, and of the one-block-per-row
/// kernels (rms_norm's and argmax's `THREADS`).
pub const THREADS: u32 = 256;

/// One thread per element of `n`, blocks of `THREADS`.
pub fn grid1d(kernel: Kernel, n: u32) -> Launch {
    Launch {
        kernel,
        grid: (n.div_ceil(THREADS), 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    }
}

/// One block of `THREADS` per row.
fn per_row(kernel: Kernel, rows: u32) -> Launch {
    Launch {
        kernel,
        grid: (rows, 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    }
}

// ---------------------------------------------------------------------------------------
// Selective scan and state update.

/// Must match NT, ITEMS, CPB and NS in kernels/selective_scan.cu.
pub const SCAN_NT: u32 = 64;
pub const SCAN_ITEMS: u32 = 8;
pub const SCAN_CPB: u32 = 4;
pub const SCAN_NS: u32 = 8;
/// sB + sC (NS x CHUNK f32 each) + the two (a, b) warp-total arrays.
pub const SCAN_STATIC_SMEM: u32 =
    2 * SCAN_NS * (SCAN_NT * SCAN_ITEMS) * 4 + 2 * 2 * SCAN_CPB * (SCAN_NT / 32) * 4;
/// Static + dynamic shared memory a block may use without an opt-in.
pub const SMEM_LIMIT: u32 = 48 * 1024;
/// The largest gridDim.y (and z) of a launch.
pub const GRID_YZ_LIMIT: u32 = 65_535;

/// The scan, with the I/O dtype (the dtype of `out`, which `ops` made u, delta, z, B and
/// C share). Refuses a dstate whose carry does not fit the shared memory and a batch
/// past the grid's y limit, with typed errors.
pub fn selective_scan(p: &ScanParams, io: DType) -> Result<Launch> {
    let smem = (SCAN_CPB * 4)
        .checked_mul(p.dstate)
        .and_then(|carry| carry.checked_add(SCAN_STATIC_SMEM));
    let Some(smem) = smem.filter(|&b| b <= SMEM_LIMIT) else {
        return Err(Error::limit(
            "cuda",
            "selective_scan",
            "A",
            format!(
                "dstate {} is too large for the CUDA kernel's shared memory (at most {})",
                p.dstate,
                (SMEM_LIMIT - SCAN_STATIC_SMEM) / (SCAN_CPB * 4)
            ),
        ));
    };
    if p.batch > GRID_YZ_LIMIT {
        return Err(Error::limit(
            "cuda",
            "selective_scan",
            "u",
            format!("batch {} exceeds the CUDA grid's 65535", p.batch),
        ));
    }
    let kernel = Kernel::SelectiveScan(Float::of("selective_scan", "out", io)?);
    Ok(Launch {
        kernel,
        grid: (p.dim.div_ceil(SCAN_CPB), p.batch, 1),
        block: (SCAN_NT, SCAN_CPB, 1),
        shared_bytes: smem - SCAN_STATIC_SMEM, // the dynamic part: the carry
    })
}

/// `SSD_MAX_N` of kernels/ssd_scan.cu: the states its local array holds.
pub const SSD_MAX_N: u32 = 256;

/// `SSD_Q` / `SSD_PT` / `SSD_THREADS` of kernels/ssd_scan.cu: the chunked form's steps
/// per chunk, channels per block and threads per block.
pub const SSD_Q: u32 = 32;
pub const SSD_PT: u32 = 8;
pub const SSD_THREADS: u32 = 256;

/// Prefills (`len >= SSD_Q`) take the chunked form, one block per (batch, head, tile of
/// SSD_PT channels), unless `sequential`; decode and short prompts the sequential one,
/// one thread per (batch, channel). N is bounded by the kernels' state arrays either way.
pub fn ssd_scan(p: &SsdParams, sequential: bool) -> Result<Launch> {
    if p.dstate > SSD_MAX_N {
        return Err(Error::limit(
            "cuda",
            "ssd_scan",
            "B",
            format!("N = {} states exceed the kernel's {SSD_MAX_N}", p.dstate),
        ));
    }
    if p.len < SSD_Q || sequential {
        return Ok(grid1d(Kernel::SsdScan, p.batch * p.heads * p.head_dim));
    }
    Ok(Launch {
        kernel: Kernel::SsdScanChunked,
        grid: (p.batch * p.heads * p.head_dim.div_ceil(SSD_PT), 1, 1),
        block: (SSD_THREADS, 1, 1),
        shared_bytes: 0,
    })
}

pub fn selective_state_update(p: &StepParams) -> Launch {
    grid1d(Kernel::SelectiveStateUpdate, p.batch * p.dim)
}

// ---------------------------------------------------------------------------------------
// The fused decode step.

/// Must match WARPS in kernels/decode_step.cu: weight rows per block, one warp each.
pub const STEP_WARPS: u32 = 8;

fn step_rows(kernel: Kernel, rows: u32) -> Launch {
    Launch {
        kernel,
        grid: (rows.div_ceil(STEP_WARPS), 1, 1),
        block: (STEP_WARPS * 32, 1, 1),
        shared_bytes: 0,
    }
}

/// One warp per row of `[x; z]` (2·E rows).
pub fn mixer_in(p: &MixerInParams, w: DType) -> Result<Launch> {
    let f = Float::of("mixer_in", "w_x", w)?;
    Ok(step_rows(Kernel::MixerIn(f), 2 * p.d_inner))
}

/// One warp per row of `[w_dt; w_b; w_c]` (R + 2N rows).
pub fn x_proj(p: &StepProjParams, w: DType) -> Result<Launch> {
    let f = Float::of("x_proj", "w_dt", w)?;
    Ok(step_rows(Kernel::XProj(f), p.dt_rank + 2 * p.dstate))
}

/// One thread per (sequence, channel).
pub fn ssm_step(p: &StepProjParams, w: DType) -> Result<Launch> {
    let f = Float::of("ssm_step", "dt_proj", w)?;
    Ok(grid1d(Kernel::SsmStep(f), p.batch * p.d_inner))
}

// ---------------------------------------------------------------------------------------
// Causal conv1d.

pub fn causal_conv1d(p: &ConvParams) -> Launch {
    grid1d(Kernel::CausalConv1d, p.batch * p.dim * p.len)
}

/// The state shift after the sequence conv (only when a state is kept).
pub fn causal_conv1d_state(p: &ConvParams) -> Launch {
    grid1d(Kernel::CausalConv1dState, p.batch * p.dim)
}

pub fn causal_conv1d_update(p: &ConvParams) -> Launch {
    grid1d(Kernel::CausalConv1dUpdate, p.batch * p.dim)
}

// ---------------------------------------------------------------------------------------
// Matmul.

/// Rows of x up to which matmul uses its own kernel (one pass over the weights per 8
/// rows) instead of cuBLAS: decode-sized products, where launches and weight bytes
/// dominate.
pub const SMALL_M: u32 = 8;
/// Must match MAXM and WARPS in kernels/matmul.cu.
pub const MM_MAXM: u32 = 8;
pub const MM_WARPS: u32 = 8;

/// The `bias_kind` argument of the matmul kernels: the bias dtype.
pub fn bias_kind(bias: Option<DType>) -> u32 {
    match bias {
        Some(DType::F16) => 1,
        Some(DType::BF16) => 2,
        _ => 0,
    }
}

/// Does matmul go through cuBLAS (when it is there)?
pub fn matmul_uses_blas(p: &MatmulParams, has_blas: bool) -> bool {
    has_blas && p.m > SMALL_M
}

/// The small-m kernel (the whole matmul when cuBLAS is missing): one warp per column,
/// blockIdx.y tiling m by MAXM.
pub fn matmul_rows(p: &MatmulParams, w: DType) -> Result<Launch> {
    let m_blocks = p.m.div_ceil(MM_MAXM);
    if m_blocks > GRID_YZ_LIMIT {
        return Err(Error::limit(
            "cuda",
            "matmul",
            "x",
            format!("{} rows need cuBLAS (libcublas not found)", p.m),
        ));
    }
    let kernel = Kernel::MatmulRows(Float::of("matmul", "weight", w)?);
    Ok(Launch {
        kernel,
        grid: (p.n.div_ceil(MM_WARPS), m_blocks, 1),
        block: (MM_WARPS * 32, 1, 1),
        shared_bytes: 0,
    })
}

/// One warp per weight row, blocks of Q8_WARPS rows; blockIdx.y tiles m by Q8_MAXM (the
/// constants of kernels/matmul_q8.cu, equal to MM_WARPS / MM_MAXM). `int8`: the kernel
/// that quantizes the activations (`matmul_q8_int8`, its shared memory static).
pub fn matmul_q8(p: &MatmulParams, int8: bool) -> Result<Launch> {
    let m_blocks = p.m.div_ceil(MM_MAXM);
    if m_blocks > GRID_YZ_LIMIT {
        return Err(Error::limit(
            "cuda",
            "matmul_q8",
            "x",
            format!(
                "{} rows exceed the grid's {} blocks of 8",
                p.m, GRID_YZ_LIMIT
            ),
        ));
    }
    Ok(Launch {
        kernel: if int8 {
            Kernel::MatmulQ8Int8
        } else {
            Kernel::MatmulQ8
        },
        grid: (p.n.div_ceil(MM_WARPS), m_blocks, 1),
        block: (MM_WARPS * 32, 1, 1),
        shared_bytes: 0,
    })
}

/// cuBLAS path: `out` pre-filled with the bias, before an accumulating SGEMM.
pub fn bias_rows(p: &MatmulParams) -> Launch {
    grid1d(Kernel::BiasRows, p.m * p.n)
}

/// cuBLAS path: f16/bf16 weights widened to an f32 scratch of n * k; `None` for f32.
pub fn widen(p: &MatmulParams, w: DType) -> Result<Option<Launch>> {
    Ok(match Float::of("matmul", "weight", w)? {
        Float::F32 => None,
        f => Some(grid1d(
            Kernel::Widen {
                bf16: f == Float::BF16,
            },
            p.n * p.k,
        )),
    })
}

// ---------------------------------------------------------------------------------------
// Norm, embedding, elementwise, argmax, copy.

pub fn rms_norm(p: &NormParams, weight: DType) -> Result<Launch> {
    let kernel = Kernel::RmsNorm(Float::of("rms_norm", "weight", weight)?);
    Ok(per_row(kernel, p.rows))
}

pub fn embedding(p: &EmbeddingParams, table: DType) -> Result<Launch> {
    let kernel = Kernel::Embedding(Float::of("embedding", "table", table)?);
    Ok(grid1d(kernel, p.count * p.dim))
}

pub fn elementwise(p: &ElementwiseParams) -> Launch {
    grid1d(Kernel::Elementwise, p.len)
}

pub fn argmax(p: &ArgmaxParams) -> Launch {
    per_row(Kernel::Argmax, p.rows)
}

pub fn copy(p: &CopyParams) -> Launch {
    grid1d(Kernel::Copy, p.len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn scan_carry_fills_the_shared_memory_exactly_at_the_limit() {
        let mut p = ScanParams::zeroed();
        p.batch = 1;
        p.dim = 5;
        p.dstate = (SMEM_LIMIT - SCAN_STATIC_SMEM) / (SCAN_CPB * 4);
        let l = selective_scan(&p, DType::BF16).unwrap();
        assert_eq!(l.kernel.entry(), "selective_scan_bf16");
        assert_eq!(l.grid, (2, 1, 1));
        assert_eq!(l.shared_bytes + SCAN_STATIC_SMEM, SMEM_LIMIT);
        p.dstate += 1;
        assert!(matches!(
            selective_scan(&p, DType::F32),
            Err(Error::Limit { tensor: "A", .. })
        ));
    }
}
