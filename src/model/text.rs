//! Text in and out through a Hugging Face `tokenizer.json` or a GGUF file's tokenizer
//! metadata (`text_gguf.rs`) (feature `tokenizers`), and
//! streaming decoding: text deltas as tokens arrive, never splitting a UTF-8 character
//! that spans several tokens.

use crate::error::{Error, Result};

/// A `tokenizer.json` (or GGUF) tokenizer and the name of the file it came from.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    file: String,
}

impl TextTokenizer {
    /// Loads a `tokenizer.json`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let file = path.display().to_string();
        // Real tokenizer.json files are at most tens of MB.
        let bytes = super::checkpoint::read_small(path, 1 << 30)?;
        Self::from_bytes(&bytes, &file)
    }

    /// Parses `tokenizer.json` bytes; `file` names them in errors.
    pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Self> {
        // tokenizers 0.22 panics (an unwrap in its decoder deserializer) on some
        // malformed files (found by fuzz/tokenizer_load; the input is kept in
        // tests/fixtures/fuzz/tokenizer_crash_1.json): a panic there is a bad file.
        // Most of those inputs are not JSON at all (bad UTF-8 or syntax inside the
        // decoder, where tokenizers calls `expect`), so JSON is checked first: that also
        // holds under `panic = "abort"`, where the catch below cannot help.
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(bytes) {
            return Err(Error::Tokenizer {
                file: file.into(),
                why: format!("not valid JSON: {e}"),
            });
        }
        let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes))
            .map_err(|_| Error::Tokenizer {
                file: file.into(),
                why: "the tokenizers crate panicked while parsing it (malformed file)".into(),
            })?;
        let inner = parsed.map_err(|e| Error::Tokenizer {
            file: file.into(),
            why: e.to_string(),
        })?;
        Ok(TextTokenizer {
            inner,
            file: file.into(),
        })
    }

    /// A tokenizer built here (from GGUF metadata) and the file it came from.
    pub(crate) fn from_parts(inner: tokenizers::Tokenizer, file: &str) -> Self {
        TextTokenizer {
            inner,
            file: file.into(),
        }
    }

    fn err(&self, e: tokenizers::Error) -> Error {
        Error::Tokenizer {
            file: self.file.clone(),
            why: e.to_string(),
        }
    }

    /// Token ids of `text` (with the tokenizer's special tokens, as `tokenizer(text)`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| self.err(e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| self.err(e))
    }

    /// A fresh streaming decoder.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream {
            tok: self,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Token id of a token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// Turns a stream of token ids into text deltas.
///
/// Decodes a small window of recent ids twice (with and without the new ones) and
/// emits the difference, so tokenizers whose decoding of a token depends on its
/// neighbours (byte-level BPE, sentencepiece spaces) stream correctly, and holds back
/// text ending in an incomplete UTF-8 sequence (U+FFFD) until it completes.
pub struct TextStream<'t> {
    tok: &'t TextTokenizer,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl TextStream<'_> {
    /// Adds a token; returns the new text (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        let now = self.tok.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len()
            && !now.ends_with('\u{FFFD}')
            && let Some(delta) = now.get(before.len()..)
        {
            self.prefix = self.read;
            self.read = self.ids.len();
            return Ok(delta.to_string());
        }
        Ok(String::new())
    }

    /// Text still held back at the end of the stream.
    pub fn finish(&mut self) -> Result<String> {
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        let now = self.tok.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now.get(before.len()..).unwrap_or("").to_string())
    }
}
