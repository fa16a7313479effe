//! Every WGSL shader in `shaders/` parses and validates with naga, on any machine (no GPU
//! needed). Subgroup and f16 capabilities are allowed: the backend only picks the shaders
//! that need them when the adapter has the matching feature.

use std::path::Path;

#[test]
fn every_shader_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .wgsl files in {}", dir.display());
    let mut failures = Vec::new();
    for path in &files {
        let src = std::fs::read_to_string(path).expect("read shader");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
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
