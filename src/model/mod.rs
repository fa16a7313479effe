//! Whole Mamba language models on any backend.
//!
//! * [`MambaConfig`]: hyper-parameters from a Hugging Face or state-spaces `config.json`
//!   (or a GGUF file's metadata; [`gguf`] reads the container).
//! * [`MambaModel`]: weights on a [`crate::Backend`]; prefill, decode steps, batches.
//! * [`State`] / [`HostState`]: the recurrent state, saved and restored (to bytes or a
//!   file, checked against the [`ModelIdentity`]).
//! * [`Generator`] / [`BatchGenerator`] / [`Sampler`]: sampling and streaming.
//! * [`TextTokenizer`] / [`TextStream`] (feature `tokenizers`): text in and out.
//! * [`TextModel`] (feature `tokenizers`): prompt text in, generated text out, in one
//!   call or as a stream, with stop strings; the embedded demo model (feature
//!   `demo-model`).
//! * [`browser`]: greedy generation that awaits its read-backs (for wasm32 + WebGPU).

pub mod browser;
mod checkpoint;
pub mod config;
mod config_mamba2;
mod eval;
pub mod gguf;
mod gguf_model;
mod linear;
pub mod mamba;
mod mixer;
pub mod sample;
pub mod state;
mod state_bytes;
pub mod synthetic;
mod tensor_io;
#[cfg(feature = "tokenizers")]
pub mod text;
#[cfg(feature = "tokenizers")]
mod text_gguf;
#[cfg(feature = "tokenizers")]
pub mod text_model;
pub mod weights;
mod weights_mamba2;

pub use config::{Family, Mamba2Dims, MambaConfig};
pub use linear::Linear;
pub use mamba::MambaModel;
pub use sample::{
    BatchGenerator, GenerateOptions, GenerationStats, Generator, Sampler, SamplingParams,
    apply_repetition_penalty, filtered_distribution,
};
pub use state::{HostState, ModelIdentity, State};
pub use state_bytes::{STATE_FORMAT_VERSION, STATE_MAGIC};
pub use synthetic::{Mamba2Shape, SyntheticModel};
#[cfg(feature = "tokenizers")]
pub use text::{TextStream, TextTokenizer};
#[cfg(feature = "tokenizers")]
pub use text_model::{TextGeneration, TextModel, TextOptions};
pub use weights::{LayerWeights, LoadOptions, Mamba2Extra, UnitNorms, WeightDType, Weights};
