//! Text in, text out, in one call: [`TextModel`] holds a [`MambaModel`] and its
//! tokenizer, and generates from a prompt string with [`TextModel::generate`] or, piece
//! by piece as tokens arrive, [`TextModel::stream`]. Options ([`TextOptions`]) add stop
//! strings to the sampling parameters, stop ids and token budget of the low-level
//! [`Generator`], which this is a thin layer over.
//!
//! The demo model (a small Mamba trained on Jane Austen, `examples/demo_model/`) ships
//! inside the library behind the default cargo feature `demo-model`:
//! [`TextModel::demo`] needs no file at all.

use super::mamba::MambaModel;
use super::sample::{GenerateOptions, GenerationStats, Generator, SamplingParams};
use super::text::{TextStream, TextTokenizer};
use super::weights::LoadOptions;
use crate::backend::Backend;
use crate::error::{Error, Result};

/// The demo model's files, embedded (feature `demo-model`).
#[cfg(feature = "demo-model")]
pub mod demo {
    /// `examples/demo_model/config.json`.
    pub const CONFIG_JSON: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/demo_model/config.json"
    ));
    /// `examples/demo_model/model.safetensors` (2.8 MB, f16).
    pub const MODEL_SAFETENSORS: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/demo_model/model.safetensors"
    ));
    /// `examples/demo_model/tokenizer.json`.
    pub const TOKENIZER_JSON: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/demo_model/tokenizer.json"
    ));
}

/// What to generate and when to stop, for [`TextModel`].
#[derive(Debug, Clone, PartialEq)]
pub struct TextOptions {
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    /// Ids that end the generation (their text is part of the output, as in
    /// [`GenerateOptions::stop_ids`]); the config's EOS is added unless `ignore_eos`.
    pub stop_ids: Vec<u32>,
    /// Generation ends as soon as the generated text contains one of these; the stop
    /// string and anything after it are not part of the output.
    pub stop_strings: Vec<String>,
    pub ignore_eos: bool,
}

impl Default for TextOptions {
    /// Greedy, 64 new tokens, stop at EOS only.
    fn default() -> Self {
        let g = GenerateOptions::default();
        TextOptions {
            sampling: g.sampling,
            max_new_tokens: g.max_new_tokens,
            stop_ids: g.stop_ids,
            stop_strings: Vec::new(),
            ignore_eos: g.ignore_eos,
        }
    }
}

impl TextOptions {
    /// Checks the options against a vocabulary of `vocab` tokens: sampling ranges
    /// ([`Error::Sampling`]), stop ids inside the vocabulary and no empty stop string
    /// ([`Error::GenerateOption`]).
    pub fn validate(&self, vocab: usize) -> Result<()> {
        self.sampling.validate()?;
        if let Some(id) = self.stop_ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::GenerateOption {
                option: "stop_ids",
                why: format!("id {id} is not below the vocabulary size {vocab}"),
            });
        }
        if let Some(i) = self.stop_strings.iter().position(String::is_empty) {
            return Err(Error::GenerateOption {
                option: "stop_strings",
                why: format!("stop string {i} is empty (it would stop before any text)"),
            });
        }
        Ok(())
    }

    /// The options of the low-level [`Generator`] (everything but the stop strings).
    pub fn generate_options(&self) -> GenerateOptions {
        GenerateOptions {
            sampling: self.sampling.clone(),
            max_new_tokens: self.max_new_tokens,
            stop_ids: self.stop_ids.clone(),
            ignore_eos: self.ignore_eos,
        }
    }
}

/// A Mamba language model with its tokenizer, on backend `B`.
pub struct TextModel<B: Backend> {
    model: MambaModel<B>,
    tok: TextTokenizer,
}

