//! Sampling and generation: greedy, temperature, top-k, top-p, min-p, repetition
//! penalty, a seeded reproducible RNG (ChaCha8), stop ids and EOS, and a streaming
//! [`Generator`] that yields token ids as they are produced.
//!
//! Processing order follows Hugging Face `generate`: repetition penalty on the raw
//! logits, then temperature, then top-k, top-p and min-p on the surviving tokens.
//! Temperature 0 is greedy; greedy without a penalty runs `argmax` on the device and
//! downloads only the ids.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::mamba::MambaModel;
use super::state::State;
use crate::backend::Backend;
use crate::error::{Error, Result};

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1 = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one; 0 = off.
    pub min_p: f32,
    /// HF-style: a seen token's logit is divided by the penalty when positive,
    /// multiplied when negative; 1 = off.
    pub repetition_penalty: f32,
    /// Seed of the ChaCha8 generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with default settings.
    pub fn greedy() -> Self {
        Self::default()
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |param, why: String| Err(Error::Sampling { param, why });
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temperature",
                format!("{} is not a finite number >= 0", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} is not in (0, 1]", self.top_p));
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return bad("min_p", format!("{} is not in [0, 1]", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(
                "repetition_penalty",
                format!("{} is not a finite number > 0", self.repetition_penalty),
            );
        }
        Ok(())
    }
}

/// HF's `RepetitionPenaltyLogitsProcessor`: every token in `history` has its logit
/// divided by `penalty` if positive, multiplied if negative (once per distinct token).
pub fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; logits.len()];
    for &t in history {
        let t = t as usize;
        if t < logits.len() && !seen[t] {
            seen[t] = true;
            let l = logits[t];
            logits[t] = if l > 0.0 { l / penalty } else { l * penalty };
        }
    }
}

/// Index of the largest logit (the first on ties; NaN never wins), as `ops::argmax`.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// The distribution sampling draws from after all filters: `(token, probability)`,
/// most likely first, probabilities summing to 1. Used by [`Sampler`]; public so the
/// filters can be inspected and tested. Needs `temperature > 0`.
pub fn filtered_distribution(
    logits: &[f32],
    history: &[u32],
    p: &SamplingParams,
) -> Vec<(u32, f32)> {
    let mut l = logits.to_vec();
    apply_repetition_penalty(&mut l, history, p.repetition_penalty);
    let t = p.temperature as f64;
    let mut cand: Vec<(u32, f64)> = l
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan() && **v != f32::NEG_INFINITY)
        .map(|(i, &v)| (i as u32, v as f64 / t))
        .collect();
    if cand.is_empty() {
        return vec![(argmax(logits), 1.0)];
    }
    // Most likely first; ties by index.
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 && cand.len() > p.top_k {
        cand.truncate(p.top_k);
    }
    let max = cand[0].1;
    let mut probs: Vec<(u32, f64)> = cand.iter().map(|&(i, v)| (i, (v - max).exp())).collect();
    normalise(&mut probs);
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = 0;
        for &(_, q) in &probs {
            if cum >= p.top_p as f64 && keep > 0 {
                break;
            }
            cum += q;
            keep += 1;
        }
        probs.truncate(keep.max(1));
        normalise(&mut probs);
    }
    if p.min_p > 0.0 {
        let thr = p.min_p as f64 * probs[0].1;
        probs.retain(|&(_, q)| q >= thr);
        normalise(&mut probs);
    }
    probs.into_iter().map(|(i, q)| (i, q as f32)).collect()
}

fn normalise(p: &mut [(u32, f64)]) {
    let s: f64 = p.iter().map(|x| x.1).sum();
    if s > 0.0 {
        p.iter_mut().for_each(|x| x.1 /= s);
    }
}

/// Chooses tokens from logits with [`SamplingParams`] and its own seeded RNG.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        Self::with_stream(params, 0)
    }

    /// A sampler on RNG stream `stream` of the seed: sequence i of a batch uses stream
    /// i, so sequence 0 of a batch samples what it would alone.
    pub fn with_stream(params: SamplingParams, stream: u64) -> Result<Self> {
        params.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        rng.set_stream(stream);
        Ok(Sampler { params, rng })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Can the choice run as a device argmax (greedy, no penalty)?
    pub fn device_greedy(&self) -> bool {
        self.params.is_greedy() && self.params.repetition_penalty == 1.0
    }

    /// The next token for `logits`, given the tokens seen so far (for the penalty).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        if self.params.is_greedy() {
            if self.params.repetition_penalty == 1.0 {
                return argmax(logits);
            }
            let mut l = logits.to_vec();
            apply_repetition_penalty(&mut l, history, self.params.repetition_penalty);
            return argmax(&l);
        }
        let dist = filtered_distribution(logits, history, &self.params);
        let u: f64 = self.rng.random::<f64>();
        let mut cum = 0.0f64;
        for &(i, q) in &dist {
            cum += q as f64;
            if u < cum {
                return i;
            }
        }
        dist.last().map_or(0, |x| x.0)
    }
}

