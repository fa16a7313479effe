//! Shared test machinery: seeded case generators, the documented tolerance, and one
//! generic check per op that any backend is run through (`check_scan(&backend, &case)`),
//! always against the CPU reference. `ops_suite` holds the case lists every GPU backend
//! runs those checks over, one function per op family.
//!
//! Outputs are poisoned with NaN before a backend runs, so an element a kernel forgets to
//! write shows up as a mismatch.
#![allow(dead_code)]

pub mod cases;
pub mod checks;
pub mod decode_checks;
#[cfg(feature = "demo-model")]
pub mod demo_val;
pub mod fixtures;
pub mod fused_checks;
pub mod gguf_write;
pub mod gpu;
pub mod half_io;
pub mod model_fixtures;
pub mod model_io;
pub mod model_synth;
pub mod ops_suite;
pub mod q8_checks;
pub mod q8_model;
pub mod ssd_checks;

/// The tolerance used everywhere: `|x − y| ≤ max(rel·(|x| + |y|), abs)`, per element.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub rel: f32,
    pub abs: f32,
}

impl Tol {
    /// CPU vs CPU: same arithmetic, different order (chunked vs whole, step vs scan).
    pub const EXACTISH: Tol = Tol {
        rel: 1e-5,
        abs: 1e-6,
    };
    /// f32 arithmetic (a GPU backend, or the CPU's fast mode) vs the f64 reference. The
    /// absolute floor matters: `y = Σₙ C·h` cancels, so an O(1) output can come out near
    /// zero with the rounding error of its O(1) terms (seen: 3e-5 at L = 2047).
    pub const F32: Tol = Tol {
        rel: 1e-4,
        abs: 1e-4,
    };
}

/// Relative L2 error `‖got − want‖ / ‖want‖` (with `‖want‖` floored at 1e-30).
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// Asserts every element is within `tol`, reporting the worst offenders.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: Tol) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let lim = (tol.rel * (g.abs() + w.abs())).max(tol.abs);
        // Written so that NaN (a poisoned, unwritten element) counts as bad.
        let ok = (g - w).abs() <= lim;
        if !ok {
            bad.push((i, g, w));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} of {} elements out of tolerance {tol:?}; first: {:?}; rel L2 {:.3e}",
        bad.len(),
        got.len(),
        &bad[..bad.len().min(5)],
        rel_l2(got, want)
    );
}

/// Asserts the relative L2 error is at most `max`, and that nothing is NaN.
pub fn assert_rel_l2(what: &str, got: &[f32], want: &[f32], max: f64) {
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let e = rel_l2(got, want);
    assert!(e <= max, "{what}: relative L2 {e:.3e} > {max:.1e}");
}
