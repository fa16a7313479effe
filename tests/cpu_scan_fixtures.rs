//! The CPU reference held to the fixtures of the independent reference (mamba_ssm's
//! `selective_scan_ref` / `selective_state_update_ref` in float64, see
//! `tests/fixtures/scan/README.md`), in both scan precisions: the exact f64 reference and
//! the f32 `Precision::Fast` path. Run with `--nocapture` to see the per-case errors.

mod common;

use common::fixtures::{check_scan_fixtures, check_step_fixtures};
use mamba_gpu::CpuBackend;
use mamba_gpu::cpu::Precision;

#[test]
fn cpu_matches_mamba_ssm_scan_fixtures() {
    check_scan_fixtures(&CpuBackend::new());
}

#[test]
fn cpu_matches_mamba_ssm_step_fixtures() {
    check_step_fixtures(&CpuBackend::new());
}

#[test]
fn cpu_fast_matches_mamba_ssm_scan_fixtures() {
    check_scan_fixtures(&CpuBackend::with_precision(Precision::Fast));
}

#[test]
fn cpu_fast_matches_mamba_ssm_step_fixtures() {
    check_step_fixtures(&CpuBackend::with_precision(Precision::Fast));
}
