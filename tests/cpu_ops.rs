//! The CPU backend's fast mode (f32 scan arithmetic, the lane paths) through the shared
//! op suite (`tests/common/ops_suite.rs`), against the exact reference: the same list
//! of checks every backend's op test file runs.

mod common;

use mamba_gpu::{CpuBackend, Precision};

op_suite_tests!(
    CpuBackend,
    Some(CpuBackend::with_precision(Precision::Fast))
);
