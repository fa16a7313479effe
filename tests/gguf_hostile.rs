//! Hostile GGUF files, each with the typed error it must give (naming the file and the
//! key or tensor), never a panic, an abort or a huge allocation: truncations at every
//! structural boundary, corrupted counts, lengths, types, offsets and alignment, missing
//! keys and tensors, wrong shapes and values; and random byte flips of a valid file that
//! must never panic. Built from real fixtures with `tests/common/gguf_write.rs`. Run in
//! the test profile too (debug assertions and overflow checks on).

mod common;

use common::gguf_write::{Doc, Val};
use mamba_gpu::model::{LoadOptions, MambaModel, TextTokenizer};
use mamba_gpu::{CpuBackend, Error};
use rand::{Rng, SeedableRng};

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(format!("{name}.gguf"));
    std::fs::read(p).unwrap()
}

/// The small Q8_0 Falcon-Mamba file (41 kB): F32, F16 and Q8_0 tensors.
fn small() -> Vec<u8> {
    fixture("falcon_tiny_tied_q8_0")
}

fn load(bytes: &[u8]) -> mamba_gpu::Result<MambaModel<CpuBackend>> {
    let opts = LoadOptions {
        progress: false,
        ..LoadOptions::default()
    };
    MambaModel::from_gguf_bytes(CpuBackend::new(), bytes, &opts)
}

fn err(bytes: &[u8]) -> Error {
    match load(bytes) {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    }
}

/// The error's message names the in-memory file and `what`.
fn names(e: &Error, what: &str) {
    let m = e.to_string();
    assert!(
        m.contains("model.gguf") && m.contains(what),
        "{m} (expected to name {what})"
    );
}

#[test]
fn the_writer_round_trips_a_fixture() {
    let bytes = small();
    let doc = Doc::read(&bytes);
    let again = doc.bytes();
    let (a, b) = (load(&bytes).unwrap(), load(&again).unwrap());
    assert_eq!(a.config(), b.config());
    assert_eq!(
        a.logits_for(&[1, 2, 3]).unwrap(),
        b.logits_for(&[1, 2, 3]).unwrap()
    );
}

#[test]
fn version_2_reads_as_version_3() {
    // v3 only added big-endian files; a little-endian v2 file has the same layout.
    let mut d = Doc::read(&small());
    d.version = 2;
    let cfg = mamba_gpu::model::MambaConfig::from_gguf_bytes(&d.bytes(), "model.gguf").unwrap();
    assert_eq!(&cfg, load(&small()).unwrap().config());
    assert_eq!(
        load(&d.bytes()).unwrap().logits_for(&[4, 5]).unwrap(),
        load(&small()).unwrap().logits_for(&[4, 5]).unwrap()
    );
}

#[test]
fn truncations_at_every_boundary_are_truncated_errors() {
    let (bytes, marks) = Doc::read(&small()).write();
    let end = *marks.last().unwrap();
    assert_eq!(end, bytes.len());
    let mut n = 0;
    for &m in &marks[..marks.len() - 1] {
        for cut in [m.saturating_sub(1), m] {
            let e = err(&bytes[..cut]);
            assert!(
                matches!(e, Error::CheckpointTruncated { .. }),
                "cut at {cut}: {e}"
            );
            names(&e, "");
            n += 1;
        }
    }
    // Every byte of the header (up to the end of the tensor descriptions), and the
    // data in steps up to where the last tensor's data begins.
    let infos_end = marks[marks.len() - 2 - Doc::read(&small()).tensors.len()];
    let last = marks[marks.len() - 2];
    for cut in (0..infos_end).chain((infos_end..last).step_by(97)) {
        match load(&bytes[..cut]) {
            Err(Error::CheckpointTruncated { .. }) => n += 1,
            other => panic!("cut at {cut}: {:?}", other.err()),
        }
    }
    println!("{n} truncations, each CheckpointTruncated");
}

