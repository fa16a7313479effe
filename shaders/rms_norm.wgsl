// RMSNorm with an optional fused residual add. Mirrors src/cpu/norm.rs::rms_norm:
// per row, r = residual + x (stored back) or r = x; out = r / sqrt(mean(r²) + eps) · w.
// One workgroup of 256 invocations per row; the sum of squares is reduced in workgroup
// memory. The weight is decoded according to W_DTYPE (see matmul.wgsl).

// Keep in sync with src/params.rs::NormParams.
struct NormParams {
    rows: u32,
    dim: u32,
    eps: f32,
    has_residual: u32,
}

// Keep in sync with src/wgpu/kernels.rs (WDtype codes).
override W_DTYPE: u32 = 0u; // 0 f32, 1 f16, 2 bf16

@group(0) @binding(0) var<uniform> p: NormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;               // (rows, dim)
@group(0) @binding(2) var<storage, read> weight: array<u32>;          // (dim) as W_DTYPE words
@group(0) @binding(3) var<storage, read_write> residual: array<f32>;  // (rows, dim), in place, if has_residual
@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // (rows, dim)

fn load_w(i: u32) -> f32 {
    if W_DTYPE == 0u {
        return bitcast<f32>(weight[i]);
    }
    let word = weight[i >> 1u];
    let bits = select(word & 0xffffu, word >> 16u, (i & 1u) == 1u);
    if W_DTYPE == 1u {
        return unpack2x16float(bits).x;
    }
    return bitcast<f32>(bits << 16u);
}

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn rms_norm(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wg.y * nwg.x + wg.x;
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
    for (var i = lid; i < p.dim; i += 256u) {
        var v = x[base + i];
        if p.has_residual != 0u {
            v = residual[base + i]; // written by this same invocation above
        }
        out[base + i] = (v * inv) * load_w(i);
    }
}
