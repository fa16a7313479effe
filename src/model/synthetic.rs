//! Checkpoints with seeded random weights in the shapes of real models, for benchmarks:
//! the loader, the model and every backend run on them exactly as on a downloaded
//! checkpoint, with nothing to download.

use half::bf16;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tensor::DType;

/// The shape of a Mamba-1 or Mamba-2 language model (tied embeddings, conv bias, no
/// other biases, like the state-spaces checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticModel {
    pub hidden: usize,
    pub layers: usize,
    pub state: usize,
    pub conv: usize,
    pub vocab: usize,
    /// Mamba-2 layers with this shape (`None`: Mamba-1).
    pub mamba2: Option<Mamba2Shape>,
}

/// The Mamba-2 part of a [`SyntheticModel`]: heads of `head_dim` channels, B/C groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mamba2Shape {
    pub head_dim: usize,
    pub groups: usize,
}

impl SyntheticModel {
    /// The shape of state-spaces/mamba-130m (vocab padded to 50,280).
    pub const MAMBA_130M: SyntheticModel = SyntheticModel {
        hidden: 768,
        layers: 24,
        state: 16,
        conv: 4,
        vocab: 50280,
        mamba2: None,
    };
    /// The shape of state-spaces/mamba-2.8b.
    pub const MAMBA_2_8B: SyntheticModel = SyntheticModel {
        hidden: 2560,
        layers: 64,
        state: 16,
        conv: 4,
        vocab: 50280,
        mamba2: None,
    };
    /// The shape of state-spaces/mamba2-130m (24 heads of 64, state 128, one group).
    pub const MAMBA2_130M: SyntheticModel = SyntheticModel {
        hidden: 768,
        layers: 24,
        state: 128,
        conv: 4,
        vocab: 50288,
        mamba2: Some(Mamba2Shape {
            head_dim: 64,
            groups: 1,
        }),
    };

    fn inner(&self) -> usize {
        2 * self.hidden
    }

    fn dt_rank(&self) -> usize {
        self.hidden.div_ceil(16)
    }

    /// Number of parameters.
    pub fn params(&self) -> usize {
        if let Some(m2) = self.mamba2 {
            let (d, e, k) = (self.hidden, self.inner(), self.conv);
            let (h, gn) = (e / m2.head_dim, m2.groups * self.state);
            let conv = e + 2 * gn;
            let layer = d + (e + conv + h) * d + conv * k + conv + 3 * h + e + d * e;
            return self.vocab * d + self.layers * layer + d;
        }
        let (d, e, n, k, r) = (
            self.hidden,
            self.inner(),
            self.state,
            self.conv,
            self.dt_rank(),
        );
        let layer = d + e * n + e + 2 * e * d + e * k + e + (r + 2 * n) * e + e * r + e + d * e;
        self.vocab * d + self.layers * layer + d
    }

