//! `MambaModel`: a Mamba language model on any [`Backend`] — Mamba-1, Falcon-Mamba or
//! Mamba-2 (the layers' mixer, in `mixer.rs`, follows the config's [`super::Family`]).
//!
//! The forward pass equals Hugging Face's `MambaForCausalLM` (and
//! `FalconMambaForCausalLM`, `Mamba2ForCausalLM` with their mixers):
//!
//! ```text
//! h = embedding(ids)
//! for each layer:  h = h + mixer(rmsnorm(h))          (residual in f32)
//! logits = lm_head(rmsnorm_f(h))[last position]
//! mixer(u): x, z = in_proj(u);  x = silu(conv1d(x));  dt, B, C = x_proj(x)
//!           y = scan(x, Δ = softplus(dt_proj(dt)), A, B, C, D) · silu(z);  out_proj(y)
//! ```
//!
//! The residual add is fused into the next norm (`ops::rms_norm` with a residual does
//! `residual += x; out = norm(residual)`). A prompt is prefilled in one pass through
//! the scan (token-major, as the matmuls produce it) and the conv and ssm states are
//! carried, so a prefill can continue on top of an existing state; decoding then runs
//! token by token with `causal_conv1d_update` + `selective_state_update` in the
//! preallocated buffers of the [`State`]. A step only records ops on buffers that
//! belong to the model and the state, so it runs through [`Backend::replay`] keyed by
//! (model, state, batch): on CUDA the whole step is one graph launch.

use super::config::MambaConfig;
use super::gguf::GgufFile;
use super::mixer::{Bufs, Pass, mixer};
use super::state::{Activations, Dims, State, StepScratch, copy_slot};
use super::weights::{LoadOptions, Shard, Weights, load_weights};
use crate::backend::{Backend, ReplayKey, unique_id};
use crate::error::{Error, Result};
use crate::ops;
use crate::ops::call::ReplayCall;
use crate::tensor::{DType, HostSlice};

/// A Mamba language model whose weights live on backend `B`.
pub struct MambaModel<B: Backend> {
    be: B,
    /// Names the weights in [`ReplayKey`]s (they never change after loading).
    id: u64,
    cfg: MambaConfig,
    w: Weights<B>,
    prefill_chunk: Option<usize>,
    /// Decode with the fused step where it applies (`fused.rs`).
    fused_decode: bool,
}

#[path = "fused.rs"]
mod fused;

impl<B: Backend> Drop for MambaModel<B> {
    /// Replays of decode steps name the model's weights; a backend may free what it kept
    /// for them (wgpu bind groups hold the weight buffers alive).
    fn drop(&mut self) {
        self.be.forget_replays(self.id);
    }
}

