// out[m, n] = Σ_k x[m, k] · d[n, k/32] · q[n, k] (+ bias[n]): the matmul with Q8_0 weights
// (src/quant.rs has the format). Mirrors src/cpu/matmul_q8.rs::matmul_q8 and
// kernels/matmul_q8.cu; `matmul_q8_int8` below takes the activations in int8.
//
// A workgroup of 256 invocations owns 8 weight rows, 32 invocations per row striding over
// the row's packed words (coalesced): each word is four int8 weights, each widened to f32,
// scaled by its block's f16 `d` and multiplied into x in f32 (the activations are not
// quantized). The rows of x are taken 8 at a time, so decode
// (M ≤ 8) reads each weight once; a prefill walks the weights once per 8 rows of x (the
// packed words are 4x smaller than f32, but a tiled form is the faster one there).

//#include "common.wgsl"

// How bias is stored (DTYPE_* of common.wgsl), set by the host per pipeline.
override BIAS_DTYPE: u32 = DTYPE_F32;

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // (M, K)
@group(0) @binding(2) var<storage, read> q: array<u32>;         // (N, K/4): four int8 per word, low byte first
@group(0) @binding(3) var<storage, read> d: array<u32>;         // (N, K/32) f16, two per word
@group(0) @binding(4) var<storage, read> bias: array<u32>;      // (N) as BIAS_DTYPE words, read if has_bias
@group(0) @binding(5) var<storage, read_write> out: array<f32>; // (M, N)

const Q8_ROWS: u32 = 8u;   // weight rows per workgroup
const Q8_LANES: u32 = 32u; // invocations per weight row
const Q8_M: u32 = 8u;      // rows of x per pass

var<workgroup> q8_red: array<f32, 2048>; // [Q8_M][256] partial sums

// Byte j (0..3) of a word as a signed integer, in f32.
fn q8_byte(word: u32, j: u32) -> f32 {
    return f32(bitcast<i32>(word << (24u - 8u * j)) >> 24u);
}

@compute @workgroup_size(256)
fn matmul_q8(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lane = lid % Q8_LANES;
    let slot = lid / Q8_LANES;
    let n = flat_workgroup(wg, nwg) * Q8_ROWS + slot;
    let live = n < p.n;
    let kw = p.k / 4u;
    let kb = p.k / 32u;
    for (var m0 = 0u; m0 < p.m; m0 += Q8_M) {
        var acc: array<f32, Q8_M>;
        for (var i = 0u; i < Q8_M; i++) {
            acc[i] = 0.0;
        }
        if live {
            for (var w = lane; w < kw; w += Q8_LANES) {
                let word = q[n * kw + w];
                let di = n * kb + w / 8u;
                let s = decode(d[word_of(di, DTYPE_F16)], di, DTYPE_F16);
                let w0 = s * q8_byte(word, 0u);
                let w1 = s * q8_byte(word, 1u);
                let w2 = s * q8_byte(word, 2u);
                let w3 = s * q8_byte(word, 3u);
                for (var i = 0u; i < Q8_M; i++) {
                    let m = m0 + i;
                    if m < p.m {
                        let xi = m * p.k + 4u * w;
                        var a = acc[i];
                        a = fma(x[xi], w0, a);
                        a = fma(x[xi + 1u], w1, a);
                        a = fma(x[xi + 2u], w2, a);
                        a = fma(x[xi + 3u], w3, a);
                        acc[i] = a;
                    }
                }
            }
        }
        q8_finish(lid, lane, live, n, m0, acc);
    }
}

// Sums a pass's partial sums over the 32 lanes of each weight row and stores the rows of
// out (+ bias) for rows m0 .. m0 + Q8_M of x.
fn q8_finish(lid: u32, lane: u32, live: bool, n: u32, m0: u32, acc: array<f32, Q8_M>) {
    workgroupBarrier(); // the previous pass's last reads of q8_red are done
    for (var i = 0u; i < Q8_M; i++) {
        q8_red[i * 256u + lid] = acc[i];
    }
    for (var off = Q8_LANES / 2u; off > 0u; off = off / 2u) {
        workgroupBarrier();
        if lane < off {
            for (var i = 0u; i < Q8_M; i++) {
                q8_red[i * 256u + lid] = q8_red[i * 256u + lid] + q8_red[i * 256u + lid + off];
            }
        }
    }
    if live && lane == 0u {
        var bv = 0.0;
        if p.has_bias != 0u {
            bv = decode(bias[word_of(n, BIAS_DTYPE)], n, BIAS_DTYPE);
        }
        for (var i = 0u; i < Q8_M; i++) {
            if m0 + i < p.m {
                out[(m0 + i) * p.n + n] = q8_red[i * 256u + lid] + bv;
            }
        }
    }
}

