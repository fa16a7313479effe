//! A GPU backend for a test, or a skip. Without the device each test says
//! "<what> SKIPPED: <why>" and passes, unless `MAMBA_GPU_REQUIRE` names the backend
//! (comma-separated, e.g. `MAMBA_GPU_REQUIRE=wgpu,cuda`), which makes the skip a failure:
//! CI sets it so that a broken adapter cannot pass as "skipped".

use std::fmt::Display;
use std::io::Write;

/// Does `MAMBA_GPU_REQUIRE` name `backend`?
pub fn required(backend: &str) -> bool {
    std::env::var("MAMBA_GPU_REQUIRE").is_ok_and(|v| v.split(',').any(|s| s.trim() == backend))
}

/// The backend if `made` succeeded; otherwise a panic when `backend` is required, or the
/// skip message (written straight to stderr, past the test harness' capture, so CI logs
/// show it) and `None`.
pub fn or_skip<T, E: Display>(backend: &str, what: &str, made: Result<T, E>) -> Option<T> {
    match made {
        Ok(be) => Some(be),
        Err(e) if required(backend) => {
            panic!("MAMBA_GPU_REQUIRE={backend} but the {backend} backend is unavailable: {e}")
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{what} SKIPPED: {e}");
            None
        }
    }
}
