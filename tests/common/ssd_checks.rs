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

/// One random case of [`ssd_scan_cases`]: `(batch, L, heads, head_dim, groups, N, state)`
/// with state 0 none, 1 final, 2 carried in and out.
type SsdCase = (usize, usize, usize, usize, usize, usize, u8);

/// Lengths either side of the chunked form's threshold and chunk (32), channel counts
/// that leave a partial tile of 8 (5, 12), N up to the kernels' 256, 1 to 3 groups, and
/// a sequence long enough (2000 at N = 128) that wgpu splits it over dispatches with no
/// state buffer of the caller's.
const SSD_CASES: &[SsdCase] = &[
    (1, 31, 2, 8, 1, 16, 2),
    (1, 32, 2, 8, 1, 16, 1),
    (1, 33, 3, 12, 3, 32, 2),
    (2, 95, 4, 8, 2, 64, 0),
    (1, 96, 2, 4, 1, 16, 2),
    (1, 97, 2, 16, 1, 256, 2),
    (2, 129, 2, 5, 2, 128, 1),
    (1, 2000, 1, 8, 1, 128, 0),
];

/// The head-form scan on `be` against two CPU references on fresh random inputs, for
/// [`SSD_CASES`]: the CPU's own `ssd_scan` (f64 state) and the general selective scan
/// with the per-head A, Δ, D spread over each head's channels. Outputs and final states,
/// relative L2 ≤ 1e-5; outputs NaN-poisoned first.
pub fn ssd_scan_cases<B: Backend>(be: &B) {
    if !be.has_ssd_scan() {
        return; // ssd_scan_fixtures checks the refusal.
    }
    let cpu = mamba_gpu::CpuBackend::new();
    for &c in SSD_CASES {
        let got = run_ssd_case(be, c, false);
        for (what, want) in [
            ("cpu ssd_scan", run_ssd_case(&cpu, c, false)),
            ("cpu selective_scan", run_ssd_case(&cpu, c, true)),
        ] {
            for (part, (g, w)) in ["out", "state"].iter().zip(got.iter().zip(&want)) {
                let e = rel_l2(g, w);
                assert!(e <= 1e-5, "{} {c:?} {part} vs {what}: {e:.2e}", be.name());
            }
        }
        println!("{} ssd_scan {c:?}: matches both references", be.name());
    }
}

/// Runs one case with seeded inputs; `general` takes the general selective scan (the
/// per-head values spread over channels) instead of `ssd_scan`. Returns (out, state),
/// the state empty when the case keeps none.
fn run_ssd_case<B: Backend>(be: &B, c: SsdCase, general: bool) -> [Vec<f32>; 2] {
    use super::cases::Gen;
    use mamba_gpu::ops::{Layout, ScanInputs, SsdInputs, StateIo};
    let (batch, len, heads, p, groups, n, st) = c;
    let e = heads * p;
    let mut g = Gen::new((batch * 7919 + len * 31 + heads * 7 + n) as u64);
    let x = g.normal(batch * len * e);
    let dt = g.normal(batch * len * heads);
    let a = g.uniform(heads, -2.0, -0.2);
    let bm = g.normal(batch * len * groups * n);
    let cm = g.normal(batch * len * groups * n);
    let d = g.normal(heads);
    let z = g.normal(batch * len * e);
    let bias = g.uniform(heads, -1.0, 0.5);
    let h0 = g.normal(batch * e * n);
    let seq = [batch, len, e];
    let bc = [batch, len, groups, n];
    let (xb, zb) = (up(be, &x, &seq), up(be, &z, &seq));
    let (bb, cb) = (up(be, &bm, &bc), up(be, &cm, &bc));
    let mut state = match st {
        2 => up(be, &h0, &[batch, e, n]),
        _ => poison(be, &[batch, e, n]),
    };
    let io = match st {
        0 => StateIo::None,
        1 => StateIo::Final(&mut state),
        _ => StateIo::Carry(&mut state),
    };
    let mut out = poison(be, &seq);
    if general {
        let spread = |v: &[f32], inner: usize| -> Vec<f32> {
            v.chunks(heads)
                .flat_map(|row| row.iter().flat_map(|&w| std::iter::repeat_n(w, inner)))
                .collect()
        };
        let delta = up(be, &spread(&dt, p), &seq);
        let a_full = up(be, &spread(&a, p * n), &[e, n]);
        let d_full = up(be, &spread(&d, p), &[e]);
        let bias_full = up(be, &spread(&bias, p), &[e]);
        let inputs = ScanInputs {
            u: &xb,
            delta: &delta,
            a: &a_full,
            b: &bb,
            c: &cb,
            d: Some(&d_full),
            z: Some(&zb),
            delta_bias: Some(&bias_full),
            delta_softplus: true,
            layout: Layout::TokenMajor,
        };
        ops::selective_scan(be, &inputs, io, &mut out).expect("selective_scan");
    } else {
        let (dtb, ab) = (up(be, &dt, &[batch, len, heads]), up(be, &a, &[heads]));
        let (db, biasb) = (up(be, &d, &[heads]), up(be, &bias, &[heads]));
        let inputs = SsdInputs {
            x: &xb,
            dt: &dtb,
            a: &ab,
            b: &bb,
            c: &cb,
            d: Some(&db),
            z: Some(&zb),
            dt_bias: Some(&biasb),
            dt_softplus: true,
            head_dim: p,
        };
        ops::ssd_scan(be, &inputs, io, &mut out).expect("ssd_scan");
    }
    let kept = if st == 0 {
        Vec::new()
    } else {
        down(be, &state)
    };
    [down(be, &out), kept]
}
