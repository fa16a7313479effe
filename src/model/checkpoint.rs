//! The checkpoint's files: `model.safetensors` or the shards named by
//! `model.safetensors.index.json`, memory-mapped, parsed, and their failures classified
//! (truncated vs corrupt, naming the file). What the tensors mean is `weights.rs`'s job.

#[cfg(not(target_arch = "wasm32"))]
use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::error::{Error, Result};

/// A safetensors blob and the name it is reported under.
pub struct Shard<'a> {
    pub file: String,
    pub bytes: &'a [u8],
}

/// Maps the checkpoint files of `dir` (`model.safetensors`, or the shards of
/// `model.safetensors.index.json`) and calls `f` with them. Returns the label errors
/// about the whole checkpoint use, too.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn with_mapped_dir<T>(
    dir: &std::path::Path,
    f: impl FnOnce(&str, &[Shard<'_>]) -> Result<T>,
) -> Result<T> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let (label, files, declared) = if single.exists() || !index.exists() {
        (single.display().to_string(), vec![single], None)
    } else {
        let label = index.display().to_string();
        let bytes = read_small(&index, MAX_JSON_BYTES)?;
        let map = parse_index(&bytes, &label)?;
        let mut files: Vec<String> = map.values().cloned().collect();
        files.sort();
        files.dedup();
        (
            label,
            files.iter().map(|f| dir.join(f)).collect::<Vec<_>>(),
            Some(map),
        )
    };
    let mut maps = Vec::with_capacity(files.len());
    for path in &files {
        let file = path.display().to_string();
        let len = regular_file(path)?;
        let fh = std::fs::File::open(path).map_err(|source| Error::Io {
            file: file.clone(),
            source,
        })?;
        // An empty file is not mapped (a zero-length mapping is an error on some
        // systems); it is reported as truncated by the parser like any short file.
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only and lives until the upload is done; a
            // checkpoint modified by another process while it is being loaded is not
            // supported (as with every memory-mapped loader).
            Some(
                unsafe { memmap2::Mmap::map(&fh) }.map_err(|source| Error::Io {
                    file: file.clone(),
                    source,
                })?,
            )
        };
        maps.push((file, map));
    }
    let shards: Vec<Shard<'_>> = maps
        .iter()
        .map(|(file, m)| Shard {
            file: file.clone(),
            bytes: m.as_deref().unwrap_or(&[]),
        })
        .collect();
    if let Some(declared) = declared {
        check_index(&declared, &shards, dir)?;
    }
    f(&label, &shards)
}

/// Maps one file (a GGUF model) and calls `f` with its label and bytes. An empty file
/// is not mapped (a zero-length mapping is an error on some systems): the parser
/// reports it as truncated, like any short file.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn with_mapped_file<T>(
    path: &std::path::Path,
    f: impl FnOnce(&str, &[u8]) -> Result<T>,
) -> Result<T> {
    let file = path.display().to_string();
    let len = regular_file(path)?;
    if len == 0 {
        return f(&file, &[]);
    }
    let fh = std::fs::File::open(path).map_err(|source| Error::Io {
        file: file.clone(),
        source,
    })?;
    // SAFETY: the map is read-only and lives until `f` (the upload) returns; a file
    // modified by another process while it is being loaded is not supported (as with
    // every memory-mapped loader).
    let map = unsafe { memmap2::Mmap::map(&fh) }.map_err(|source| Error::Io {
        file: file.clone(),
        source,
    })?;
    f(&file, &map)
}

/// The most bytes read from a JSON file (config.json, the sharded index): real ones
/// are a few kB to a few MB; anything larger is refused before it is read into memory.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) const MAX_JSON_BYTES: u64 = 64 << 20;

/// The length of `path`, which must be a regular file: a directory (or a FIFO, which
/// would block `open` forever) in place of a model file gets a message saying so, not
/// the OS's "No such device" from mapping a directory.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn regular_file(path: &std::path::Path) -> Result<u64> {
    let file = || path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        file: file(),
        source,
    })?;
    if meta.is_dir() {
        return Err(Error::Io {
            file: file(),
            source: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory, expected a file",
            ),
        });
    }
    if !meta.is_file() {
        return Err(Error::Io {
            file: file(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is not a regular file (a device, FIFO or socket)",
            ),
        });
    }
    Ok(meta.len())
}

/// Reads a whole regular file of at most `max` bytes.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn read_small(path: &std::path::Path, max: u64) -> Result<Vec<u8>> {
    let len = regular_file(path)?;
    let file = || path.display().to_string();
    if len > max {
        return Err(Error::Io {
            file: file(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{len} bytes, more than the {max} accepted for this file"),
            ),
        });
    }
    std::fs::read(path).map_err(|source| Error::Io {
        file: file(),
        source,
    })
}

