//! The recurrent state of a batch of sequences, and its host copy.
//!
//! Per layer: `conv_state (batch, C, K−1)` (the last K−1 conv inputs, oldest first; C
//! = E channels, or E + 2GN for Mamba-2, whose conv also runs over B and C) and
//! `ssm_state (batch, E, N)` (Mamba-2: `(batch, heads, head_dim, N)`, the same
//! memory), both f32 on the device. On the device a Mamba-2 conv state is three
//! buffers (x, B, C channels); the host copy joins them per sequence in that order. Its size does not grow with the
//! sequence: decoding runs in constant memory. The state also owns the per-step
//! scratch buffers of the decode loop, allocated once with it.
//!
//! A [`HostState`] is everything a continuation reads: the conv and ssm states, the
//! latest logits (the next token is chosen from them before any step runs), the ids in
//! the device id buffer (what `step_device_ids` feeds) and the per-sequence token
//! counts, tagged with the [`ModelIdentity`] it belongs to. The other scratch buffers
//! are written by a step before they are read, so they are not saved.
//! [`HostState::to_bytes`] / [`HostState::from_bytes`] (in `state_bytes.rs`) write and
//! read it in a small versioned format.

use super::config::{Family, MambaConfig};
use super::mamba::MambaModel;
use crate::backend::{Backend, unique_id};
use crate::error::{Error, Result};
use crate::tensor::{DType, HostSlice, HostVec};

/// Buffers of one decode step for a batch, allocated once.
pub(crate) struct StepScratch<B: Backend> {
    /// The layers' activations, `(batch, ...)`.
    pub act: Activations<B>,
    /// `(batch, V)`: the latest logits (from the prefill or the last step).
    pub logits: B::Buffer,
    /// `(batch)` u32: the ids the next step embeds when they come from the device.
    pub ids: B::Buffer,
    /// `(batch, R + 2·G·N)`: Δ's low-rank input, B and C side by side (the fused step).
    pub dbc: B::Buffer,
}

/// The activation buffers of the layers, `(rows..., width)` with rows `(batch, L)` for a
/// prefill or `(batch)` for a decode step: the same set for both.
pub(crate) struct Activations<B: Backend> {
    /// D: the embedding, then each mixer's output.
    pub hidden: B::Buffer,
    /// D: the residual stream.
    pub residual: B::Buffer,
    /// D: the normalised residual.
    pub normed: B::Buffer,
    /// E each.
    pub x: B::Buffer,
    pub z: B::Buffer,
    pub xc: B::Buffer,
    pub dt: B::Buffer,
    pub y: B::Buffer,
    /// R (Mamba-2: one Δ per head).
    pub dt_low: B::Buffer,
    /// G·N each: the B and C the scan reads.
    pub bm: B::Buffer,
    pub cm: B::Buffer,
    /// Falcon-Mamba and Mamba-2: B and C before their norm / conv; Falcon's normed Δ
    /// input (R); Mamba-2's normed output (E).
    pub extra: Extra<B>,
}

impl<B: Backend> Activations<B> {
    /// Zero buffers for `rows` (`[batch, len]` or `[batch]`).
    pub(crate) fn new(be: &B, dims: &Dims, rows: &[usize]) -> Result<Self> {
        let z = |w: usize| {
            let mut s = rows.to_vec();
            s.push(w);
            be.zeros(DType::F32, &s)
        };
        Ok(Activations {
            hidden: z(dims.d)?,
            residual: z(dims.d)?,
            normed: z(dims.d)?,
            x: z(dims.e)?,
            z: z(dims.e)?,
            xc: z(dims.e)?,
            dt: z(dims.e)?,
            y: z(dims.e)?,
            dt_low: z(dims.r)?,
            bm: z(dims.gn())?,
            cm: z(dims.gn())?,
            extra: Extra::new(be, dims, rows)?,
        })
    }
}

/// The buffers only some families use, sized like the ones they stand beside.
pub(crate) struct Extra<B: Backend> {
    pub b_raw: Option<B::Buffer>,
    pub c_raw: Option<B::Buffer>,
    pub dt_normed: Option<B::Buffer>,
    pub y_normed: Option<B::Buffer>,
}