impl<B: Backend> TextModel<B> {
    /// Loads a model directory (`config.json`, `model.safetensors` or a sharded index,
    /// `tokenizer.json`) onto `be`, without a progress bar. A path that is not a
    /// directory is read as a GGUF file, whose metadata holds the tokenizer
    /// ([`TextTokenizer::from_gguf_bytes`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(be: B, dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let opts = LoadOptions {
            progress: false,
            ..LoadOptions::default()
        };
        Self::load_with(be, dir, &opts)
    }

    /// [`TextModel::load`] with explicit load options (weight dtype, progress bar).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_with(be: B, dir: impl AsRef<std::path::Path>, opts: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return super::checkpoint::with_mapped_file(dir, |label, bytes| {
                let g = super::gguf::GgufFile::parse(bytes, label)?;
                let tok = TextTokenizer::from_gguf(&g)?;
                Ok(Self::from_parts(MambaModel::from_gguf(be, &g, opts)?, tok))
            });
        }
        // The tokenizer first: it is cheap, and a directory without one fails before
        // the weights are uploaded.
        let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let model = MambaModel::load(be, dir, opts)?;
        Ok(Self::from_parts(model, tok))
    }

    /// A model and its tokenizer from GGUF bytes in memory (errors name them
    /// `model.gguf`).
    pub fn from_gguf_bytes(be: B, gguf: &[u8], opts: &LoadOptions) -> Result<Self> {
        let g = super::gguf::GgufFile::parse(gguf, "model.gguf")?;
        let tok = TextTokenizer::from_gguf(&g)?;
        Ok(Self::from_parts(MambaModel::from_gguf(be, &g, opts)?, tok))
    }

    /// The embedded demo model on `be` (feature `demo-model`).
    #[cfg(feature = "demo-model")]
    pub fn demo(be: B) -> Result<Self> {
        let opts = LoadOptions {
            progress: false,
            ..LoadOptions::default()
        };
        Self::demo_with(be, &opts)
    }

    /// [`TextModel::demo`] with explicit load options.
    #[cfg(feature = "demo-model")]
    pub fn demo_with(be: B, opts: &LoadOptions) -> Result<Self> {
        let tok = TextTokenizer::from_bytes(demo::TOKENIZER_JSON, "demo_model/tokenizer.json")?;
        let model =
            MambaModel::from_bytes(be, demo::CONFIG_JSON, &[demo::MODEL_SAFETENSORS], opts)?;
        Ok(Self::from_parts(model, tok))
    }

    pub fn from_parts(model: MambaModel<B>, tok: TextTokenizer) -> Self {
        TextModel { model, tok }
    }

    pub fn into_parts(self) -> (MambaModel<B>, TextTokenizer) {
        (self.model, self.tok)
    }

    /// The low-level model (states, prefill, steps, save/restore).
    pub fn model(&self) -> &MambaModel<B> {
        &self.model
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tok
    }

    /// Token ids of a prompt; a text that encodes to no tokens is
    /// [`Error::EmptyTextPrompt`].
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.tok.encode(text)?;
        if ids.is_empty() {
            return Err(Error::EmptyTextPrompt { text: text.into() });
        }
        Ok(ids)
    }

    /// The generated text (the prompt not included) in one call: the concatenation of
    /// [`TextModel::stream`]'s pieces.
    pub fn generate(&self, prompt: &str, opts: &TextOptions) -> Result<String> {
        self.stream(prompt, opts)?.collect()
    }

    /// The generated text as pieces, produced as the tokens arrive. The prompt is
    /// prefilled here (so errors in the prompt or options come back now); each `next`
    /// then runs decode steps until there is new text to give.
    ///
    /// Cancelling is dropping the iterator: nothing runs in the background, so no
    /// further step is computed once it is dropped (or simply no longer polled).
    pub fn stream(&self, prompt: &str, opts: &TextOptions) -> Result<TextGeneration<'_, B>> {
        let ids = self.encode(prompt)?;
        self.stream_ids(&ids, opts)
    }

    /// [`TextModel::stream`] from a prompt already tokenized.
    pub fn stream_ids(&self, prompt: &[u32], opts: &TextOptions) -> Result<TextGeneration<'_, B>> {
        opts.validate(self.model.config().vocab_size)?;
        let inner = Generator::new(&self.model, prompt, &opts.generate_options())?;
        Ok(TextGeneration {
            inner,
            stream: self.tok.stream(),
            stops: opts.stop_strings.clone(),
            text: String::new(),
            emitted: 0,
            finished: false,
            stopped_by: None,
        })
    }
}

/// The pieces of text of one generation, from [`TextModel::stream`]: an iterator of
/// `Result<String>` (never an empty piece). Drop it to cancel.
pub struct TextGeneration<'m, B: Backend> {
    inner: Generator<'m, B>,
    stream: TextStream<'m>,
    stops: Vec<String>,
    /// All text decoded so far (cut at a stop string once one is found).
    text: String,
    /// Bytes of `text` already given out.
    emitted: usize,
    finished: bool,
    stopped_by: Option<usize>,
}

impl<B: Backend> TextGeneration<'_, B> {
    /// The token ids generated so far (including the one that completed a stop string).
    pub fn generated(&self) -> &[u32] {
        self.inner.generated()
    }

    pub fn stats(&self) -> GenerationStats {
        self.inner.stats()
    }

    /// The stop string that ended the generation, if one did.
    pub fn stopped_by(&self) -> Option<&str> {
        self.stopped_by.map(|i| self.stops[i].as_str())
    }

    /// The earliest stop string in the text not yet given out: (byte offset, which).
    /// No stop string can start before `emitted`: its start would have been held back.
    fn find_stop(&self) -> Option<(usize, usize)> {
        let tail = &self.text[self.emitted..];
        self.stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| tail.find(s.as_str()).map(|p| (self.emitted + p, i)))
            .min()
    }

    /// Where the text that can safely be given out ends: before the longest suffix that
    /// is a proper prefix of a stop string (it may still become one).
    fn safe_end(&self) -> usize {
        let t = self.text.as_bytes();
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let max_hold = longest.saturating_sub(1).min(t.len() - self.emitted);
        for h in (1..=max_hold).rev() {
            let start = t.len() - h;
            let suffix = &t[start..];
            if self.text.is_char_boundary(start)
                && self.stops.iter().any(|s| s.as_bytes().starts_with(suffix))
            {
                return start;
            }
        }
        t.len()
    }

    /// Gives out `text[emitted..end]` (None when empty).
    fn emit(&mut self, end: usize) -> Option<Result<String>> {
        let piece = self.text[self.emitted..end].to_string();
        self.emitted = end;
        (!piece.is_empty()).then_some(Ok(piece))
    }
}

impl<B: Backend> Iterator for TextGeneration<'_, B> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        while !self.finished {
            let ended = match self.inner.next() {
                Some(Ok(id)) => match self.stream.push(id) {
                    Ok(delta) => {
                        self.text.push_str(&delta);
                        false
                    }
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                },
                Some(Err(e)) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                None => match self.stream.finish() {
                    Ok(rest) => {
                        self.text.push_str(&rest);
                        true
                    }
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                },
            };
            if let Some((at, which)) = self.find_stop() {
                self.finished = true;
                self.stopped_by = Some(which);
                self.text.truncate(at);
                return self.emit(at);
            }
            let end = if ended {
                self.finished = true;
                self.text.len()
            } else {
                self.safe_end()
            };
            if end > self.emitted {
                return self.emit(end);
            }
        }
        None
    }
}
