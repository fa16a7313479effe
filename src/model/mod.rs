//! Whole Mamba language models on any backend.
//!
//! * [`MambaConfig`]: hyper-parameters from a Hugging Face or state-spaces `config.json`.
//! * [`MambaModel`]: weights on a [`crate::Backend`]; prefill, decode steps, batches.
//! * [`State`] / [`HostState`]: the recurrent state, saved and restored.
//! * [`Generator`] / [`BatchGenerator`] / [`Sampler`]: sampling and streaming.
//! * [`TextTokenizer`] / [`TextStream`] (feature `tokenizers`): text in and out.

mod checkpoint;
pub mod config;
pub mod mamba;
pub mod sample;
pub mod state;
pub mod synthetic;
#[cfg(feature = "tokenizers")]
pub mod text;
pub mod weights;

pub use config::MambaConfig;
pub use mamba::MambaModel;
pub use sample::{
    BatchGenerator, GenerateOptions, GenerationStats, Generator, Sampler, SamplingParams,
    apply_repetition_penalty, filtered_distribution,
};
pub use state::{HostState, State};
pub use synthetic::SyntheticModel;
#[cfg(feature = "tokenizers")]
pub use text::{TextStream, TextTokenizer};
pub use weights::{LayerWeights, LoadOptions, WeightDType, Weights};
