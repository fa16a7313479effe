//! Generation that awaits its read-backs instead of blocking: for the browser.
//!
//! In the browser (wasm32 + WebGPU) nothing may block the page's thread, so
//! [`Backend::download`] is an error on the wgpu backend there. Prefill and decode steps
//! never read anything back (they only record and submit work); the one read-back of
//! greedy decoding is the argmax ids. This module awaits that one through
//! [`AsyncDownload`] and otherwise calls the ordinary model API, so the tokens are the
//! ones [`super::Generator`] produces for greedy options (checked natively in
//! `tests/model_async.rs`, and against the CPU backend in headless Chromium in
//! `tests/browser.rs`).
//!
//! [`AsyncGreedy`] keeps no clock (`std::time::Instant` panics on wasm32): the caller
//! times it with whatever clock it has (the demo page uses `performance.now()`).

use std::future::Future;

use super::mamba::MambaModel;
use super::state::State;
use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::HostVec;

/// A backend whose buffers can be read back without blocking.
pub trait AsyncDownload: Backend {
    /// [`Backend::download`] as a future.
    fn download_async(&self, buf: &Self::Buffer) -> impl Future<Output = Result<HostVec>>;
}

impl AsyncDownload for CpuBackend {
    /// The CPU backend's data is already on the host: ready at once.
    fn download_async(&self, buf: &Self::Buffer) -> impl Future<Output = Result<HostVec>> {
        std::future::ready(self.download(buf))
    }
}

#[cfg(feature = "wgpu")]
impl AsyncDownload for crate::wgpu::WgpuBackend {
    fn download_async(&self, buf: &Self::Buffer) -> impl Future<Output = Result<HostVec>> {
        crate::wgpu::WgpuBackend::download_async(self, buf)
    }
}

impl<B: AsyncDownload> MambaModel<B> {
    /// [`MambaModel::greedy_ids`], awaiting the ids instead of blocking.
    pub async fn greedy_ids_async(&self, state: &mut State<B>) -> Result<Vec<u32>> {
        let sc = &mut state.scratch;
        ops::argmax(self.backend(), &sc.logits, &mut sc.ids)?;
        match self.backend().download_async(&sc.ids).await? {
            HostVec::U32(v) => Ok(v),
            other => Err(Error::DType {
                op: "argmax",
                tensor: "ids",
                got: other.dtype(),
                expected: "u32",
            }),
        }
    }
}

/// Greedy decoding of one prompt, one awaited token at a time: what
/// [`super::Generator`] does for greedy options, without blocking.
pub struct AsyncGreedy<'m, B: AsyncDownload> {
    model: &'m MambaModel<B>,
    state: State<B>,
    stop: Vec<u32>,
    max_new: usize,
    generated: Vec<u32>,
    done: bool,
}

impl<'m, B: AsyncDownload> AsyncGreedy<'m, B> {
    /// Checks the prompt and records its prefill on a fresh state (nothing is awaited
    /// yet: the first [`AsyncGreedy::next`] waits for the prefill). Stops after
    /// `max_new_tokens` or at the config's EOS (unless `ignore_eos`), which is included.
    pub fn new(
        model: &'m MambaModel<B>,
        prompt: &[u32],
        max_new_tokens: usize,
        ignore_eos: bool,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt { sequence: 0 });
        }
        let mut state = model.new_state(1)?;
        model.prefill(&mut state, &[prompt])?;
        let stop = if ignore_eos {
            Vec::new()
        } else {
            model.config().eos_token_id.into_iter().collect()
        };
        Ok(AsyncGreedy {
            model,
            state,
            stop,
            max_new: max_new_tokens,
            generated: Vec::new(),
            done: false,
        })
    }

    /// The next token, or `None` once EOS was produced or the budget is spent.
    pub async fn next(&mut self) -> Result<Option<u32>> {
        if self.done || self.generated.len() >= self.max_new {
            return Ok(None);
        }
        if !self.generated.is_empty() {
            // The last argmax is already in the state's id buffer: no upload.
            self.model.step_device_ids(&mut self.state)?;
        }
        let ids = self.model.greedy_ids_async(&mut self.state).await?;
        let id = *ids.first().ok_or_else(|| Error::Device {
            backend: self.model.backend().name(),
            why: "argmax returned no id".into(),
        })?;
        self.generated.push(id);
        self.done = self.stop.contains(&id);
        Ok(Some(id))
    }

    /// The ids generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// The state after the generated tokens (the last one not yet consumed).
    pub fn into_state(self) -> State<B> {
        self.state
    }
}

/// All greedy ids for `prompt` (see [`AsyncGreedy`]), awaited one by one.
pub async fn greedy_ids<B: AsyncDownload>(
    model: &MambaModel<B>,
    prompt: &[u32],
    max_new_tokens: usize,
) -> Result<Vec<u32>> {
    let mut g = AsyncGreedy::new(model, prompt, max_new_tokens, false)?;
    while g.next().await?.is_some() {}
    Ok(g.generated)
}

#[cfg(feature = "tokenizers")]
impl<B: AsyncDownload> super::TextModel<B> {
    /// Greedy text for `prompt`, each new piece of text handed to `on_piece` as its
    /// token arrives (a UTF-8 character split over tokens comes whole, see
    /// [`super::TextStream`]); returns the whole generated text.
    pub async fn generate_greedy_async(
        &self,
        prompt: &str,
        max_new_tokens: usize,
        mut on_piece: impl FnMut(&str),
    ) -> Result<String> {
        let ids = self.encode(prompt)?;
        let mut g = AsyncGreedy::new(self.model(), &ids, max_new_tokens, false)?;
        let mut stream = self.tokenizer().stream();
        let mut text = String::new();
        while let Some(id) = g.next().await? {
            let piece = stream.push(id)?;
            if !piece.is_empty() {
                on_piece(&piece);
                text.push_str(&piece);
            }
        }
        let rest = stream.finish()?;
        if !rest.is_empty() {
            on_piece(&rest);
            text.push_str(&rest);
        }
        Ok(text)
    }
}