impl<B: Backend> Extra<B> {
    /// The extra buffers of `dims`'s family, each `(rows..., width)`.
    pub(crate) fn new(be: &B, dims: &Dims, rows: &[usize]) -> Result<Self> {
        let z = |w: usize| {
            let mut s = rows.to_vec();
            s.push(w);
            be.zeros(DType::F32, &s)
        };
        let (falcon, m2) = (dims.kind == Kind::Falcon, dims.kind == Kind::Mamba2);
        let gn = dims.gn();
        Ok(Extra {
            b_raw: (falcon || m2).then(|| z(gn)).transpose()?,
            c_raw: (falcon || m2).then(|| z(gn)).transpose()?,
            dt_normed: falcon.then(|| z(dims.r)).transpose()?,
            y_normed: m2.then(|| z(dims.e)).transpose()?,
        })
    }
}

/// The family, as far as buffers and the forward pass care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Mamba1,
    Falcon,
    Mamba2,
}

/// Sizes the state is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub kind: Kind,
    pub layers: usize,
    pub d: usize,
    pub e: usize,
    pub n: usize,
    pub k: usize,
    pub r: usize,
    pub v: usize,
    /// B/C groups (1 but for Mamba-2).
    pub g: usize,
}

impl Dims {
    pub(crate) fn of(c: &MambaConfig) -> Dims {
        let (kind, g) = match c.family {
            Family::Mamba1 => (Kind::Mamba1, 1),
            Family::FalconMamba { .. } => (Kind::Falcon, 1),
            Family::Mamba2(m2) => (Kind::Mamba2, m2.n_groups),
        };
        Dims {
            kind,
            layers: c.num_layers,
            d: c.hidden_size,
            e: c.intermediate_size,
            n: c.state_size,
            k: c.conv_kernel,
            r: c.dt_rank,
            v: c.vocab_size,
            g,
        }
    }

    /// Width of B and C.
    pub(crate) fn gn(&self) -> usize {
        self.g * self.n
    }

    /// The channels of each device conv state of a layer: `[E]`, or Mamba-2's
    /// `[E, GN, GN]` (x, B, C).
    pub(crate) fn conv_parts(&self) -> Vec<usize> {
        match self.kind {
            Kind::Mamba2 => vec![self.e, self.gn(), self.gn()],
            _ => vec![self.e],
        }
    }

    /// All conv channels of a layer (the host copy's C).
    pub(crate) fn conv_channels(&self) -> usize {
        self.conv_parts().iter().sum()
    }
}

/// What a saved state must match to be restored into a model: the config values that
/// set the state's shapes, the weight storage dtype (the same state gives other logits
/// with other weights), and a hash of the config values that change the numbers but
/// no shape. It names the architecture, not the weight values: two checkpoints of one
/// architecture have the same identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelIdentity {
    pub num_layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub state_size: usize,
    pub conv_kernel: usize,
    pub dt_rank: usize,
    pub vocab_size: usize,
    /// Channels of a layer's conv state: E, or E + 2GN for Mamba-2.
    pub conv_channels: usize,
    pub weight_dtype: DType,
    /// FNV-1a of the family and its own values, `use_bias`, `use_conv_bias`,
    /// `tie_word_embeddings` and the bits of `layer_norm_epsilon`
    /// ([`ModelIdentity::config_hash_of`]).
    pub config_hash: u64,
}

/// 64-bit FNV-1a: a small, dependency-free hash that is stable across builds and
/// platforms (it is written to files). Not cryptographic.
pub(crate) fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

impl ModelIdentity {
    /// The identity of a model with config `cfg` and matmul weights stored as `weights`.
    pub fn of(cfg: &MambaConfig, weights: DType) -> Self {
        ModelIdentity {
            num_layers: cfg.num_layers,
            hidden_size: cfg.hidden_size,
            intermediate_size: cfg.intermediate_size,
            state_size: cfg.state_size,
            conv_kernel: cfg.conv_kernel,
            dt_rank: cfg.dt_rank,
            vocab_size: cfg.vocab_size,
            conv_channels: Dims::of(cfg).conv_channels(),
            weight_dtype: weights,
            config_hash: Self::config_hash_of(cfg),
        }
    }

