//! Comments that point at another file must point at one that exists: every
//! `src/...`, `shaders/...`, `kernels/...`, `tests/...` or `tools/...` path named in a
//! comment of `src/`, `shaders/` or `kernels/` names an existing file or folder, and a
//! `path::item` pointer names an item that file mentions. (Pointers into files that had
//! moved went stale unnoticed before this test.)

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            files(&p, out);
        } else if p
            .extension()
            .is_some_and(|e| e == "rs" || e == "wgsl" || e == "cu" || e == "cuh")
        {
            out.push(p);
        }
    }
}

/// The pointers in one comment: (path, optional `::item`).
fn pointers(comment: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let bytes = comment.as_bytes();
    for root in ["src/", "shaders/", "kernels/", "tests/", "tools/"] {
        let mut from = 0;
        while let Some(at) = comment[from..].find(root) {
            let start = from + at;
            from = start + root.len();
            // Only a path that starts a word (not `../../shaders/` or `wgpu/src/`).
            if start > 0
                && (bytes[start - 1].is_ascii_alphanumeric() || b"/._".contains(&bytes[start - 1]))
            {
                continue;
            }
            let rest = &comment[start..];
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "_./-".contains(c)))
                .unwrap_or(rest.len());
            let path = rest[..len].trim_end_matches('.').to_string();
            if path.len() <= root.len() {
                continue; // `shaders/<op>.wgsl` and the like: a pattern, not a path
            }
            let after = &rest[len..];
            let item = after.strip_prefix("::").map(|s| {
                s.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            });
            found.push((path, item.filter(|i| !i.is_empty())));
        }
    }
    found
}

#[test]
fn pointers_in_comments_name_existing_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for dir in ["src", "shaders", "kernels"] {
        files(&root.join(dir), &mut all);
    }
    assert!(all.len() > 20, "found only {} source files", all.len());
    let mut checked = 0;
    let mut stale = Vec::new();
    for file in &all {
        let text = std::fs::read_to_string(file).expect("read source");
        let rel = file.strip_prefix(root).unwrap().display().to_string();
        for (n, line) in text.lines().enumerate() {
            let Some(at) = line.find("//") else { continue };
            for (path, item) in pointers(&line[at..]) {
                checked += 1;
                let target = root.join(&path);
                if !target.exists() {
                    stale.push(format!("{rel}:{}: `{path}` does not exist", n + 1));
                    continue;
                }
                if let Some(item) = item {
                    let ok = target.is_file()
                        && std::fs::read_to_string(&target).is_ok_and(|t| t.contains(&item));
                    if !ok {
                        stale.push(format!("{rel}:{}: `{path}` has no `{item}`", n + 1));
                    }
                }
            }
        }
    }
    eprintln!("{checked} pointers checked in {} files", all.len());
    assert!(
        checked > 20,
        "only {checked} pointers found: is the scan broken?"
    );
    assert!(stale.is_empty(), "stale pointers:\n{}", stale.join("\n"));
}

#[test]
fn pointer_scanner_finds_paths_and_items() {
    let got =
        pointers("// Mirrors src/cpu/argmax.rs::argmax and kernels/copy.cu; not ../../shaders/x");
    assert_eq!(
        got,
        vec![
            ("src/cpu/argmax.rs".to_string(), Some("argmax".to_string())),
            ("kernels/copy.cu".to_string(), None),
        ]
    );
}