#[test]
fn corrupt_headers_are_typed_errors() {
    let base = Doc::read(&small());
    let corrupt = |d: &Doc, what: &str| {
        let e = err(&d.bytes());
        assert!(matches!(e, Error::CheckpointCorrupt { .. }), "{what}: {e}");
        names(&e, what);
    };
    let truncated = |d: &Doc, what: &str| {
        let e = err(&d.bytes());
        assert!(
            matches!(e, Error::CheckpointTruncated { .. }),
            "{what}: {e}"
        );
        names(&e, what);
    };
    let mut d = base.clone();
    d.magic = *b"GGUX";
    corrupt(&d, "not a GGUF file");
    for (v, what) in [
        (1, "version 1"),
        (4, "unknown GGUF version 4"),
        (3u32.swap_bytes(), "big-endian"),
    ] {
        let mut d = base.clone();
        d.version = v;
        corrupt(&d, what);
    }
    // Counts that the file cannot hold: refused before anything is allocated for them.
    let mut d = base.clone();
    d.n_tensors = Some(u64::MAX);
    truncated(&d, "tensor count");
    let mut d = base.clone();
    d.n_kv = Some(1 << 60);
    truncated(&d, "metadata count");
    // One entry more than there are: the first tensor description is read as one.
    let mut d = base.clone();
    d.n_kv = Some(d.kv.len() as u64 + 1);
    let e = err(&d.bytes());
    assert!(
        matches!(
            e,
            Error::CheckpointTruncated { .. } | Error::CheckpointCorrupt { .. }
        ),
        "{e}"
    );
    // A string and an array longer than the file.
    let (bytes, _) = base.write();
    let key = b"general.architecture";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() - 8;
    let mut b = bytes.clone();
    b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = err(&b);
    assert!(matches!(e, Error::CheckpointTruncated { .. }), "{e}");
    let mut d = base.clone();
    d.set("x.big", Val::Array(4, vec![Val::u32(1)]));
    let mut b = d.bytes();
    let key = b"x.big";
    let at = b.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4 + 4;
    b[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    names(&err(&b), "x.big");
    // Unknown and nested value types, a bool that is not 0/1, a duplicate key.
    let mut d = base.clone();
    d.set("x.odd", Val::Scalar(13, vec![]));
    corrupt(&d, "x.odd");
    let mut d = base.clone();
    d.set("x.nest", Val::Array(9, vec![]));
    corrupt(&d, "x.nest");
    let mut d = base.clone();
    d.set("x.bool", Val::Scalar(7, vec![2]));
    corrupt(&d, "x.bool");
    let mut d = base.clone();
    d.kv.push(("mamba.block_count".into(), Val::u32(2)));
    corrupt(&d, "mamba.block_count");
    let mut d = base.clone();
    d.kv.push((String::new(), Val::u32(2)));
    corrupt(&d, "empty");
    // Alignment: zero, not a power of two, not a u32.
    for v in [Val::u32(0), Val::u32(24), Val::u64(32)] {
        let mut d = base.clone();
        d.set("general.alignment", v);
        corrupt(&d, "general.alignment");
    }
}

#[test]
fn corrupt_tensor_descriptions_are_typed_errors() {
    let base = Doc::read(&small());
    let check = |f: &dyn Fn(&mut Doc), want: fn(&Error) -> bool, what: &str| {
        let mut d = base.clone();
        f(&mut d);
        let e = err(&d.bytes());
        assert!(want(&e), "{what}: {e:?}");
        names(&e, what);
    };
    let corrupt = |e: &Error| matches!(e, Error::CheckpointCorrupt { .. });
    let t = "blk.0.ssm_in.weight";
    check(
        &|d| d.tensors[3].name = d.tensors[2].name.clone(),
        corrupt,
        "appears twice",
    );
    check(&|d| d.tensor(t).dims = vec![32, 128, 1, 1, 1], corrupt, t);
    check(&|d| d.tensor(t).dims = vec![1 << 40, 1 << 40], corrupt, t);
    check(&|d| d.tensor(t).dims = vec![u64::MAX, 2], corrupt, t);
    check(&|d| d.tensor(t).ty = 77, corrupt, "unknown ggml type 77");
    // Q8_0 rows must be whole 32-element blocks (conv1d's rows have 4).
    check(
        &|d| {
            let c = d.tensor("blk.0.ssm_conv1d.weight");
            c.ty = 8;
            c.dims = vec![4, 64];
        },
        corrupt,
        "blk.0.ssm_conv1d.weight",
    );
    check(&|d| d.tensor(t).offset = Some(1), corrupt, "alignment");
    let first = base.tensors[0].name.clone();
    let second = base.tensors[1].name.clone();
    check(&|d| d.tensors[1].offset = Some(0), corrupt, &second);
    let _ = first;
    check(
        &|d| d.tensor(t).offset = Some(1 << 40),
        |e| matches!(e, Error::CheckpointTruncated { .. }),
        t,
    );
    check(
        &|d| d.tensor(t).offset = Some(u64::MAX - 31),
        |e| matches!(e, Error::CheckpointTruncated { .. }),
        t,
    );
    // A tensor of a type the loader does not take (same byte size: I32 for F32).
    check(
        &|d| d.tensor("blk.0.ssm_d").ty = 26,
        |e| matches!(e, Error::TensorDType { got, .. } if got == "I32"),
        "blk.0.ssm_d",
    );
}

#[test]
fn missing_or_bad_metadata_is_a_config_error_naming_the_key() {
    let base = Doc::read(&small());
    for key in [
        "general.architecture",
        "mamba.embedding_length",
        "mamba.block_count",
        "mamba.ssm.conv_kernel",
        "mamba.ssm.inner_size",
        "mamba.ssm.state_size",
        "mamba.ssm.time_step_rank",
        "mamba.attention.layer_norm_rms_epsilon",
    ] {
        let mut d = base.clone();
        d.remove(key);
        let e = err(&d.bytes());
        assert!(
            matches!(&e, Error::ConfigMissing { key: k, .. } if *k == key),
            "{key}: {e}"
        );
        names(&e, key);
    }
    type Want = fn(&Error) -> bool;
    let cases: Vec<(&str, Val, Want)> = vec![
        ("general.architecture", Val::str("llama"), |e| {
            matches!(e, Error::ConfigUnsupported { .. })
        }),
        ("mamba.embedding_length", Val::str("192"), |e| {
            matches!(e, Error::ConfigValue { .. })
        }),
        ("mamba.embedding_length", Val::u32(0), |e| {
            matches!(e, Error::ConfigValue { .. })
        }),
        ("mamba.ssm.state_size", Val::u64(1 << 62), |e| {
            matches!(e, Error::ConfigValue { .. })
        }),
        ("mamba.ssm.conv_kernel", Val::u32(1), |e| {
            matches!(e, Error::ConfigUnsupported { .. })
        }),
        (
            "mamba.attention.layer_norm_rms_epsilon",
            Val::f32(f32::NAN),
            |e| matches!(e, Error::ConfigValue { .. }),
        ),
        ("mamba.attention.layer_norm_rms_epsilon", Val::u32(1), |e| {
            matches!(e, Error::ConfigValue { .. })
        }),
        ("mamba.ssm.dt_b_c_rms", Val::u32(1), |e| {
            matches!(e, Error::ConfigValue { .. })
        }),
        // More layers than the file holds: refused before the expected tensor names
        // (proportional to the count) are made.
        ("mamba.block_count", Val::u64(100_000_000), |e| {
            matches!(e, Error::ConfigCheckpoint { .. })
        }),
        ("tokenizer.ggml.eos_token_id", Val::u32(256), |e| {
            matches!(e, Error::ConfigInconsistent { .. })
        }),
        ("tokenizer.ggml.bos_token_id", Val::u64(1 << 40), |e| {
            matches!(e, Error::ConfigValue { .. })
        }),
    ];
    for (key, v, want) in cases {
        let mut d = base.clone();
        d.set(key, v.clone());
        let t = std::time::Instant::now();
        let e = err(&d.bytes());
        assert!(want(&e), "{key} = {v:?}: {e:?}");
        names(&e, key);
        assert!(t.elapsed().as_secs() < 5, "{key}: took {:?}", t.elapsed());
    }
}

#[test]
fn missing_unexpected_misshapen_and_bad_valued_tensors() {
    let base = Doc::read(&small());
    for t in [
        "token_embd.weight",
        "blk.1.ssm_out.weight",
        "blk.0.ssm_a",
        "output_norm.weight",
    ] {
        let mut d = base.clone();
        d.remove_tensor(t);
        let e = err(&d.bytes());
        assert!(
            matches!(&e, Error::MissingTensor { tensor, .. } if tensor == t),
            "{t}: {e}"
        );
        names(&e, t);
    }
    // A conv bias in one layer only: every layer is checked for it.
    let mut d = base.clone();
    d.remove_tensor("blk.1.ssm_conv1d.bias");
    names(&err(&d.bytes()), "blk.1.ssm_conv1d.bias");
    let mut d = base.clone();
    let mut extra = d.tensor("blk.0.ssm_d").clone();
    extra.name = "blk.0.ssm_q".into();
    d.tensors.push(extra);
    let e = err(&d.bytes());
    assert!(matches!(e, Error::UnexpectedTensor { .. }), "{e}");
    names(&e, "blk.0.ssm_q");
    // The layer number spelled otherwise is another name, not the same tensor.
    let mut d = base.clone();
    d.tensor("blk.1.ssm_d").name = "blk.01.ssm_d".into();
    let e = err(&d.bytes());
    assert!(
        matches!(&e, Error::MissingTensor { tensor, .. } if tensor == "blk.1.ssm_d"),
        "{e}"
    );
    let mut d = base.clone();
    let a = d.tensor("blk.0.ssm_a");
    a.dims = vec![64, 16]; // (N, E) listed as (E, N)
    let e = err(&d.bytes());
    assert!(matches!(e, Error::TensorShape { .. }), "{e}");
    names(&e, "blk.0.ssm_a");
    // A non-finite A, a positive A, an infinite Q8_0 scale.
    let set_a = |v: f32| {
        let mut d = base.clone();
        d.tensor("blk.0.ssm_a").data[8..12].copy_from_slice(&v.to_le_bytes());
        d.bytes()
    };
    let e = err(&set_a(f32::NAN));
    assert!(matches!(e, Error::NonFiniteWeight { .. }), "{e}");
    names(&e, "blk.0.ssm_a");
    let e = err(&set_a(0.5));
    assert!(matches!(e, Error::WeightValue { .. }), "{e}");
    names(&e, "blk.0.ssm_a");
    let mut d = base.clone();
    d.tensor("blk.1.ssm_in.weight").data[34..36].copy_from_slice(&0x7c00u16.to_le_bytes());
    let e = err(&d.bytes());
    assert!(matches!(e, Error::NonFiniteWeight { .. }), "{e}");
    names(&e, "blk.1.ssm_in.weight");
}

#[test]
fn hostile_tokenizer_metadata_is_a_typed_error() {
    let base = Doc::read(&fixture("demo_q8_0"));
    let tok = |d: &Doc| TextTokenizer::from_gguf_bytes(&d.bytes(), "model.gguf");
    assert!(tok(&base).is_ok());
    let tokenizer_err = |d: &Doc, what: &str| {
        let e = tok(d).err().unwrap();
        assert!(matches!(e, Error::Tokenizer { .. }), "{what}: {e}");
        names(&e, what);
    };
    let mut d = base.clone();
    d.set("tokenizer.ggml.model", Val::str("llama"));
    tokenizer_err(&d, "llama");
    let mut d = base.clone();
    d.set("tokenizer.ggml.pre", Val::str("llama-bpe"));
    tokenizer_err(&d, "llama-bpe");
    let mut d = base.clone();
    d.remove("tokenizer.ggml.pre");
    tokenizer_err(&d, "tokenizer.ggml.pre");
    let mut d = base.clone();
    d.remove("tokenizer.ggml.merges");
    tokenizer_err(&d, "tokenizer.ggml.merges");
    let mut d = base.clone();
    d.set(
        "tokenizer.ggml.merges",
        Val::Array(8, vec![Val::str("nospace")]),
    );
    tokenizer_err(&d, "merge 0");
    let mut d = base.clone();
    d.set(
        "tokenizer.ggml.token_type",
        Val::Array(5, vec![Val::Scalar(5, 1i32.to_le_bytes().to_vec())]),
    );
    tokenizer_err(&d, "token_type");
    let mut d = base.clone();
    d.set("tokenizer.ggml.add_bos_token", Val::bool(true));
    d.set("tokenizer.ggml.bos_token_id", Val::u32(1 << 20));
    tokenizer_err(&d, "bos_token_id");
    let mut d = base.clone();
    d.set("tokenizer.ggml.tokens", Val::Array(4, vec![Val::u32(1)]));
    let e = tok(&d).err().unwrap();
    assert!(
        matches!(
            e,
            Error::ConfigValue {
                key: "tokenizer.ggml.tokens",
                ..
            }
        ),
        "{e}"
    );
    let mut d = base.clone();
    let Val::Array(_, toks) = &mut d
        .kv
        .iter_mut()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
        .unwrap()
        .1
    else {
        panic!()
    };
    toks[5] = Val::Str(vec![0xff, 0xfe]);
    tokenizer_err(&d, "token 5");
    // BOS added by the post-processor when the file says so.
    let mut d = base.clone();
    d.set("tokenizer.ggml.add_bos_token", Val::bool(true));
    let t = tok(&d).unwrap();
    assert_eq!(t.encode("Hello").unwrap()[0], 0);
}

/// `n` copies of `bytes` with 1 to 8 random bytes replaced, the replacements drawn
/// mostly inside `hot` (the header, where a flip changes structure rather than a
/// weight).
fn flips(
    bytes: &[u8],
    hot: usize,
    n: usize,
    seed: u64,
) -> impl Iterator<Item = (u64, Vec<u8>)> + '_ {
    (0..n as u64).map(move |i| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ i);
        let mut b = bytes.to_vec();
        for _ in 0..rng.random_range(1..=8) {
            let at = if rng.random_bool(0.8) {
                rng.random_range(0..hot)
            } else {
                rng.random_range(0..b.len())
            };
            b[at] = if rng.random_bool(0.5) {
                rng.random()
            } else {
                b[at] ^ (1 << rng.random_range(0..8))
            };
        }
        (i, b)
    })
}

