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
}