    /// A Hugging Face `config.json` for this shape.
    pub fn config_json(&self) -> String {
        if let Some(m2) = self.mamba2 {
            return format!(
                r#"{{"model_type": "mamba2", "hidden_size": {}, "num_hidden_layers": {}, "expand": 2,
 "num_heads": {}, "head_dim": {}, "n_groups": {}, "state_size": {}, "conv_kernel": {}, "vocab_size": {},
 "use_bias": false, "use_conv_bias": true, "layer_norm_epsilon": 1e-5, "chunk_size": 256,
 "tie_word_embeddings": true}}"#,
                self.hidden,
                self.layers,
                self.inner() / m2.head_dim,
                m2.head_dim,
                m2.groups,
                self.state,
                self.conv,
                self.vocab
            );
        }
        format!(
            r#"{{"model_type": "mamba", "hidden_size": {}, "num_hidden_layers": {}, "intermediate_size": {},
 "state_size": {}, "conv_kernel": {}, "time_step_rank": {}, "vocab_size": {}, "use_bias": false,
 "use_conv_bias": true, "layer_norm_epsilon": 1e-5, "tie_word_embeddings": true}}"#,
            self.hidden,
            self.layers,
            self.inner(),
            self.state,
            self.conv,
            self.dt_rank(),
            self.vocab
        )
    }

    /// `model.safetensors` bytes with HF tensor names, weights stored as `dtype` (f32 or
    /// bf16; bf16 halves the memory a 2.8b-shaped checkpoint needs). Values are realistic
    /// in scale: A_log = log(1..N), D = 1, norms 1, softplus(dt bias) in about
    /// [1e-3, 1e-1], matrices uniform with the variance of 1/fan_in.
    pub fn checkpoint(&self, seed: u64, dtype: DType) -> Result<Vec<u8>> {
        if !matches!(dtype, DType::F32 | DType::BF16) {
            return Err(Error::Arg {
                op: "SyntheticModel::checkpoint",
                arg: "dtype",
                why: format!("{dtype:?}: only f32 and bf16 are generated"),
            });
        }
        let (d, e, n, k, r) = (
            self.hidden,
            self.inner(),
            self.state,
            self.conv,
            self.dt_rank(),
        );
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        let mut salt = seed;
        let mut rand = |len: usize, fan_in: usize| {
            salt = salt.wrapping_add(0x9e37_79b9_7f4a_7c15);
            uniform(len, salt, (3.0 / fan_in as f32).sqrt())
        };
        tensors.push((
            "backbone.embeddings.weight".into(),
            vec![self.vocab, d],
            rand(self.vocab * d, d),
        ));
        for l in 0..self.layers {
            let p = |s: &str| format!("backbone.layers.{l}.{s}");
            if let Some(m2) = self.mamba2 {
                let (h, gn) = (e / m2.head_dim, m2.groups * n);
                let conv = e + 2 * gn;
                // mamba_ssm's init: A in [1, 16], dt in [1e-3, 1e-1].
                let a_log: Vec<f32> = (0..h)
                    .map(|i| (1.0 + 15.0 * i as f32 / h as f32).ln())
                    .collect();
                let dt_bias: Vec<f32> = (0..h)
                    .map(|i| {
                        let dt = (-6.9 + 4.6 * i as f64 / h as f64).exp();
                        (dt + (-(-dt).exp_m1()).ln()) as f32
                    })
                    .collect();
                tensors.push((p("norm.weight"), vec![d], vec![1.0; d]));
                tensors.push((p("mixer.A_log"), vec![h], a_log));
                tensors.push((p("mixer.D"), vec![h], vec![1.0; h]));
                tensors.push((p("mixer.dt_bias"), vec![h], dt_bias));
                let rows = e + conv + h;
                tensors.push((p("mixer.in_proj.weight"), vec![rows, d], rand(rows * d, d)));
                tensors.push((
                    p("mixer.conv1d.weight"),
                    vec![conv, 1, k],
                    rand(conv * k, k),
                ));
                tensors.push((p("mixer.conv1d.bias"), vec![conv], rand(conv, 64)));
                tensors.push((p("mixer.norm.weight"), vec![e], vec![1.0; e]));
                tensors.push((
                    p("mixer.out_proj.weight"),
                    vec![d, e],
                    rand(d * e, e * self.layers),
                ));
                let _ = r;
                continue;
            }
            let a_log: Vec<f32> = (0..e)
                .flat_map(|_| (1..=n).map(|j| (j as f32).ln()))
                .collect();
            // softplus⁻¹ of dt spread log-uniformly over [1e-3, 1e-1].
            let dt_bias: Vec<f32> = rand(e, 3)
                .iter()
                .map(|&x| {
                    let dt = (-4.6 + 2.3 * x as f64).exp();
                    (dt + (-(-dt).exp_m1()).ln()) as f32
                })
                .collect();
            tensors.push((p("norm.weight"), vec![d], vec![1.0; d]));
            tensors.push((p("mixer.A_log"), vec![e, n], a_log));
            tensors.push((p("mixer.D"), vec![e], vec![1.0; e]));
            tensors.push((
                p("mixer.in_proj.weight"),
                vec![2 * e, d],
                rand(2 * e * d, d),
            ));
            tensors.push((p("mixer.conv1d.weight"), vec![e, 1, k], rand(e * k, k)));
            tensors.push((p("mixer.conv1d.bias"), vec![e], rand(e, 64)));
            tensors.push((
                p("mixer.x_proj.weight"),
                vec![r + 2 * n, e],
                rand((r + 2 * n) * e, e),
            ));
            tensors.push((p("mixer.dt_proj.weight"), vec![e, r], rand(e * r, r)));
            tensors.push((p("mixer.dt_proj.bias"), vec![e], dt_bias));
            tensors.push((
                p("mixer.out_proj.weight"),
                vec![d, e],
                rand(d * e, e * self.layers),
            ));
        }
        tensors.push(("backbone.norm_f.weight".into(), vec![d], vec![1.0; d]));
        let (st, bytes): (safetensors::Dtype, Vec<Vec<u8>>) = match dtype {
            DType::BF16 => (
                safetensors::Dtype::BF16,
                tensors
                    .par_iter()
                    .map(|(_, _, v)| {
                        v.iter()
                            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                            .collect()
                    })
                    .collect(),
            ),
            _ => (
                safetensors::Dtype::F32,
                tensors
                    .par_iter()
                    .map(|(_, _, v)| bytemuck::cast_slice(v).to_vec())
                    .collect(),
            ),
        };
        let mut views = Vec::with_capacity(tensors.len());
        for ((name, shape, _), b) in tensors.iter().zip(&bytes) {
            let view = safetensors::tensor::TensorView::new(st, shape.clone(), b).map_err(|e| {
                Error::Arg {
                    op: "SyntheticModel::checkpoint",
                    arg: "tensor",
                    why: format!("{name}: {e}"),
                }
            })?;
            views.push((name.clone(), view));
        }
        safetensors::serialize(views, None).map_err(|e| Error::Arg {
            op: "SyntheticModel::checkpoint",
            arg: "serialize",
            why: e.to_string(),
        })
    }
}

/// `len` values uniform in [−scale, scale) from a counter-based hash (SplitMix64), so
/// generation parallelises and a 2.8b-shaped checkpoint takes seconds.
fn uniform(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    (0..len)
        .into_par_iter()
        .map(|i| {
            let mut z = seed.wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}
