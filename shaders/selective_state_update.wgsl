// One decode step of the selective state space. Mirrors
// src/cpu/selective_state_update.rs::selective_state_update: one invocation per (batch, channel), a loop
// over the N states; the state is updated in place.

//#include "common.wgsl"

@group(0) @binding(0) var<uniform> p: StepParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (batch, dim)
@group(0) @binding(2) var<storage, read> dt: array<f32>;         // (batch, dim)
@group(0) @binding(3) var<storage, read> mat_a: array<f32>;      // (dim, N)
@group(0) @binding(4) var<storage, read> mat_b: array<f32>;      // (batch, groups, N)
@group(0) @binding(5) var<storage, read> mat_c: array<f32>;      // (batch, groups, N)
@group(0) @binding(6) var<storage, read> d_skip: array<f32>;     // (dim), read if has_d
@group(0) @binding(7) var<storage, read> z: array<f32>;          // (batch, dim), read if has_z
@group(0) @binding(8) var<storage, read> dt_bias: array<f32>;    // (dim), read if has_dt_bias
@group(0) @binding(9) var<storage, read_write> ssm_state: array<f32>; // (batch, dim, N), in place
@group(0) @binding(10) var<storage, read_write> out: array<f32>; // (batch, dim)

@compute @workgroup_size(64)
fn selective_state_update(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let bd = flat_invocation(gid, nwg, 64u);
    if bd >= p.batch * p.dim {
        return;
    }
    let b = bd / p.dim;
    let d = bd % p.dim;
    let n_state = p.dstate;
    let bc = (b * p.groups + d / p.group_dim) * n_state;
    let xv = x[bd];
    var dtv = dt[bd];
    if p.has_dt_bias != 0u {
        dtv = dtv + dt_bias[d];
    }
    if p.dt_softplus != 0u {
        dtv = softplus(dtv);
    }
    var y = 0.0;
    for (var n = 0u; n < n_state; n++) {
        let hi = bd * n_state + n;
        let h = exp_decay(dtv * mat_a[d * n_state + n]) * ssm_state[hi] + dtv * mat_b[bc + n] * xv;
        ssm_state[hi] = h;
        y = y + mat_c[bc + n] * h;
    }
    if p.has_d != 0u {
        y = y + d_skip[d] * xv;
    }
    if p.has_z != 0u {
        y = y * silu(z[bd]);
    }
    out[bd] = y;
}
