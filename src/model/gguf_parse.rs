//! Reading a GGUF file's container (see `gguf.rs` for the layout and the rules): a
//! cursor whose every read is bounds-checked, and the checks of the tensor
//! descriptions (sizes, alignment, overlap).

use std::collections::BTreeMap;

use super::{DEFAULT_ALIGNMENT, GgmlType, GgufArray, GgufFile, GgufTensor, GgufValue, MAX_DIMS};
use crate::error::{Error, Result};
use crate::model::config::MAX_TENSOR_ELEMS;

/// Reads the file front to back; a read past the end is [`Error::CheckpointTruncated`].
pub(super) struct Cursor<'a, 'f> {
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
    pub(super) file: &'f str,
}

impl<'a> Cursor<'a, '_> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let have = self.b.len() - self.pos;
        if n > have {
            return Err(Error::CheckpointTruncated {
                file: self.file.into(),
                why: format!(
                    "GGUF file ends inside {} (at byte {}: {n} bytes needed, {have} left)",
                    what(),
                    self.pos
                ),
            });
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A length or count that must fit in the bytes left, each element at least
    /// `min_elem` bytes: checked before anything is read or allocated for it.
    fn count(&mut self, min_elem: usize, what: &dyn Fn() -> String) -> Result<usize> {
        let n = self.u64(what)?;
        let have = (self.b.len() - self.pos) as u64;
        if n.checked_mul(min_elem as u64)
            .is_none_or(|need| need > have)
        {
            return Err(Error::CheckpointTruncated {
                file: self.file.into(),
                why: format!(
                    "{} announces {n} elements of at least {min_elem} bytes, the file has \
                     {have} bytes left (at byte {})",
                    what(),
                    self.pos
                ),
            });
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let n = self.count(1, what)?;
        self.take(n, what)
    }

    fn corrupt(&self, why: String) -> Error {
        Error::CheckpointCorrupt {
            file: self.file.into(),
            why,
        }
    }

    /// A scalar of value type `ty` (not an array).
    pub(super) fn scalar(&mut self, ty: u32, what: &dyn Fn() -> String) -> Result<GgufValue<'a>> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(self.array::<1>(what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.corrupt(format!("{} is a bool of value {b}", what()))),
            },
            8 => GgufValue::String(self.string(what)?),
            10 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(self.corrupt(format!("{} has unknown value type {t}", what()))),
        })
    }

    fn value(&mut self, ty: u32, what: &dyn Fn() -> String) -> Result<GgufValue<'a>> {
        if ty != 9 {
            return self.scalar(ty, what);
        }
        let elem = self.u32(what)?;
        let size = match elem {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8, // a string takes at least its 8-byte length
            9 => return Err(self.corrupt(format!("{} is an array of arrays", what()))),
            t => {
                return Err(self.corrupt(format!("{} is an array of unknown type {t}", what())));
            }
        };
        let len = self.count(size, what)?;
        let start = self.pos;
        if elem == 8 {
            for _ in 0..len {
                self.string(what)?;
            }
        } else {
            self.take(len * size, what)?;
        }
        // Scalars are validated when read: walk bools once for their 0/1.
        let bytes = &self.b[start..self.pos];
        if elem == 7 && bytes.iter().any(|&b| b > 1) {
            return Err(self.corrupt(format!("{} holds a bool other than 0 or 1", what())));
        }
        Ok(GgufValue::Array(GgufArray { elem, len, bytes }))
    }
}

