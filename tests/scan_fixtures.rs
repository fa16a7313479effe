//! The CPU reference held to the fixtures of the independent reference (mamba_ssm's
//! `selective_scan_ref` / `selective_state_update_ref` in float64, see
//! `tests/fixtures/scan/README.md`). Run with `--nocapture` to see the per-case errors.

mod common;

use common::fixtures::{check_scan_fixtures, check_step_fixtures};
use mamba_gpu::CpuBackend;

#[test]
fn cpu_matches_mamba_ssm_scan_fixtures() {
    check_scan_fixtures(&CpuBackend::new());
}

#[test]
fn cpu_matches_mamba_ssm_step_fixtures() {
    check_step_fixtures(&CpuBackend::new());
}