impl<B: Backend> MambaModel<B> {
    /// Loads `dir/config.json` and `dir/model.safetensors` (or the shards of
    /// `dir/model.safetensors.index.json`), memory-mapped, onto `be`. A path that is not
    /// a directory is read as a GGUF file (llama.cpp's format: F32, F16, BF16 and Q8_0
    /// tensors, architectures `mamba` and `mamba2`), memory-mapped as well.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(be: B, dir: impl AsRef<std::path::Path>, opts: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return super::checkpoint::with_mapped_file(dir, |label, bytes| {
                Self::from_gguf(be, &GgufFile::parse(bytes, label)?, opts)
            });
        }
        let cfg = MambaConfig::from_file(&dir.join("config.json"))?;
        let w = super::checkpoint::with_mapped_dir(dir, |label, shards| {
            load_weights(&be, &cfg, label, shards, opts)
        })?;
        Ok(Self::from_parts(be, cfg, w))
    }

    /// Loads from in-memory config JSON and safetensors blobs (one, or several shards).
    pub fn from_bytes(
        be: B,
        config_json: &[u8],
        safetensors: &[&[u8]],
        opts: &LoadOptions,
    ) -> Result<Self> {
        let cfg = MambaConfig::from_json_bytes(config_json, "config.json")?;
        let shards: Vec<Shard<'_>> = safetensors
            .iter()
            .enumerate()
            .map(|(i, b)| Shard {
                file: if safetensors.len() == 1 {
                    "model.safetensors".into()
                } else {
                    format!("shard {i}")
                },
                bytes: b,
            })
            .collect();
        let w = load_weights(&be, &cfg, "model.safetensors", &shards, opts)?;
        Ok(Self::from_parts(be, cfg, w))
    }

    /// Loads a GGUF file held in memory (`from_bytes`' counterpart; errors name it
    /// `model.gguf`).
    pub fn from_gguf_bytes(be: B, gguf: &[u8], opts: &LoadOptions) -> Result<Self> {
        Self::from_gguf(be, &GgufFile::parse(gguf, "model.gguf")?, opts)
    }

    /// Loads a parsed GGUF file (its bytes borrowed, not copied).
    pub(crate) fn from_gguf(be: B, g: &GgufFile<'_>, opts: &LoadOptions) -> Result<Self> {
        let (cfg, w) = super::gguf_model::load(&be, g, opts)?;
        Ok(Self::from_parts(be, cfg, w))
    }

    /// A model from a config and weights already on the device.
    pub fn from_parts(be: B, cfg: MambaConfig, w: Weights<B>) -> Self {
        MambaModel {
            be,
            id: unique_id(),
            cfg,
            w,
            prefill_chunk: None,
            fused_decode: true,
        }
    }

    pub fn backend(&self) -> &B {
        &self.be
    }

    pub fn config(&self) -> &MambaConfig {
        &self.cfg
    }

    pub fn weights(&self) -> &Weights<B> {
        &self.w
    }

    /// The storage dtype of the matmul weights.
    pub fn weight_dtype(&self) -> DType {
        self.w.dtype
    }

    /// Splits prefills longer than `chunk` tokens into chunks carried through the state
    /// (bounds activation memory; the result is the same up to rounding). `None`, the
    /// default, prefills a prompt in one pass.
    pub fn set_prefill_chunk(&mut self, chunk: Option<usize>) {
        self.prefill_chunk = chunk.filter(|&c| c > 0);
    }

    fn dims(&self) -> Dims {
        Dims::of(&self.cfg)
    }

    /// A zero state for `batch` sequences, with its decode buffers.
    pub fn new_state(&self, batch: usize) -> Result<State<B>> {
        State::new(&self.be, self.dims(), self.identity(), batch)
    }

    /// Checks that there is at least one prompt ([`Error::NoPrompts`]), that every
    /// prompt has a token ([`Error::EmptyPrompt`]) and that every id is below the
    /// vocabulary size ([`Error::TokenId`]).
    pub fn check_ids(&self, prompts: &[&[u32]]) -> Result<()> {
        if prompts.is_empty() {
            return Err(Error::NoPrompts);
        }
        for (s, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(Error::EmptyPrompt { sequence: s });
            }
            self.check_step_ids(p, s)?;
        }
        Ok(())
    }

    fn check_step_ids(&self, ids: &[u32], sequence: usize) -> Result<()> {
        let vocab = self.cfg.vocab_size;
        if let Some((position, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= vocab)
        {
            return Err(Error::TokenId {
                id: id as u64,
                sequence,
                position,
                vocab,
            });
        }
        Ok(())
    }

    /// Prefills one prompt per sequence of `state` (continuing from whatever the state
    /// holds: a fresh state starts from zero) and leaves the last-position logits in
    /// [`State::logits`]. Prompts of one length run as one batch; otherwise each runs
    /// alone into its slot.
    pub fn prefill(&self, state: &mut State<B>, prompts: &[&[u32]]) -> Result<()> {
        if prompts.len() != state.batch {
            return Err(Error::StateMismatch {
                what: "prompt count (batch)",
                got: vec![prompts.len()],
                expected: vec![state.batch],
            });
        }
        self.check_ids(prompts)?;
        let len = prompts[0].len();
        if prompts.iter().all(|p| p.len() == len) {
            let ids: Vec<u32> = prompts.iter().flat_map(|p| p.iter().copied()).collect();
            let State {
                conv,
                ssm,
                scratch,
                seen,
                batch,
                ..
            } = state;
            self.forward_chunked(conv, ssm, &ids, *batch, len, &mut scratch.logits)?;
            seen.iter_mut().for_each(|s| *s += len);
        } else {
            for (slot, p) in prompts.iter().enumerate() {
                self.prefill_slot(state, slot, p)?;
            }
        }
        self.be.flush()
    }

    /// Prefills `ids` into sequence `slot` of `state` only, leaving the others as they
    /// are; its logits row is updated.
    pub fn prefill_slot(&self, state: &mut State<B>, slot: usize, ids: &[u32]) -> Result<()> {
        if slot >= state.batch {
            return Err(Error::StateMismatch {
                what: "slot",
                got: vec![slot],
                expected: vec![state.batch],
            });
        }
        if ids.is_empty() {
            return Err(Error::EmptyPrompt { sequence: slot });
        }
        self.check_step_ids(ids, slot)?;
        let mut one = self.new_state(1)?;
        copy_slot(&self.be, state, slot, &mut one, 0)?;
        {
            let State {
                conv, ssm, scratch, ..
            } = &mut one;
            self.forward_chunked(conv, ssm, ids, 1, ids.len(), &mut scratch.logits)?;
        }
        one.seen[0] += ids.len();
        copy_slot(&self.be, &one, 0, state, slot)?;
        let v = self.cfg.vocab_size;
        ops::copy(
            &self.be,
            &one.scratch.logits,
            0,
            &mut state.scratch.logits,
            slot * v,
            v,
        )
    }

    fn forward_chunked(
        &self,
        conv: &mut [Vec<B::Buffer>],
        ssm: &mut [B::Buffer],
        ids: &[u32],
        batch: usize,
        len: usize,
        logits: &mut B::Buffer,
    ) -> Result<()> {
        let chunk = self.prefill_chunk.unwrap_or(len).min(len);
        if chunk == len {
            return self.forward_seq(conv, ssm, ids, batch, len, logits);
        }
        let mut start = 0;
        while start < len {
            let l = chunk.min(len - start);
            let part: Vec<u32> = (0..batch)
                .flat_map(|b| ids[b * len + start..b * len + start + l].iter().copied())
                .collect();
            self.forward_seq(conv, ssm, &part, batch, l, logits)?;
            start += l;
        }
        Ok(())
    }

    /// One pass over `(batch, len)` tokens, carrying the states; writes the logits of
    /// the last position `(batch, V)`.
    fn forward_seq(
        &self,
        conv: &mut [Vec<B::Buffer>],
        ssm: &mut [B::Buffer],
        ids: &[u32],
        batch: usize,
        len: usize,
        logits: &mut B::Buffer,
    ) -> Result<()> {
        let be = &self.be;
        let d = self.cfg.hidden_size;
        let eps = self.cfg.layer_norm_epsilon;
        let ids = be.upload(HostSlice::U32(ids), &[batch, len])?;
        let mut s = Activations::new(be, &self.dims(), &[batch, len])?;
        ops::embedding(be, &ids, &self.w.embedding, &mut s.hidden)?;
        self.layers(conv, ssm, &mut s, Pass::Seq { batch, len })?;
        // Only the last position of each sequence reaches the final norm and lm_head.
        let mut last_h = be.zeros(DType::F32, &[batch, d])?;
        let mut last_r = be.zeros(DType::F32, &[batch, d])?;
        for b in 0..batch {
            let off = (b * len + len - 1) * d;
            ops::copy(be, &s.hidden, off, &mut last_h, b * d, d)?;
            ops::copy(be, &s.residual, off, &mut last_r, b * d, d)?;
        }
        let mut normed = be.zeros(DType::F32, &[batch, d])?;
        ops::rms_norm(
            be,
            &last_h,
            &self.w.norm_f,
            eps,
            Some(&mut last_r),
            &mut normed,
        )?;
        self.lm_head_matmul(&normed, logits)
    }

    /// Every layer on the embedded `a.hidden`: the residual add fused into the next norm,
    /// then the mixer, which writes `a.hidden` again. Prefill and decode alike.
    fn layers(
        &self,
        conv: &mut [Vec<B::Buffer>],
        ssm: &mut [B::Buffer],
        a: &mut Activations<B>,
        pass: Pass,
    ) -> Result<()> {
        let be = &self.be;
        let eps = self.cfg.layer_norm_epsilon;
        let rows = match pass {
            Pass::Seq { batch, len } => batch * len,
            Pass::Step { batch } => batch,
        };
        for (l, lw) in self.w.layers.iter().enumerate() {
            let Activations {
                hidden,
                residual,
                normed,
                x,
                z,
                xc,
                dt,
                y,
                dt_low,
                bm,
                cm,
                extra,
            } = &mut *a;
            if l == 0 {
                ops::copy(be, hidden, 0, residual, 0, rows * self.cfg.hidden_size)?;
                ops::rms_norm(be, hidden, &lw.norm, eps, None, normed)?;
            } else {
                ops::rms_norm(be, hidden, &lw.norm, eps, Some(residual), normed)?;
            }
            let bufs = Bufs {
                x,
                z,
                xc,
                dt,
                y,
                dt_low,
                bm,
                cm,
                extra,
            };
            let (cfg, w) = (&self.cfg, &self.w);
            mixer(
                be,
                cfg,
                w,
                lw,
                pass,
                normed,
                &mut conv[l],
                &mut ssm[l],
                bufs,
                hidden,
            )?;
        }
        Ok(())
    }

    /// `logits = x · headᵀ`: the LM head, or the embedding table when tied (and the
    /// weights are not Q8_0, which keep a quantized copy as the head).
    pub(super) fn lm_head_matmul(&self, x: &B::Buffer, logits: &mut B::Buffer) -> Result<()> {
        match &self.w.lm_head {
            Some(head) => head.matmul(&self.be, x, None, logits),
            None => ops::matmul(&self.be, x, &self.w.embedding, None, logits),
        }
    }

    /// One decode step: embeds `ids` (one per sequence), advances every sequence by one
    /// token and leaves the logits in [`State::logits`].
    pub fn step(&self, state: &mut State<B>, ids: &[u32]) -> Result<()> {
        if ids.len() != state.batch {
            return Err(Error::StateMismatch {
                what: "step ids (batch)",
                got: vec![ids.len()],
                expected: vec![state.batch],
            });
        }
        for (s, &id) in ids.iter().enumerate() {
            self.check_step_ids(&[id], s)?;
        }
        // Into the state's id buffer, where greedy_ids puts device-sampled ids: both
        // kinds of step read the same buffer (and replay the same capture).
        ops::write(&self.be, HostSlice::U32(ids), &mut state.scratch.ids)?;
        self.step_with(state)
    }

    /// Greedy decoding on the device: writes the argmax of the current logits into the
    /// state's id buffer and downloads only those ids.
    pub fn greedy_ids(&self, state: &mut State<B>) -> Result<Vec<u32>> {
        let sc = &mut state.scratch;
        ops::argmax(&self.be, &sc.logits, &mut sc.ids)?;
        match self.be.download(&sc.ids)? {
            crate::tensor::HostVec::U32(v) => Ok(v),
            other => Err(Error::DType {
                op: "argmax",
                tensor: "ids",
                got: other.dtype(),
                expected: "u32",
            }),
        }
    }

    /// A decode step that embeds the ids already on the device (written by
    /// [`Self::greedy_ids`]): no upload at all.
    pub fn step_device_ids(&self, state: &mut State<B>) -> Result<()> {
        self.step_with(state)
    }

    /// The decode step on the ids in the state's id buffer. The ops run through
    /// [`Backend::replay`]: the key names the weights (model id), the state's buffers
    /// (state id) and the batch, and the closure records ops only (no allocation, no
    /// transfer, no host-side effect), so a captured step can be replayed.
    fn step_with(&self, state: &mut State<B>) -> Result<()> {
        let batch = state.batch;
        let fused = self.uses_fused_decode(batch);
        // The variant names the batch and the kind of step (their ops differ).
        let key = ReplayKey::new(self.id, state.id, batch as u64 | (fused as u64) << 32);
        let State {
            conv,
            ssm,
            scratch,
            seen,
            ..
        } = state;
        self.be.replay(ReplayCall::new(&key, &mut || {
            if fused {
                self.forward_step_fused(conv, ssm, scratch)
            } else {
                self.forward_step(conv, ssm, scratch, batch)
            }
        }))?;
        seen.iter_mut().for_each(|n| *n += 1);
        self.be.flush()
    }

    /// Embedding → layers → final norm → LM head for one token per sequence.
    fn forward_step(
        &self,
        conv: &mut [Vec<B::Buffer>],
        ssm: &mut [B::Buffer],
        s: &mut StepScratch<B>,
        batch: usize,
    ) -> Result<()> {
        let be = &self.be;
        let eps = self.cfg.layer_norm_epsilon;
        let StepScratch {
            act: a,
            logits,
            ids,
            ..
        } = s;
        ops::embedding(be, ids, &self.w.embedding, &mut a.hidden)?;
        self.layers(conv, ssm, a, Pass::Step { batch })?;
        ops::rms_norm(
            be,
            &a.hidden,
            &self.w.norm_f,
            eps,
            Some(&mut a.residual),
            &mut a.normed,
        )?;
        self.lm_head_matmul(&a.normed, logits)
    }

    /// Downloads the current logits `(batch, V)` as one row-major vector.
    pub fn download_logits(&self, state: &State<B>) -> Result<Vec<f32>> {
        Ok(self.be.download(&state.scratch.logits)?.to_f32())
    }

    /// Prefills one prompt on a fresh state and returns its last-position logits.
    pub fn logits_for(&self, prompt: &[u32]) -> Result<Vec<f32>> {
        let mut st = self.new_state(1)?;
        self.prefill(&mut st, &[prompt])?;
        self.download_logits(&st)
    }

    /// Copies sequence `src_slot` of `src` into `dst_slot` of `dst` (state, position
    /// count and logits row), on the device.
    pub fn copy_sequence(
        &self,
        src: &State<B>,
        src_slot: usize,
        dst: &mut State<B>,
        dst_slot: usize,
    ) -> Result<()> {
        for (slot, st) in [(src_slot, src.batch), (dst_slot, dst.batch)] {
            if slot >= st {
                return Err(Error::StateMismatch {
                    what: "slot",
                    got: vec![slot],
                    expected: vec![st],
                });
            }
        }
        copy_slot(&self.be, src, src_slot, dst, dst_slot)?;
        let v = self.cfg.vocab_size;
        ops::copy(
            &self.be,
            &src.scratch.logits,
            src_slot * v,
            &mut dst.scratch.logits,
            dst_slot * v,
            v,
        )
    }
}
