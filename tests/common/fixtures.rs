//! Fixtures from the independent reference: mamba_ssm's `selective_scan_ref` and
//! `selective_state_update_ref` run in float64 (`tests/fixtures/scan/`, made by
//! `tools/make_scan_fixtures.py`; the format is in the README there).
//!
//! `check_scan_fixtures(&be)` / `check_step_fixtures(&be)` run every fixture through
//! the op front door on any backend and hold out and final state to a relative L2 error
//! of [`FIXTURE_MAX_REL_L2`]. Each prints one line per case and a summary (run the test
//! with `--nocapture` to see them), and fails when the directory holds no fixture of its
//! kind, so a checkout without the files cannot pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mamba_gpu::Backend;
use mamba_gpu::ops::{self, Layout, ScanInputs, StateIo, StepInputs};
use safetensors::{Dtype, SafeTensors};

use super::assert_rel_l2;
use super::checks::{down, poison, up};
use super::rel_l2;

/// Relative L2 error allowed on every fixture output (out and final state).
pub const FIXTURE_MAX_REL_L2: f64 = 1e-5;

/// The fixture directory, `tests/fixtures/scan` of this crate.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scan")
}

/// One fixture file: its f32 tensors and its metadata.
pub struct Fixture {
    pub name: String,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub meta: HashMap<String, String>,
}

impl Fixture {
    pub fn load(path: &Path) -> Fixture {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .unwrap_or_else(|e| panic!("{name}: bad safetensors header: {e}"));
        let meta = header.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("{name}: bad safetensors file: {e}"));
        let mut tensors = HashMap::new();
        for (tname, view) in st.tensors() {
            assert_eq!(
                view.dtype(),
                Dtype::F32,
                "{name}: tensor {tname} is not f32"
            );
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(
                data.len(),
                view.shape().iter().product::<usize>(),
                "{name}: tensor {tname} size"
            );
            tensors.insert(tname, (view.shape().to_vec(), data));
        }
        Fixture {
            name,
            tensors,
            meta,
        }
    }

    pub fn get(&self, t: &str) -> Option<&(Vec<usize>, Vec<f32>)> {
        self.tensors.get(t)
    }

    pub fn req(&self, t: &str) -> &(Vec<usize>, Vec<f32>) {
        self.get(t)
            .unwrap_or_else(|| panic!("{}: tensor {t} missing", self.name))
    }

    pub fn meta(&self, key: &str) -> &str {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("{}: metadata {key} missing", self.name))
    }

    /// A `"1"`/`"0"` metadata flag.
    pub fn flag(&self, key: &str) -> bool {
        match self.meta(key) {
            "1" => true,
            "0" => false,
            v => panic!(
                "{}: metadata {key} = {v:?}, expected \"1\" or \"0\"",
                self.name
            ),
        }
    }
}

/// Every fixture of a kind (`"scan"` or `"step"`), sorted by name. Panics when there is
/// none.
pub fn load_fixtures(kind: &str) -> Vec<Fixture> {
    let dir = fixture_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "fixture directory {} unreadable ({e}); regenerate with tools/make_scan_fixtures.py",
            dir.display()
        )
    });
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("read_dir entry").path())
        .filter(|p| {
            let f = p.file_name().unwrap().to_string_lossy();
            f.starts_with(&format!("{kind}_")) && f.ends_with(".safetensors")
        })
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "no {kind}_*.safetensors fixtures in {}; regenerate with tools/make_scan_fixtures.py",
        dir.display()
    );
    paths
        .iter()
        .map(|p| {
            let f = Fixture::load(p);
            assert_eq!(f.meta("kind"), kind, "{}: metadata kind", f.name);
            f
        })
        .collect()
}

/// One compared output: what, got, want.
struct Cmp {
    what: String,
    group: String,
    got: Vec<f32>,
    want: Vec<f32>,
}

/// Prints the worst relative L2 per group, then asserts every comparison.
fn report_and_assert(backend: &str, kind: &str, cmps: &[Cmp], max: f64) {
    let mut worst: Vec<(String, f64, String)> = Vec::new();
    for c in cmps {
        let e = rel_l2(&c.got, &c.want);
        let e = if e.is_nan() { f64::INFINITY } else { e };
        match worst.iter_mut().find(|w| w.0 == c.group) {
            Some(w) if e > w.1 => {
                w.1 = e;
                w.2 = c.what.clone();
            }
            Some(_) => {}
            None => worst.push((c.group.clone(), e, c.what.clone())),
        }
    }
    println!("{backend} {kind} fixtures: worst relative L2 per group (limit {max:.0e})");
    for (g, e, what) in &worst {
        println!("  {g:<28} {e:.3e}  ({what})");
    }
    for c in cmps {
        assert_rel_l2(&format!("{backend} {}", c.what), &c.got, &c.want, max);
    }
}

/// Runs every `scan_*` fixture through [`ops::selective_scan`] on `be` (channel-major
/// layout; `StateIo::Carry` from `h0` when the fixture has one, else `StateIo::Final`)
/// and holds out and final state to [`FIXTURE_MAX_REL_L2`].
pub fn check_scan_fixtures<B: Backend>(be: &B) {
    check_scan_fixtures_within(be, FIXTURE_MAX_REL_L2)
}

