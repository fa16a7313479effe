//! The tokenizer of a GGUF file (feature `tokenizers`), rebuilt from its metadata as a
//! `tokenizers` byte-level BPE: what llama.cpp's converter writes for a model with a
//! GPT-2 style `tokenizer.json` (GPT-NeoX's, which the Mamba checkpoints use) or, for
//! a model without tokenizer files, llama.cpp's own GPT-NeoX vocabulary.
//!
//! * `tokenizer.ggml.model` must be `"gpt2"` (byte-level BPE); SentencePiece (`"llama"`)
//!   and the others are refused with [`Error::Tokenizer`].
//! * `tokenizer.ggml.pre` must name a pre-tokenizer whose split is GPT-2's regex, which
//!   is what `tokenizers`' ByteLevel pre-tokenizer applies: `gpt-2`, `mpt` and `olmo`
//!   (llama.cpp gives the three the same regex). Any other would split text differently,
//!   so it is refused rather than approximated.
//! * `tokenizer.ggml.tokens` (byte-level strings, as in `tokenizer.json`'s vocab) and
//!   `tokenizer.ggml.merges` (`"a b"`) make the BPE. The converter pads the vocabulary
//!   with `[PAD{i}]` tokens of type UNUSED; those are left out, as `tokenizer.json` has
//!   them not. Merges whose parts or result are not in the vocabulary are dropped (a
//!   vocabulary cut to a small model's size keeps all of GPT-NeoX's merges).
//! * CONTROL tokens become special added tokens (skipped when decoding), USER_DEFINED
//!   ones plain added tokens, as `tokenizer.json`'s `added_tokens` are.
//! * `tokenizer.ggml.add_bos_token` / `add_eos_token` (absent: false) put BOS / EOS
//!   around each encoding, as the `tokenizer.json` post-processor would.

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, Tokenizer};

use super::gguf::{GgufArray, GgufFile, GgufValue};
use super::text::TextTokenizer;
use crate::error::{Error, Result};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const UNUSED: i64 = 5;

/// The `tokenizer.ggml.pre` values whose pre-tokenizer is GPT-2's regex.
const GPT2_REGEX_PRE: &[&str] = &["gpt-2", "mpt", "olmo"];

impl TextTokenizer {
    /// The tokenizer of GGUF bytes; `file` names them in errors.
    pub fn from_gguf_bytes(bytes: &[u8], file: &str) -> Result<Self> {
        Self::from_gguf(&GgufFile::parse(bytes, file)?)
    }