    /// The hash of the config values that do not set a shape.
    pub fn config_hash_of(cfg: &MambaConfig) -> u64 {
        let mut b = vec![
            cfg.use_bias as u8,
            cfg.use_conv_bias as u8,
            cfg.tie_word_embeddings as u8,
        ];
        b.extend(cfg.layer_norm_epsilon.to_bits().to_le_bytes());
        b.extend(cfg.family.name().as_bytes());
        match cfg.family {
            Family::Mamba1 => {}
            Family::FalconMamba { mixer_rms_eps } => {
                b.extend(mixer_rms_eps.to_bits().to_le_bytes())
            }
            Family::Mamba2(m2) => {
                for v in [m2.num_heads, m2.head_dim, m2.n_groups] {
                    b.extend((v as u64).to_le_bytes());
                }
                b.extend(m2.gated_norm_eps.to_bits().to_le_bytes());
            }
        }
        fnv1a(FNV_OFFSET, &b)
    }

    /// The first value of `self` (a saved state's) that differs from `model`'s, as a
    /// typed error.
    pub fn check(&self, model: &ModelIdentity) -> Result<()> {
        let fields = [
            ("num_layers", self.num_layers, model.num_layers),
            ("hidden_size", self.hidden_size, model.hidden_size),
            (
                "intermediate_size",
                self.intermediate_size,
                model.intermediate_size,
            ),
            ("state_size", self.state_size, model.state_size),
            ("conv_kernel", self.conv_kernel, model.conv_kernel),
            ("dt_rank", self.dt_rank, model.dt_rank),
            ("vocab_size", self.vocab_size, model.vocab_size),
            ("conv channels", self.conv_channels, model.conv_channels),
        ];
        for (what, got, expected) in fields {
            if got != expected {
                return Err(Error::StateModel {
                    what,
                    got: got.to_string(),
                    expected: expected.to_string(),
                });
            }
        }
        if self.weight_dtype != model.weight_dtype {
            return Err(Error::StateModel {
                what: "weight dtype",
                got: self.weight_dtype.name().into(),
                expected: model.weight_dtype.name().into(),
            });
        }
        if self.config_hash != model.config_hash {
            return Err(Error::StateModel {
                what: "config hash (family, biases, tied head, norm epsilons, heads/groups)",
                got: format!("{:#018x}", self.config_hash),
                expected: format!("{:#018x}", model.config_hash),
            });
        }
        Ok(())
    }
}

/// The recurrent state of `batch` sequences on the device, plus the decode scratch.
pub struct State<B: Backend> {
    /// Names this state's buffers in the model's [`crate::backend::ReplayKey`]s: a
    /// replayed step writes into them. Renewed whenever a buffer is replaced.
    pub(crate) id: u64,
    pub(crate) batch: usize,
    pub(crate) dims: Dims,
    /// The model this state was made for; checked when a saved state is restored.
    pub(crate) model: ModelIdentity,
    /// Per layer, one buffer per part of [`Dims::conv_parts`].
    pub(crate) conv: Vec<Vec<B::Buffer>>,
    pub(crate) ssm: Vec<B::Buffer>,
    pub(crate) scratch: StepScratch<B>,
    /// Tokens consumed per sequence (prompt and generated).
    pub(crate) seen: Vec<usize>,
}

/// A host copy of a [`State`]: what `save` downloads and `restore` uploads, and what
/// [`HostState::to_bytes`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct HostState {
    /// The model the state belongs to.
    pub model: ModelIdentity,
    pub batch: usize,
    /// `(batch, C, K−1)`: C conv channels (E, or E + 2GN for Mamba-2: x, B, C).
    pub conv_shape: [usize; 3],
    /// `(batch, E, N)`.
    pub ssm_shape: [usize; 3],
    /// One vector per layer.
    pub conv: Vec<Vec<f32>>,
    pub ssm: Vec<Vec<f32>>,
    /// Tokens consumed per sequence.
    pub seen: Vec<usize>,
    /// `(batch, V)`: the latest logits, from which the next token is chosen.
    pub logits: Vec<f32>,
    /// `(batch)`: the device id buffer (the ids the next `step_device_ids` embeds).
    pub ids: Vec<u32>,
}

