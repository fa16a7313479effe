//! A small GGUF writer for the tests: a fixture read with the library's reader
//! ([`GgufFile`]) becomes an editable [`Doc`] (keys and tensors), which is written back
//! byte for byte the way gguf-py lays a file out, optionally with one field corrupted.
//! [`Doc::write`] also reports where every structural field starts, for truncations
//! at each boundary.

use mamba_gpu::model::gguf::{GgufFile, GgufValue};

/// An owned metadata value: a scalar as (value type, little-endian bytes), or an array.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Scalar(u32, Vec<u8>),
    Str(Vec<u8>),
    Array(u32, Vec<Val>),
}

impl Val {
    pub fn u32(v: u32) -> Val {
        Val::Scalar(4, v.to_le_bytes().to_vec())
    }
    pub fn u64(v: u64) -> Val {
        Val::Scalar(10, v.to_le_bytes().to_vec())
    }
    pub fn f32(v: f32) -> Val {
        Val::Scalar(6, v.to_le_bytes().to_vec())
    }
    pub fn bool(v: bool) -> Val {
        Val::Scalar(7, vec![v as u8])
    }
    pub fn str(s: &str) -> Val {
        Val::Str(s.as_bytes().to_vec())
    }

    fn of(v: &GgufValue<'_>) -> Val {
        let s = |t: u32, b: &[u8]| Val::Scalar(t, b.to_vec());
        match *v {
            GgufValue::U8(x) => s(0, &[x]),
            GgufValue::I8(x) => s(1, &x.to_le_bytes()),
            GgufValue::U16(x) => s(2, &x.to_le_bytes()),
            GgufValue::I16(x) => s(3, &x.to_le_bytes()),
            GgufValue::U32(x) => s(4, &x.to_le_bytes()),
            GgufValue::I32(x) => s(5, &x.to_le_bytes()),
            GgufValue::F32(x) => s(6, &x.to_le_bytes()),
            GgufValue::Bool(x) => s(7, &[x as u8]),
            GgufValue::String(b) => Val::Str(b.to_vec()),
            GgufValue::U64(x) => s(10, &x.to_le_bytes()),
            GgufValue::I64(x) => s(11, &x.to_le_bytes()),
            GgufValue::F64(x) => s(12, &x.to_le_bytes()),
            GgufValue::Array(a) => {
                Val::Array(a.elem_type(), a.iter().map(|e| Val::of(&e)).collect())
            }
        }
    }

    fn ty(&self) -> u32 {
        match self {
            Val::Scalar(t, _) => *t,
            Val::Str(_) => 8,
            Val::Array(..) => 9,
        }
    }

    /// The value's bytes without its type (an array: element type, count, elements).
    fn body(&self, out: &mut Vec<u8>) {
        match self {
            Val::Scalar(_, b) => out.extend_from_slice(b),
            Val::Str(b) => {
                out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                out.extend_from_slice(b);
            }
            Val::Array(t, items) => {
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for i in items {
                    i.body(out);
                }
            }
        }
    }
}

/// A tensor: name, dims (ggml order), ggml type, data, and an offset to write in place
/// of the one the layout gives (to corrupt it).
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
    pub offset: Option<u64>,
}

/// A GGUF file as editable parts.
#[derive(Debug, Clone)]
pub struct Doc {
    pub magic: [u8; 4],
    pub version: u32,
    pub kv: Vec<(String, Val)>,
    pub tensors: Vec<Tensor>,
    pub alignment: usize,
    /// Counts to write in place of the real ones.
    pub n_tensors: Option<u64>,
    pub n_kv: Option<u64>,
}

impl Doc {
    pub fn read(bytes: &[u8]) -> Doc {
        let g = GgufFile::parse(bytes, "fixture").unwrap();
        Doc {
            magic: *b"GGUF",
            version: g.version(),
            kv: g
                .keys()
                .map(|k| (k.to_string(), Val::of(g.get(k).unwrap())))
                .collect(),
            tensors: g
                .tensors()
                .iter()
                .map(|t| Tensor {
                    name: t.name.to_string(),
                    dims: t.dims.iter().map(|&d| d as u64).collect(),
                    ty: t.ggml_type.0,
                    data: t.data.to_vec(),
                    offset: None,
                })
                .collect(),
            alignment: g.alignment(),
            n_tensors: None,
            n_kv: None,
        }
    }

    pub fn set(&mut self, key: &str, v: Val) -> &mut Self {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.kv.push((key.into(), v)),
        }
        self
    }

    pub fn remove(&mut self, key: &str) -> &mut Self {
        let n = self.kv.len();
        self.kv.retain(|(k, _)| k != key);
        assert_ne!(n, self.kv.len(), "no key {key}");
        self
    }

    pub fn tensor(&mut self, name: &str) -> &mut Tensor {
        self.tensors
            .iter_mut()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    pub fn remove_tensor(&mut self, name: &str) -> &mut Self {
        let n = self.tensors.len();
        self.tensors.retain(|t| t.name != name);
        assert_ne!(n, self.tensors.len(), "no tensor {name}");
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.write().0
    }

    /// The file, and the offsets where each field starts (and the file's end).
    pub fn write(&self) -> (Vec<u8>, Vec<usize>) {
        let mut o = Vec::new();
        let mut marks = Vec::new();
        let mut mark = |o: &Vec<u8>| marks.push(o.len());
        o.extend_from_slice(&self.magic);
        mark(&o);
        o.extend_from_slice(&self.version.to_le_bytes());
        mark(&o);
        let nt = self.n_tensors.unwrap_or(self.tensors.len() as u64);
        o.extend_from_slice(&nt.to_le_bytes());
        mark(&o);
        let nk = self.n_kv.unwrap_or(self.kv.len() as u64);
        o.extend_from_slice(&nk.to_le_bytes());
        for (k, v) in &self.kv {
            mark(&o);
            Val::Str(k.as_bytes().to_vec()).body(&mut o);
            mark(&o);
            o.extend_from_slice(&v.ty().to_le_bytes());
            mark(&o);
            v.body(&mut o);
        }
        let align = |n: usize| n.div_ceil(self.alignment) * self.alignment;
        let mut off = 0usize;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            mark(&o);
            Val::Str(t.name.as_bytes().to_vec()).body(&mut o);
            mark(&o);
            o.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                o.extend_from_slice(&d.to_le_bytes());
            }
            mark(&o);
            o.extend_from_slice(&t.ty.to_le_bytes());
            mark(&o);
            o.extend_from_slice(&t.offset.unwrap_or(off as u64).to_le_bytes());
            offsets.push(off);
            off = align(off + t.data.len());
        }
        mark(&o);
        let start = align(o.len());
        o.resize(start, 0);
        for (t, &at) in self.tensors.iter().zip(&offsets) {
            mark(&o);
            o.resize(start + at, 0);
            o.extend_from_slice(&t.data);
        }
        o.resize(start + off, 0);
        mark(&o);
        (o, marks)
    }
}