    /// The tokenizer of a `.gguf` file (memory-mapped; only the metadata is read).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_gguf_file(path: &std::path::Path) -> Result<Self> {
        super::checkpoint::with_mapped_file(path, |label, bytes| {
            Self::from_gguf_bytes(bytes, label)
        })
    }

    /// The tokenizer of a parsed GGUF file.
    pub(crate) fn from_gguf(g: &GgufFile<'_>) -> Result<Self> {
        let file = g.file();
        let err = |why: String| Error::Tokenizer {
            file: file.into(),
            why,
        };
        match g.string("tokenizer.ggml.model")? {
            Some("gpt2") => {}
            None => {
                return Err(err(
                    "the file has no tokenizer (no `tokenizer.ggml.model`)".into()
                ));
            }
            Some("none") => {
                return Err(err(
                    "the file has no tokenizer (`tokenizer.ggml.model` is \"none\")".into(),
                ));
            }
            Some(m) => {
                return Err(err(format!(
                    "`tokenizer.ggml.model` is \"{m}\": only byte-level BPE (\"gpt2\") is \
                     supported (SentencePiece, \"llama\", is not)"
                )));
            }
        }
        match g.string("tokenizer.ggml.pre")? {
            Some(p) if GPT2_REGEX_PRE.contains(&p) => {}
            p => {
                return Err(err(format!(
                    "pre-tokenizer `tokenizer.ggml.pre` = {p:?}: only those that split with \
                     GPT-2's regex ({GPT2_REGEX_PRE:?}) are supported"
                )));
            }
        }
        let strings = |key: &'static str| -> Result<GgufArray<'_>> {
            g.array(key, &[8], "strings")?
                .ok_or_else(|| err(format!("no `{key}` in the metadata")))
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types = g.array(
            "tokenizer.ggml.token_type",
            &[0, 1, 2, 3, 4, 5, 10, 11],
            "integers",
        )?;
        if u32::try_from(tokens.len()).is_err() {
            return Err(err(format!("{} tokens do not fit u32 ids", tokens.len())));
        }
        if let Some(t) = types
            && t.len() != tokens.len()
        {
            return Err(err(format!(
                "`tokenizer.ggml.token_type` has {} entries for {} tokens",
                t.len(),
                tokens.len()
            )));
        }
        let types: Vec<i64> = match types {
            Some(t) => t.iter().map(|v| int(&v)).collect(),
            None => vec![1; tokens.len()],
        };

        let mut vocab = Vocab::default();
        let (mut special, mut user) = (Vec::new(), Vec::new());
        let mut names: Vec<String> = Vec::with_capacity(tokens.len());
        for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
            let s = match t {
                GgufValue::String(b) => {
                    std::str::from_utf8(b).map_err(|_| err(format!("token {i} is not UTF-8")))?
                }
                _ => "",
            };
            names.push(s.to_string());
            if ty == UNUSED || s.is_empty() {
                continue;
            }
            vocab.entry(s.to_string()).or_insert(i as u32);
            match ty {
                CONTROL => special.push(AddedToken::from(s.to_string(), true)),
                USER_DEFINED => user.push(AddedToken::from(s.to_string(), false)),
                _ => {}
            }
        }
        let mut pairs = Vec::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let GgufValue::String(b) = m else { continue };
            let m = std::str::from_utf8(b).map_err(|_| err(format!("merge {i} is not UTF-8")))?;
            // llama.cpp splits at the first space after the first byte.
            let split = m.bytes().skip(1).position(|c| c == b' ').map(|p| p + 1);
            let Some(at) = split else {
                return Err(err(format!(
                    "merge {i} ({m:?}) is not two tokens split by a space"
                )));
            };
            let (a, b) = (&m[..at], &m[at + 1..]);
            if vocab.contains_key(a)
                && vocab.contains_key(b)
                && vocab.contains_key(&[a, b].concat())
            {
                pairs.push((a.to_string(), b.to_string()));
            }
        }
        let id = |key: &'static str| -> Result<Option<(u32, String)>> {
            match g.uint(key)? {
                None => Ok(None),
                Some(id) => match names.get(id as usize) {
                    Some(s) if usize::try_from(id).is_ok() => Ok(Some((id as u32, s.clone()))),
                    _ => Err(err(format!(
                        "`{key}` is {id}, not one of the {} tokens",
                        names.len()
                    ))),
                },
            }
        };
        let add_bos = g.boolean("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        let add_eos = g.boolean("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let bos = if add_bos {
            id("tokenizer.ggml.bos_token_id")?
        } else {
            None
        };
        let eos = if add_eos {
            id("tokenizer.ggml.eos_token_id")?
        } else {
            None
        };
        if add_bos && bos.is_none() || add_eos && eos.is_none() {
            return Err(err(
                "`add_bos_token`/`add_eos_token` is set but its token id is missing".into(),
            ));
        }

        // The crate's BPE construction has panicked on malformed input before
        // (`TextTokenizer::from_bytes`): a panic here is a bad file, not a crash.
        let built = std::panic::catch_unwind(move || -> std::result::Result<Tokenizer, String> {
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, pairs)
                .build()
                .map_err(|e| e.to_string())?;
            let mut tok = Tokenizer::new(bpe);
            tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            tok.with_decoder(Some(ByteLevel::default()));
            if bos.is_some() || eos.is_some() {
                let mut single = Vec::new();
                let mut specials = Vec::new();
                for (name, t) in [("bos", &bos), ("eos", &eos)] {
                    if let Some((id, s)) = t {
                        let t = SpecialToken::new(name.into(), vec![*id], vec![s.clone()]);
                        specials.push(t.map_err(|e| e.to_string())?);
                    }
                }
                if bos.is_some() {
                    single.push("bos");
                }
                single.push("$A");
                if eos.is_some() {
                    single.push("eos");
                }
                let post = TemplateProcessing::builder()
                    .try_single(single)?
                    .try_pair(vec!["$A", "$B:1"])?
                    .special_tokens(specials)
                    .build()
                    .map_err(|e| e.to_string())?;
                tok.with_post_processor(Some(post));
            }
            tok.add_special_tokens(&special);
            tok.add_tokens(&user);
            Ok(tok)
        })
        .map_err(|_| err("the tokenizers crate panicked while building the BPE".into()))?;
        Ok(TextTokenizer::from_parts(built.map_err(err)?, file))
    }
}

/// An integer array element as i64 (token types are small; others map to 0, NORMAL's
/// neighbour "undefined", which is treated as a normal token).
fn int(v: &GgufValue<'_>) -> i64 {
    match *v {
        GgufValue::U8(x) => x as i64,
        GgufValue::I8(x) => x as i64,
        GgufValue::U16(x) => x as i64,
        GgufValue::I16(x) => x as i64,
        GgufValue::U32(x) => x as i64,
        GgufValue::I32(x) => x as i64,
        GgufValue::U64(x) => x as i64,
        GgufValue::I64(x) => x,
        _ => 0,
    }
}
