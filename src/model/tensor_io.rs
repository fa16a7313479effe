//! Checkpoint tensors to device buffers: the element types a checkpoint may hold, the
//! finiteness check on raw bits, conversion to f32 and upload in the storage dtype
//! (straight from the mapped file when the dtype already matches).
//!
//! Q8_0 tensors (GGUF files only) are ggml's `block_q8_0`: per 32 weights an f16 scale
//! `d` and 32 int8 `q`, 34 bytes, `w = d·q`. They are dequantized here where the model
//! keeps a float copy; `linear.rs` uploads them as they are for Q8_0 projections.

use half::{bf16, f16};

use super::weights::Found;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::quant::Q8_BLOCK;
use crate::tensor::{DType, HostSlice};

/// Bytes of one Q8_0 block: the f16 scale and 32 int8 quants.
pub(super) const Q8_BLOCK_BYTES: usize = 2 + Q8_BLOCK;

/// The element type of a checkpoint tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SrcDType {
    F32,
    F16,
    BF16,
    /// ggml's Q8_0 blocks (GGUF); the tensor's last dimension is a multiple of 32.
    Q8_0,
    /// Anything else, by the name the file gives it (refused if the model needs it).
    Other(String),
}

impl SrcDType {
    pub(super) fn from_safetensors(d: safetensors::Dtype) -> Self {
        match d {
            safetensors::Dtype::F32 => SrcDType::F32,
            safetensors::Dtype::F16 => SrcDType::F16,
            safetensors::Dtype::BF16 => SrcDType::BF16,
            other => SrcDType::Other(format!("{other:?}")),
        }
    }

    /// Bytes per element of the plain float types.
    fn elem_bytes(&self) -> Option<usize> {
        match self {
            SrcDType::F32 => Some(4),
            SrcDType::F16 | SrcDType::BF16 => Some(2),
            _ => None,
        }
    }
}

/// The storage dtype that holds a tensor of `d` without loss (Q8_0's `d·q` is exact in
/// f32); `None` for a dtype that cannot be loaded.
pub(super) fn elem_dtype(d: &SrcDType) -> Option<DType> {
    match d {
        SrcDType::F32 | SrcDType::Q8_0 => Some(DType::F32),
        SrcDType::F16 => Some(DType::F16),
        SrcDType::BF16 => Some(DType::BF16),
        SrcDType::Other(_) => None,
    }
}

/// Fails with [`Error::NonFiniteWeight`] at the first NaN or infinity of a tensor.
/// Works on the bit patterns (exponent all ones), so 16-bit tensors need no conversion;
/// a Q8_0 tensor is finite when its scales are (the quants are integers).
pub(super) fn check_finite(file: &str, tensor: &str, dt: &SrcDType, bytes: &[u8]) -> Result<()> {
    let f16_bad = |c: &[u8]| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00;
    // (bytes per element or block, whether its leading bits are a NaN or infinity)
    type Bad<'f> = &'f dyn Fn(&[u8]) -> bool;
    let (step, bad): (usize, Bad<'_>) = match dt {
        SrcDType::F32 => (4, &|c: &[u8]| {
            u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7f80_0000 == 0x7f80_0000
        }),
        SrcDType::F16 | SrcDType::Q8_0 => (
            if *dt == SrcDType::Q8_0 {
                Q8_BLOCK_BYTES
            } else {
                2
            },
            &f16_bad,
        ),
        SrcDType::BF16 => (2, &|c: &[u8]| {
            u16::from_le_bytes([c[0], c[1]]) & 0x7f80 == 0x7f80
        }),
        SrcDType::Other(_) => return Ok(()),
    };
    if let Some(i) = bytes.chunks_exact(step).position(bad) {
        let c = &bytes[i * step..];
        let (what, value) = match dt {
            SrcDType::F32 => ("element", f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            SrcDType::F16 => ("element", f16::from_le_bytes([c[0], c[1]]).to_f32()),
            SrcDType::Q8_0 => (
                "the scale of Q8_0 block",
                f16::from_le_bytes([c[0], c[1]]).to_f32(),
            ),
            _ => ("element", bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        };
        return Err(Error::NonFiniteWeight {
            file: file.into(),
            tensor: tensor.into(),
            why: format!("{what} {i} is {value}"),
        });
    }
    Ok(())
}

/// Elements `[start, start + len)` of a tensor converted to f32. The range lies inside
/// the tensor (its shape was checked against the config).
pub(super) fn to_f32(t: &Found<'_>, start: usize, len: usize) -> Vec<f32> {
    if t.dtype == SrcDType::Q8_0 {
        let first = start / Q8_BLOCK;
        let blocks = (start + len).div_ceil(Q8_BLOCK) - first;
        let bytes = &t.bytes[first * Q8_BLOCK_BYTES..(first + blocks) * Q8_BLOCK_BYTES];
        let skip = start - first * Q8_BLOCK;
        return dequantize_q8(bytes)
            .into_iter()
            .skip(skip)
            .take(len)
            .collect();
    }
    let es = t.dtype.elem_bytes().unwrap_or(4);
    let bytes = &t.bytes[start * es..(start + len) * es];
    match t.dtype {
        SrcDType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        SrcDType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => bytemuck::pod_collect_to_vec(bytes),
    }
}

/// `d·q` of every weight of whole Q8_0 blocks.
fn dequantize_q8(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / Q8_BLOCK_BYTES * Q8_BLOCK);
    for b in bytes.chunks_exact(Q8_BLOCK_BYTES) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        out.extend(b[2..].iter().map(|&q| d * (q as i8) as f32));
    }
    out
}

