// dst[dst_offset + i] = src[src_offset + i] for i < len, on 4-byte elements (f32 or u32).
// Mirrors src/cpu/copy.rs::copy. One invocation per element.

//#include "common.wgsl"

@group(0) @binding(0) var<uniform> p: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;         // (>= src_offset + len) 4-byte elements
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;   // (>= dst_offset + len) 4-byte elements

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_invocation(gid, nwg, 256u);
    if i >= p.len {
        return;
    }
    dst[p.dst_offset + i] = src[p.src_offset + i];
}
