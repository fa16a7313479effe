// dst[dst_offset + i] = src[src_offset + i] for i < len, on 4-byte elements (f32 or u32).
// Mirrors the copy in src/cpu/mod.rs. One invocation per element.

// Keep in sync with src/params.rs::CopyParams.
struct CopyParams {
    len: u32,
    src_offset: u32,
    dst_offset: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;         // (>= src_offset + len) 4-byte elements
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;   // (>= dst_offset + len) 4-byte elements

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if i >= p.len {
        return;
    }
    dst[p.dst_offset + i] = src[p.src_offset + i];
}
