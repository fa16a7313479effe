// out[m, n] = Σ_k x[m, k] · w[n, k] (+ bias[n]), added to out[m, n] with `accumulate`.
// Mirrors src/cpu/matmul.rs::matmul.
//
// Two entry points:
//   * `matmul`: tiled, for M > 8. A workgroup of 16×16 invocations computes a 64×64
//     tile of out, 4×4 outputs per invocation, walking K in steps of 16 with the x and w
//     tiles staged in workgroup memory.
//   * `matmul_decode`: M ≤ 8 (decode). A workgroup of 256 invocations owns 8 weight rows,
//     32 invocations per row stride over K (coalesced), so each weight element is read
//     exactly once for all M rows of x; the 32 partial sums are reduced in workgroup
//     memory.
//
// Weights and bias are bound as raw 32-bit words and decoded by `load_w` / `load_bias`
// according to the pipeline-overridable W_DTYPE / BIAS_DTYPE (see `decode` in
// common.wgsl).
//
// Large weights: the host may bind two windows of w (`w` and `w_hi`, rows row0 ..
// row0+rows between them) and dispatch once per pair of windows; see src/wgpu/window.rs
// (`WindowParams`).

//#include "common.wgsl"

// How w and bias are stored (DTYPE_* of common.wgsl), set by the host per pipeline.
override W_DTYPE: u32 = DTYPE_F32;
override BIAS_DTYPE: u32 = DTYPE_F32;

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // (M, K)
@group(0) @binding(2) var<storage, read> w: array<u32>;         // (N, K) rows row0.. of this window, as W_DTYPE words
@group(0) @binding(3) var<storage, read> bias: array<u32>;      // (N) as BIAS_DTYPE words, read if has_bias
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (M, N)
@group(0) @binding(5) var<uniform> win: WindowParams;
@group(0) @binding(6) var<storage, read> w_hi: array<u32>;      // the second window (rows row0+rows_a..)

// Element k of weight row row0 + r, from whichever window holds it.
fn load_w(r: u32, k: u32) -> f32 {
    if r < win.rows_a {
        let i = win.w_off + r * p.k + k;
        return decode(w[word_of(i, W_DTYPE)], i, W_DTYPE);
    }
    let i = win.w_off_b + (r - win.rows_a) * p.k + k;
    return decode(w_hi[word_of(i, W_DTYPE)], i, W_DTYPE);
}

fn load_bias(i: u32) -> f32 {
    if p.has_bias == 0u {
        return 0.0;
    }
    return decode(bias[word_of(i, BIAS_DTYPE)], i, BIAS_DTYPE);
}

// What `out[i]` adds to the product: its old value with `accumulate` (a residual add).
fn prior(i: u32) -> f32 {
    return select(0.0, out[i], p.accumulate != 0u);
}

const TILE: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> xs: array<f32, 1024>; // [TK][TILE]: x tile, k-major
var<workgroup> ws: array<f32, 1024>; // [TK][TILE]: w tile, k-major

@compute @workgroup_size(256)
fn matmul(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tx = lid % 16u; // output columns tx + 16j
    let ty = lid / 16u; // output rows ty + 16i
    let r0 = wg.x * TILE; // first weight row of the tile, relative to win.row0
    let m0 = wg.y * TILE;
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }
    let n_tiles = (p.k + TK - 1u) / TK;
    for (var kt = 0u; kt < n_tiles; kt++) {
        let k0 = kt * TK;
        // Stage: 1024 elements of each tile, 4 per invocation; kk fastest for coalescing.
        for (var e = 0u; e < 4u; e++) {
            let flat = e * 256u + lid;
            let kk = flat % TK;
            let rr = flat / TK;
            let k = k0 + kk;
            var xv = 0.0;
            if m0 + rr < p.m && k < p.k {
                xv = x[(m0 + rr) * p.k + k];
            }
            xs[kk * TILE + rr] = xv;
            var wv = 0.0;
            if r0 + rr < win.rows && k < p.k {
                wv = load_w(r0 + rr, k);
            }
            ws[kk * TILE + rr] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var xr: array<f32, 4>;
            var wr: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                xr[i] = xs[kk * TILE + ty + 16u * i];
                wr[i] = ws[kk * TILE + tx + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(xr[i], wr[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var j = 0u; j < 4u; j++) {
        let r = r0 + tx + 16u * j;
        if r >= win.rows {
            continue;
        }
        let n = win.row0 + r;
        let bv = load_bias(n);
        for (var i = 0u; i < 4u; i++) {
            let m = m0 + ty + 16u * i;
            if m < p.m {
                out[m * p.n + n] = acc[i][j] + bv + prior(m * p.n + n);
            }
        }
    }
}

const DEC_ROWS: u32 = 8u;   // weight rows per workgroup
const DEC_LANES: u32 = 32u; // invocations per weight row
const MAX_M: u32 = 8u;      // src/wgpu/kernels.rs, DECODE_MAX_M

var<workgroup> red: array<f32, 2048>; // [MAX_M][256] partial sums

@compute @workgroup_size(256)
fn matmul_decode(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lane = lid % DEC_LANES;
    let slot = lid / DEC_LANES;
    let r = flat_workgroup(wg, nwg) * DEC_ROWS + slot; // weight row relative to win.row0
    let live = r < win.rows;
    var acc: array<f32, MAX_M>;
    for (var i = 0u; i < MAX_M; i++) {
        acc[i] = 0.0;
    }
    if live {
        for (var k = lane; k < p.k; k += DEC_LANES) {
            let wv = load_w(r, k);
            for (var i = 0u; i < MAX_M; i++) {
                if i < p.m {
                    acc[i] = fma(x[i * p.k + k], wv, acc[i]);
                }
            }
        }
    }
    for (var i = 0u; i < MAX_M; i++) {
        red[i * 256u + lid] = acc[i];
    }
    for (var off = DEC_LANES / 2u; off > 0u; off = off / 2u) {
        workgroupBarrier();
        if lane < off {
            for (var i = 0u; i < MAX_M; i++) {
                red[i * 256u + lid] = red[i * 256u + lid] + red[i * 256u + lid + off];
            }
        }
    }
    if live && lane == 0u {
        let n = win.row0 + r;
        let bv = load_bias(n);
        for (var i = 0u; i < MAX_M; i++) {
            if i < p.m {
                out[i * p.n + n] = red[i * 256u + lid] + bv + prior(i * p.n + n);
            }
        }
    }
}
