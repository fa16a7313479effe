//! The byte format of a saved [`HostState`], and files holding one.
//!
//! Little-endian throughout:
//!
//! ```text
//! offset  size  field
//!      0     8  magic b"MAMBAST\0"
//!      8     4  format version (u32) = 2
//!     12     4  reserved, 0
//!     16  8×8   num_layers, hidden_size, intermediate_size, state_size, conv_kernel,
//!               dt_rank, vocab_size, conv_channels (u64 each)
//!     80     4  weight dtype (u32: 0 f32, 1 f16, 2 bf16)
//!     84     4  reserved, 0
//!     88     8  config hash (u64, ModelIdentity::config_hash)
//!     96     8  batch (u64)
//!    104        seen      batch × u64
//!               ids       batch × u32
//!               logits    batch·V × f32
//!               conv      layers × batch·C·(K−1) × f32  (C = conv_channels)
//!               ssm       layers × batch·E·N × f32
//!    end−8   8  FNV-1a 64 of every byte before it
//! ```
//!
//! Version 2 added conv_channels (Mamba-2's conv runs over E + 2GN channels).
//!
//! Reading never trusts the header: the payload size is computed with checked
//! arithmetic from the header and compared with the bytes actually there before
//! anything proportional to it is allocated, and the checksum catches damaged data.

use super::state::{FNV_OFFSET, HostState, ModelIdentity, fnv1a};
use crate::error::{Error, Result};
use crate::tensor::DType;

/// The first bytes of every saved state.
pub const STATE_MAGIC: [u8; 8] = *b"MAMBAST\0";
/// The format version this build writes and reads.
pub const STATE_FORMAT_VERSION: u32 = 2;

const HEADER: usize = 104;
const TRAILER: usize = 8;

fn dtype_code(d: DType) -> u32 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::U32 => 3,
    }
}

/// Element counts of one saved state's payload, from its identity and batch.
struct Sizes {
    logits: usize,
    conv: usize,
    ssm: usize,
    /// Payload bytes (between header and trailer).
    bytes: usize,
}

impl Sizes {
    /// `None` when a product overflows.
    fn of(m: &ModelIdentity, batch: usize) -> Option<Sizes> {
        let logits = batch.checked_mul(m.vocab_size)?;
        let per_e = batch.checked_mul(m.intermediate_size)?;
        let conv = batch
            .checked_mul(m.conv_channels)?
            .checked_mul(m.conv_kernel.checked_sub(1)?)?;
        let ssm = per_e.checked_mul(m.state_size)?;
        let floats = conv
            .checked_add(ssm)?
            .checked_mul(m.num_layers)?
            .checked_add(logits)?;
        let bytes = batch.checked_mul(12)?.checked_add(floats.checked_mul(4)?)?;
        Some(Sizes {
            logits,
            conv,
            ssm,
            bytes,
        })
    }
}

impl HostState {
    /// The state in the versioned byte format described in this module.
    pub fn to_bytes(&self) -> Vec<u8> {
        let m = &self.model;
        let floats: usize = self.logits.len()
            + self.conv.iter().map(Vec::len).sum::<usize>()
            + self.ssm.iter().map(Vec::len).sum::<usize>();
        let mut out = Vec::with_capacity(HEADER + 12 * self.batch + 4 * floats + TRAILER);
        out.extend(STATE_MAGIC);
        out.extend(STATE_FORMAT_VERSION.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        for v in [
            m.num_layers,
            m.hidden_size,
            m.intermediate_size,
            m.state_size,
            m.conv_kernel,
            m.dt_rank,
            m.vocab_size,
            m.conv_channels,
        ] {
            out.extend((v as u64).to_le_bytes());
        }
        out.extend(dtype_code(m.weight_dtype).to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(m.config_hash.to_le_bytes());
        out.extend((self.batch as u64).to_le_bytes());
        for &s in &self.seen {
            out.extend((s as u64).to_le_bytes());
        }
        for &i in &self.ids {
            out.extend(i.to_le_bytes());
        }
        let layers = self.conv.iter().chain(&self.ssm);
        for v in std::iter::once(&self.logits).chain(layers) {
            for x in v {
                out.extend(x.to_le_bytes());
            }
        }
        let sum = fnv1a(FNV_OFFSET, &out);
        out.extend(sum.to_le_bytes());
        out
    }

    /// Reads bytes written by [`HostState::to_bytes`]. Wrong magic, another format
    /// version, truncated or damaged bytes give [`Error::StateFormat`]; nothing panics
    /// and nothing larger than `bytes` is allocated.
    pub fn from_bytes(bytes: &[u8]) -> Result<HostState> {
        parse(bytes, "saved state bytes")
    }

    /// Writes the state to `path` ([`HostState::to_bytes`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save_to(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|source| Error::Io {
            file: path.display().to_string(),
            source,
        })
    }

    /// Reads a state written by [`HostState::save_to`]; errors name the file.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_from(path: impl AsRef<std::path::Path>) -> Result<HostState> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            file: file.clone(),
            source,
        })?;
        parse(&bytes, &file)
    }
}