impl<'a> GgufFile<'a> {
    /// Parses and checks the container; `file` names it in errors.
    pub fn parse(bytes: &'a [u8], file: &str) -> Result<Self> {
        let mut c = Cursor {
            b: bytes,
            pos: 0,
            file,
        };
        let magic = c.array::<4>(&|| "the magic \"GGUF\"".into())?;
        if &magic != b"GGUF" {
            return Err(c.corrupt(format!(
                "not a GGUF file: it starts with {:?}, not \"GGUF\" (a model directory or a \
                 .gguf file is expected)",
                String::from_utf8_lossy(&magic)
            )));
        }
        let version = c.u32(&|| "the version".into())?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(c.corrupt(
                    "GGUF version 1 is not supported (versions 2 and 3 are; llama.cpp dropped \
                     v1 too)"
                        .into(),
                ));
            }
            v if matches!(v.swap_bytes(), 2 | 3) => {
                return Err(c.corrupt(format!(
                    "a big-endian GGUF file (version {}, byte-swapped): only little-endian \
                     files are supported",
                    v.swap_bytes()
                )));
            }
            v => return Err(c.corrupt(format!("unknown GGUF version {v} (2 and 3 are read)"))),
        }
        // Each tensor description takes at least 8 (name) + 4 + 4 + 8 bytes (a 0-D
        // tensor), each key/value pair 8 + 4 + 1.
        let n_tensors = c.count(24, &|| "the tensor count".into())?;
        let n_kv = c.count(13, &|| "the metadata count".into())?;
        let mut kv = BTreeMap::new();
        for i in 0..n_kv {
            let what = || format!("the key of metadata entry {i}");
            let key = std::str::from_utf8(c.string(&what)?)
                .map_err(|_| c.corrupt(format!("the key of metadata entry {i} is not UTF-8")))?;
            if key.is_empty() {
                return Err(c.corrupt(format!("the key of metadata entry {i} is empty")));
            }
            let what = || format!("metadata `{key}`");
            let ty = c.u32(&what)?;
            let v = c.value(ty, &what)?;
            if kv.insert(key, v).is_some() {
                return Err(c.corrupt(format!("metadata key `{key}` appears twice")));
            }
        }
        let alignment = match kv.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(GgufValue::U32(a)) if a.is_power_of_two() => *a as usize,
            Some(v) => {
                return Err(c.corrupt(format!(
                    "metadata `general.alignment` is {v:?}, not a u32 power of two"
                )));
            }
        };
        // Capacity capped: the count is bounded by the file size only.
        let mut infos = Vec::with_capacity(n_tensors.min(1024));
        let mut names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let what = || format!("the name of tensor {i}");
            let name = std::str::from_utf8(c.string(&what)?)
                .map_err(|_| c.corrupt(format!("the name of tensor {i} is not UTF-8")))?;
            if !names.insert(name) {
                return Err(c.corrupt(format!("tensor `{name}` appears twice")));
            }
            let what = || format!("the description of tensor `{name}`");
            let n_dims = c.u32(&what)? as usize;
            if n_dims > MAX_DIMS {
                return Err(c.corrupt(format!(
                    "tensor `{name}` has {n_dims} dimensions (ggml has at most {MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let d = c.u64(&what)?;
                dims.push(usize::try_from(d).unwrap_or(usize::MAX));
            }
            let ty = GgmlType(c.u32(&what)?);
            let offset = c.u64(&what)?;
            let size = tensor_bytes(name, &dims, ty).map_err(|why| c.corrupt(why))?;
            infos.push((name, dims, ty, offset, size));
        }
        // The data section starts at the next multiple of the alignment.
        let data_start = c.pos.div_ceil(alignment).checked_mul(alignment);
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, ggml_type, offset, size) in infos {
            if offset % alignment as u64 != 0 {
                return Err(c.corrupt(format!(
                    "tensor `{name}`: data offset {offset} is not a multiple of the \
                     alignment {alignment}"
                )));
            }
            let range = usize::try_from(offset)
                .ok()
                .zip(data_start)
                .and_then(|(o, s)| s.checked_add(o))
                .and_then(|a| Some((a, a.checked_add(size)?)));
            let data = range.and_then(|(a, b)| bytes.get(a..b)).ok_or_else(|| {
                Error::CheckpointTruncated {
                    file: file.into(),
                    why: format!(
                        "tensor `{name}`: {size} bytes at data offset {offset} run past the \
                         end of the file ({} bytes, data section at byte {})",
                        bytes.len(),
                        data_start.map_or("?".into(), |s| s.to_string())
                    ),
                }
            })?;
            tensors.push(GgufTensor {
                name,
                dims,
                ggml_type,
                offset,
                data,
            });
        }
        check_overlap(&tensors).map_err(|why| c.corrupt(why))?;
        Ok(GgufFile {
            file: file.into(),
            version,
            alignment,
            kv,
            tensors,
        })
    }
}

/// The bytes of a tensor of `dims` and type `ty`, every step checked: a known type,
/// whole blocks along the first dimension, an element count the loader can hold.
fn tensor_bytes(name: &str, dims: &[usize], ty: GgmlType) -> std::result::Result<usize, String> {
    let Some((block, block_bytes)) = ty.block() else {
        return Err(format!("tensor `{name}` has unknown ggml type {}", ty.0));
    };
    let elems = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_TENSOR_ELEMS)
        .ok_or_else(|| {
            format!(
                "tensor `{name}`: dimensions {dims:?} hold more than {MAX_TENSOR_ELEMS} elements"
            )
        })?;
    let row = dims.first().copied().unwrap_or(1);
    if !row.is_multiple_of(block) {
        return Err(format!(
            "tensor `{name}`: rows of {row} elements are not whole {} blocks of {block}",
            ty.name().unwrap_or("?")
        ));
    }
    // elems <= isize::MAX / 16 and at most 8 bytes per element (I64, F64): no overflow.
    Ok(elems / block * block_bytes)
}

/// Two tensors may not share bytes (a file whose tensors alias one another is not one
/// llama.cpp writes, and would let one weight's bytes be read as another's).
fn check_overlap(tensors: &[GgufTensor<'_>]) -> std::result::Result<(), String> {
    let mut spans: Vec<(u64, u64, &str)> = tensors
        .iter()
        .filter(|t| !t.data.is_empty())
        .map(|t| (t.offset, t.offset + t.data.len() as u64, t.name))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!(
                "tensors `{}` (bytes {}..{} of the data section) and `{}` (from byte {}) overlap",
                w[0].2, w[0].0, w[0].1, w[1].2, w[1].0
            ));
        }
    }
    Ok(())
}
