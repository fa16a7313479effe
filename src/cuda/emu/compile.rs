//! Builds the runner executable: every `kernels/*.cu` rewritten (`rewrite.rs`) and
//! compiled by g++ with `cuemu.h`, linked with `runner.cpp`. Cached by a hash of
//! everything that goes in (sources, flags, compiler version), so a test run compiles
//! once and an edited kernel recompiles.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::rewrite;
use crate::error::{Error, Result};

const CUEMU_H: &str = include_str!("cuemu.h");
const RUNNER_CPP: &str = include_str!("runner.cpp");

fn unavailable(why: String) -> Error {
    Error::BackendUnavailable {
        backend: super::BACKEND,
        why,
    }
}

fn build_err(why: String) -> Error {
    Error::Device {
        backend: super::BACKEND,
        why,
    }
}

/// FNV-1a: stable across runs and Rust versions, unlike `DefaultHasher`.
fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
    *h ^= 0xff;
    *h = h.wrapping_mul(0x100_0000_01b3);
}

/// The C++ compiler (`$CXX`, else `g++`) and its version line; g++ older than 12 lacks
/// `_Float16` in C++.
fn compiler() -> Result<(String, String)> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let out = Command::new(&cxx)
        .arg("-dumpfullversion")
        .output()
        .map_err(|e| {
            unavailable(format!(
                "the CPU execution model needs g++ 12 or newer (`{cxx}` could not be run: {e}); \
                 install it (Debian/Ubuntu: apt-get install g++) or set CXX"
            ))
        })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if cxx.ends_with("g++") && major < 12 {
        return Err(unavailable(format!(
            "the CPU execution model needs g++ 12 or newer for _Float16; `{cxx}` is {version}"
        )));
    }
    Ok((cxx, version))
}

fn flags(sanitize: bool) -> Vec<&'static str> {
    let mut f = vec![
        "-std=c++17",
        "-fno-strict-aliasing",
        "-Wno-unknown-pragmas",
        "-fno-omit-frame-pointer",
    ];
    if sanitize {
        f.extend([
            "-O1",
            "-g",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
        ]);
    } else {
        f.push("-O2");
    }
    f
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Io {
        file: path.display().to_string(),
        source: e,
    })
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::Io {
        file: path.display().to_string(),
        source: e,
    })
}

/// The runner for `kernel_dir`, built under `build_dir` unless already there.
pub fn runner(kernel_dir: &Path, build_dir: &Path, sanitize: bool) -> Result<PathBuf> {
    // One build at a time in this process (tests open backends in parallel).
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let _guard = LOCK.get_or_init(|| Mutex::new(())).lock();
    let (cxx, version) = compiler()?;
    let flags = flags(sanitize);

    let mut names: Vec<String> = std::fs::read_dir(kernel_dir)
        .map_err(|e| Error::Io {
            file: kernel_dir.display().to_string(),
            source: e,
        })?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".cu") || n.ends_with(".cuh"))
        .collect();
    names.sort();
    let mut files: Vec<(String, String)> = Vec::new(); // (name in build dir, text)
    let mut header_structs = Vec::new();
    for n in names.iter().filter(|n| n.ends_with(".cuh")) {
        let src = read(&kernel_dir.join(n))?;
        let shown = format!("kernels/{n}");
        files.push((
            n.clone(),
            rewrite::rewrite_header(&shown, &src).map_err(build_err)?,
        ));
        for (s, fields) in rewrite::header_structs(&shown, &src).map_err(build_err)? {
            header_structs.push((n.clone(), shown.clone(), s, fields));
        }
    }
    let mut units = Vec::new();
    for n in names.iter().filter(|n| n.ends_with(".cu")) {
        let src = read(&kernel_dir.join(n))?;
        let base = n.trim_end_matches(".cu");
        let inc = rewrite::local_includes(&src);
        let extra: Vec<_> = header_structs
            .iter()
            .filter(|h| inc.contains(&h.0))
            .map(|h| (h.1.clone(), h.2.clone(), h.3.clone()))
            .collect();
        let u = rewrite::rewrite_unit(
            &format!("kernels/{n}"),
            &format!("cuemu_k_{base}"),
            &src,
            &extra,
        )
        .map_err(build_err)?;
        files.push((format!("{base}.cpp"), u.text));
        units.push(format!("{base}.cpp"));
    }
    files.push(("cuemu.h".into(), CUEMU_H.into()));
    files.push(("runner.cpp".into(), RUNNER_CPP.into()));
    units.push("runner.cpp".into());

    let mut h = 0xcbf2_9ce4_8422_2325u64;
    fnv(&mut h, version.as_bytes());
    fnv(&mut h, cxx.as_bytes());
    for f in &flags {
        fnv(&mut h, f.as_bytes());
    }
    for (n, t) in &files {
        fnv(&mut h, n.as_bytes());
        fnv(&mut h, t.as_bytes());
    }
    let variant = if sanitize { "asan" } else { "plain" };
    let dir = build_dir.join(format!("{variant}-{h:016x}"));
    let exe = dir.join("runner");
    if exe.exists() {
        return Ok(exe);
    }
    // Unique per build, not only per process: two threads of one test binary may build
    // the same runner at once, and must not share (or delete) each other's files.
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nth = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = build_dir.join(format!(
        "tmp-{variant}-{}-{nth}-{h:016x}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::Io {
        file: tmp.display().to_string(),
        source: e,
    })?;
    for (n, t) in &files {
        write(&tmp.join(n), t)?;
    }
    // Compile the units in parallel, then link.
    let mut jobs = Vec::new();
    for u in &units {
        let child = Command::new(&cxx)
            .args(&flags)
            .arg("-I")
            .arg(&tmp)
            .arg("-I")
            .arg(kernel_dir)
            .arg("-c")
            .arg(tmp.join(u))
            .arg("-o")
            .arg(tmp.join(format!("{u}.o")))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| build_err(format!("cannot run {cxx}: {e}")))?;
        jobs.push((u, child));
    }
    let mut errors = String::new();
    for (u, child) in jobs {
        let out = child
            .wait_with_output()
            .map_err(|e| build_err(format!("{cxx}: {e}")))?;
        if !out.status.success() {
            errors.push_str(&format!("{u}:\n{}\n", String::from_utf8_lossy(&out.stderr)));
        }
    }
    if !errors.is_empty() {
        return Err(build_err(format!(
            "g++ could not compile the kernels for the CPU execution model (rewritten sources in {}):\n{errors}",
            tmp.display()
        )));
    }
    let out = Command::new(&cxx)
        .args(&flags)
        .args(units.iter().map(|u| tmp.join(format!("{u}.o"))))
        .arg("-o")
        .arg(tmp.join("runner"))
        .output()
        .map_err(|e| build_err(format!("cannot run {cxx}: {e}")))?;
    if !out.status.success() {
        return Err(build_err(format!(
            "linking the CPU execution model failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    // Publish atomically; another process may have won the race, which is fine.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if exe.exists() {
        Ok(exe)
    } else {
        Err(build_err(format!(
            "{} missing after the build",
            exe.display()
        )))
    }
}
