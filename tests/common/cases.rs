//! Seeded random cases with the input distributions of mamba_ssm's own tests:
//! u, B, C, D, z ~ N(0, 1); delta ~ U(0, 0.5); A ~ −U(0, 0.5); delta_bias ~ U(0, 0.5).
//! Never all-zeros.

use mamba_gpu::ops::Layout;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

pub struct Gen(ChaCha8Rng);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(ChaCha8Rng::seed_from_u64(seed))
    }
    pub fn normal(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| self.0.sample::<f32, _>(StandardNormal))
            .collect()
    }
    /// U(lo, hi).
    pub fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.0.random_range(lo..hi)).collect()
    }
    pub fn ids(&mut self, n: usize, below: u32) -> Vec<u32> {
        (0..n).map(|_| self.0.random_range(0..below)).collect()
    }
}

/// How B and C vary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bc {
    /// `(dim, N)`
    Invariant,
    /// `(batch, N, L)` / `(batch, L, N)`
    Variable,
    /// `(batch, G, N, L)` / `(batch, L, G, N)`
    Grouped(usize),
}

/// What the scan does with its state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum St {
    None,
    Final,
    Carry,
}

#[derive(Debug, Clone, Copy)]
pub struct ScanCase {
    pub batch: usize,
    pub dim: usize,
    pub len: usize,
    pub dstate: usize,
    pub bc: Bc,
    pub d: bool,
    pub z: bool,
    pub delta_bias: bool,
    pub softplus: bool,
    pub layout: Layout,
    pub state: St,
    pub seed: u64,
}

impl ScanCase {
    /// A case with every option on; adjust fields from here.
    pub fn full(batch: usize, dim: usize, len: usize, dstate: usize) -> Self {
        ScanCase {
            batch,
            dim,
            len,
            dstate,
            bc: Bc::Variable,
            d: true,
            z: true,
            delta_bias: true,
            softplus: true,
            layout: Layout::ChannelMajor,
            state: St::Carry,
            seed: (batch * 1_000_003 + dim * 10_007 + len * 101 + dstate) as u64,
        }
    }

    pub fn seq_shape(&self) -> Vec<usize> {
        match self.layout {
            Layout::ChannelMajor => vec![self.batch, self.dim, self.len],
            Layout::TokenMajor => vec![self.batch, self.len, self.dim],
        }
    }

    pub fn bc_shape(&self) -> Vec<usize> {
        let (b, l, n) = (self.batch, self.len, self.dstate);
        match (self.bc, self.layout) {
            (Bc::Invariant, _) => vec![self.dim, n],
            (Bc::Variable, Layout::ChannelMajor) => vec![b, n, l],
            (Bc::Variable, Layout::TokenMajor) => vec![b, l, n],
            (Bc::Grouped(g), Layout::ChannelMajor) => vec![b, g, n, l],
            (Bc::Grouped(g), Layout::TokenMajor) => vec![b, l, g, n],
        }
    }

    pub fn state_shape(&self) -> Vec<usize> {
        vec![self.batch, self.dim, self.dstate]
    }
}

/// Host data of one scan case.
pub struct ScanData {
    pub u: Vec<f32>,
    pub delta: Vec<f32>,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub c: Vec<f32>,
    pub d: Option<Vec<f32>>,
    pub z: Option<Vec<f32>>,
    pub delta_bias: Option<Vec<f32>>,
    /// Initial state (used when the case carries state).
    pub h0: Vec<f32>,
}

impl ScanData {
    pub fn new(c: &ScanCase) -> Self {
        let mut g = Gen::new(c.seed);
        let nseq = c.batch * c.dim * c.len;
        let nbc: usize = c.bc_shape().iter().product();
        ScanData {
            u: g.normal(nseq),
            delta: g.uniform(nseq, 0.0, 0.5),
            a: g.uniform(c.dim * c.dstate, -0.5, 0.0),
            b: g.normal(nbc),
            c: g.normal(nbc),
            d: c.d.then(|| g.normal(c.dim)),
            z: c.z.then(|| g.normal(nseq)),
            delta_bias: c.delta_bias.then(|| g.uniform(c.dim, 0.0, 0.5)),
            h0: g.normal(c.batch * c.dim * c.dstate),
        }
    }
}