/// A little-endian reader over bytes whose length has already been checked.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(s) = self.b.get(self.at..self.at + N) {
            a.copy_from_slice(s);
        }
        self.at += N;
        a
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| f32::from_le_bytes(self.take())).collect()
    }
}

fn parse(b: &[u8], file: &str) -> Result<HostState> {
    let err = |what, why: String| Error::StateFormat {
        file: file.into(),
        what,
        why,
    };
    if b.len() < STATE_MAGIC.len() {
        if STATE_MAGIC.starts_with(b) {
            return Err(err(
                "truncated",
                format!("{} bytes, shorter than the magic", b.len()),
            ));
        }
        return Err(err("magic", "not a saved mamba-gpu state".into()));
    }
    if b[..8] != STATE_MAGIC {
        return Err(err(
            "magic",
            format!(
                "starts with {:?}, not {:?} (not a saved mamba-gpu state)",
                String::from_utf8_lossy(&b[..8]),
                String::from_utf8_lossy(&STATE_MAGIC)
            ),
        ));
    }
    if b.len() < HEADER + TRAILER {
        return Err(err(
            "truncated",
            format!("{} bytes, shorter than the {HEADER}-byte header", b.len()),
        ));
    }
    let mut c = Cursor { b, at: 8 };
    let version = c.u32();
    if version != STATE_FORMAT_VERSION {
        return Err(err(
            "version",
            format!("format version {version}; this build reads version {STATE_FORMAT_VERSION}"),
        ));
    }
    let _reserved = c.u32();
    let mut dims = [0usize; 8];
    for d in &mut dims {
        let v = c.u64();
        *d = usize::try_from(v).map_err(|_| err("header", format!("size {v} is too large")))?;
    }
    let weight_dtype = match c.u32() {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::BF16,
        other => return Err(err("header", format!("unknown weight dtype code {other}"))),
    };
    let _reserved = c.u32();
    let config_hash = c.u64();
    let batch = c.u64();
    let [
        num_layers,
        hidden_size,
        intermediate_size,
        state_size,
        conv_kernel,
        dt_rank,
        vocab_size,
        conv_channels,
    ] = dims;
    let model = ModelIdentity {
        num_layers,
        hidden_size,
        intermediate_size,
        state_size,
        conv_kernel,
        dt_rank,
        vocab_size,
        conv_channels,
        weight_dtype,
        config_hash,
    };
    if dims.contains(&0) || batch == 0 || conv_kernel < 2 {
        return Err(err(
            "header",
            format!(
                "impossible sizes {dims:?}, batch {batch} (every size must be positive, conv_kernel >= 2)"
            ),
        ));
    }
    let batch =
        usize::try_from(batch).map_err(|_| err("header", format!("batch {batch} is too large")))?;
    let sizes = Sizes::of(&model, batch)
        .ok_or_else(|| err("header", format!("sizes {dims:?} x batch {batch} overflow")))?;
    let want = sizes
        .bytes
        .checked_add(HEADER + TRAILER)
        .ok_or_else(|| err("header", format!("sizes {dims:?} x batch {batch} overflow")))?;
    if b.len() < want {
        return Err(err(
            "truncated",
            format!("{} bytes, the header announces {want}", b.len()),
        ));
    }
    if b.len() > want {
        return Err(err(
            "length",
            format!("{} bytes, the header announces {want}", b.len()),
        ));
    }
    let body = &b[..want - TRAILER];
    let stored = u64::from_le_bytes(b[want - TRAILER..].try_into().unwrap_or([0; 8]));
    let sum = fnv1a(FNV_OFFSET, body);
    if stored != sum {
        return Err(err(
            "checksum",
            format!("stored {stored:#018x}, computed {sum:#018x}: the data is damaged"),
        ));
    }
    let mut c = Cursor {
        b: body,
        at: HEADER,
    };
    let mut seen = Vec::with_capacity(batch);
    for _ in 0..batch {
        let v = c.u64();
        seen.push(
            usize::try_from(v)
                .map_err(|_| err("header", format!("token count {v} is too large")))?,
        );
    }
    let ids = (0..batch).map(|_| c.u32()).collect();
    let logits = c.f32s(sizes.logits);
    let conv = (0..num_layers).map(|_| c.f32s(sizes.conv)).collect();
    let ssm = (0..num_layers).map(|_| c.f32s(sizes.ssm)).collect();
    Ok(HostState {
        model,
        batch,
        conv_shape: [batch, conv_channels, conv_kernel - 1],
        ssm_shape: [batch, intermediate_size, state_size],
        conv,
        ssm,
        seen,
        logits,
        ids,
    })
}
