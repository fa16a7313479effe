//! GGUF files, the format of llama.cpp (versions 2 and 3, little-endian): the container
//! only — metadata key/value pairs and tensor descriptions — read from a byte slice (a
//! memory-mapped file or bytes in memory) without copying it. What a Mamba model makes
//! of it is `gguf_model.rs` (config, tensors) and `text_gguf.rs` (tokenizer).
//!
//! Layout: `"GGUF"`, version `u32`, tensor count `u64`, metadata count `u64`; the
//! metadata (key string, value type `u32`, value); per tensor its name, dimension count
//! `u32`, dimensions `u64` (fastest-varying first, the reverse of PyTorch's order), ggml
//! type `u32` and data offset `u64`; then, at the next multiple of `general.alignment`
//! (default 32), the data section the offsets count from. Strings are a `u64` length and
//! that many bytes; arrays an element type, a `u64` count and the elements.
//!
//! The file is untrusted: every count, length, dimension and offset is checked against
//! the bytes that are there (in checked arithmetic) before it is used, nothing is
//! allocated in proportion to a count the file claims, and each failure is a typed error
//! naming the file and the key or tensor: [`Error::CheckpointTruncated`] where the file
//! ends before what it announces, [`Error::CheckpointCorrupt`] for everything else
//! (bad magic or version, unknown value or ggml types, duplicate keys or tensor names,
//! misaligned, overlapping or oversized tensors).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The alignment of the data section and of each tensor when `general.alignment` is
/// absent.
pub const DEFAULT_ALIGNMENT: usize = 32;

/// The most dimensions a ggml tensor has.
const MAX_DIMS: usize = 4;

/// A ggml tensor type (`ggml_type`), by its number in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType(pub u32);

/// ggml's types: (number, name, elements per block, bytes per block), from ggml.h and
/// gguf-py's `GGML_QUANT_SIZES` (QK_K = 256). Only the sizes are needed to validate a
/// tensor of a type that is not loaded; the loader takes F32, F16, BF16 and Q8_0.
const TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const BF16: GgmlType = GgmlType(30);

    fn entry(self) -> Option<&'static (u32, &'static str, usize, usize)> {
        TYPES.iter().find(|t| t.0 == self.0)
    }

    /// The type's name in ggml (`"Q4_K"`), `None` for a number ggml does not define.
    pub fn name(self) -> Option<&'static str> {
        self.entry().map(|t| t.1)
    }

    /// (elements, bytes) of one block (1 element for the plain types).
    pub fn block(self) -> Option<(usize, usize)> {
        self.entry().map(|t| (t.2, t.3))
    }
}

/// A metadata value. Strings are bytes (GGUF says UTF-8; the loader checks where it
/// reads one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GgufValue<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(&'a [u8]),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(GgufArray<'a>),
}

/// An array value: `len` elements of one scalar type (GGUF allows no nested arrays
/// here, as ggml), kept as the validated bytes they occupy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GgufArray<'a> {
    elem: u32,
    len: usize,
    bytes: &'a [u8],
}

impl<'a> GgufArray<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The GGUF value type of the elements (8 for strings).
    pub fn elem_type(&self) -> u32 {
        self.elem
    }

    /// The elements, in order. (They were all read once when the file was parsed, so
    /// this walk cannot run out of bytes; it stops early rather than panic if it did.)
    pub fn iter(&self) -> impl Iterator<Item = GgufValue<'a>> + 'a {
        let mut cur = Cursor {
            b: self.bytes,
            pos: 0,
            file: "",
        };
        let elem = self.elem;
        (0..self.len).map_while(move |_| cur.scalar(elem, &|| String::new()).ok())
    }
}

/// A tensor's description and its bytes (inside the file, checked).
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor<'a> {
    pub name: &'a str,
    /// Fastest-varying first (ggml's `ne`), as the file lists them.
    pub dims: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Offset in the data section.
    pub offset: u64,
    pub data: &'a [u8],
}

