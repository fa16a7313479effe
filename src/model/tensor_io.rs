//! Checkpoint tensors to device buffers: dtype mapping, the finiteness check on raw
//! bits, conversion to f32 and upload in the storage dtype (straight from the mapped
//! file when the dtype already matches).

use half::{bf16, f16};
use safetensors::Dtype;

use super::weights::Found;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::{DType, HostSlice};

pub(super) fn elem_dtype(d: Dtype) -> Option<DType> {
    match d {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// Fails with [`Error::NonFiniteWeight`] at the first NaN or infinity of a tensor.
/// Works on the bit patterns (exponent all ones), so 16-bit tensors need no conversion.
pub(super) fn check_finite(file: &str, tensor: &str, dt: Dtype, bytes: &[u8]) -> Result<()> {
    let (es, bad): (usize, fn(&[u8]) -> bool) = match dt {
        Dtype::F32 => (4, |c| {
            u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7f80_0000 == 0x7f80_0000
        }),
        Dtype::F16 => (2, |c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00),
        Dtype::BF16 => (2, |c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 == 0x7f80),
        _ => return Ok(()),
    };
    if let Some(i) = bytes.chunks_exact(es).position(bad) {
        let c = &bytes[i * es..(i + 1) * es];
        let value = match dt {
            Dtype::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            Dtype::F16 => f16::from_le_bytes([c[0], c[1]]).to_f32(),
            _ => bf16::from_le_bytes([c[0], c[1]]).to_f32(),
        };
        return Err(Error::NonFiniteWeight {
            file: file.into(),
            tensor: tensor.into(),
            why: format!("element {i} is {value}"),
        });
    }
    Ok(())
}

/// Elements `[start, start + len)` of a tensor converted to f32.
pub(super) fn to_f32(t: &Found<'_>, start: usize, len: usize) -> Vec<f32> {
    let es = t.dtype.bitsize() / 8;
    let bytes = &t.bytes[start * es..(start + len) * es];
    match t.dtype {
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => bytemuck::pod_collect_to_vec(bytes),
    }
}

/// Uploads elements `[start, start + len)` of a tensor as `dtype`, shaped `shape`.
/// Data already in the right dtype is uploaded straight from the (mapped) file when
/// aligned; otherwise one tensor at a time is converted.
pub(super) fn upload<B: Backend>(
    be: &B,
    t: &Found<'_>,
    start: usize,
    len: usize,
    shape: &[usize],
    dtype: DType,
) -> Result<B::Buffer> {
    let es = t.dtype.bitsize() / 8;
    let bytes = &t.bytes[start * es..(start + len) * es];
    let src = elem_dtype(t.dtype).ok_or_else(|| Error::TensorDType {
        file: t.file.clone(),
        tensor: t.name.clone(),
        got: format!("{:?}", t.dtype),
    })?;
    if src == dtype {
        return match dtype {
            DType::F32 => match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                Ok(s) => be.upload(HostSlice::F32(s), shape),
                Err(_) => be.upload(HostSlice::F32(&bytemuck::pod_collect_to_vec(bytes)), shape),
            },
            DType::F16 => match bytemuck::try_cast_slice::<u8, f16>(bytes) {
                Ok(s) => be.upload(HostSlice::F16(s), shape),
                Err(_) => be.upload(HostSlice::F16(&bytemuck::pod_collect_to_vec(bytes)), shape),
            },
            _ => match bytemuck::try_cast_slice::<u8, bf16>(bytes) {
                Ok(s) => be.upload(HostSlice::BF16(s), shape),
                Err(_) => be.upload(HostSlice::BF16(&bytemuck::pod_collect_to_vec(bytes)), shape),
            },
        };
    }
    let f = to_f32(t, start, len);
    match dtype {
        DType::F16 => {
            let h: Vec<f16> = f.iter().map(|&x| f16::from_f32(x)).collect();
            be.upload(HostSlice::F16(&h), shape)
        }
        DType::BF16 => {
            let h: Vec<bf16> = f.iter().map(|&x| bf16::from_f32(x)).collect();
            be.upload(HostSlice::BF16(&h), shape)
        }
        _ => be.upload(HostSlice::F32(&f), shape),
    }
}
