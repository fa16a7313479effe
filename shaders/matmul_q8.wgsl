// out[m, n] = Σ_k x[m, k] · d[n, k/32] · q[n, k] (+ bias[n]): the matmul with Q8_0 weights
// (src/quant.rs has the format). Mirrors src/cpu/matmul_q8.rs::matmul_q8 and
// kernels/matmul_q8.cu.
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
}
