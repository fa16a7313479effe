//! Copy of 4-byte elements between buffers at element offsets. Mirrors
//! `shaders/copy.wgsl` and `kernels/copy.cu`.

use super::CpuBuffer;
use crate::backend::DeviceBuffer;
use crate::error::Result;
use crate::params::CopyParams;
use crate::tensor::DType;

/// `dst[dst_offset..][..len] = src[src_offset..][..len]` (ranges validated by `ops`).
pub(crate) fn copy(p: &CopyParams, src: &CpuBuffer, dst: &mut CpuBuffer) -> Result<()> {
    let (s, d, n) = (p.src_offset as usize, p.dst_offset as usize, p.len as usize);
    match src.dtype() {
        DType::U32 => dst.u32_mut()?[d..d + n].copy_from_slice(&src.u32()?[s..s + n]),
        _ => dst.f32_mut()?[d..d + n].copy_from_slice(&src.f32()?[s..s + n]),
    }
    Ok(())
}