impl<B: Backend> State<B> {
    pub(crate) fn new(be: &B, dims: Dims, model: ModelIdentity, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::ZeroDim {
                op: "State::new",
                tensor: "state",
                dim: "batch",
                shape: vec![0],
            });
        }
        let Dims {
            layers, e, n, v, ..
        } = dims;
        let z = |shape: &[usize]| be.zeros(DType::F32, shape);
        let conv = (0..layers)
            .map(|_| Self::new_conv(be, &dims, batch))
            .collect::<Result<_>>()?;
        let ssm = (0..layers)
            .map(|_| z(&[batch, e, n]))
            .collect::<Result<_>>()?;
        let scratch = StepScratch {
            act: Activations::new(be, &dims, &[batch])?,
            logits: z(&[batch, v])?,
            ids: be.zeros(DType::U32, &[batch])?,
            dbc: z(&[batch, dims.r + 2 * dims.g * dims.n])?,
        };
        Ok(State {
            id: unique_id(),
            batch,
            dims,
            model,
            conv,
            ssm,
            scratch,
            seen: vec![0; batch],
        })
    }

    /// Zero conv state buffers of one layer.
    fn new_conv(be: &B, dims: &Dims, batch: usize) -> Result<Vec<B::Buffer>> {
        dims.conv_parts()
            .iter()
            .map(|&c| be.zeros(DType::F32, &[batch, c, dims.k - 1]))
            .collect()
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens consumed so far by each sequence.
    pub fn tokens_seen(&self) -> &[usize] {
        &self.seen
    }

    /// The latest logits `(batch, V)` on the device.
    pub fn logits(&self) -> &B::Buffer {
        &self.scratch.logits
    }

    /// The identity of the model this state was made for.
    pub fn model_identity(&self) -> &ModelIdentity {
        &self.model
    }

    /// Downloads everything a continuation needs (conv and ssm of every layer, the
    /// logits, the device ids, the token counts) to the host.
    pub fn save(&self, be: &B) -> Result<HostState> {
        let down = |b: &B::Buffer| be.download(b).map(|h| h.to_f32());
        let ids = match be.download(&self.scratch.ids)? {
            HostVec::U32(v) => v,
            other => {
                return Err(Error::DType {
                    op: "State::save",
                    tensor: "ids",
                    got: other.dtype(),
                    expected: "u32",
                });
            }
        };
        // The parts of a layer's conv state joined per sequence: (batch, C, K-1).
        let km1 = self.dims.k - 1;
        let join = |parts: &Vec<B::Buffer>| -> Result<Vec<f32>> {
            let host: Vec<Vec<f32>> = parts.iter().map(down).collect::<Result<_>>()?;
            let mut out = Vec::with_capacity(host.iter().map(Vec::len).sum());
            for b in 0..self.batch {
                for (h, &c) in host.iter().zip(&self.dims.conv_parts()) {
                    out.extend_from_slice(&h[b * c * km1..(b + 1) * c * km1]);
                }
            }
            Ok(out)
        };
        Ok(HostState {
            model: self.model,
            batch: self.batch,
            conv_shape: [self.batch, self.dims.conv_channels(), km1],
            ssm_shape: [self.batch, self.dims.e, self.dims.n],
            conv: self.conv.iter().map(join).collect::<Result<_>>()?,
            ssm: self.ssm.iter().map(down).collect::<Result<_>>()?,
            seen: self.seen.clone(),
            logits: down(&self.scratch.logits)?,
            ids,
        })
    }

    /// Overwrites this state with a saved one of the same model, batch and sizes (in
    /// place: the buffers are written, not replaced). Everything is checked before
    /// anything is written, so a refused state leaves this one as it was.
    pub fn restore(&mut self, be: &B, host: &HostState) -> Result<()> {
        host.model.check(&self.model)?;
        let conv_shape = [self.batch, self.dims.conv_channels(), self.dims.k - 1];
        let ssm_shape = [self.batch, self.dims.e, self.dims.n];
        let check = |what, got: &[usize], exp: &[usize]| {
            if got == exp {
                Ok(())
            } else {
                Err(Error::StateMismatch {
                    what,
                    got: got.to_vec(),
                    expected: exp.to_vec(),
                })
            }
        };
        check("batch", &[host.batch], &[self.batch])?;
        check("conv_state shape", &host.conv_shape, &conv_shape)?;
        check("ssm_state shape", &host.ssm_shape, &ssm_shape)?;
        check("layer count", &[host.conv.len()], &[self.dims.layers])?;
        check("layer count", &[host.ssm.len()], &[self.dims.layers])?;
        check("seen", &[host.seen.len()], &[self.batch])?;
        check("ids length", &[host.ids.len()], &[self.batch])?;
        check(
            "logits length",
            &[host.logits.len()],
            &[self.batch * self.dims.v],
        )?;
        for (c, s) in host.conv.iter().zip(&host.ssm) {
            check(
                "conv_state length",
                &[c.len()],
                &[conv_shape.iter().product()],
            )?;
            check(
                "ssm_state length",
                &[s.len()],
                &[ssm_shape.iter().product()],
            )?;
        }
        let (km1, parts) = (self.dims.k - 1, self.dims.conv_parts());
        let layers = self.conv.iter_mut().zip(self.ssm.iter_mut());
        for ((c, s), (hc, hs)) in layers.zip(host.conv.iter().zip(&host.ssm)) {
            // Split (batch, C, K-1) back into the parts, sequence by sequence.
            let mut split: Vec<Vec<f32>> = parts
                .iter()
                .map(|&p| Vec::with_capacity(p * km1 * self.batch))
                .collect();
            let mut at = 0;
            for _ in 0..self.batch {
                for (v, &p) in split.iter_mut().zip(&parts) {
                    v.extend_from_slice(&hc[at..at + p * km1]);
                    at += p * km1;
                }
            }
            for (buf, v) in c.iter_mut().zip(&split) {
                crate::ops::write(be, HostSlice::F32(v), buf)?;
            }
            crate::ops::write(be, HostSlice::F32(hs), s)?;
        }
        crate::ops::write(be, HostSlice::F32(&host.logits), &mut self.scratch.logits)?;
        crate::ops::write(be, HostSlice::U32(&host.ids), &mut self.scratch.ids)?;
        self.seen = host.seen.clone();
        Ok(())
    }

    /// Zeroes the state (a fresh start for every sequence).
    pub fn reset(&mut self, be: &B) -> Result<()> {
        let Dims { e, n, .. } = self.dims;
        // New buffers (first, in case an allocation fails half-way): a step captured on
        // the old ones must not be replayed.
        self.id = unique_id();
        for c in &mut self.conv {
            *c = Self::new_conv(be, &self.dims, self.batch)?;
        }
        for s in &mut self.ssm {
            *s = be.zeros(DType::F32, &[self.batch, e, n])?;
        }
        // No logits or ids of the old sequences survive a reset either.
        let v = self.dims.v;
        self.scratch.logits = be.zeros(DType::F32, &[self.batch, v])?;
        self.scratch.ids = be.zeros(DType::U32, &[self.batch])?;
        self.seen.iter_mut().for_each(|s| *s = 0);
        Ok(())
    }
}

