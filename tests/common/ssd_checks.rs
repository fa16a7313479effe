//! The head-form Mamba-2 scan on any backend against the f64 fixtures of
//! `tests/fixtures/ssd` (in the shared op suite through `ops_suite::ssd_scan_fixtures`).

use mamba_gpu::Backend;
use mamba_gpu::ops;

use super::checks::{down, poison, up};
use super::rel_l2;

/// The head-form Mamba-2 scan against mamba_ssm's `ssd_minimal_discrete` run in f64
/// (`tests/fixtures/ssd`, written by `tools/make_family_fixtures.py`): outputs and final
/// states, relative L2 ≤ 1e-5, with NaN-poisoned outputs. A backend without the op must
/// refuse it with a typed [`mamba_gpu::Error::Limit`].
pub fn ssd_scan_fixtures<B: Backend>(be: &B) {
    use super::fixtures::Fixture;
    use mamba_gpu::ops::{SsdInputs, StateIo};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ssd");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/ssd")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "ssd fixtures missing in {}",
        dir.display()
    );
    for path in files {
        let f = Fixture::load(&path);
        let t = |k: &str| {
            let (s, v) = f.req(k);
            up(be, v, s)
        };
        let o = |k: &str| f.get(k).map(|(s, v)| up(be, v, s));
        let head_dim: usize = f.meta["head_dim"].parse().unwrap();
        let (x, dt, a, bm, cm) = (t("x"), t("dt"), t("A"), t("B"), t("C"));
        let (d, z, bias) = (o("D"), o("z"), o("dt_bias"));
        let inputs = SsdInputs {
            x: &x,
            dt: &dt,
            a: &a,
            b: &bm,
            c: &cm,
            d: d.as_ref(),
            z: z.as_ref(),
            dt_bias: bias.as_ref(),
            dt_softplus: true,
            head_dim,
        };
        let (ss, want_state) = f.req("last_state");
        let mut state = match f.get("h0") {
            Some((s, v)) => up(be, v, s),
            None => poison(be, ss),
        };
        let io = if f.get("h0").is_some() {
            StateIo::Carry(&mut state)
        } else {
            StateIo::Final(&mut state)
        };
        let (os, want) = f.req("out");
        let mut out = poison(be, os);
        let r = ops::ssd_scan(be, &inputs, io, &mut out);
        if !be.has_ssd_scan() {
            let e = r.expect_err("a backend without ssd_scan must refuse it");
            assert!(matches!(e, mamba_gpu::Error::Limit { .. }), "{e}");
            return;
        }
        r.expect("ssd_scan");
        let (got, got_state) = (down(be, &out), down(be, &state));
        let (e1, e2) = (rel_l2(&got, want), rel_l2(&got_state, want_state));
        println!(
            "{} {}: out rel L2 {e1:.2e}, state {e2:.2e}",
            be.name(),
            f.name
        );
        assert!(
            e1 <= 1e-5 && e2 <= 1e-5,
            "{} {}: out {e1:.2e} state {e2:.2e}",
            be.name(),
            f.name
        );
    }
}
