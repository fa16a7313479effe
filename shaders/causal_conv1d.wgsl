// Causal depthwise conv1d. Mirrors src/cpu/causal_conv1d.rs: `causal_conv1d` (one invocation per
// output element [b, d, t]), `causal_conv1d_state` (run after it in the same pass: one
// invocation per (b, d) writes the final conv state, so no invocation of the first entry
// point can read a state slot after it was overwritten) and `causal_conv1d_update` (one
// decode step, one invocation per (b, d)).
//
// The extended input of a channel is ext = state ++ x (K-1 past values, then the
// sequence); out[t] = act(bias + Σ_j w[j] · ext[t + j]).

//#include "common.wgsl"

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;            // [b, d, t] via x_sb/x_sd/x_st ((batch, dim) for the update)
@group(0) @binding(2) var<storage, read> weight: array<f32>;       // (dim, K)
@group(0) @binding(3) var<storage, read> bias: array<f32>;         // (dim), read if has_bias
@group(0) @binding(4) var<storage, read_write> conv_state: array<f32>; // (batch, dim, K-1), oldest first
@group(0) @binding(5) var<storage, read_write> out: array<f32>;    // like x

fn activate(acc: f32) -> f32 {
    if p.silu != 0u {
        return silu(acc);
    }
    return acc;
}

fn start_acc(d: u32) -> f32 {
    if p.has_bias != 0u {
        return bias[d];
    }
    return 0.0;
}

@compute @workgroup_size(64)
fn causal_conv1d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_invocation(gid, nwg, 64u);
    if i >= p.batch * p.dim * p.len {
        return;
    }
    // i enumerates (b, d, t) with t fastest.
    let t = i % p.len;
    let bd = i / p.len;
    let b = bd / p.dim;
    let d = bd % p.dim;
    let pre = p.width - 1u;
    let base = b * p.x_sb + d * p.x_sd;
    var acc = start_acc(d);
    for (var j = 0u; j < p.width; j++) {
        let e = t + j; // position in ext
        var v = 0.0;
        if e >= pre {
            v = x[base + (e - pre) * p.x_st];
        } else if p.state_mode == STATE_CARRY {
            v = conv_state[bd * pre + e];
        }
        acc = acc + weight[d * p.width + j] * v;
    }
    out[base + t * p.x_st] = activate(acc);
}

@compute @workgroup_size(64)
fn causal_conv1d_state(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let bd = flat_invocation(gid, nwg, 64u);
    if bd >= p.batch * p.dim {
        return;
    }
    let b = bd / p.dim;
    let d = bd % p.dim;
    let pre = p.width - 1u;
    let base = b * p.x_sb + d * p.x_sd;
    // state[j] = ext[len + j]; ascending j only reads slots not yet overwritten.
    for (var j = 0u; j < pre; j++) {
        let e = p.len + j;
        var v = 0.0;
        if e >= pre {
            v = x[base + (e - pre) * p.x_st];
        } else if p.state_mode == STATE_CARRY {
            v = conv_state[bd * pre + e];
        }
        conv_state[bd * pre + j] = v;
    }
}

@compute @workgroup_size(64)
fn causal_conv1d_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let bd = flat_invocation(gid, nwg, 64u);
    if bd >= p.batch * p.dim {
        return;
    }
    let d = bd % p.dim;
    let pre = p.width - 1u;
    let xv = x[bd];
    var acc = start_acc(d);
    for (var j = 0u; j < pre; j++) {
        acc = acc + weight[d * p.width + j] * conv_state[bd * pre + j];
    }
    acc = acc + weight[d * p.width + pre] * xv;
    for (var j = 0u; j + 1u < pre; j++) {
        conv_state[bd * pre + j] = conv_state[bd * pre + j + 1u];
    }
    conv_state[bd * pre + pre - 1u] = xv;
    out[bd] = activate(acc);
}
