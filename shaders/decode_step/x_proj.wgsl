//#include "decode_step.wgsl"

// x_proj: dbc = [w_dt; w_b; w_c] · xc.

@group(0) @binding(0) var<uniform> sp: StepProjParams;
@group(0) @binding(1) var<storage, read> xp_x: array<f32>;                // xc (batch, E)
@group(0) @binding(2) var<storage, read> w_dt: array<u32>;                // (R, E) as W_DTYPE words
@group(0) @binding(3) var<storage, read> w_b: array<u32>;                 // (N, E)
@group(0) @binding(4) var<storage, read> w_c: array<u32>;                 // (N, E)
@group(0) @binding(5) var<storage, read_write> dbc: array<f32>;           // (batch, R + 2N)

fn xp_w(r: u32, k: u32) -> f32 {
    let e = sp.d_inner;
    if r < sp.dt_rank {
        let i = r * e + k;
        return decode(w_dt[word_of(i, W_DTYPE)], i, W_DTYPE);
    }
    if r < sp.dt_rank + sp.dstate {
        let i = (r - sp.dt_rank) * e + k;
        return decode(w_b[word_of(i, W_DTYPE)], i, W_DTYPE);
    }
    let i = (r - sp.dt_rank - sp.dstate) * e + k;
    return decode(w_c[word_of(i, W_DTYPE)], i, W_DTYPE);
}

@compute @workgroup_size(256)
fn x_proj(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = sp.d_inner;
    let width = sp.dt_rank + 2u * sp.dstate;
    let lane = lid % LANES;
    let r = flat_workgroup(wg, nwg) * ROWS + lid / LANES;
    let live = r < width;
    var acc: array<f32, MAX_M>;
    for (var i = 0u; i < MAX_M; i++) {
        acc[i] = 0.0;
    }
    if live {
        for (var k = lane; k < e; k += LANES) {
            let wv = xp_w(r, k);
            for (var i = 0u; i < MAX_M; i++) {
                if i < sp.batch {
                    acc[i] = fma(xp_x[i * e + k], wv, acc[i]);
                }
            }
        }
    }
    for (var i = 0u; i < MAX_M; i++) {
        red[i * 256u + lid] = acc[i];
    }
    reduce_lanes(lid);
    if live && lane == 0u {
        for (var m = 0u; m < sp.batch; m++) {
            dbc[m * width + r] = red[m * 256u + lid];
        }
    }
}
