// Mamba-2's scan in head form. Mirrors src/cpu/ssd_scan.rs::ssd_scan: one invocation per
// (batch, head, channel p), walking the sequence with the channel's N states in
// private memory; per step one exp for the head's decay (A and Δ are per head) and one
// pass over the states. It walks steps t_begin..t_end: the host splits long sequences
// so that no invocation loops much more than 2^15 times (llvmpipe stops a shader after
// about 2^16 loop iterations), carrying the state between dispatches. Sequential in time: the chunked SSD form (matmul-shaped
// intra-chunk work) is the faster one for long prefills and is not written yet.

//#include "common.wgsl"

// The largest N the private state array holds (the host refuses more: Error::Limit).
const SSD_MAX_N: u32 = 256u;

@group(0) @binding(0) var<uniform> p: SsdParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (batch, L, heads * head_dim)
@group(0) @binding(2) var<storage, read> dt: array<f32>;         // (batch, L, heads)
@group(0) @binding(3) var<storage, read> mat_a: array<f32>;      // (heads)
@group(0) @binding(4) var<storage, read> mat_b: array<f32>;      // (batch, L, groups, N)
@group(0) @binding(5) var<storage, read> mat_c: array<f32>;      // (batch, L, groups, N)
@group(0) @binding(6) var<storage, read> d_skip: array<f32>;     // (heads), read if has_d
@group(0) @binding(7) var<storage, read> z: array<f32>;          // like x, read if has_z
@group(0) @binding(8) var<storage, read> dt_bias: array<f32>;    // (heads), read if has_dt_bias
@group(0) @binding(9) var<storage, read_write> ssm_state: array<f32>; // (batch, heads, head_dim, N)
@group(0) @binding(10) var<storage, read_write> out: array<f32>; // like x

@compute @workgroup_size(64)
fn ssd_scan(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = p.heads * p.head_dim;
    let bc_idx = flat_invocation(gid, nwg, 64u); // (batch, channel of E)
    if bc_idx >= p.batch * e {
        return;
    }
    let b = bc_idx / e;
    let ch = bc_idx % e;
    let h = ch / p.head_dim;
    let g = h / (p.heads / p.groups);
    let n_state = p.dstate;
    var hs: array<f32, SSD_MAX_N>;
    let s0 = bc_idx * n_state; // (batch, heads, head_dim, N) flattened = (batch, E, N)
    for (var n = 0u; n < n_state; n++) {
        hs[n] = 0.0;
        if p.state_mode == STATE_CARRY {
            hs[n] = ssm_state[s0 + n];
        }
    }
    let a = mat_a[h];
    for (var t = p.t_begin; t < p.t_end; t++) {
        let row = b * p.len + t;
        var dtv = dt[row * p.heads + h];
        if p.has_dt_bias != 0u {
            dtv = dtv + dt_bias[h];
        }
        if p.dt_softplus != 0u {
            dtv = softplus(dtv);
        }
        let decay = exp_decay(dtv * a);
        let xv = x[row * e + ch];
        let dx = dtv * xv;
        let bc = (row * p.groups + g) * n_state;
        var y = 0.0;
        for (var n = 0u; n < n_state; n++) {
            let hn = decay * hs[n] + dx * mat_b[bc + n];
            hs[n] = hn;
            y = y + mat_c[bc + n] * hn;
        }
        if p.has_d != 0u {
            y = y + d_skip[h] * xv;
        }
        if p.has_z != 0u {
            y = y * silu(z[row * e + ch]);
        }
        out[row * e + ch] = y;
    }
    if p.state_mode != STATE_NONE {
        for (var n = 0u; n < n_state; n++) {
            ssm_state[s0 + n] = hs[n];
        }
    }
}
