//! The recurrent state of a batch of sequences, and its host copy.
//!
//! Per layer: `conv_state (batch, E, K−1)` (the last K−1 conv inputs, oldest first) and
//! `ssm_state (batch, E, N)`, both f32 on the device. Its size does not grow with the
//! sequence: decoding runs in constant memory. The state also owns the per-step
//! scratch buffers of the decode loop, allocated once with it.

use crate::backend::{Backend, unique_id};
use crate::error::{Error, Result};
use crate::tensor::{DType, HostSlice};

/// Buffers of one decode step for a batch, allocated once.
pub(crate) struct StepScratch<B: Backend> {
    /// `(batch, D)`: the embedding, then each mixer's output.
    pub hidden: B::Buffer,
    /// `(batch, D)`: the residual stream.
    pub residual: B::Buffer,
    /// `(batch, D)`: the normalised residual.
    pub normed: B::Buffer,
    /// `(batch, E)` each.
    pub x: B::Buffer,
    pub z: B::Buffer,
    pub xc: B::Buffer,
    pub dt: B::Buffer,
    pub y: B::Buffer,
    /// `(batch, R)`.
    pub dt_low: B::Buffer,
    /// `(batch, N)` each.
    pub bm: B::Buffer,
    pub cm: B::Buffer,
    /// `(batch, V)`: the latest logits (from the prefill or the last step).
    pub logits: B::Buffer,
    /// `(batch)` u32: the ids the next step embeds when they come from the device.
    pub ids: B::Buffer,
}

/// Sizes the state is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub layers: usize,
    pub d: usize,
    pub e: usize,
    pub n: usize,
    pub k: usize,
    pub r: usize,
    pub v: usize,
}

/// The recurrent state of `batch` sequences on the device, plus the decode scratch.
pub struct State<B: Backend> {
    /// Names this state's buffers in the model's [`crate::backend::ReplayKey`]s: a
    /// replayed step writes into them. Renewed whenever a buffer is replaced.
    pub(crate) id: u64,
    pub(crate) batch: usize,
    pub(crate) dims: Dims,
    pub(crate) conv: Vec<B::Buffer>,
    pub(crate) ssm: Vec<B::Buffer>,
    pub(crate) scratch: StepScratch<B>,
    /// Tokens consumed per sequence (prompt and generated).
    pub(crate) seen: Vec<usize>,
}

/// A host copy of a [`State`]: what `save` downloads and `restore` uploads.
#[derive(Debug, Clone, PartialEq)]
pub struct HostState {
    pub batch: usize,
    /// `(batch, E, K−1)`.
    pub conv_shape: [usize; 3],
    /// `(batch, E, N)`.
    pub ssm_shape: [usize; 3],
    /// One vector per layer.
    pub conv: Vec<Vec<f32>>,
    pub ssm: Vec<Vec<f32>>,
    /// Tokens consumed per sequence.
    pub seen: Vec<usize>,
}

impl<B: Backend> State<B> {
    pub(crate) fn new(be: &B, dims: Dims, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::ZeroDim {
                op: "State::new",
                tensor: "state",
                dim: "batch",
                shape: vec![0],
            });
        }
        let Dims {
            layers,
            d,
            e,
            n,
            k,
            r,
            v,
        } = dims;
        let z = |shape: &[usize]| be.zeros(DType::F32, shape);
        let conv = (0..layers)
            .map(|_| z(&[batch, e, k - 1]))
            .collect::<Result<_>>()?;
        let ssm = (0..layers)
            .map(|_| z(&[batch, e, n]))
            .collect::<Result<_>>()?;
        let scratch = StepScratch {
            hidden: z(&[batch, d])?,
            residual: z(&[batch, d])?,
            normed: z(&[batch, d])?,
            x: z(&[batch, e])?,
            z: z(&[batch, e])?,
            xc: z(&[batch, e])?,
            dt: z(&[batch, e])?,
            y: z(&[batch, e])?,
            dt_low: z(&[batch, r])?,
            bm: z(&[batch, n])?,
            cm: z(&[batch, n])?,
            logits: z(&[batch, v])?,
            ids: be.zeros(DType::U32, &[batch])?,
        };
        Ok(State {
            id: unique_id(),
            batch,
            dims,
            conv,
            ssm,
            scratch,
            seen: vec![0; batch],
        })
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

    /// Downloads the state (conv and ssm of every layer) to the host.
    pub fn save(&self, be: &B) -> Result<HostState> {
        let down = |b: &B::Buffer| be.download(b).map(|h| h.to_f32());
        Ok(HostState {
            batch: self.batch,
            conv_shape: [self.batch, self.dims.e, self.dims.k - 1],
            ssm_shape: [self.batch, self.dims.e, self.dims.n],
            conv: self.conv.iter().map(down).collect::<Result<_>>()?,
            ssm: self.ssm.iter().map(down).collect::<Result<_>>()?,
            seen: self.seen.clone(),
        })
    }

    /// Overwrites this state with a saved one of the same batch and sizes (in place: the
    /// buffers are written, not replaced).
    pub fn restore(&mut self, be: &B, host: &HostState) -> Result<()> {
        let conv_shape = [self.batch, self.dims.e, self.dims.k - 1];
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
        check("conv_state shape", &host.conv_shape, &conv_shape)?;
        check("ssm_state shape", &host.ssm_shape, &ssm_shape)?;
        check("layer count", &[host.conv.len()], &[self.dims.layers])?;
        check("layer count", &[host.ssm.len()], &[self.dims.layers])?;
        check("seen", &[host.seen.len()], &[self.batch])?;
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
        let layers = self.conv.iter_mut().zip(self.ssm.iter_mut());
        for ((c, s), (hc, hs)) in layers.zip(host.conv.iter().zip(&host.ssm)) {
            crate::ops::write(be, HostSlice::F32(hc), c)?;
            crate::ops::write(be, HostSlice::F32(hs), s)?;
        }
        self.seen = host.seen.clone();
        Ok(())
    }

    /// Zeroes the state (a fresh start for every sequence).
    pub fn reset(&mut self, be: &B) -> Result<()> {
        let Dims { e, n, k, .. } = self.dims;
        // New buffers (first, in case an allocation fails half-way): a step captured on
        // the old ones must not be replayed.
        self.id = unique_id();
        for c in &mut self.conv {
            *c = be.zeros(DType::F32, &[self.batch, e, k - 1])?;
        }
        for s in &mut self.ssm {
            *s = be.zeros(DType::F32, &[self.batch, e, n])?;
        }
        self.seen.iter_mut().for_each(|s| *s = 0);
        Ok(())
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
    let (cs, ss) = (e * (k - 1), e * n);
    for (s, d) in src.conv.iter().zip(dst.conv.iter_mut()) {
        crate::ops::copy(be, s, src_slot * cs, d, dst_slot * cs, cs)?;
    }
    for (s, d) in src.ssm.iter().zip(dst.ssm.iter_mut()) {
        crate::ops::copy(be, s, src_slot * ss, d, dst_slot * ss, ss)?;
    }
    dst.seen[dst_slot] = src.seen[src_slot];
    Ok(())
}
