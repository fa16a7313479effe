//! The WGSL as Metal, DX12 and Vulkan users get it, on any machine (no GPU needed).
//!
//! wgpu hands every shader to naga, which translates it to MSL (Metal), HLSL (DX12) and
//! SPIR-V (Vulkan) after applying the pipeline's override constants. Only the SPIR-V path
//! runs here (lavapipe), so these tests take every pipeline exactly as the backend builds
//! it (`mamba_gpu::wgpu::pipeline_sources`: the source through `Kernel::shader`, the entry
//! point, the override constants, the scan sized by `ScanSize::fit` for several adapters
//! and dstates, both scan variants), validate it with the capabilities the backend
//! requests, and translate it with naga's three back ends, failing on any error. Naga's
//! reflection of the same modules checks the bindings and uniform structs against the
//! host (`param_layouts_and_bindings_match_the_host`).

use std::path::Path;

/// Every `.wgsl` file on its own parses and validates (with every capability allowed; the
/// pipeline tests below are the strict ones).
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

#[cfg(feature = "wgpu")]
mod pipelines {
    use std::collections::BTreeSet;

    use mamba_gpu::wgpu::{PipelineSource, pipeline_sources};
    use naga::back::{hlsl, msl, spv};
    use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};
    use naga::valid::{
        Capabilities, ModuleInfo, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator,
    };
    use naga::{AddressSpace, Module, ShaderStage};

    /// Adapters the scan is sized for: (what, channels asked for, invocations per
    /// workgroup, workgroup bytes, dstates). WebGPU's default limits; Vulkan's minimum of
    /// 128 invocations; a large GPU asked for 16 channels.
    const ADAPTERS: &[(&str, u32, u32, u32, &[u32])] = &[
        ("WebGPU defaults", 4, 256, 16 * 1024, &[1, 16, 17, 128, 1000]),
        ("128 invocations", 4, 128, 16 * 1024, &[16, 64]),
        ("large GPU", 16, 1024, 48 * 1024, &[16, 256]),
    ];

    /// The smallest limits `WgpuBackend::new` accepts (its `need` table); every kernel but
    /// the scan, which sizes itself, must fit them.
    const MIN_INVOCATIONS: u32 = 256;
    const MIN_WORKGROUP_BYTES: u32 = 8 * 1024;

    /// Every distinct pipeline over [`ADAPTERS`].
    pub(crate) fn all_pipelines() -> Vec<PipelineSource> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for &(what, channels, invocations, bytes, dstates) in ADAPTERS {
            let list = pipeline_sources(dstates, channels, invocations, bytes)
                .unwrap_or_else(|e| panic!("{what}: the scan does not fit: {e}"));
            for p in list {
                if seen.insert(p.kernel.clone()) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The module as naga parses and validates it for a device with the features the
    /// backend requests (`SUBGROUP` for the subgroup scan, not `SHADER_F16`: f16 weights
    /// are decoded from u32 words) and what wgpu grants every WebGPU-compliant adapter
    /// (`unpack2x16float` in f32 code, downlevel `SHADER_F16_IN_F32`).
    pub(crate) fn parse(p: &PipelineSource) -> Result<(Module, ModuleInfo), String> {
        let module = naga::front::wgsl::parse_str(&p.source)
            .map_err(|e| format!("parse error:\n{}", e.emit_to_string(&p.source)))?;
        let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if p.subgroups {
            caps |= Capabilities::SUBGROUP;
        }
        let mut v = Validator::new(ValidationFlags::all(), caps);
        v.subgroup_stages(ShaderStages::COMPUTE)
            .subgroup_operations(SubgroupOperationSet::all());
        let info = v
            .validate(&module)
            .map_err(|e| format!("validation error:\n{}", e.emit_to_string(&p.source)))?;
        Ok((module, info))
    }

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

/// The host's side of every uniform struct: its Rust layout (`size_of`, `offset_of!` and
/// the type of each field), looked up by the WGSL struct's name.
#[cfg(feature = "wgpu")]
mod host {
    use mamba_gpu::params::*;
    use std::mem::{offset_of, size_of};

    /// A field's WGSL scalar type name, from its Rust type.
    pub trait Scalar {
        const WGSL: &'static str;
    }
    impl Scalar for u32 {
        const WGSL: &'static str = "u32";
    }
    impl Scalar for f32 {
        const WGSL: &'static str = "f32";
    }
    impl Scalar for i32 {
        const WGSL: &'static str = "i32";
    }
    /// The WGSL type of the field `get` reads (a non-capturing closure `|p| &p.field`).
    pub fn scalar_of<P, T: Scalar>(_get: fn(&P) -> &T) -> &'static str {
        T::WGSL
    }

    /// Size and (field, offset, WGSL type) of a uniform struct as the host writes it.
    pub struct Layout {
        pub size: usize,
        pub fields: Vec<(&'static str, usize, &'static str)>,
    }

    macro_rules! layout {
        ($t:ident { $($f:ident),* $(,)? }) => {
            Layout {
                size: size_of::<$t>(),
                fields: vec![$((
                    stringify!($f),
                    offset_of!($t, $f),
                    scalar_of(|p: &$t| &p.$f),
                )),*],
            }
        };
    }

    /// The Rust struct the host binds as `name`, by the one-name-per-struct rule. Listing a
    /// field here that the struct lacks does not compile; a field the list lacks changes
    /// the size or the member count checked against the shader.
    pub fn layout(name: &str) -> Option<Layout> {
        Some(match name {
            "ScanParams" => layout!(ScanParams {
                batch, dim, len, dstate, x_sb, x_sd, x_st, b_sb, b_sg, b_sn, b_st,
                b_group_dim, c_sb, c_sg, c_sn, c_st, c_group_dim, has_d, has_z,
                has_delta_bias, delta_softplus, state_mode, _pad0, _pad1,
            }),
            "StepParams" => layout!(StepParams {
                batch, dim, dstate, group_dim, groups, has_d, has_z, has_dt_bias,
                dt_softplus, _pad0, _pad1, _pad2,
            }),
            "ConvParams" => layout!(ConvParams {
                batch, dim, len, width, x_sb, x_sd, x_st, has_bias, silu, state_mode,
                _pad0, _pad1,
            }),
            "MatmulParams" => layout!(MatmulParams { m, n, k, has_bias }),
            "NormParams" => layout!(NormParams { rows, dim, eps, has_residual }),
            "EmbeddingParams" => layout!(EmbeddingParams { count, rows, dim, _pad0 }),
            "ElementwiseParams" => layout!(ElementwiseParams { len, op, _pad0, _pad1 }),
            "ArgmaxParams" => layout!(ArgmaxParams { rows, cols, _pad0, _pad1 }),
            "CopyParams" => layout!(CopyParams { len, src_offset, dst_offset, _pad0 }),
            "WindowParams" => {
                // Private to src/wgpu/window.rs; all u32.
                let (size, fields) = mamba_gpu::wgpu::window_params_layout();
                Layout {
                    size,
                    fields: fields.into_iter().map(|(f, o)| (f, o, "u32")).collect(),
                }
            }
            _ => return None,
        })
    }

    /// The uniform structs each entry point binds, in binding order (what src/wgpu/ops.rs
    /// passes as `Bind::Uniform`).
    pub fn uniforms(entry: &str) -> &'static [&'static str] {
        match entry {
            "selective_scan" => &["ScanParams"],
            "selective_state_update" => &["StepParams"],
            "causal_conv1d" | "causal_conv1d_state" | "causal_conv1d_update" => &["ConvParams"],
            "matmul" | "matmul_decode" => &["MatmulParams", "WindowParams"],
            "rms_norm" => &["NormParams"],
            "embedding" => &["EmbeddingParams", "WindowParams"],
            "elementwise" => &["ElementwiseParams"],
            "argmax" => &["ArgmaxParams"],
            "copy" => &["CopyParams"],
            _ => &[],
        }
    }
}