impl<B: Backend> MambaModel<B> {
    /// The identity a saved state of this model carries ([`HostState::model`]).
    pub fn identity(&self) -> ModelIdentity {
        ModelIdentity::of(self.config(), self.weight_dtype())
    }

    /// A new state holding the saved `host` (of any batch): the model, sizes and
    /// lengths are checked first.
    pub fn restore_state(&self, host: &HostState) -> Result<State<B>> {
        host.model.check(&self.identity())?;
        let mut st = self.new_state(host.batch)?;
        st.restore(self.backend(), host)?;
        Ok(st)
    }
}

/// Copies the state of sequence `src_slot` of `src` into `dst_slot` of `dst` (device
/// to device, no sync).
pub(crate) fn copy_slot<B: Backend>(
    be: &B,
    src: &State<B>,
    src_slot: usize,
    dst: &mut State<B>,
    dst_slot: usize,
) -> Result<()> {
    let Dims { e, n, k, .. } = src.dims;
    let ss = e * n;
    for (s, d) in src.conv.iter().zip(dst.conv.iter_mut()) {
        for ((s, d), c) in s.iter().zip(d.iter_mut()).zip(src.dims.conv_parts()) {
            let cs = c * (k - 1);
            crate::ops::copy(be, s, src_slot * cs, d, dst_slot * cs, cs)?;
        }
    }
    for (s, d) in src.ssm.iter().zip(dst.ssm.iter_mut()) {
        crate::ops::copy(be, s, src_slot * ss, d, dst_slot * ss, ss)?;
    }
    dst.seen[dst_slot] = src.seen[src_slot];
    Ok(())
}
