// RMSNorm with an optional fused residual add. Mirrors src/cpu/rms_norm.rs::rms_norm:
// per row, r = residual + x (stored back) or r = x; out = r / sqrt(mean(r²) + eps) · w.
// A "row" is a segment of p.dim values; with p.groups > 1 (Mamba-2's grouped norm)
// segment s is scaled by the weight from (s % groups) · dim on.
// One workgroup of 256 invocations per row; the sum of squares is reduced in workgroup
// memory. The weight is decoded according to W_DTYPE (see matmul.wgsl).

//#include "common.wgsl"

// How the weight is stored (DTYPE_* of common.wgsl), set by the host per pipeline.
override W_DTYPE: u32 = DTYPE_F32;

@group(0) @binding(0) var<uniform> p: NormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;               // (rows, dim)
@group(0) @binding(2) var<storage, read> weight: array<u32>;          // (dim) as W_DTYPE words
@group(0) @binding(3) var<storage, read_write> residual: array<f32>;  // (rows, dim), in place, if has_residual
@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // (rows, dim)

fn load_w(i: u32) -> f32 {
    return decode(weight[word_of(i, W_DTYPE)], i, W_DTYPE);
}

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn rms_norm(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = flat_workgroup(wg, nwg);
    if row >= p.rows { // uniform per workgroup
        return;
    }
    let base = row * p.dim;
    var ss = 0.0;
    for (var i = lid; i < p.dim; i += 256u) {
        var v = x[base + i];
        if p.has_residual != 0u {
            v = v + residual[base + i];
            residual[base + i] = v;
        }
        ss = fma(v, v, ss);
    }
    red[lid] = ss;
    for (var off = 128u; off > 0u; off = off / 2u) {
        workgroupBarrier();
        if lid < off {
            red[lid] = red[lid] + red[lid + off];
        }
    }
    workgroupBarrier();
    let inv = inverseSqrt(red[0] / f32(p.dim) + p.eps);
    let w0 = (row % p.groups) * p.dim;
    for (var i = lid; i < p.dim; i += 256u) {
        var v = x[base + i];
        if p.has_residual != 0u {
            v = residual[base + i]; // written by this same invocation above
        }
        out[base + i] = (v * inv) * load_w(w0 + i);
    }
}
