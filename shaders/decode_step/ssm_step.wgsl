//#include "decode_step.wgsl"

// ssm_step: Δ = softplus(dt_proj · dbc[..R] + dt_bias), then the state update (with
// has_norm, Δ_low, B and C RMS-normalised first: Falcon-Mamba).
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

// 1 / sqrt(mean(v²) + eps) of the `len` values of dbc from `at`.
fn inv_rms_of(at: u32, len: u32) -> f32 {
    var s = 0.0;
    for (var j = 0u; j < len; j++) {
        s = fma(s_dbc[at + j], s_dbc[at + j], s);
    }
    return inverseSqrt(s / f32(len) + tp.norm_eps);
}

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
    // Falcon-Mamba's weightless RMSNorm of Δ_low, B and C, as scales on the raw values
    // (each invocation recomputes them: R + 2N values).
    var s_dt = 1.0;
    var s_b = 1.0;
    var s_c = 1.0;
    if tp.has_norm != 0u {
        s_dt = inv_rms_of(row, rk);
        s_b = inv_rms_of(row + rk, n_state);
        s_c = inv_rms_of(row + rk + n_state, n_state);
    }
    var dt = 0.0;
    for (var j = 0u; j < rk; j++) {
        let i = c * rk + j;
        dt = fma(decode(dt_proj[word_of(i, W_DTYPE)], i, W_DTYPE), s_dbc[row + j] * s_dt, dt);
    }
    dt = softplus(dt + dt_bias[c]);
    let xv = s_xc[bd];
    var y = 0.0;
    for (var n = 0u; n < n_state; n++) {
        let hi = bd * n_state + n;
        let hv = exp_decay(dt * mat_a[c * n_state + n]) * ssm_state[hi]
            + dt * (s_dbc[row + rk + n] * s_b) * xv;
        ssm_state[hi] = hv;
        y = y + (s_dbc[row + rk + n_state + n] * s_c) * hv;
    }
    y = y + d_skip[c] * xv;
    y_out[bd] = y * silu(s_z[bd]);
}
