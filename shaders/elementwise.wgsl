// Elementwise ops on f32. Mirrors src/cpu/elementwise.rs; op codes as in
// src/ops.rs::Elementwise. One invocation per element.

// Keep in sync with src/params.rs::ElementwiseParams.
struct ElementwiseParams {
    len: u32,
    op: u32,
    _pad0: u32,
    _pad1: u32,
}

// Keep in sync with src/ops.rs::Elementwise.
const OP_SILU: u32 = 0u;
const OP_SOFTPLUS: u32 = 1u;
const OP_ADD: u32 = 2u;
const OP_MUL: u32 = 3u;
const OP_MUL_SILU: u32 = 4u;

@group(0) @binding(0) var<uniform> p: ElementwiseParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;          // (len)
@group(0) @binding(2) var<storage, read> b: array<f32>;          // (len), read by binary ops
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (len)

fn log1p_(y: f32) -> f32 {
    let w = 1.0 + y;
    if w == 1.0 {
        return y;
    }
    return log(w) * (y / (w - 1.0));
}

// PyTorch's softplus (beta 1, threshold 20).
fn softplus(v: f32) -> f32 {
    if v > 20.0 {
        return v;
    }
    return log1p_(exp(v));
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

@compute @workgroup_size(256)
fn elementwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
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
