// out[m, n] = sum_k x[m, k] * d[n, k/32] * q[n, k] (+ bias[n]): the matmul with Q8_0
// weights (src/quant.rs has the format: q packed four int8 per u32, low byte first; d
// f16, one per 32 weights). CPU mirror: src/cpu/matmul_q8.rs; WGSL:
// shaders/matmul_q8.wgsl. Launched from src/cuda/matmul.rs.
//
// One warp per weight row n, lanes striding over the row's packed words (coalesced, each
// word read once per block of up to Q8_MAXM rows of x; blockIdx.y tiles larger m). The
// int8 weights are widened to f32, scaled by their block's d and multiplied into x in
// f32 (the activations are not quantized, so the result is the f32 matmul by the
// dequantized weights); warp-shuffle reduction.

#include "common.cuh"

#define Q8_MAXM 8
#define Q8_WARPS 8

// Byte j of a word as a signed value.
__device__ __forceinline__ float q8_byte(unsigned int word, unsigned int j) {
    return (float)(((int)(word << (24 - 8 * j))) >> 24);
}

extern "C" __global__ void __launch_bounds__(Q8_WARPS * 32) matmul_q8(
    MatmulParams p, unsigned int bias_kind,
    const float* __restrict__ x,        // (m, k)
    const unsigned int* __restrict__ q, // (n, k/4)
    const F16* __restrict__ d,          // (n, k/32)
    const void* __restrict__ bias,      // (n) of bias_kind, read if has_bias
    float* __restrict__ out)            // (m, n)
{
    const unsigned int lane = threadIdx.x % 32;
    const unsigned int row = blockIdx.x * Q8_WARPS + threadIdx.x / 32;
    const unsigned int m0 = blockIdx.y * Q8_MAXM;
    if (row >= p.n) return;  // whole warps exit together
    const unsigned int mm = min((unsigned int)Q8_MAXM, p.m - m0);
    const size_t K = p.k, kw = K / 4, kb = K / 32;
    const unsigned int* qr = q + (size_t)row * kw;
    const F16* dr = d + (size_t)row * kb;
    const float* xr = x + (size_t)m0 * K;
    float acc[Q8_MAXM];
#pragma unroll
    for (int r = 0; r < Q8_MAXM; ++r) acc[r] = 0.f;
    for (size_t w = lane; w < kw; w += 32) {
        const unsigned int word = qr[w];
        const float s = to_f32(dr[w / 8]);
        float wv[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) wv[j] = s * q8_byte(word, j);
#pragma unroll
        for (int r = 0; r < Q8_MAXM; ++r) {
            if (r < (int)mm) {
                const float* xp = xr + r * K + 4 * w;
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[r] = fmaf(xp[j], wv[j], acc[r]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < Q8_MAXM; ++r) {
        float v = acc[r];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        acc[r] = v;
    }
    if (lane == 0) {
        const float bv = p.has_bias ? load_kind(bias, bias_kind, row) : 0.f;
        for (unsigned int r = 0; r < mm; ++r) out[(size_t)(m0 + r) * p.n + row] = acc[r] + bv;
    }
}