/// The error for a tensor whose dtype cannot be loaded.
pub(super) fn dtype_error(t: &Found<'_>) -> Error {
    Error::TensorDType {
        file: t.file.clone(),
        tensor: t.name.clone(),
        got: match &t.dtype {
            SrcDType::Other(name) => name.clone(),
            d => format!("{d:?}"),
        },
        expected: t.accepts,
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
    let same = match (&t.dtype, dtype) {
        (SrcDType::F32, DType::F32) | (SrcDType::F16, DType::F16) => true,
        (SrcDType::BF16, DType::BF16) => true,
        (SrcDType::Other(_), _) => return Err(dtype_error(t)),
        _ => false,
    };
    if same {
        let es = t.dtype.elem_bytes().unwrap_or(4);
        let bytes = &t.bytes[start * es..(start + len) * es];
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
            check_range(t, start, &f, h.iter().map(|v| v.is_infinite()), dtype)?;
            be.upload(HostSlice::F16(&h), shape)
        }
        DType::BF16 => {
            let h: Vec<bf16> = f.iter().map(|&x| bf16::from_f32(x)).collect();
            check_range(t, start, &f, h.iter().map(|v| v.is_infinite()), dtype)?;
            be.upload(HostSlice::BF16(&h), shape)
        }
        _ => be.upload(HostSlice::F32(&f), shape),
    }
}

/// Refuses a narrowing that turned a finite weight into an infinity (an f32 above
/// f16's 65504, say) with [`Error::WeightValue`] naming the element: the model would
/// otherwise run on a weight that is not the checkpoint's. `inf` says, per element of
/// `f` (elements `start..` of `t`), whether its narrowed value is infinite.
fn check_range(
    t: &Found<'_>,
    start: usize,
    f: &[f32],
    inf: impl Iterator<Item = bool>,
    dtype: DType,
) -> Result<()> {
    let Some(i) = f.iter().zip(inf).position(|(x, inf)| inf && x.is_finite()) else {
        return Ok(());
    };
    Err(Error::WeightValue {
        file: t.file.clone(),
        tensor: t.name.clone(),
        why: format!(
            "element {} is {}, beyond the range of {}, the dtype it is loaded as \
             (load the weights as {})",
            start + i,
            f[i],
            dtype.name(),
            if dtype == DType::F16 {
                "f32 or bf16"
            } else {
                "f32"
            }
        ),
    })
}

/// `A` of elements `[start, start + len)` of an `A_log` entry: `−exp(A_log)`, or the
/// values themselves where the file stores A (GGUF's `ssm_a`, see [`Found::holds_a`]),
/// which saves a log/exp round trip. Refused unless `allow_non_finite`: an A that is not
/// finite ([`Error::NonFiniteWeight`]); a stored A above zero ([`Error::WeightValue`]),
/// which no `−exp` can give. `unit` names an element in messages ("element", "head").
pub(super) fn a_values(
    t: &Found<'_>,
    start: usize,
    len: usize,
    unit: &str,
    allow_non_finite: bool,
) -> Result<Vec<f32>> {
    let raw = to_f32(t, start, len);
    let a: Vec<f32> = if t.holds_a {
        raw.clone()
    } else {
        raw.iter().map(|&x| -x.exp()).collect()
    };
    if allow_non_finite {
        return Ok(a);
    }
    if let Some(i) = a.iter().position(|x| !x.is_finite()) {
        let why = if t.holds_a {
            format!("A is {} at {unit} {i}", a[i])
        } else {
            format!(
                "A = -exp(A_log) overflows f32 at {unit} {i} (A_log = {})",
                raw[i]
            )
        };
        return Err(Error::NonFiniteWeight {
            file: t.file.clone(),
            tensor: t.name.clone(),
            why,
        });
    }
    if let Some(i) = a.iter().position(|&x| x > 0.0) {
        return Err(Error::WeightValue {
            file: t.file.clone(),
            tensor: t.name.clone(),
            why: format!(
                "A = {} at {unit} {i} is positive (A = -exp(A_log) is never above 0; \
                 the state would grow without bound)",
                a[i]
            ),
        });
    }
    Ok(a)
}
