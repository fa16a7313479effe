//! A bounded, deterministic mutation test of the in-memory loaders: a few thousand
//! seeded mutations of the demo checkpoint (byte flips in the header and the data,
//! truncations, header-length edits, header-JSON edits) and of its config.json
//! (numeric-key edits, byte flips), each loaded with `MambaModel::from_bytes` on the
//! CPU backend. Every load must return Ok or a typed error; a panic fails the test
//! with the list of mutations that panicked. (The cargo-fuzz targets in `fuzz/` search
//! the same space without a bound; this is the part that runs with `cargo test`.)

use std::panic::{AssertUnwindSafe, catch_unwind};

use mamba_gpu::CpuBackend;
use mamba_gpu::model::{LoadOptions, MambaModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

const CONFIG: &[u8] = include_bytes!("../examples/demo_model/config.json");
const ST: &[u8] = include_bytes!("../examples/demo_model/model.safetensors");

/// Values a hostile config or header may hold, as raw JSON.
const HOSTILE: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "100000000",
    "1e8",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "4294967296",
    "2.5",
    "-0.0",
    "1e308",
    "\"12\"",
    "\"auto\"",
    "null",
    "true",
    "[]",
    "[1, 2]",
    "{\"a\": [1, {\"b\": null}]}",
];

fn header(st: &[u8]) -> (usize, Value) {
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    (n, serde_json::from_slice(&st[8..8 + n]).unwrap())
}

