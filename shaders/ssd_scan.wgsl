// Mamba-2's scan in head form. Mirrors src/cpu/ssd_scan.rs::ssd_scan: one invocation per
// (batch, head, channel p), walking the sequence with the channel's N states in
// private memory; per step one exp for the head's decay (A and Δ are per head) and one
// pass over the states. It walks steps t_begin..t_end: the host splits long sequences
// so that no invocation loops much more than 2^15 times (llvmpipe stops a shader after
// about 2^16 loop iterations), carrying the state between dispatches. Sequential in
// time, it serves decode and short prompts; `ssd_scan_chunked` below serves prefills.

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

// ---- The chunked form (ssd_scan_chunked), for prefills of SSD_Q steps or more ----
//
// One workgroup per (batch, head, tile of SSD_PT channels) walks the sequence a chunk of
// SSD_Q steps at a time with the tile's state (SSD_PT x N) in workgroup memory. Per
// chunk, with acs the running sum of Δ·A inside the chunk (inclusive) and xd = Δ·x:
//   cb[t, s] = (C_t · B_s) · exp(acs[t] - acs[s])            for s <= t, else 0
//   y[t, p]  = Σ_s cb[t, s]·xd[s, p] + exp(acs[t]) · Σ_n C[t, n]·h[p, n]
//   h[p, n]  ← exp(acs[end])·h[p, n] + Σ_s exp(acs[end] - acs[s])·xd[s, p]·B[s, n]
// which is the recurrence of `ssd_scan` unrolled over the chunk (mamba_ssm's
// `ssd_minimal_discrete` with the chunk's states passed on at once). Every phase is a
// small matmul spread over all 256 invocations, where the sequential form gives each
// channel one invocation that walks every step. Mirrors kernels/ssd_scan.cu's
// `ssd_scan_chunked`; held to src/cpu/ssd_scan.rs.

// Steps per chunk and channels per workgroup (the host's SSD_Q / SSD_PT).
const SSD_Q: u32 = 32u;
const SSD_PT: u32 = 8u;

// The tile's state, [p * (N + 1) + n]: the padded row keeps the 8 channels of a phase-3
// read in different memory banks.
var<workgroup> w_h: array<f32, 2056>;   // SSD_PT x (SSD_MAX_N + 1)
var<workgroup> w_cb: array<f32, 1024>;  // SSD_Q x SSD_Q: cb[t * SSD_Q + s]
var<workgroup> w_xd: array<f32, 256>;   // SSD_Q x SSD_PT: Δ·x, [s * SSD_PT + p]
var<workgroup> w_dt: array<f32, 32>;    // Δ of each step
var<workgroup> w_acs: array<f32, 32>;   // running sum of Δ·A
var<workgroup> w_din: array<f32, 32>;   // exp(acs[t]): the decay from the chunk's start
var<workgroup> w_dout: array<f32, 32>;  // exp(acs[end] - acs[s]): the decay to its end

// One entry of cb: C_t·B_s times the decay from s to t, zero above the diagonal and
// past the chunk's end (t, s < cl; reads w_acs).
fn cb_entry(dot: f32, t: u32, s: u32, cl: u32) -> f32 {
    if s > t || t >= cl {
        return 0.0;
    }
    return dot * exp_decay(w_acs[t] - w_acs[s]);
}

