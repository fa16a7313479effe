//! The WGSL as Metal, DX12 and Vulkan users get it, on any machine (no GPU needed).
//!
//! Every shader module, as the backend joins it from `shaders/` (the crate's
//! `shader_source`, includes resolved), parses and validates with naga. wgpu hands every
//! shader to naga, which translates it to MSL (Metal), HLSL (DX12) and SPIR-V (Vulkan)
//! after applying the pipeline's override constants. Only the SPIR-V path runs here
//! (lavapipe), so the `pipelines` tests take every pipeline exactly as the backend builds
//! it (`mamba_gpu::wgpu::pipeline_sources`: the joined source, the entry point, the
//! override constants, the scan sized by `ScanSize::fit` for several adapters and
//! dstates, both scan variants), validate it with the capabilities the backend requests,
//! and translate it with naga's three back ends, failing on any error. Naga's reflection
//! of the same modules checks the bindings and uniform structs against the host in
//! `shader_layouts.rs`.
#![cfg(feature = "wgpu")]

use std::collections::BTreeSet;
use std::path::Path;

use mamba_gpu::wgpu::{SHADERS, shader_source};

mod naga_common;

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

mod pipelines {
    use std::collections::BTreeSet;

    use crate::naga_common::{all_pipelines, parse};
    use mamba_gpu::wgpu::PipelineSource;
    use naga::back::{hlsl, msl, spv};
    use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};
    use naga::valid::ModuleInfo;
    use naga::{AddressSpace, Module, ShaderStage};

    /// The smallest limits `WgpuBackend::new` accepts (its `need` table); every kernel but
    /// the scan, which sizes itself, must fit them.
    use mamba_gpu::wgpu::{MIN_INVOCATIONS, MIN_WORKGROUP_BYTES};

    /// The module with the host's override constants applied, for its entry point, as
    /// wgpu does before handing it to a back end.
    fn specialize(p: &PipelineSource) -> Result<(Module, ModuleInfo), String> {
        let (module, info) = parse(p)?;
        let declared: Vec<&str> = module
            .overrides
            .iter()
            .filter_map(|(_, o)| o.name.as_deref())
            .collect();
        for (name, _) in &p.constants {
            if !declared.contains(name) {
                return Err(format!(
                    "the host sets override `{name}`, the shader declares {declared:?}"
                ));
            }
        }
        let mut constants = naga::back::PipelineConstants::default();
        for &(name, value) in &p.constants {
            constants.insert(name.to_string(), value);
        }
        let (m, i) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((ShaderStage::Compute, p.entry)),
            &constants,
        )
        .map_err(|e| format!("process_overrides: {e}"))?;
        Ok((m.into_owned(), i.into_owned()))
    }

    /// wgpu's checked shaders (bounds clamped, loops bounded), or its trusted ones.
    fn policies(checked: bool) -> BoundsCheckPolicies {
        if checked {
            BoundsCheckPolicies {
                index: BoundsCheckPolicy::Restrict,
                buffer: BoundsCheckPolicy::Restrict,
                image_load: BoundsCheckPolicy::ReadZeroSkipWrite,
                binding_array: BoundsCheckPolicy::Restrict,
            }
        } else {
            BoundsCheckPolicies::default() // Unchecked
        }
    }

    fn to_msl(m: &Module, i: &ModuleInfo, p: &PipelineSource, checked: bool) -> Result<(), String> {
        for lang_version in [(2, 1), (3, 0)] {
            let options = msl::Options {
                lang_version,
                bounds_check_policies: policies(checked),
                force_loop_bounding: checked,
                zero_initialize_workgroup_memory: false,
                ..Default::default()
            };
            let pipeline = msl::PipelineOptions {
                entry_point: Some((ShaderStage::Compute, p.entry.to_string())),
                ..Default::default()
            };
            let (text, _) = msl::write_string(m, i, &options, &pipeline)
                .map_err(|e| format!("MSL {lang_version:?}: {e}"))?;
            if !text.contains("kernel void") {
                return Err(format!("MSL {lang_version:?}: no kernel function written"));
            }
        }
        Ok(())
    }

    fn to_hlsl(
        m: &Module,
        i: &ModuleInfo,
        p: &PipelineSource,
        checked: bool,
    ) -> Result<(), String> {
        // 5.1 is FXC's (DX12 without DXC); wave intrinsics need 6.0.
        let models: &[hlsl::ShaderModel] = if p.subgroups {
            &[hlsl::ShaderModel::V6_0]
        } else {
            &[hlsl::ShaderModel::V5_1, hlsl::ShaderModel::V6_0]
        };
        for &shader_model in models {
            let options = hlsl::Options {
                shader_model,
                zero_initialize_workgroup_memory: false,
                force_loop_bounding: checked,
                restrict_indexing: checked,
                ..Default::default()
            };
            let pipeline = hlsl::PipelineOptions {
                entry_point: Some((ShaderStage::Compute, p.entry.to_string())),
            };
            let mut text = String::new();
            hlsl::Writer::new(&mut text, &options, &pipeline)
                .write(m, i, None)
                .map_err(|e| format!("HLSL {shader_model:?}: {e}"))?;
            if !text.contains("[numthreads(") {
                return Err(format!("HLSL {shader_model:?}: no compute entry written"));
            }
        }
        Ok(())
    }

    fn to_spirv(
        m: &Module,
        i: &ModuleInfo,
        p: &PipelineSource,
        checked: bool,
    ) -> Result<(), String> {
        // Subgroup operations need SPIR-V 1.3 (Vulkan 1.1).
        let lang_version = if p.subgroups { (1, 3) } else { (1, 0) };
        let options = spv::Options {
            lang_version,
            bounds_check_policies: policies(checked),
            force_loop_bounding: checked,
            zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::None,
            ..Default::default()
        };
        let pipeline = spv::PipelineOptions {
            shader_stage: ShaderStage::Compute,
            entry_point: p.entry.to_string(),
        };
        let words = spv::write_vec(m, i, &options, Some(&pipeline))
            .map_err(|e| format!("SPIR-V {lang_version:?}: {e}"))?;
        if words.first() != Some(&0x0723_0203) {
            return Err(format!("SPIR-V {lang_version:?}: no SPIR-V magic number"));
        }
        Ok(())
    }

    /// Every pipeline, specialized with the host's constants, translates to MSL (2.1 and
    /// 3.0), HLSL (SM 5.1 and 6.0; 6.0 only for subgroups) and SPIR-V, checked (wgpu's
    /// default) and, for the shaders the backend creates trusted, unchecked too.
    #[test]
    fn every_pipeline_translates_to_msl_hlsl_and_spirv() {
        let pipelines = all_pipelines();
        let mut failures = Vec::new();
        let mut variants = BTreeSet::new();
        for p in &pipelines {
            let (m, i) = match specialize(p) {
                Ok(x) => x,
                Err(e) => {
                    failures.push(format!("{} ({}): {e}", p.kernel, p.file));
                    continue;
                }
            };
            let modes: &[bool] = if p.trusted { &[true, false] } else { &[true] };
            for &checked in modes {
                let mode = if checked { "checked" } else { "unchecked" };
                for r in [
                    to_msl(&m, &i, p, checked),
                    to_hlsl(&m, &i, p, checked),
                    to_spirv(&m, &i, p, checked),
                ] {
                    if let Err(e) = r {
                        failures.push(format!("{} ({}, {mode}): {e}", p.kernel, p.file));
                    }
                }
            }
            variants.insert(p.kernel.split('(').next().unwrap_or("").to_string());
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
        // Both scan variants were among them.
        for v in ["SelectiveScan", "SelectiveScanSubgroup"] {
            assert!(variants.contains(v), "{v} not translated: {variants:?}");
        }
        println!(
            "{} pipelines translated to MSL, HLSL and SPIR-V",
            pipelines.len()
        );
    }

    /// After specialization each pipeline's workgroup is what the host dispatches for:
    /// the scan exactly `CH × 64` invocations and the workgroup memory `ScanSize` computed
    /// (so `ScanSize::fit` sizes against the shader's real declarations), every other
    /// kernel within the smallest limits the backend accepts.
    #[test]
    fn workgroups_are_what_the_host_sized() {
        let mut failures = Vec::new();
        for p in &all_pipelines() {
            let (m, _) = match specialize(p) {
                Ok(x) => x,
                Err(e) => {
                    failures.push(format!("{}: {e}", p.kernel));
                    continue;
                }
            };
            let ep = m
                .entry_points
                .iter()
                .find(|e| e.name == p.entry)
                .expect("entry point");
            let invocations: u32 = ep.workgroup_size.iter().product();
            let bytes: u32 = m
                .global_variables
                .iter()
                .filter(|(_, g)| g.space == AddressSpace::WorkGroup)
                .map(|(_, g)| m.types[g.ty].inner.size(m.to_ctx()))
                .sum();
            match p.workgroup_bytes {
                Some(host) => {
                    let ch = p
                        .constants
                        .iter()
                        .find(|(n, _)| *n == "CH")
                        .map(|&(_, v)| v as u32)
                        .expect("CH");
                    if invocations != ch * 64 || bytes != host {
                        failures.push(format!(
                            "{}: {invocations} invocations and {bytes} workgroup bytes; the \
                             host sized {} and {host}",
                            p.kernel,
                            ch * 64
                        ));
                    }
                }
                None if invocations > MIN_INVOCATIONS || bytes > MIN_WORKGROUP_BYTES => {
                    failures.push(format!(
                        "{}: {invocations} invocations, {bytes} workgroup bytes exceed the \
                         smallest adapter accepted ({MIN_INVOCATIONS}, {MIN_WORKGROUP_BYTES})",
                        p.kernel
                    ));
                }
                None => {}
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
