//! The crate's one error type.
//!
//! Every fallible entry point returns [`Error`]. Variants name *what* is wrong (the op,
//! the tensor, the shape, the file) so that a user can fix their input without reading
//! our source. There is deliberately no catch-all `Msg(String)` variant: a new failure
//! mode gets a new, typed variant.

use crate::tensor::DType;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `mamba-gpu`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor handed to an op has the wrong shape.
    #[error("{op}: tensor `{tensor}` has shape {got:?}, expected {expected}")]
    Shape {
        op: &'static str,
        tensor: &'static str,
        got: Vec<usize>,
        expected: String,
    },

    /// A tensor handed to an op has an element type the op does not accept.
    #[error("{op}: tensor `{tensor}` has dtype {got:?}, expected {expected}")]
    DType {
        op: &'static str,
        tensor: &'static str,
        got: DType,
        expected: &'static str,
    },

    /// A dimension that must be non-zero is zero.
    #[error("{op}: dimension `{dim}` is zero (shape of `{tensor}`: {shape:?})")]
    ZeroDim {
        op: &'static str,
        tensor: &'static str,
        dim: &'static str,
        shape: Vec<usize>,
    },

    /// The group count of B/C does not divide the channel count.
    #[error("{op}: {groups} groups do not divide dim = {dim}")]
    Groups {
        op: &'static str,
        groups: usize,
        dim: usize,
    },

    /// A scalar argument is out of range (for example a non-finite epsilon).
    #[error("{op}: argument `{arg}` is invalid: {why}")]
    Arg {
        op: &'static str,
        arg: &'static str,
        why: String,
    },

    /// A buffer of this shape cannot exist: its element count or byte size overflows, it
    /// has more elements than the kernels can index (see
    /// [`MAX_BUFFER_ELEMENTS`](crate::tensor::MAX_BUFFER_ELEMENTS)), or the memory for it
    /// cannot be allocated. `dtype` is `None` where the shape alone is impossible.
    #[error("{op}: buffer `{tensor}` of shape {shape:?} cannot be made: {why}")]
    BufferSize {
        op: &'static str,
        tensor: &'static str,
        dtype: Option<DType>,
        shape: Vec<usize>,
        why: String,
    },

    /// A buffer given to a [`Device`](crate::Device) belongs to another backend.
    #[error("{op}: tensor `{tensor}` is a {got} buffer, but this device is {expected}")]
    WrongDevice {
        op: &'static str,
        tensor: &'static str,
        got: &'static str,
        expected: &'static str,
    },

    /// Host data passed to `upload` does not fill the requested shape exactly.
    #[error("upload: {len} elements given for shape {shape:?} ({expected} expected)")]
    UploadLen {
        len: usize,
        shape: Vec<usize>,
        expected: usize,
    },

    /// An index (token id, row) is outside the table it indexes.
    #[error("{op}: index {index} at position {position} is out of range (table has {rows} rows)")]
    Index {
        op: &'static str,
        index: u64,
        position: usize,
        rows: usize,
    },

    /// A requested backend cannot run on this machine.
    #[error("backend `{backend}` is unavailable: {why}")]
    BackendUnavailable { backend: &'static str, why: String },

    /// A GPU API reported a failure.
    #[error("{backend} device error: {why}")]
    Device { backend: &'static str, why: String },

    /// Valid input that a kernel cannot run as launched here: it exceeds a limit of the
    /// device or of the kernel's design (shared/workgroup memory, grid size, binding or
    /// buffer size). Every backend builds these through [`Error::limit`], the one place
    /// that classifies them, so a caller can tell "too large for this device" (try
    /// another backend, a smaller batch or chunk) from a device failure.
    #[error("{op}: `{tensor}` exceeds a {backend} limit: {why}")]
    Limit {
        backend: &'static str,
        op: &'static str,
        tensor: &'static str,
        why: String,
    },

    /// A file of a model (config, checkpoint, index, tokenizer) cannot be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },

    /// config.json is not valid JSON (or not a JSON object).
    #[error("{file}: invalid JSON: {why}")]
    ConfigJson { file: String, why: String },

    /// A required config key is absent.
    #[error("{file}: missing config key `{key}`")]
    ConfigMissing { file: String, key: &'static str },

    /// A config key has a value of the wrong type or out of range.
    #[error("{file}: config key `{key}` is invalid: {why}")]
    ConfigValue {
        file: String,
        key: &'static str,
        why: String,
    },

    /// Two config keys contradict each other.
    #[error("{file}: config key `{key}` is inconsistent with `{other}`: {why}")]
    ConfigInconsistent {
        file: String,
        key: &'static str,
        other: &'static str,
        why: String,
    },

    /// The config describes a model variant this crate does not implement.
    #[error("{file}: unsupported model: config key `{key}`: {why}")]
    ConfigUnsupported {
        file: String,
        key: &'static str,
        why: String,
    },

    /// A checkpoint file (safetensors or GGUF) ends before the data its header announces.
    #[error("{file}: truncated checkpoint file: {why}")]
    CheckpointTruncated { file: String, why: String },

    /// A checkpoint file is not a valid safetensors file (or sharded index) or GGUF file.
    #[error("{file}: corrupt checkpoint: {why}")]
    CheckpointCorrupt { file: String, why: String },

    /// A tensor the model needs is not in the checkpoint.
    #[error("{file}: missing tensor `{tensor}`")]
    MissingTensor { file: String, tensor: String },

    /// The checkpoint holds a tensor the model does not use.
    #[error("{file}: unexpected tensor `{tensor}` (not part of this model)")]
    UnexpectedTensor { file: String, tensor: String },

    /// A checkpoint tensor has the wrong shape for the config.
    #[error("{file}: tensor `{tensor}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        file: String,
        tensor: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },

    /// A checkpoint tensor has an element type that cannot be loaded (`expected` lists
    /// those that can: F32, F16, BF16, and Q8_0 in a GGUF file).
    #[error("{file}: tensor `{tensor}` has dtype {got}, expected {expected}")]
    TensorDType {
        file: String,
        tensor: String,
        got: String,
        expected: &'static str,
    },

    /// A checkpoint tensor holds NaN or an infinity (or, for `A_log`, a value whose
    /// `-exp` is not finite). Such weights make every later logit NaN, which a sampler
    /// would silently turn into token 0; [`crate::model::LoadOptions::allow_non_finite`]
    /// loads them anyway.
    #[error("{file}: tensor `{tensor}` is not finite: {why}")]
    NonFiniteWeight {
        file: String,
        tensor: String,
        why: String,
    },

    /// A checkpoint tensor holds finite values the model cannot run with: a GGUF file's
    /// `ssm_a` (which stores `A = −exp(A_log)` itself) with a positive element, which
    /// would make the state grow without bound; a weight beyond the range of the dtype
    /// it is loaded as (an f32 above f16's 65504 loaded as f16), or a block of 32 whose
    /// Q8_0 scale `max|w| / 127` does not fit the scale's f16.
    #[error("{file}: tensor `{tensor}` has an invalid value: {why}")]
    WeightValue {
        file: String,
        tensor: String,
        why: String,
    },

    /// A config value does not fit the checkpoint it comes with (for example more
    /// layers than the checkpoint's header holds); checked before anything
    /// proportional to the config is allocated.
    #[error("{file}: config key `{key}` does not fit the checkpoint: {why}")]
    ConfigCheckpoint {
        file: String,
        key: &'static str,
        why: String,
    },

    /// A weight storage dtype the backend does not support was requested.
    #[error("backend `{backend}` cannot store weights as {dtype:?}")]
    WeightDTypeUnsupported { backend: &'static str, dtype: DType },

    /// A token id is not below the vocabulary size.
    #[error(
        "token id {id} at position {position} of sequence {sequence} is out of range (vocabulary has {vocab} tokens)"
    )]
    TokenId {
        id: u64,
        sequence: usize,
        position: usize,
        vocab: usize,
    },

    /// A prompt with no tokens was given (the model needs at least one).
    #[error("prompt {sequence} has no tokens (the model needs at least one token per prompt)")]
    EmptyPrompt { sequence: usize },

    /// A batch of prompts with no prompt in it.
    #[error("no prompts were given (a batch needs at least one prompt)")]
    NoPrompts,

    /// A text prompt that the tokenizer turned into no tokens at all (an empty string,
    /// for a tokenizer that adds no special tokens).
    #[error("prompt text {text:?} encodes to no tokens (the model needs at least one)")]
    EmptyTextPrompt { text: String },

    /// A state sequence to continue from has consumed no tokens, so it has no logits to
    /// choose the next token from: prefill it first.
    #[error(
        "sequence {sequence} of the state has consumed no tokens: prefill it before generating from it"
    )]
    StateNotPrefilled { sequence: usize },

    /// Saved-state bytes cannot be read: not a saved state (`what` = "magic"), a format
    /// version this build does not read ("version"), cut short ("truncated"), or
    /// inconsistent or damaged ("header", "length", "checksum").
    #[error("{file}: cannot read saved state: {what}: {why}")]
    StateFormat {
        file: String,
        what: &'static str,
        why: String,
    },

    /// A saved state belongs to a model of another architecture or weight dtype.
    #[error("saved state is for another model: its {what} is {got}, this model's is {expected}")]
    StateModel {
        what: &'static str,
        got: String,
        expected: String,
    },

    /// An option of text generation is invalid (an empty stop string, a stop id outside
    /// the vocabulary).
    #[error("generation option `{option}` is invalid: {why}")]
    GenerateOption { option: &'static str, why: String },

    /// A tokenizer file cannot be loaded or used.
    #[error("{file}: tokenizer error: {why}")]
    Tokenizer { file: String, why: String },

    /// A saved state does not fit this model or batch.
    #[error("state mismatch: {what} is {got:?}, expected {expected:?}")]
    StateMismatch {
        what: &'static str,
        got: Vec<usize>,
        expected: Vec<usize>,
    },

    /// A sampling parameter is out of range.
    #[error("sampling parameter `{param}` is invalid: {why}")]
    Sampling { param: &'static str, why: String },
}

impl Error {
    /// An [`Error::Limit`]: `tensor` of `op` is valid but exceeds what `backend`'s
    /// kernel or device can take (`why` names the limit and the value).
    pub(crate) fn limit(
        backend: &'static str,
        op: &'static str,
        tensor: &'static str,
        why: impl Into<String>,
    ) -> Error {
        Error::Limit {
            backend,
            op,
            tensor,
            why: why.into(),
        }
    }

    /// Is this an [`Error::Limit`] (input too large for this backend, not a failure)?
    pub fn is_limit(&self) -> bool {
        matches!(self, Error::Limit { .. })
    }
}