/// What to generate and when to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    /// Extra ids that end a sequence (the EOS of the config is added unless
    /// `ignore_eos`). The stop token is part of the output, as in HF `generate`.
    pub stop_ids: Vec<u32>,
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            sampling: SamplingParams::default(),
            max_new_tokens: 64,
            stop_ids: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Timings of a generation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub prefill: Duration,
    /// Decode steps run (the first new token comes from the prefill logits).
    pub decode_steps: usize,
    pub decode: Duration,
    pub generated_tokens: usize,
}

impl GenerationStats {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second of decoding (prefill excluded).
    pub fn decode_tokens_per_s(&self) -> f64 {
        if self.decode_steps == 0 {
            return 0.0;
        }
        self.decode_steps as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

/// Generates for a batch of prompts (of any lengths) together: each call of
/// [`BatchGenerator::next_tokens`] produces one token per unfinished sequence.
pub struct BatchGenerator<'m, B: Backend> {
    model: &'m MambaModel<B>,
    state: State<B>,
    samplers: Vec<Sampler>,
    history: Vec<Vec<u32>>,
    prompt_lens: Vec<usize>,
    done: Vec<bool>,
    stop: Vec<u32>,
    max_new: usize,
    produced: usize,
    /// The last tokens, to feed to the next step (None: logits are fresh).
    pending: Option<Vec<u32>>,
    /// The pending ids are already on the device (greedy argmax).
    pending_on_device: bool,
    stats: GenerationStats,
}

impl<'m, B: Backend> BatchGenerator<'m, B> {
    /// Prefills every prompt on a fresh state.
    pub fn new(
        model: &'m MambaModel<B>,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
    ) -> Result<Self> {
        let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        model.check_ids(&refs)?;
        let mut state = model.new_state(prompts.len())?;
        let t0 = Instant::now();
        model.prefill(&mut state, &refs)?;
        // Make the prefill time honest on asynchronous backends.
        let _ = model.backend().download(state.logits())?;
        let prefill = t0.elapsed();
        let mut g = Self::from_state(model, state, prompts.to_vec(), opts)?;
        g.stats.prefill = prefill;
        g.stats.prompt_tokens = prompts.iter().map(Vec::len).sum();
        Ok(g)
    }

    /// Continues from a state whose logits are those after `history` (one history per
    /// sequence, used for the repetition penalty): a prefilled state, one restored from
    /// a [`super::HostState`], or one from [`BatchGenerator::into_state`]. The first
    /// token is chosen from the state's logits. A sequence that has consumed no token
    /// has no logits to choose from: [`Error::StateNotPrefilled`]. Sampling restarts
    /// its random stream from `opts.sampling.seed`.
    pub fn from_state(
        model: &'m MambaModel<B>,
        state: State<B>,
        history: Vec<Vec<u32>>,
        opts: &GenerateOptions,
    ) -> Result<Self> {
        if history.len() != state.batch() {
            return Err(Error::StateMismatch {
                what: "history count (batch)",
                got: vec![history.len()],
                expected: vec![state.batch()],
            });
        }
        if let Some(sequence) = state.tokens_seen().iter().position(|&n| n == 0) {
            return Err(Error::StateNotPrefilled { sequence });
        }
        let samplers = (0..state.batch())
            .map(|i| Sampler::with_stream(opts.sampling.clone(), i as u64))
            .collect::<Result<_>>()?;
        let mut stop = opts.stop_ids.clone();
        if !opts.ignore_eos {
            stop.extend(model.config().eos_token_id);
        }
        let batch = state.batch();
        Ok(BatchGenerator {
            model,
            state,
            samplers,
            prompt_lens: history.iter().map(Vec::len).collect(),
            history,
            done: vec![false; batch],
            stop,
            max_new: opts.max_new_tokens,
            produced: 0,
            pending: None,
            pending_on_device: false,
            stats: GenerationStats::default(),
        })
    }

