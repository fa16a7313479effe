//#include "decode_step.wgsl"

// mixer_in: rmsnorm(h) · [w_x; w_z]ᵀ, then the conv step + SiLU on the x rows.

@group(0) @binding(0) var<uniform> mp: MixerInParams;
@group(0) @binding(1) var<storage, read> h: array<f32>;                 // (batch, D)
@group(0) @binding(2) var<storage, read> norm_w: array<u32>;            // (D) as NORM_DTYPE words
@group(0) @binding(3) var<storage, read> w_x: array<u32>;               // (E, D) as W_DTYPE words
@group(0) @binding(4) var<storage, read> w_z: array<u32>;               // (E, D) as W_DTYPE words
@group(0) @binding(5) var<storage, read> conv_w: array<f32>;            // (E, K)
@group(0) @binding(6) var<storage, read> conv_b: array<f32>;            // (E), if has_conv_bias
@group(0) @binding(7) var<storage, read_write> conv_state: array<f32>;  // (batch, E, K-1), in place
@group(0) @binding(8) var<storage, read_write> xc: array<f32>;          // (batch, E)
@group(0) @binding(9) var<storage, read_write> z: array<f32>;           // (batch, E)

fn in_w(r: u32, k: u32) -> f32 {
    let e = mp.d_inner;
    if r < e {
        let i = r * mp.d_model + k;
        return decode(w_x[word_of(i, W_DTYPE)], i, W_DTYPE);
    }
    let i = (r - e) * mp.d_model + k;
    return decode(w_z[word_of(i, W_DTYPE)], i, W_DTYPE);
}

@compute @workgroup_size(256)
fn mixer_in(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let d = mp.d_model;
    // The norm of each sequence's residual, recomputed by every workgroup (the residual
    // is only read here, so no workgroup waits for another).
    for (var m = 0u; m < MAX_M; m++) {
        var s = 0.0;
        if m < mp.batch {
            for (var k = lid; k < d; k += 256u) {
                let v = h[m * d + k];
                s = fma(v, v, s);
            }
        }
        red[m * 256u + lid] = s;
    }
    for (var off = 128u; off > 0u; off = off / 2u) {
        workgroupBarrier();
        if lid < off {
            for (var m = 0u; m < MAX_M; m++) {
                red[m * 256u + lid] = red[m * 256u + lid] + red[m * 256u + lid + off];
            }
        }
    }
    workgroupBarrier();
    if lid < MAX_M {
        inv_rms[lid] = inverseSqrt(red[lid * 256u] / f32(d) + mp.eps);
    }
    workgroupBarrier();

    let lane = lid % LANES;
    let r = flat_workgroup(wg, nwg) * ROWS + lid / LANES; // output row of [x; z]
    let live = r < 2u * mp.d_inner;
    var acc: array<f32, MAX_M>;
    for (var i = 0u; i < MAX_M; i++) {
        acc[i] = 0.0;
    }
    if live {
        for (var k = lane; k < d; k += LANES) {
            let wv = in_w(r, k) * decode(norm_w[word_of(k, NORM_DTYPE)], k, NORM_DTYPE);
            for (var i = 0u; i < MAX_M; i++) {
                if i < mp.batch {
                    acc[i] = fma(h[i * d + k], wv, acc[i]);
                }
            }
        }
    }
    for (var i = 0u; i < MAX_M; i++) {
        red[i * 256u + lid] = acc[i];
    }
    reduce_lanes(lid);
    if !live || lane != 0u {
        return;
    }
    let e = mp.d_inner;
    let kw = mp.width;
    for (var m = 0u; m < mp.batch; m++) {
        let v = red[m * 256u + lid] * inv_rms[m];
        if r >= e {
            z[m * e + r - e] = v;
            continue;
        }
        // The conv step of channel r: the state holds the last K-1 inputs, oldest first.
        let base = (m * e + r) * (kw - 1u);
        var y = 0.0;
        if mp.has_conv_bias != 0u {
            y = conv_b[r];
        }
        for (var j = 0u; j + 1u < kw; j++) {
            y = fma(conv_w[r * kw + j], conv_state[base + j], y);
        }
        y = fma(conv_w[r * kw + kw - 1u], v, y);
        for (var j = 0u; j + 2u < kw; j++) {
            conv_state[base + j] = conv_state[base + j + 1u];
        }
        conv_state[base + kw - 2u] = v;
        xc[m * e + r] = silu(y);
    }
}
