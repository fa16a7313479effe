//! What tests/shaders_naga.rs and tests/shader_layouts.rs share: every pipeline the wgpu
//! backend builds, over several adapters' limits, and naga's parse and validation of it.
#![allow(dead_code)]

use std::collections::BTreeSet;

use mamba_gpu::wgpu::{PipelineSource, pipeline_sources};
use naga::Module;
use naga::valid::{
    Capabilities, ModuleInfo, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator,
};

/// Adapters the scan is sized for: (what, channels asked for, invocations per
/// workgroup, workgroup bytes, dstates). WebGPU's default limits; Vulkan's minimum of
/// 128 invocations; a large GPU asked for 16 channels.
const ADAPTERS: &[(&str, u32, u32, u32, &[u32])] = &[
    (
        "WebGPU defaults",
        4,
        256,
        16 * 1024,
        &[1, 16, 17, 128, 1000],
    ),
    ("128 invocations", 4, 128, 16 * 1024, &[16, 64]),
    ("large GPU", 16, 1024, 48 * 1024, &[16, 256]),
];

/// Every distinct pipeline over [`ADAPTERS`].
pub fn all_pipelines() -> Vec<PipelineSource> {
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
pub fn parse(p: &PipelineSource) -> Result<(Module, ModuleInfo), String> {
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