/// `weight_map` of a sharded index: tensor name → shard file name.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn parse_index(bytes: &[u8], file: &str) -> Result<BTreeMap<String, String>> {
    let corrupt = |why: String| Error::CheckpointCorrupt {
        file: file.into(),
        why,
    };
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| corrupt("no `weight_map` object".into()))?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let f = v
            .as_str()
            .ok_or_else(|| corrupt(format!("`weight_map[{k}]` is not a file name")))?;
        if f.is_empty() || f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(corrupt(format!(
                "shard name `{f}` is not a plain file name"
            )));
        }
        out.insert(k.clone(), f.to_string());
    }
    Ok(out)
}

#[cfg(not(target_arch = "wasm32"))]
fn check_index(
    declared: &BTreeMap<String, String>,
    shards: &[Shard<'_>],
    dir: &std::path::Path,
) -> Result<()> {
    let parsed: Vec<_> = shards
        .iter()
        .map(|s| parse_shard(s).map(|st| (s.file.clone(), st)))
        .collect::<Result<_>>()?;
    for (name, f) in declared {
        let file = dir.join(f).display().to_string();
        let found = parsed
            .iter()
            .any(|(sf, st)| *sf == file && st.tensor(name).is_ok());
        if !found {
            return Err(Error::MissingTensor {
                file,
                tensor: name.clone(),
            });
        }
    }
    Ok(())
}

/// Parses one safetensors blob, classifying failures as truncated or corrupt.
pub(crate) fn parse_shard<'a>(s: &Shard<'a>) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(s.bytes).map_err(|e| classify(&s.file, s.bytes, e))
}

/// The header JSON of a safetensors blob, when its length field fits the blob.
fn header_json(bytes: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    match serde_json::from_slice(header).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The first tensor entry of the header that is malformed, and what is wrong with it:
/// safetensors reports some of these without the tensor's name ("invalid shape, data
/// type, or offset for tensor"), and an error must say which tensor to look at.
fn explain_header(bytes: &[u8]) -> Option<String> {
    let header = header_json(bytes)?;
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |why: String| Some(format!("tensor `{name}`: {why}"));
        let Some(o) = info.as_object() else {
            return bad(format!("header entry is {info}, not an object"));
        };
        let dtype = match o
            .get("dtype")
            .map(|d| serde_json::from_value::<Dtype>(d.clone()))
        {
            Some(Ok(d)) => d,
            Some(Err(_)) => return bad(format!("unknown dtype {}", o["dtype"])),
            None => return bad("no `dtype`".into()),
        };
        let shape: Vec<usize> = match o.get("shape").map(|s| serde_json::from_value(s.clone())) {
            Some(Ok(s)) => s,
            _ => {
                return bad(format!(
                    "`shape` {:?} is not a list of sizes",
                    o.get("shape")
                ));
            }
        };
        let offsets: [usize; 2] = match o
            .get("data_offsets")
            .map(|s| serde_json::from_value(s.clone()))
        {
            Some(Ok(s)) => s,
            _ => {
                return bad(format!(
                    "`data_offsets` {:?} is not a [begin, end] pair",
                    o.get("data_offsets")
                ));
            }
        };
        let bits = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize()));
        let Some(bits) = bits else {
            return bad(format!(
                "shape {shape:?} of {dtype:?} overflows a byte size"
            ));
        };
        if bits % 8 != 0 {
            return bad(format!(
                "shape {shape:?} of {dtype:?} is not a whole number of bytes"
            ));
        }
        let [b, e] = offsets;
        if e < b || e - b != bits / 8 {
            return bad(format!(
                "shape {shape:?} of {dtype:?} needs {} bytes, data_offsets [{b}, {e}] hold {}",
                bits / 8,
                e as i128 - b as i128
            ));
        }
    }
    None
}

fn classify(file: &str, bytes: &[u8], e: SafeTensorError) -> Error {
    let truncated = |why: String| Error::CheckpointTruncated {
        file: file.into(),
        why,
    };
    let corrupt = |why: String| Error::CheckpointCorrupt {
        file: file.into(),
        why,
    };
    let announced = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    match e {
        SafeTensorError::HeaderTooSmall => truncated(format!(
            "{} bytes, shorter than the 8-byte header length",
            bytes.len()
        )),
        SafeTensorError::InvalidHeaderLength => truncated(format!(
            "header announces {announced} bytes, file has {} after the length",
            bytes.len().saturating_sub(8)
        )),
        SafeTensorError::HeaderTooLarge => corrupt(format!(
            "header announces {announced} bytes, more than safetensors' 100 MB limit"
        )),
        SafeTensorError::MetadataIncompleteBuffer => {
            // Compare the data the header announces with what is there.
            let end = header_json(bytes)
                .map(|o| {
                    o.values()
                        .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            let have = (bytes.len() as u64).saturating_sub(announced.saturating_add(8));
            if have < end {
                truncated(format!("tensor data needs {end} bytes, file has {have}"))
            } else {
                corrupt(format!(
                    "{} bytes after the last tensor (data needs {end}, file has {have})",
                    have - end
                ))
            }
        }
        SafeTensorError::InvalidOffset(name) => corrupt(format!(
            "tensor `{name}`: data_offsets do not start where the previous tensor ends"
        )),
        other => match explain_header(bytes) {
            Some(why) => corrupt(why),
            None => corrupt(other.to_string()),
        },
    }
}