// ---------------------------------------------------------------- int8 activations
//
// `matmul_q8_int8` (Q8Activations::Int8 in src/quant.rs): the same sum with the rows of x
// quantized to Q8_0 blocks as the CPU's int8 path does (src/cpu/q8_dot.rs: d = max|x|/127
// in f32, q = round(x / d) half away from zero), then per word an integer dot product of
// four int8 pairs, `dot4I8Packed` (SPIR-V OpSDot where the device has the integer dot
// product, unpacked by naga where it does not), scaled by d_w·d_x. The workgroup
// quantizes x tile by tile (Q8_TK values of Q8_M rows) into workgroup memory, one
// invocation per block, and the 256 invocations accumulate as above.

const Q8_TK: u32 = 512u; // K values per tile of quantized x

var<workgroup> q8_qx: array<u32, 1024>; // [Q8_M][Q8_TK / 4] packed int8
var<workgroup> q8_dx: array<f32, 128>;  // [Q8_M][Q8_TK / 32] scales

// Rounds half away from zero, exactly (WGSL's round() rounds half to even).
fn q8_round(v: f32) -> f32 {
    let t = trunc(v);
    return select(t, t + sign(v), abs(v - t) >= 0.5);
}

// Quantizes block `b` of the tile at k0 of row m (slot i of the tile) into q8_qx/q8_dx:
// zeros past M or K; a block holding a NaN or inf takes that value as its scale, so its
// row's outputs are not finite (a NaN literal would not compile: WGSL's constant
// evaluation has no NaN).
fn q8_quantize(i: u32, b: u32, m: u32, k0: u32) {
    let kk = k0 + 32u * b;
    var scale = 0.0;
    var words: array<u32, 8>;
    if m < p.m && kk < p.k {
        let base = m * p.k + kk;
        var amax = 0.0;
        var bad = false;
        var bad_v = 0.0;
        for (var j = 0u; j < 32u; j++) {
            let v = x[base + j];
            if (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u {
                bad = true;
                bad_v = v;
            }
            amax = max(amax, abs(v));
        }
        scale = amax / 127.0;
        let inv = select(0.0, 1.0 / scale, scale != 0.0);
        for (var w = 0u; w < 8u; w++) {
            var word = 0u;
            for (var j = 0u; j < 4u; j++) {
                let qv = clamp(i32(q8_round(x[base + 4u * w + j] * inv)), -127, 127);
                word = word | ((bitcast<u32>(qv) & 0xffu) << (8u * j));
            }
            words[w] = word;
        }
        if bad {
            scale = bad_v;
        }
    }
    for (var w = 0u; w < 8u; w++) {
        q8_qx[i * (Q8_TK / 4u) + 8u * b + w] = words[w];
    }
    q8_dx[i * (Q8_TK / 32u) + b] = scale;
}

@compute @workgroup_size(256)
fn matmul_q8_int8(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lane = lid % Q8_LANES;
    let slot = lid / Q8_LANES;
    let n = flat_workgroup(wg, nwg) * Q8_ROWS + slot;
    let live = n < p.n;
    let kw = p.k / 4u;
    let kb = p.k / 32u;
    let tile_blocks = Q8_TK / 32u;
    for (var m0 = 0u; m0 < p.m; m0 += Q8_M) {
        var acc: array<f32, Q8_M>;
        for (var i = 0u; i < Q8_M; i++) {
            acc[i] = 0.0;
        }
        for (var k0 = 0u; k0 < p.k; k0 += Q8_TK) {
            workgroupBarrier(); // the previous tile's reads of q8_qx / q8_dx are done
            if lid < Q8_M * tile_blocks {
                q8_quantize(lid / tile_blocks, lid % tile_blocks, m0 + lid / tile_blocks, k0);
            }
            workgroupBarrier();
            if live {
                let tw = min(Q8_TK / 4u, kw - k0 / 4u); // words of this tile
                for (var w = lane; w < tw; w += Q8_LANES) {
                    let word = q[n * kw + k0 / 4u + w];
                    let di = n * kb + k0 / 32u + w / 8u;
                    let s = decode(d[word_of(di, DTYPE_F16)], di, DTYPE_F16);
                    for (var i = 0u; i < Q8_M; i++) {
                        if m0 + i < p.m {
                            let dot = dot4I8Packed(word, q8_qx[i * (Q8_TK / 4u) + w]);
                            let sx = s * q8_dx[i * tile_blocks + w / 8u];
                            acc[i] = fma(f32(dot), sx, acc[i]);
                        }
                    }
                }
            }
        }
        q8_finish(lid, lane, live, n, m0, acc);
    }
}
