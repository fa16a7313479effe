// One decode step of the selective state space. Mirrors
// src/cpu/scan.rs::selective_state_update: one invocation per (batch, channel), a loop
// over the N states; the state is updated in place.

// Keep in sync with src/params.rs::StepParams.
struct StepParams {
    batch: u32,
    dim: u32,
    dstate: u32,
    group_dim: u32,
    groups: u32,
    has_d: u32,
    has_z: u32,
    has_dt_bias: u32,
    dt_softplus: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

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

fn log1p_(y: f32) -> f32 {
    let w = 1.0 + y;
    if w == 1.0 {
        return y;
    }
    return log(w) * (y / (w - 1.0));
}

fn softplus(v: f32) -> f32 {
    if v > 20.0 {
        return v;
    }
    return log1p_(exp(v));
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

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

@compute @workgroup_size(64)
fn selective_state_update(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let bd = gid.y * nwg.x * 64u + gid.x;
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
