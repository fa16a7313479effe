// Elementwise ops on f32. Mirrors src/cpu/elementwise.rs; op codes (OP_*) in
// common.wgsl. One invocation per element.

//#include "common.wgsl"

@group(0) @binding(0) var<uniform> p: ElementwiseParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;          // (len)
@group(0) @binding(2) var<storage, read> b: array<f32>;          // (len), read by binary ops
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (len)

@compute @workgroup_size(256)
fn elementwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_invocation(gid, nwg, 256u);
    if i >= p.len {
        return;
    }
    let av = a[i];
    var r = 0.0;
    switch p.op {
        case OP_SILU: {
            r = silu(av);
        }
        case OP_SOFTPLUS: {
            r = softplus(av);
        }
        case OP_ADD: {
            r = av + b[i];
        }
        case OP_MUL: {
            r = av * b[i];
        }
        case OP_MUL_SILU: {
            r = av * silu(b[i]);
        }
        default: {
            r = av;
        }
    }
    out[i] = r;
}