/// [`check_scan_fixtures`] with another limit.
pub fn check_scan_fixtures_within<B: Backend>(be: &B, max: f64) {
    let fixtures = load_fixtures("scan");
    let mut cmps = Vec::new();
    for f in &fixtures {
        let upt = |t: &str| {
            f.get(t).map(|(s, v)| {
                assert!(
                    v.iter().all(|x| x.is_finite()),
                    "{}: {t} not finite",
                    f.name
                );
                up(be, v, s)
            })
        };
        let req = |t: &str| upt(t).unwrap_or_else(|| panic!("{}: tensor {t} missing", f.name));
        let (u, delta, a, b, c) = (req("u"), req("delta"), req("A"), req("B"), req("C"));
        let (d, z, db) = (upt("D"), upt("z"), upt("delta_bias"));
        let (seq, want_out) = f.req("out");
        let (st_shape, want_st) = f.req("last_state");
        let inputs = ScanInputs {
            u: &u,
            delta: &delta,
            a: &a,
            b: &b,
            c: &c,
            d: d.as_ref(),
            z: z.as_ref(),
            delta_bias: db.as_ref(),
            delta_softplus: f.flag("delta_softplus"),
            layout: Layout::ChannelMajor,
        };
        let mut out = poison(be, seq);
        let h0 = f.get("h0");
        let mut state = match h0 {
            Some((s, v)) => up(be, v, s),
            None => poison(be, st_shape),
        };
        let io = match h0 {
            Some(_) => StateIo::Carry(&mut state),
            None => StateIo::Final(&mut state),
        };
        ops::selective_scan(be, &inputs, io, &mut out)
            .unwrap_or_else(|e| panic!("{} selective_scan {}: {e}", be.name(), f.name));
        let (got_out, got_st) = (down(be, &out), down(be, &state));
        let (eo, es) = (rel_l2(&got_out, want_out), rel_l2(&got_st, want_st));
        println!(
            "{} {:<44} out {eo:.3e}  last_state {es:.3e}",
            be.name(),
            f.name
        );
        let group = format!(
            "scan {}{}",
            f.meta("bc"),
            if h0.is_some() { " +h0" } else { "" }
        );
        cmps.push(Cmp {
            what: format!("{} out", f.name),
            group: group.clone() + " out",
            got: got_out,
            want: want_out.clone(),
        });
        cmps.push(Cmp {
            what: format!("{} last_state", f.name),
            group: group + " state",
            got: got_st,
            want: want_st.clone(),
        });
    }
    report_and_assert(be.name(), "scan", &cmps, max);
}

/// Runs every `step_*` fixture through [`ops::selective_state_update`] on `be` and holds
/// out and new state to [`FIXTURE_MAX_REL_L2`].
pub fn check_step_fixtures<B: Backend>(be: &B) {
    check_step_fixtures_within(be, FIXTURE_MAX_REL_L2)
}

/// [`check_step_fixtures`] with another limit.
pub fn check_step_fixtures_within<B: Backend>(be: &B, max: f64) {
    let fixtures = load_fixtures("step");
    let mut cmps = Vec::new();
    for f in &fixtures {
        let upt = |t: &str| {
            f.get(t).map(|(s, v)| {
                assert!(
                    v.iter().all(|x| x.is_finite()),
                    "{}: {t} not finite",
                    f.name
                );
                up(be, v, s)
            })
        };
        let req = |t: &str| upt(t).unwrap_or_else(|| panic!("{}: tensor {t} missing", f.name));
        let (x, dt, a, b, c) = (req("x"), req("dt"), req("A"), req("B"), req("C"));
        let (d, z, db) = (upt("D"), upt("z"), upt("dt_bias"));
        let mut state = req("state");
        let (oshape, want_out) = f.req("out");
        let (_, want_st) = f.req("new_state");
        let inputs = StepInputs {
            x: &x,
            dt: &dt,
            a: &a,
            b: &b,
            c: &c,
            d: d.as_ref(),
            z: z.as_ref(),
            dt_bias: db.as_ref(),
            dt_softplus: f.flag("dt_softplus"),
        };
        let mut out = poison(be, oshape);
        ops::selective_state_update(be, &inputs, &mut state, &mut out)
            .unwrap_or_else(|e| panic!("{} selective_state_update {}: {e}", be.name(), f.name));
        let (got_out, got_st) = (down(be, &out), down(be, &state));
        let (eo, es) = (rel_l2(&got_out, want_out), rel_l2(&got_st, want_st));
        println!(
            "{} {:<44} out {eo:.3e}  new_state {es:.3e}",
            be.name(),
            f.name
        );
        let group = if f.meta("groups") == "0" {
            "step (batch, N)"
        } else {
            "step grouped"
        };
        cmps.push(Cmp {
            what: format!("{} out", f.name),
            group: format!("{group} out"),
            got: got_out,
            want: want_out.clone(),
        });
        cmps.push(Cmp {
            what: format!("{} new_state", f.name),
            group: format!("{group} state"),
            got: got_st,
            want: want_st.clone(),
        });
    }
    report_and_assert(be.name(), "step", &cmps, max);
}
