//! The CPU backend's buffer: typed host data plus a logical shape, and the borrowed
//! float views (`Floats`) the kernels read weights through.

use std::borrow::Cow;

use half::{bf16, f16};

use crate::backend::DeviceBuffer;
use crate::error::{Error, Result};
use crate::tensor::{DType, HostVec};

/// A host buffer: typed data plus a logical shape.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuBuffer {
    pub(super) shape: Vec<usize>,
    pub(super) data: HostVec,
}

impl CpuBuffer {
    /// The data, typed.
    pub fn data(&self) -> &HostVec {
        &self.data
    }

    pub(super) fn f32(&self) -> Result<&[f32]> {
        match &self.data {
            HostVec::F32(v) => Ok(v),
            _ => Err(self.internal_dtype("f32")),
        }
    }

    pub(super) fn f32_mut(&mut self) -> Result<&mut [f32]> {
        match &mut self.data {
            HostVec::F32(v) => Ok(v),
            other => Err(Error::DType {
                op: "cpu",
                tensor: "buffer",
                got: other.dtype(),
                expected: "f32",
            }),
        }
    }

    pub(super) fn u32(&self) -> Result<&[u32]> {
        match &self.data {
            HostVec::U32(v) => Ok(v),
            _ => Err(self.internal_dtype("u32")),
        }
    }

    pub(super) fn u32_mut(&mut self) -> Result<&mut [u32]> {
        match &mut self.data {
            HostVec::U32(v) => Ok(v),
            other => Err(Error::DType {
                op: "cpu",
                tensor: "buffer",
                got: other.dtype(),
                expected: "u32",
            }),
        }
    }

    /// A float buffer (weights) seen through a converting accessor.
    pub(super) fn floats(&self) -> Result<Floats<'_>> {
        match &self.data {
            HostVec::F32(v) => Ok(Floats::F32(v)),
            HostVec::F16(v) => Ok(Floats::F16(v)),
            HostVec::BF16(v) => Ok(Floats::BF16(v)),
            HostVec::U32(_) => Err(self.internal_dtype("a float type")),
        }
    }

    /// A float buffer as f32: borrowed when it is f32, widened into a copy when it is
    /// f16/bf16 (exact: every half value is an f32). The scan's half-I/O path reads its
    /// sequence tensors through this, so the f32 path pays nothing.
    pub(super) fn widened(&self) -> Result<Cow<'_, [f32]>> {
        Ok(match self.floats()? {
            Floats::F32(v) => Cow::Borrowed(v),
            f => {
                let mut v = vec![0f32; f.len()];
                f.read_into(0, &mut v);
                Cow::Owned(v)
            }
        })
    }

    /// Stores f32 values into a float buffer of the same length, rounded to nearest-even
    /// when the buffer is f16/bf16 (`half`'s conversions, which round that way).
    pub(super) fn store_f32(&mut self, src: &[f32]) -> Result<()> {
        use half::slice::HalfFloatSliceExt;
        match &mut self.data {
            HostVec::F32(v) => v.copy_from_slice(src),
            HostVec::F16(v) => v.convert_from_f32_slice(src),
            HostVec::BF16(v) => v.convert_from_f32_slice(src),
            HostVec::U32(_) => return Err(self.internal_dtype("a float type")),
        }
        Ok(())
    }

    // Unreachable after `ops` validation; an error rather than a panic all the same.
    pub(super) fn internal_dtype(&self, expected: &'static str) -> Error {
        Error::DType {
            op: "cpu",
            tensor: "buffer",
            got: self.data.dtype(),
            expected,
        }
    }
}

impl DeviceBuffer for CpuBuffer {
    fn dtype(&self) -> DType {
        self.data.dtype()
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn reshape(&mut self, shape: &[usize]) -> Result<()> {
        self.shape = crate::tensor::reshaped(&self.shape, shape)?;
        Ok(())
    }
}

/// Weight data in any float dtype, read as f32.
#[derive(Clone, Copy)]
pub(crate) enum Floats<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

impl Floats<'_> {
    /// Converts `src[start..start + dst.len()]` to f32 into `dst`. The half-precision
    /// paths use `half`'s slice conversion, which picks F16C/SIMD at run time.
    #[inline]
    pub(crate) fn read_into(&self, start: usize, dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        let end = start + dst.len();
        match self {
            Floats::F32(v) => dst.copy_from_slice(&v[start..end]),
            Floats::F16(v) => v[start..end].convert_to_f32_slice(dst),
            Floats::BF16(v) => v[start..end].convert_to_f32_slice(dst),
        }
    }

    /// Bytes per weight.
    pub(crate) fn elem_bytes(&self) -> usize {
        match self {
            Floats::F32(_) => 4,
            Floats::F16(_) | Floats::BF16(_) => 2,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Floats::F32(v) => v.len(),
            Floats::F16(v) => v.len(),
            Floats::BF16(v) => v.len(),
        }
    }
}
