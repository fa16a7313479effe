//! The checkpoint's files: `model.safetensors` or the shards named by
//! `model.safetensors.index.json`, memory-mapped, parsed, and their failures classified
//! (truncated vs corrupt, naming the file). What the tensors mean is `weights.rs`'s job.

#[cfg(not(target_arch = "wasm32"))]
use std::collections::BTreeMap;

use safetensors::{SafeTensorError, SafeTensors};

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
        let bytes = std::fs::read(&index).map_err(|source| Error::Io {
            file: label.clone(),
            source,
        })?;
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
        let fh = std::fs::File::open(path).map_err(|source| Error::Io {
            file: file.clone(),
            source,
        })?;
        // SAFETY: the map is read-only and lives until the upload is done; a checkpoint
        // modified by another process while it is being loaded is not supported (as
        // with every memory-mapped loader).
        let map = unsafe { memmap2::Mmap::map(&fh) }.map_err(|source| Error::Io {
            file: file.clone(),
            source,
        })?;
        maps.push((file, map));
    }
    let shards: Vec<Shard<'_>> = maps
        .iter()
        .map(|(file, m)| Shard {
            file: file.clone(),
            bytes: &m[..],
        })
        .collect();
    if let Some(declared) = declared {
        check_index(&declared, &shards, dir)?;
    }
    f(&label, &shards)
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
        if f.contains('/') || f.contains('\\') || f.starts_with('.') {
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

fn classify(file: &str, bytes: &[u8], e: SafeTensorError) -> Error {
    let truncated = |why: String| Error::CheckpointTruncated {
        file: file.into(),
        why,
    };
    let corrupt = |why: String| Error::CheckpointCorrupt {
        file: file.into(),
        why,
    };
    match e {
        SafeTensorError::HeaderTooSmall => truncated(format!(
            "{} bytes, shorter than the 8-byte header length",
            bytes.len()
        )),
        SafeTensorError::InvalidHeaderLength => {
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
            truncated(format!(
                "header announces {n} bytes, file has {} after the length",
                bytes.len() - 8
            ))
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            // Compare the data the header announces with what is there.
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8])) as usize;
            let end = serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + n])
                .ok()
                .and_then(|v| {
                    v.as_object().map(|o| {
                        o.values()
                            .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
                            .max()
                            .unwrap_or(0) as usize
                    })
                })
                .unwrap_or(0);
            let have = bytes.len() - 8 - n;
            if have < end {
                truncated(format!("tensor data needs {end} bytes, file has {have}"))
            } else {
                corrupt(format!(
                    "{} bytes after the last tensor (data needs {end}, file has {have})",
                    have - end
                ))
            }
        }
        other => corrupt(other.to_string()),
    }
}
