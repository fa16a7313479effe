//! The CPU backend's fast mode (f32 scan arithmetic, the lane paths) through the shared
//! op suite (`tests/common/ops_suite.rs`), against the exact reference: the same list
//! of checks every backend's op test file runs.

mod common;

use mamba_gpu::{CpuBackend, Precision, Q8Activations};

// f32 activations for Q8_0, the op's contract in the suite; the int8 ones (the fast
// default) have their own reference in tests/q8.rs.
op_suite_tests!(
    CpuBackend,
    Some(CpuBackend::with_precision(Precision::Fast).with_q8_activations(Q8Activations::F32))
);