    /// The next token of every sequence (`None` for finished ones), or `None` when all
    /// are finished or `max_new_tokens` is reached.
    pub fn next_tokens(&mut self) -> Result<Option<Vec<Option<u32>>>> {
        if self.produced >= self.max_new || self.done.iter().all(|d| *d) {
            return Ok(None);
        }
        let m = self.model;
        if let Some(ids) = self.pending.take() {
            let t0 = Instant::now();
            if self.pending_on_device {
                m.step_device_ids(&mut self.state)?;
            } else {
                m.step(&mut self.state, &ids)?;
            }
            self.stats.decode_steps += 1;
            self.stats.decode += t0.elapsed();
        }
        let t0 = Instant::now();
        let device = self.samplers.iter().all(Sampler::device_greedy);
        let ids: Vec<u32> = if device {
            m.greedy_ids(&mut self.state)?
        } else {
            let logits = m.download_logits(&self.state)?;
            let v = m.config().vocab_size;
            self.samplers
                .iter_mut()
                .zip(&self.history)
                .zip(logits.chunks_exact(v))
                .map(|((s, h), row)| s.sample(row, h))
                .collect()
        };
        if self.produced > 0 {
            // Sampling after a step waits for it: count it as decode time.
            self.stats.decode += t0.elapsed();
        }
        let mut out = vec![None; ids.len()];
        for (i, &t) in ids.iter().enumerate() {
            if self.done[i] {
                continue;
            }
            out[i] = Some(t);
            self.history[i].push(t);
            if self.stop.contains(&t) {
                self.done[i] = true;
            }
        }
        self.produced += 1;
        self.stats.generated_tokens += out.iter().flatten().count();
        self.pending = Some(ids);
        self.pending_on_device = device;
        Ok(Some(out))
    }

    /// The tokens generated so far for sequence `i`.
    pub fn generated(&self, i: usize) -> &[u32] {
        &self.history[i][self.prompt_lens[i]..]
    }

    /// Has sequence `i` stopped (EOS or a stop id)?
    pub fn is_done(&self, i: usize) -> bool {
        self.done[i]
    }

    pub fn stats(&self) -> GenerationStats {
        self.stats
    }

    /// Runs to the end; the generated tokens of every sequence.
    pub fn run(mut self) -> Result<Vec<Vec<u32>>> {
        while self.next_tokens()?.is_some() {}
        Ok((0..self.history.len())
            .map(|i| self.generated(i).to_vec())
            .collect())
    }

    /// The state after every token produced so far: the last tokens, chosen but not
    /// yet fed, are stepped in first (one decode step), so the state's logits choose
    /// the next token and [`BatchGenerator::from_state`] with the histories (prompt +
    /// generated) continues exactly where this generator would have (greedy decoding
    /// gives the same ids; sampling restarts its random stream).
    pub fn into_state(mut self) -> Result<State<B>> {
        if let Some(ids) = self.pending.take() {
            if self.pending_on_device {
                self.model.step_device_ids(&mut self.state)?;
            } else {
                self.model.step(&mut self.state, &ids)?;
            }
        }
        Ok(self.state)
    }

    /// The token histories (prompt, then generated) of every sequence, as
    /// [`BatchGenerator::from_state`] takes them.
    pub fn histories(&self) -> &[Vec<u32>] {
        &self.history
    }
}

/// A streaming generator for one prompt: an iterator over the new token ids.
///
/// ```no_run
/// # use mamba_gpu::model::{MambaModel, Generator, GenerateOptions, LoadOptions};
/// # fn main() -> mamba_gpu::Result<()> {
/// let model = MambaModel::load(mamba_gpu::CpuBackend::new(), "model_dir", &LoadOptions::default())?;
/// for id in Generator::new(&model, &[1, 2, 3], &GenerateOptions::default())? {
///     println!("{}", id?);
/// }
/// # Ok(())
/// # }
/// ```
pub struct Generator<'m, B: Backend> {
    inner: BatchGenerator<'m, B>,
}

impl<'m, B: Backend> Generator<'m, B> {
    pub fn new(model: &'m MambaModel<B>, prompt: &[u32], opts: &GenerateOptions) -> Result<Self> {
        Ok(Generator {
            inner: BatchGenerator::new(model, &[prompt.to_vec()], opts)?,
        })
    }

    /// The tokens generated so far.
    pub fn generated(&self) -> &[u32] {
        self.inner.generated(0)
    }

    pub fn stats(&self) -> GenerationStats {
        self.inner.stats()
    }
}

impl<B: Backend> Iterator for Generator<'_, B> {
    type Item = Result<u32>;

    fn next(&mut self) -> Option<Result<u32>> {
        match self.inner.next_tokens() {
            Ok(Some(t)) => t[0].map(Ok),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