/// Reflection over every pipeline's module against the host: each `@binding` has the
/// kind (uniform / storage read / storage read_write) and number of the bind group
/// layout the backend makes from `Kernel::slots`, nothing is bound that the layout lacks
/// or the reverse, and each uniform struct has the size, member names, offsets and types
/// of its `#[repr(C)]` Rust twin (`size_of`, `offset_of!`), so a field reordered, added or
/// retyped on either side fails here instead of reading the wrong word on a GPU.
#[cfg(feature = "wgpu")]
#[test]
fn param_layouts_and_bindings_match_the_host() {
    use naga::{AddressSpace, StorageAccess, TypeInner};
    let mut failures = Vec::new();
    let mut structs_checked = std::collections::BTreeSet::new();
    for p in &pipelines::all_pipelines() {
        let (m, _) = match pipelines::parse(p) {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{}: {e}", p.kernel));
                continue;
            }
        };
        let mut fail = |why: String| failures.push(format!("{} ({}): {why}", p.kernel, p.file));
        let mut bound: Vec<(u32, &'static str, String)> = Vec::new();
        for (_, g) in m.global_variables.iter() {
            let Some(rb) = &g.binding else { continue };
            if rb.group != 0 {
                fail(format!("binding in group {}, the host binds group 0", rb.group));
            }
            let kind = match g.space {
                AddressSpace::Uniform => "uniform",
                AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
                    "storage read_write"
                }
                AddressSpace::Storage { .. } => "storage read",
                other => {
                    fail(format!("binding {} in {other:?}", rb.binding));
                    continue;
                }
            };
            let ty = m.types[g.ty].name.clone().unwrap_or_default();
            bound.push((rb.binding, kind, ty));
        }
        bound.sort();
        let shader: Vec<(u32, &str)> = bound.iter().map(|(b, k, _)| (*b, *k)).collect();
        let layout: Vec<(u32, &str)> = (0..).zip(p.bindings.iter().copied()).collect();
        if shader != layout {
            fail(format!("shader bindings {shader:?}, host layout {layout:?}"));
        }
        let shader_uniforms: Vec<&str> = bound
            .iter()
            .filter(|(_, k, _)| *k == "uniform")
            .map(|(_, _, t)| t.as_str())
            .collect();
        let host_uniforms = host::uniforms(p.entry);
        if shader_uniforms != host_uniforms {
            fail(format!(
                "uniform structs {shader_uniforms:?}, the host binds {host_uniforms:?}"
            ));
        }
        for (_, g) in m.global_variables.iter() {
            if g.space != AddressSpace::Uniform {
                continue;
            }
            let ty = &m.types[g.ty];
            let name = ty.name.clone().unwrap_or_default();
            let TypeInner::Struct { members, span } = &ty.inner else {
                fail(format!("uniform `{name}` is not a struct"));
                continue;
            };
            let Some(rust) = host::layout(&name) else {
                fail(format!("no Rust struct named `{name}` in src/params.rs"));
                continue;
            };
            let wgsl: Vec<(String, usize, String)> = members
                .iter()
                .map(|mem| {
                    let scalar = match m.types[mem.ty].inner {
                        TypeInner::Scalar(s) => match (s.kind, s.width) {
                            (naga::ScalarKind::Uint, 4) => "u32",
                            (naga::ScalarKind::Float, 4) => "f32",
                            (naga::ScalarKind::Sint, 4) => "i32",
                            _ => "other scalar",
                        },
                        _ => "not a scalar",
                    };
                    let member = mem.name.clone().unwrap_or_default();
                    (member, mem.offset as usize, scalar.to_string())
                })
                .collect();
            let rust_fields: Vec<(String, usize, String)> = rust
                .fields
                .iter()
                .map(|&(f, o, t)| (f.to_string(), o, t.to_string()))
                .collect();
            if *span as usize != rust.size || wgsl != rust_fields {
                fail(format!(
                    "`{name}`: WGSL {span} bytes {wgsl:?}\n  Rust {} bytes {rust_fields:?}",
                    rust.size
                ));
            }
            structs_checked.insert(name);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(structs_checked.len(), 10, "uniform structs seen: {structs_checked:?}");
}
