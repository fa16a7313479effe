//! Every WGSL shader module, as the backend joins it from `shaders/` (the crate's
//! `shader_source`, includes resolved), parses and validates with naga, on any machine
//! (no GPU needed). Subgroup and f16 capabilities are allowed: the backend only picks
//! the shaders that need them when the adapter has the matching feature.
#![cfg(feature = "wgpu")]

use std::collections::BTreeSet;
use std::path::Path;

use mamba_gpu::wgpu::{SHADERS, shader_source};

#[test]
fn every_shader_parses_and_validates() {
    assert!(!SHADERS.is_empty());
    let mut failures = Vec::new();
    for &name in SHADERS {
        let src = match shader_source(name) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{name}: include step: {e}"));
                continue;
            }
        };
        assert!(
            !src.lines().any(|l| l.trim().starts_with("//#include")),
            "{name}: an include line survived"
        );
        let module = match naga::front::wgsl::parse_str(&src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: parse error:\n{}", e.emit_to_string(&src)));
                continue;
            }
        };
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        );
        if let Err(e) = validator.validate(&module) {
            failures.push(format!(
                "{name}: validation error:\n{}",
                e.emit_to_string(&src)
            ));
            continue;
        }
        assert!(!module.entry_points.is_empty(), "{name}: no entry point");
        println!("{name}: ok ({} entry points)", module.entry_points.len());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every `.wgsl` file under `shaders/` reaches some module (none is dead or forgotten
/// in the crate's embedded list), and an unknown module is an error, not a panic.
#[test]
fn every_shader_file_is_joined_into_a_module() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk = BTreeSet::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read shaders/") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "wgsl") {
                let rel = p
                    .strip_prefix(&dir)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                on_disk.insert(rel);
            }
        }
    }
    let joined: String = SHADERS.iter().map(|s| shader_source(s).unwrap()).collect();
    for f in &on_disk {
        assert!(
            joined.contains(&format!("// ---- shaders/{f} ----")),
            "shaders/{f} is in no module"
        );
    }
    assert!(shader_source("no_such.wgsl").is_err());
}
