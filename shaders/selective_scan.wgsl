// Selective scan. Mirrors src/cpu/selective_scan.rs::selective_scan (same recurrence,
// same names). This file is the body; the scan across the invocations of a channel comes
// from one of two interchangeable halves, which include it:
//   * selective_scan/shared.wgsl: a Blelloch scan in workgroup memory (every adapter);
//   * selective_scan/subgroup.wgsl: subgroup shuffles (adapters with subgroups).
//
// Work decomposition
//   * A workgroup owns one batch row `b` (workgroup_id.y) and CH consecutive channels
//     (workgroup_id.x): CH rows of LANES invocations.
//   * The sequence is walked in chunks of CHUNK = LANES * ITEMS time steps. Each
//     invocation owns ITEMS consecutive steps of the chunk and keeps u, Δ, the pairs
//     (exp(Δ·A), Δ·B·u) and the partial outputs y in registers.
//   * For every state n: each invocation composes its ITEMS pairs sequentially into one
//     aggregate; the half's `row_scan` scans the LANES aggregates of a row under
//     (a1,b1)∘(a2,b2) = (a1·a2, a2·b1 + b2), seeded with the running state carried from
//     the previous chunk, and returns the state entering the invocation's first step.
//     The invocations then replay their steps, accumulating y += C·h, and the row's last
//     invocation carries its final h into the next chunk. The running state per
//     (channel, n) lives in workgroup memory (`carry`, laid out by the half's
//     `carry_slot`); the (batch, dim, L, N) state never reaches global memory.
//   * After the last n: out = (y + D·u) · silu(z).
// Any L (chunks loop), time-invariant / input-dependent / grouped B and C and both
// layouts are expressed by the strides in ScanParams.
//
// What a half provides: `struct ScanInvocation` (the entry point's builtins, at least
// `lid` and `wg`), `CARRY_COPIES`, `carry_slot(row, n, chunk)` and
// `row_scan(inv, row, lane, n, chunk, agg_a, agg_b) -> f32`, with its own workgroup
// arrays. Its workgroup memory per channel is `ScanSize::words_per_channel` in
// src/wgpu/kernels.rs.

//#include "common.wgsl"

// Sized per adapter and dstate by the host (src/wgpu/kernels.rs, ScanSize): CH channels
// per workgroup, MAX_N ≥ dstate states carried per channel in workgroup memory.
override CH: u32 = 4u;
override MAX_N: u32 = 16u;
// src/wgpu/kernels.rs, SCAN_LANES and SCAN_CHUNK.
const LANES: u32 = 64u;    // invocations per channel
const ITEMS: u32 = 4u;     // consecutive time steps per invocation
const CHUNK: u32 = 256u;   // LANES * ITEMS time steps per chunk

@group(0) @binding(0) var<uniform> p: ScanParams;
@group(0) @binding(1) var<storage, read> u: array<f32>;           // (batch, dim, L) via x_sb/x_sd/x_st
@group(0) @binding(2) var<storage, read> delta: array<f32>;       // (batch, dim, L) via x_sb/x_sd/x_st
@group(0) @binding(3) var<storage, read> mat_a: array<f32>;       // (dim, N)
@group(0) @binding(4) var<storage, read> mat_b: array<f32>;       // [b, g, n, t] via b_sb/b_sg/b_sn/b_st, g = d / b_group_dim
@group(0) @binding(5) var<storage, read> mat_c: array<f32>;       // [b, g, n, t] via c_sb/c_sg/c_sn/c_st, g = d / c_group_dim
@group(0) @binding(6) var<storage, read> d_skip: array<f32>;      // (dim), read if has_d
@group(0) @binding(7) var<storage, read> z: array<f32>;           // (batch, dim, L) via x_*, read if has_z
@group(0) @binding(8) var<storage, read> delta_bias: array<f32>;  // (dim), read if has_delta_bias
@group(0) @binding(9) var<storage, read_write> ssm_state: array<f32>; // (batch, dim, N), if state_mode != 0
@group(0) @binding(10) var<storage, read_write> out: array<f32>;  // (batch, dim, L) via x_sb/x_sd/x_st

