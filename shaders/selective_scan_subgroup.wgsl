// Selective scan, subgroup path. Mirrors src/cpu/scan.rs::selective_scan and is the
// same kernel as `selective_scan.wgsl` (read that file's header first) except for the
// scan across invocations, done here with subgroup shuffles instead of a Blelloch scan
// in workgroup memory:
//   * each subgroup scans its invocations' aggregates with subgroupShuffleUp
//     (Hillis–Steele, log2(subgroup_size) steps) under (a1,b1)∘(a2,b2) = (a1·a2, a2·b1 + b2);
//   * the last invocation of each subgroup publishes the subgroup's total in workgroup
//     memory; after one barrier every invocation folds the carry and the totals of the
//     subgroups before it into its exclusive prefix;
//   * the last invocation of a row writes the new carry into the other half of a
//     double-buffered array (chunk parity), so nobody reads what is being written.
// Two barriers per state instead of 2·log2(LANES) + 3.
//
// Requires Features::SUBGROUP (no `enable subgroups;`: naga 30 does not parse it, the
// feature is requested on the device instead). Chosen on the host only when the adapter's
// subgroup sizes are powers of two in [4, LANES], and assumes that subgroups are formed
// from consecutive local_invocation_index values (what every Vulkan/Metal/D3D12 driver
// does for a 1-d workgroup); the parity tests run both paths.

// Keep in sync with src/params.rs::ScanParams.
struct ScanParams {
    batch: u32,
    dim: u32,
    len: u32,
    dstate: u32,
    x_sb: u32,
    x_sd: u32,
    x_st: u32,
    b_sb: u32,
    b_sg: u32,
    b_sn: u32,
    b_st: u32,
    b_group_dim: u32,
    c_sb: u32,
    c_sg: u32,
    c_sn: u32,
    c_st: u32,
    c_group_dim: u32,
    has_d: u32,
    has_z: u32,
    has_delta_bias: u32,
    delta_softplus: u32,
    state_mode: u32,
    _pad0: u32,
    _pad1: u32,
}

// Keep in sync with src/params.rs (STATE_NONE / STATE_FINAL / STATE_CARRY).
const STATE_NONE: u32 = 0u;
const STATE_CARRY: u32 = 2u;

// Sized per adapter and dstate by the host (src/wgpu/kernels.rs, ScanSize): CH channels
// per workgroup, MAX_N ≥ dstate states carried per channel in workgroup memory.
override CH: u32 = 4u;
override MAX_N: u32 = 16u;
// Keep in sync with src/wgpu/kernels.rs (SCAN_LANES, SCAN_CHUNK).
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

const MAX_WARPS: u32 = 16u; // LANES / smallest subgroup size (4)

var<workgroup> tot_a: array<f32, CH * MAX_WARPS>; // subgroup totals (a part)
var<workgroup> tot_b: array<f32, CH * MAX_WARPS>; // (b part)
var<workgroup> carry: array<f32, 2u * CH * MAX_N>; // 2 (chunk parity) * CH * MAX_N running states

// log(1 + y), accurate for small y (WGSL has no log1p).
fn log1p_(y: f32) -> f32 {
    let w = 1.0 + y;
    if w == 1.0 {
        return y;
    }
    return log(w) * (y / (w - 1.0));
}

// PyTorch's softplus (beta 1, threshold 20).
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        return x;
    }
    return log1p_(exp(x));
}

// exp(x) of the decay factor exp(Δ·A) (x ≤ 0). A state with a long memory (|x| ≪ 1)
// multiplies ~1/|x| of these factors, so a systematic error of the hardware exp (seen:
// ~½ ulp low on llvmpipe) accumulates into the state; near 0 the Taylor series is exact
// to < x⁵/120 and rounds once, without bias.
fn exp_decay(x: f32) -> f32 {
    if abs(x) < 0.0625 {
        return fma(x, fma(x, fma(x, fma(x, 1.0 / 24.0, 1.0 / 6.0), 0.5), 1.0), 1.0);
    }
    return exp(x);
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

@compute @workgroup_size(CH * LANES)
fn selective_scan(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    let row = lid / LANES;
    let lane = lid % LANES;
    let d_raw = wg.x * CH + row;
    let valid = d_raw < p.dim;
    let d = min(d_raw, p.dim - 1u); // idle rows mirror the last channel and write nothing
    let b = wg.y;
    let n_state = p.dstate;
    let is_root = lane == LANES - 1u;
    let x_base = b * p.x_sb + d * p.x_sd;
    let b_base = b * p.b_sb + (d / p.b_group_dim) * p.b_sg;
    let c_base = b * p.c_sb + (d / p.c_group_dim) * p.c_sg;
    let h_base = (b * p.dim + d) * n_state;
    let warp = lane / sg_size;
    let tot_base = row * MAX_WARPS;

    if is_root {
        for (var n = 0u; n < n_state; n++) {
            var h0 = 0.0;
            if p.state_mode == STATE_CARRY {
                h0 = ssm_state[h_base + n];
            }
            carry[row * MAX_N + n] = h0;
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
            // This invocation's steps, composed: (agg_a, agg_b).
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
            // Inclusive scan of the aggregates across the subgroup.
            var ia = agg_a;
            var ib = agg_b;
            for (var off = 1u; off < sg_size; off = off * 2u) {
                let qa = subgroupShuffleUp(ia, off);
                let qb = subgroupShuffleUp(ib, off);
                if sg_lane >= off {
                    ib = ia * qb + ib;
                    ia = qa * ia;
                }
            }
            // Exclusive prefix within the subgroup.
            var ea = subgroupShuffleUp(ia, 1u);
            var eb = subgroupShuffleUp(ib, 1u);
            if sg_lane == 0u {
                ea = 1.0;
                eb = 0.0;
            }
            workgroupBarrier(); // the previous state's readers are done with tot_a/b
            if sg_lane == sg_size - 1u {
                tot_a[tot_base + warp] = ia;
                tot_b[tot_base + warp] = ib;
            }
            workgroupBarrier();
            // State entering this subgroup: carry, then the earlier subgroups of the row.
            let parity = chunk & 1u;
            var h = carry[(parity * CH + row) * MAX_N + n];
            for (var w = 0u; w < warp; w++) {
                h = tot_a[tot_base + w] * h + tot_b[tot_base + w];
            }
            h = ea * h + eb;
            // Replay this invocation's steps from the state entering them.
            for (var i = 0u; i < ITEMS; i++) {
                let t = t0 + i;
                h = pa[i] * h + pb[i];
                if t < p.len {
                    y[i] = y[i] + mat_c[c_base + n * p.c_sn + t * p.c_st] * h;
                }
            }
            if is_root {
                carry[((1u - parity) * CH + row) * MAX_N + n] = h;
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
    if valid && is_root && p.state_mode != STATE_NONE {
        for (var n = 0u; n < n_state; n++) {
            ssm_state[h_base + n] = carry[((n_chunks & 1u) * CH + row) * MAX_N + n];
        }
    }
}