@compute @workgroup_size(256)
fn ssd_scan_chunked(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let n_pt = (p.head_dim + SSD_PT - 1u) / SSD_PT;
    let wg = flat_workgroup(wid, nwg); // (batch, head, channel tile)
    if wg >= p.batch * p.heads * n_pt {
        return;
    }
    let e = p.heads * p.head_dim;
    let bh = wg / n_pt;
    let b = bh / p.heads;
    let h = bh % p.heads;
    let g = h / (p.heads / p.groups);
    let p0 = (wg % n_pt) * SSD_PT;
    let pc = min(SSD_PT, p.head_dim - p0); // channels of this tile
    let n_state = p.dstate;
    let tile = SSD_PT * n_state;
    let s0 = (bh * p.head_dim + p0) * n_state; // the tile's state, (batch, E, N)
    let hs = n_state + 1u; // w_h's row stride
    for (var k = li; k < tile; k += 256u) {
        var v = 0.0;
        if p.state_mode == STATE_CARRY && k / n_state < pc {
            v = ssm_state[s0 + k];
        }
        w_h[k + k / n_state] = v;
    }
    let a = mat_a[h];
    for (var t0 = p.t_begin; t0 < p.t_end; t0 += SSD_Q) {
        let cl = min(SSD_Q, p.t_end - t0); // steps in this chunk
        let row0 = b * p.len + t0;
        if li < SSD_Q {
            var dtv = 0.0;
            if li < cl {
                dtv = dt[(row0 + li) * p.heads + h];
                if p.has_dt_bias != 0u {
                    dtv = dtv + dt_bias[h];
                }
                if p.dt_softplus != 0u {
                    dtv = softplus(dtv);
                }
            }
            w_dt[li] = dtv;
        }
        workgroupBarrier();
        if li < SSD_Q {
            var acc = 0.0;
            for (var r = 0u; r <= li; r++) {
                acc = acc + w_dt[r] * a;
            }
            w_acs[li] = acc;
        }
        {
            let s = li / SSD_PT;
            let pp = li % SSD_PT;
            var v = 0.0;
            if s < cl && pp < pc {
                v = w_dt[s] * x[(row0 + s) * e + h * p.head_dim + p0 + pp];
            }
            w_xd[li] = v;
        }
        workgroupBarrier();
        if li < SSD_Q {
            w_din[li] = exp_decay(w_acs[li]);
            w_dout[li] = exp_decay(w_acs[cl - 1u] - w_acs[li]);
        }
        // cb in 2x2 blocks, one per invocation: rows t0, t0 + 1 against columns s0, s0 + 1,
        // so that each B and C value loaded serves two products.
        {
            let t0b = (li / 16u) * 2u;
            let s0b = (li % 16u) * 2u;
            var c00 = 0.0;
            var c01 = 0.0;
            var c10 = 0.0;
            var c11 = 0.0;
            if s0b <= t0b + 1u && t0b < cl {
                let t1b = min(t0b + 1u, cl - 1u);
                let s1b = min(s0b + 1u, cl - 1u);
                let ct0 = ((row0 + t0b) * p.groups + g) * n_state;
                let ct1 = ((row0 + t1b) * p.groups + g) * n_state;
                let bs0 = ((row0 + min(s0b, cl - 1u)) * p.groups + g) * n_state;
                let bs1 = ((row0 + s1b) * p.groups + g) * n_state;
                for (var n = 0u; n < n_state; n++) {
                    let ca = mat_c[ct0 + n];
                    let cb = mat_c[ct1 + n];
                    let ba = mat_b[bs0 + n];
                    let bb = mat_b[bs1 + n];
                    c00 = fma(ca, ba, c00);
                    c01 = fma(ca, bb, c01);
                    c10 = fma(cb, ba, c10);
                    c11 = fma(cb, bb, c11);
                }
            }
            w_cb[t0b * SSD_Q + s0b] = cb_entry(c00, t0b, s0b, cl);
            w_cb[t0b * SSD_Q + s0b + 1u] = cb_entry(c01, t0b, s0b + 1u, cl);
            w_cb[(t0b + 1u) * SSD_Q + s0b] = cb_entry(c10, t0b + 1u, s0b, cl);
            w_cb[(t0b + 1u) * SSD_Q + s0b + 1u] = cb_entry(c11, t0b + 1u, s0b + 1u, cl);
        }
        workgroupBarrier();
        {
            let t = li / SSD_PT;
            let pp = li % SSD_PT;
            if t < cl && pp < pc {
                var y = 0.0;
                for (var s = 0u; s <= t; s++) {
                    y = y + w_cb[t * SSD_Q + s] * w_xd[s * SSD_PT + pp];
                }
                let ct = ((row0 + t) * p.groups + g) * n_state;
                var off = 0.0;
                for (var n = 0u; n < n_state; n++) {
                    off = off + mat_c[ct + n] * w_h[pp * hs + n];
                }
                y = y + w_din[t] * off;
                let o = (row0 + t) * e + h * p.head_dim + p0 + pp;
                if p.has_d != 0u {
                    y = y + d_skip[h] * x[o];
                }
                if p.has_z != 0u {
                    y = y * silu(z[o]);
                }
                out[o] = y;
            }
        }
        workgroupBarrier();
        let dend = w_din[cl - 1u];
        for (var k = li; k < tile; k += 256u) {
            let pp = k / n_state;
            let n = k % n_state;
            var hv = dend * w_h[pp * hs + n];
            for (var s = 0u; s < cl; s++) {
                hv = hv + w_dout[s] * w_xd[s * SSD_PT + pp] * mat_b[((row0 + s) * p.groups + g) * n_state + n];
            }
            w_h[pp * hs + n] = hv;
        }
        workgroupBarrier();
    }
    if p.state_mode != STATE_NONE {
        for (var k = li; k < tile; k += 256u) {
            if k / n_state < pc {
                ssm_state[s0 + k] = w_h[k + k / n_state];
            }
        }
    }
}