// Running states, CARRY_COPIES × CH × MAX_N: written only by each row's last invocation.
var<workgroup> carry: array<f32, CARRY_COPIES * CH * MAX_N>;

@compute @workgroup_size(CH * LANES)
fn selective_scan(inv: ScanInvocation) {
    let row = inv.lid / LANES;
    let lane = inv.lid % LANES;
    let d_raw = inv.wg.x * CH + row;
    let valid = d_raw < p.dim;
    let d = min(d_raw, p.dim - 1u); // idle rows mirror the last channel and write nothing
    let b = inv.wg.y;
    let n_state = p.dstate;
    let is_root = lane == LANES - 1u;
    let x_base = b * p.x_sb + d * p.x_sd;
    let b_base = b * p.b_sb + (d / p.b_group_dim) * p.b_sg;
    let c_base = b * p.c_sb + (d / p.c_group_dim) * p.c_sg;
    let h_base = (b * p.dim + d) * n_state;

    if is_root {
        for (var n = 0u; n < n_state; n++) {
            var h0 = 0.0;
            if p.state_mode == STATE_CARRY {
                h0 = ssm_state[h_base + n];
            }
            carry[carry_slot(row, n, 0u)] = h0;
        }
    }
    var bias = 0.0;
    if p.has_delta_bias != 0u {
        bias = delta_bias[d];
    }

    let n_chunks = (p.len + CHUNK - 1u) / CHUNK;
    for (var chunk = 0u; chunk < n_chunks; chunk++) {
        let t0 = chunk * CHUNK + lane * ITEMS;
        var uu: array<f32, ITEMS>;
        var dt: array<f32, ITEMS>;
        var y: array<f32, ITEMS>;
        var pa: array<f32, ITEMS>;
        var pb: array<f32, ITEMS>;
        for (var i = 0u; i < ITEMS; i++) {
            let t = t0 + i;
            uu[i] = 0.0;
            dt[i] = 0.0;
            y[i] = 0.0;
            if t < p.len {
                let xi = x_base + t * p.x_st;
                uu[i] = u[xi];
                var v = delta[xi] + bias;
                if p.delta_softplus != 0u {
                    v = softplus(v);
                }
                dt[i] = v;
            }
        }
        for (var n = 0u; n < n_state; n++) {
            let a_dn = mat_a[d * n_state + n];
            // This invocation's steps, composed: (agg_a, agg_b). Past the end: (1, 0).
            var agg_a = 1.0;
            var agg_b = 0.0;
            for (var i = 0u; i < ITEMS; i++) {
                let t = t0 + i;
                pa[i] = 1.0;
                pb[i] = 0.0;
                if t < p.len {
                    pa[i] = exp_decay(dt[i] * a_dn);
                    pb[i] = dt[i] * mat_b[b_base + n * p.b_sn + t * p.b_st] * uu[i];
                }
                agg_a = agg_a * pa[i];
                agg_b = pa[i] * agg_b + pb[i];
            }
            // Replay this invocation's steps from the state entering them.
            var h = row_scan(inv, row, lane, n, chunk, agg_a, agg_b);
            for (var i = 0u; i < ITEMS; i++) {
                let t = t0 + i;
                h = pa[i] * h + pb[i];
                if t < p.len {
                    y[i] = y[i] + mat_c[c_base + n * p.c_sn + t * p.c_st] * h;
                }
            }
            if is_root {
                carry[carry_slot(row, n, chunk + 1u)] = h;
            }
        }
        if valid {
            for (var i = 0u; i < ITEMS; i++) {
                let t = t0 + i;
                if t < p.len {
                    let xi = x_base + t * p.x_st;
                    var yv = y[i];
                    if p.has_d != 0u {
                        yv = yv + d_skip[d] * uu[i];
                    }
                    if p.has_z != 0u {
                        yv = yv * silu(z[xi]);
                    }
                    out[xi] = yv;
                }
            }
        }
    }
    // The root wrote every carry it reads here itself.
    if valid && is_root && p.state_mode != STATE_NONE {
        for (var n = 0u; n < n_state; n++) {
            ssm_state[h_base + n] = carry[carry_slot(row, n, n_chunks)];
        }
    }
}