fn with_header(h: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

/// `v` (an object) with `key` set to the raw JSON `raw`.
fn set_raw(v: &Value, key: &str, raw: &str) -> String {
    let mut v = v.clone();
    v[key] = "@@RAW@@".into();
    v.to_string().replace("\"@@RAW@@\"", raw)
}

/// One mutation: a description and the (config, checkpoint) it produces.
fn mutate(rng: &mut ChaCha8Rng, cfg: &Value, hn: usize, h: &Value) -> (String, Vec<u8>, Vec<u8>) {
    let data = &ST[8 + hn..];
    let names: Vec<&String> = h.as_object().unwrap().keys().collect();
    let pick = |rng: &mut ChaCha8Rng, xs: &[&'static str]| xs[rng.random_range(0..xs.len())];
    match rng.random_range(0..9) {
        0 => {
            // Header byte flips.
            let mut st = ST.to_vec();
            let k = rng.random_range(1..4);
            let mut what = Vec::new();
            for _ in 0..k {
                let at = rng.random_range(8..8 + hn);
                st[at] = rng.random();
                what.push(format!("{at}={}", st[at]));
            }
            (format!("header bytes {what:?}"), CONFIG.to_vec(), st)
        }
        1 => {
            // Data byte flips (may make a value NaN/inf: a typed error by default).
            let mut st = ST.to_vec();
            let at = rng.random_range(8 + hn..st.len());
            st[at] = rng.random();
            (format!("data byte {at}={}", st[at]), CONFIG.to_vec(), st)
        }
        2 => {
            let len = if rng.random_bool(0.5) {
                rng.random_range(0..8 + hn + 16)
            } else {
                rng.random_range(0..ST.len())
            };
            (
                format!("truncated to {len}"),
                CONFIG.to_vec(),
                ST[..len].to_vec(),
            )
        }
        3 => {
            let mut st = ST.to_vec();
            let n: u64 = match rng.random_range(0..3) {
                0 => rng.random(),
                1 => hn as u64 + rng.random_range(0..64) - 32,
                _ => 1 << rng.random_range(0..64),
            };
            st[..8].copy_from_slice(&n.to_le_bytes());
            (format!("header length {n}"), CONFIG.to_vec(), st)
        }
        4 => {
            // Header JSON: one field of one tensor set to a hostile value.
            let name = names[rng.random_range(0..names.len())];
            let field = pick(rng, &["dtype", "shape", "data_offsets"]);
            let raw = match (field, rng.random_range(0..3)) {
                ("dtype", 0) => pick(
                    rng,
                    &[
                        "\"F32\"",
                        "\"F64\"",
                        "\"I8\"",
                        "\"BOOL\"",
                        "\"F8_E5M2\"",
                        "\"Q\"",
                    ],
                ),
                ("shape", 0) => pick(
                    rng,
                    &[
                        "[0]",
                        "[2048, 0]",
                        "[384, 16]",
                        "[4611686018427387904, 4]",
                        "[1]",
                    ],
                ),
                _ => HOSTILE[rng.random_range(0..HOSTILE.len())],
            };
            let mut h2 = h.clone();
            let obj = h2[name.as_str()].as_object_mut();
            match obj {
                Some(o) => {
                    o.insert(field.into(), "@@RAW@@".into());
                }
                None => h2[name.as_str()] = "@@RAW@@".into(),
            }
            let hs = h2.to_string().replace("\"@@RAW@@\"", raw);
            (
                format!("header {name}.{field} = {raw}"),
                CONFIG.to_vec(),
                with_header(&hs, data),
            )
        }
        5 => {
            // Header JSON: remove, rename or duplicate a tensor entry.
            let name = names[rng.random_range(0..names.len())].clone();
            let mut h2 = h.clone();
            let o = h2.as_object_mut().unwrap();
            let entry = o.remove(&name).unwrap();
            let op = rng.random_range(0..3);
            match op {
                0 => {}
                1 => {
                    o.insert(name.replace("layers.1", "layers.7"), entry);
                }
                _ => {
                    o.insert(name.clone(), entry.clone());
                    o.insert(format!("{name}.copy"), entry);
                }
            }
            (
                format!("header entry {name} op {op}"),
                CONFIG.to_vec(),
                with_header(&h2.to_string(), data),
            )
        }
        6 | 7 => {
            // config.json: a numeric (or any) key set to a hostile value.
            let keys: Vec<&String> = cfg.as_object().unwrap().keys().collect();
            let key = keys[rng.random_range(0..keys.len())];
            let raw = HOSTILE[rng.random_range(0..HOSTILE.len())];
            (
                format!("config {key} = {raw}"),
                set_raw(cfg, key, raw).into_bytes(),
                ST.to_vec(),
            )
        }
        _ => {
            let mut c = CONFIG.to_vec();
            let at = rng.random_range(0..c.len());
            c[at] = rng.random();
            (format!("config byte {at}={}", c[at]), c, ST.to_vec())
        }
    }
}

#[test]
fn seeded_mutations_of_the_demo_checkpoint_give_ok_or_typed_errors() {
    let n: usize = std::env::var("MAMBA_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let cfg: Value = serde_json::from_slice(CONFIG).unwrap();
    let (hn, h) = header(ST);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let opts = LoadOptions {
        progress: false,
        ..LoadOptions::default()
    };
    // Panics are expected to be caught here; keep their messages out of the log.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let (mut ok, mut errs, mut panics) = (0usize, Vec::new(), Vec::new());
    for i in 0..n {
        let (what, c, st) = mutate(&mut rng, &cfg, hn, &h);
        let r = catch_unwind(AssertUnwindSafe(|| {
            MambaModel::from_bytes(CpuBackend::new(), &c, &[&st], &opts).map(|_| ())
        }));
        match r {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => errs.push((what, e.to_string())),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panics.push(format!("#{i} {what}: {msg}"));
            }
        }
    }
    std::panic::set_hook(hook);
    assert!(
        panics.is_empty(),
        "{} of {n} mutations panicked:\n{}",
        panics.len(),
        panics.join("\n")
    );
    // Errors are typed and say what is wrong (a file name at least).
    for (what, e) in &errs {
        assert!(
            e.contains("config.json") || e.contains("model.safetensors"),
            "{what}: {e}"
        );
    }
    // The mutations must reach both outcomes, or this test would prove nothing.
    assert!(
        ok > n / 50 && errs.len() > n / 2,
        "ok {ok}, errors {}",
        errs.len()
    );
    eprintln!("{n} mutations: {ok} loaded, {} typed errors", errs.len());
}