/// A parsed GGUF file over borrowed bytes.
#[derive(Debug, Clone)]
pub struct GgufFile<'a> {
    file: String,
    version: u32,
    alignment: usize,
    kv: BTreeMap<&'a str, GgufValue<'a>>,
    tensors: Vec<GgufTensor<'a>>,
}

// `GgufFile::parse` and the bounds-checked cursor it reads with.
#[path = "gguf_parse.rs"]
mod parse;

use parse::Cursor;

impl<'a> GgufFile<'a> {
    /// The name the file is reported under.
    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&GgufValue<'a>> {
        self.kv.get(key)
    }

    /// The metadata keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.kv.keys().copied()
    }

    /// The tensors, in the order the file lists them.
    pub fn tensors(&self) -> &[GgufTensor<'a>] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensor<'a>> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn bad(&self, key: &'static str, why: String) -> Error {
        Error::ConfigValue {
            file: self.file.clone(),
            key,
            why,
        }
    }

    /// An unsigned integer key (any integer type, a negative value refused).
    pub(crate) fn uint(&self, key: &'static str) -> Result<Option<u64>> {
        let n = match self.get(key) {
            None => return Ok(None),
            Some(GgufValue::U8(v)) => *v as i128,
            Some(GgufValue::U16(v)) => *v as i128,
            Some(GgufValue::U32(v)) => *v as i128,
            Some(GgufValue::U64(v)) => *v as i128,
            Some(GgufValue::I8(v)) => *v as i128,
            Some(GgufValue::I16(v)) => *v as i128,
            Some(GgufValue::I32(v)) => *v as i128,
            Some(GgufValue::I64(v)) => *v as i128,
            Some(v) => return Err(self.bad(key, format!("expected an integer, got {v:?}"))),
        };
        u64::try_from(n)
            .map(Some)
            .map_err(|_| self.bad(key, format!("{n} is negative")))
    }

    /// A required unsigned integer that fits a `usize`.
    pub(crate) fn req_usize(&self, key: &'static str) -> Result<usize> {
        let n = self.uint(key)?.ok_or_else(|| Error::ConfigMissing {
            file: self.file.clone(),
            key,
        })?;
        usize::try_from(n).map_err(|_| self.bad(key, format!("{n} is too large")))
    }

    pub(crate) fn float(&self, key: &'static str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(GgufValue::F32(v)) => Ok(Some(*v)),
            Some(GgufValue::F64(v)) => Ok(Some(*v as f32)),
            Some(v) => Err(self.bad(key, format!("expected a float, got {v:?}"))),
        }
    }

    pub(crate) fn boolean(&self, key: &'static str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(GgufValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.bad(key, format!("expected a bool, got {v:?}"))),
        }
    }

    /// A string key, which must be UTF-8.
    pub(crate) fn string(&self, key: &'static str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(GgufValue::String(s)) => std::str::from_utf8(s)
                .map(Some)
                .map_err(|_| self.bad(key, "the string is not UTF-8".into())),
            Some(v) => Err(self.bad(key, format!("expected a string, got {v:?}"))),
        }
    }

    /// An array key whose elements have value type `elem` (one of `elems`). (Only the
    /// tokenizer reads arrays.)
    #[cfg(feature = "tokenizers")]
    pub(crate) fn array(
        &self,
        key: &'static str,
        elems: &[u32],
        what: &str,
    ) -> Result<Option<GgufArray<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(GgufValue::Array(a)) if elems.contains(&a.elem) => Ok(Some(*a)),
            Some(GgufValue::Array(a)) => Err(self.bad(
                key,
                format!(
                    "expected an array of {what}, got one of value type {}",
                    a.elem
                ),
            )),
            Some(v) => Err(self.bad(key, format!("expected an array of {what}, got {v:?}"))),
        }
    }
}