#[test]
fn random_byte_flips_never_panic() {
    let bytes = small();
    let hot = Doc::read(&bytes)
        .write()
        .1
        .iter()
        .rev()
        .nth(Doc::read(&bytes).tensors.len() + 1)
        .copied()
        .unwrap();
    let (mut ok, mut errs) = (0, std::collections::BTreeMap::<String, usize>::new());
    let n = 10_000;
    for (i, b) in flips(&bytes, hot, n, 0x6767) {
        let r = std::panic::catch_unwind(|| match load(&b) {
            Ok(m) => m.logits_for(&[1, 2, 3]).map(|_| ()),
            Err(e) => Err(e),
        });
        match r {
            Err(_) => panic!("flip case {i} panicked"),
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                let kind = format!("{e:?}");
                *errs
                    .entry(kind.split([' ', '{', '(']).next().unwrap().to_string())
                    .or_default() += 1;
            }
        }
    }
    println!("{n} flipped files: {ok} loaded and ran, errors by kind {errs:?}");
    // The demo's tokenizer metadata (its 2048 tokens and merges lie in the header).
    let demo = fixture("demo_q8_0");
    let hot = 70_000.min(demo.len());
    let (mut ok, mut bad) = (0, 0);
    for (i, b) in flips(&demo, hot, n / 4, 0x7474) {
        let r = std::panic::catch_unwind(|| {
            TextTokenizer::from_gguf_bytes(&b, "model.gguf").map(|t| {
                let ids = t
                    .encode("It is a truth universally acknowledged, é 日本 🙂")
                    .unwrap_or_default();
                let _ = t.decode(&ids);
            })
        });
        match r {
            Err(_) => panic!("tokenizer flip case {i} panicked"),
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => bad += 1,
        }
    }
    println!(
        "{} flipped demo files: {ok} tokenizers built and ran, {bad} typed errors",
        n / 4
    );
}
