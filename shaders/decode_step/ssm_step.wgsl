//#include "decode_step.wgsl"

// ssm_step: Δ = softplus(dt_proj · dbc[..R] + dt_bias), then the state update.
// One invocation per (sequence, channel), as selective_state_update.wgsl.

@group(0) @binding(0) var<uniform> tp: StepProjParams;
@group(0) @binding(1) var<storage, read> s_xc: array<f32>;              // (batch, E)
@group(0) @binding(2) var<storage, read> s_dbc: array<f32>;             // (batch, R + 2N)
@group(0) @binding(3) var<storage, read> s_z: array<f32>;               // (batch, E)
@group(0) @binding(4) var<storage, read> dt_proj: array<u32>;           // (E, R) as W_DTYPE words
@group(0) @binding(5) var<storage, read> dt_bias: array<f32>;           // (E)
@group(0) @binding(6) var<storage, read> mat_a: array<f32>;             // (E, N)
@group(0) @binding(7) var<storage, read> d_skip: array<f32>;            // (E)
@group(0) @binding(8) var<storage, read_write> ssm_state: array<f32>;   // (batch, E, N), in place
@group(0) @binding(9) var<storage, read_write> y_out: array<f32>;       // (batch, E)

@compute @workgroup_size(64)
fn ssm_step(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = tp.d_inner;
    let bd = flat_invocation(gid, nwg, 64u);
    if bd >= tp.batch * e {
        return;
    }
    let m = bd / e;
    let c = bd % e;
    let rk = tp.dt_rank;
    let n_state = tp.dstate;
    let row = m * (rk + 2u * n_state);
    var dt = 0.0;
    for (var j = 0u; j < rk; j++) {
        let i = c * rk + j;
        dt = fma(decode(dt_proj[word_of(i, W_DTYPE)], i, W_DTYPE), s_dbc[row + j], dt);
    }
    dt = softplus(dt + dt_bias[c]);
    let xv = s_xc[bd];
    var y = 0.0;
    for (var n = 0u; n < n_state; n++) {
        let hi = bd * n_state + n;
        let hv = exp_decay(dt * mat_a[c * n_state + n]) * ssm_state[hi]
            + dt * s_dbc[row + rk + n] * xv;
        ssm_state[hi] = hv;
        y = y + s_dbc[row + rk + n_state + n] * hv;
    }
    y = y + d_skip[c] * xv;
    y_out[bd] = y * silu(s_z[bd]);
}
