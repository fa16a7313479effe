//! Element types, shapes and host-side tensors.
//!
//! Device buffers of every backend carry a [`DType`] and a shape, so weights can live in
//! f16/bf16 while activations, state and accumulation stay f32.

use half::{bf16, f16};

/// Element type of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// Token ids and indices.
    U32,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Lower-case name, as error messages spell it: `"f32"`, `"f16"`, `"bf16"`, `"u32"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
        }
    }

    /// Is this a floating-point type (usable for weights)?
    pub fn is_float(self) -> bool {
        !matches!(self, DType::U32)
    }
}

/// Number of elements of a shape, saturating at `usize::MAX` when the product overflows
/// (so that comparing it with a real length fails instead of wrapping to a small count).
/// Use [`checked_numel`] or [`buffer_numel`] where an impossible shape must be refused.
pub fn numel(shape: &[usize]) -> usize {
    checked_numel(shape).unwrap_or(usize::MAX)
}

/// Number of elements of a shape, or `None` when the product overflows `usize`. A
/// shape with a zero dimension has 0 elements, however large the others are.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The largest element count of a buffer: the kernels of every backend index elements
/// with 32-bit integers (the parameter structs are `u32`), so a buffer with more
/// elements could never be used by an op. Refusing it at allocation keeps every buffer
/// that exists indexable.
pub const MAX_BUFFER_ELEMENTS: usize = u32::MAX as usize;

/// The element count and byte size of a new buffer of `dtype` and `shape`, checked:
/// an element count or byte size that overflows, or more than
/// [`MAX_BUFFER_ELEMENTS`] elements, is an [`Error::BufferSize`](crate::Error::BufferSize)
/// naming `op`, `tensor` and the shape. Every backend's `zeros`/`upload` and every
/// reshape go through this.
pub fn buffer_numel(
    op: &'static str,
    tensor: &'static str,
    dtype: DType,
    shape: &[usize],
) -> crate::Result<(usize, usize)> {
    let err = |why: String| crate::Error::BufferSize {
        op,
        tensor,
        dtype: Some(dtype),
        shape: shape.to_vec(),
        why,
    };
    let n = checked_numel(shape).ok_or_else(|| err("its element count overflows usize".into()))?;
    // `n > MAX_BUFFER_ELEMENTS`, written so that it is not a comparison that is always
    // false where usize is 32 bits (wasm32).
    if u32::try_from(n).is_err() {
        return Err(err(format!(
            "{n} elements exceed the 32-bit indexing of the kernels (at most {MAX_BUFFER_ELEMENTS})"
        )));
    }
    let bytes = n.checked_mul(dtype.size()).ok_or_else(|| {
        err(format!(
            "{n} elements of {} bytes overflow usize",
            dtype.size()
        ))
    })?;
    Ok((n, bytes))
}

/// Borrowed host data to upload, typed.
#[derive(Debug, Clone, Copy)]
pub enum HostSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    U32(&'a [u32]),
}

impl HostSlice<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            HostSlice::F32(_) => DType::F32,
            HostSlice::F16(_) => DType::F16,
            HostSlice::BF16(_) => DType::BF16,
            HostSlice::U32(_) => DType::U32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            HostSlice::F32(s) => s.len(),
            HostSlice::F16(s) => s.len(),
            HostSlice::BF16(s) => s.len(),
            HostSlice::U32(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw bytes, little-endian as on every supported target.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            HostSlice::F32(s) => bytemuck::cast_slice(s),
            HostSlice::F16(s) => bytemuck::cast_slice(s),
            HostSlice::BF16(s) => bytemuck::cast_slice(s),
            HostSlice::U32(s) => bytemuck::cast_slice(s),
        }
    }
}

impl<'a> From<&'a [f32]> for HostSlice<'a> {
    fn from(s: &'a [f32]) -> Self {
        HostSlice::F32(s)
    }
}
impl<'a> From<&'a [u32]> for HostSlice<'a> {
    fn from(s: &'a [u32]) -> Self {
        HostSlice::U32(s)
    }
}
impl<'a> From<&'a [f16]> for HostSlice<'a> {
    fn from(s: &'a [f16]) -> Self {
        HostSlice::F16(s)
    }
}
impl<'a> From<&'a [bf16]> for HostSlice<'a> {
    fn from(s: &'a [bf16]) -> Self {
        HostSlice::BF16(s)
    }
}
impl<'a> From<&'a Vec<f32>> for HostSlice<'a> {
    fn from(s: &'a Vec<f32>) -> Self {
        HostSlice::F32(s)
    }
}
impl<'a> From<&'a Vec<u32>> for HostSlice<'a> {
    fn from(s: &'a Vec<u32>) -> Self {
        HostSlice::U32(s)
    }
}

/// Owned host data, as returned by `download`.
#[derive(Debug, Clone, PartialEq)]
pub enum HostVec {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    U32(Vec<u32>),
}

impl HostVec {
    pub fn dtype(&self) -> DType {
        self.as_slice().dtype()
    }

    pub fn as_slice(&self) -> HostSlice<'_> {
        match self {
            HostVec::F32(v) => HostSlice::F32(v),
            HostVec::F16(v) => HostSlice::F16(v),
            HostVec::BF16(v) => HostSlice::BF16(v),
            HostVec::U32(v) => HostSlice::U32(v),
        }
    }

    /// Converts float data to f32 (ids are converted numerically).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            HostVec::F32(v) => v.clone(),
            HostVec::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            HostVec::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            HostVec::U32(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Decodes raw little-endian bytes of the given dtype.
    pub fn from_bytes(dtype: DType, bytes: &[u8]) -> HostVec {
        fn cast<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
            // pod_collect_to_vec copies, so unaligned input is fine.
            bytemuck::pod_collect_to_vec(bytes)
        }
        match dtype {
            DType::F32 => HostVec::F32(cast(bytes)),
            DType::F16 => HostVec::F16(cast(bytes)),
            DType::BF16 => HostVec::BF16(cast(bytes)),
            DType::U32 => HostVec::U32(cast(bytes)),
        }
    }
}

/// The new shape of a reshape, if it keeps the element count; the one check every
/// backend's `DeviceBuffer::reshape` makes. A new shape whose element count overflows
/// is an [`Error::BufferSize`](crate::Error::BufferSize), never a count that wrapped to
/// match.
pub fn reshaped(old: &[usize], new: &[usize]) -> crate::Result<Vec<usize>> {
    let Some(n) = checked_numel(new) else {
        return Err(crate::Error::BufferSize {
            op: "reshape",
            tensor: "shape",
            dtype: None,
            shape: new.to_vec(),
            why: "its element count overflows usize".into(),
        });
    };
    if n != numel(old) {
        return Err(crate::Error::Shape {
            op: "reshape",
            tensor: "buffer",
            got: old.to_vec(),
            expected: format!("{n} elements for {new:?}"),
        });
    }
    Ok(new.to_vec())
}
