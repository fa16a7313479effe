// out[m, n] = sum_k x[m, k] * d[n, k/32] * q[n, k] (+ bias[n]): the matmul with Q8_0
// weights (src/quant.rs has the format: q packed four int8 per u32, low byte first; d
// f16, one per 32 weights). CPU mirror: src/cpu/matmul_q8.rs; WGSL:
// shaders/matmul_q8.wgsl. Launched from src/cuda/matmul.rs.
//
// One warp per weight row n, lanes striding over the row's packed words (coalesced, each
// word read once per block of up to Q8_MAXM rows of x; blockIdx.y tiles larger m). The
// int8 weights are widened to f32, scaled by their block's d and multiplied into x in
// f32 (the activations are not quantized, so the result is the f32 matmul by the
// dequantized weights); warp-shuffle reduction. matmul_q8_int8 below quantizes them.

#include "common.cuh"

#define Q8_MAXM 8
#define Q8_WARPS 8

// Byte j of a word as a signed value.
__device__ __forceinline__ float q8_byte(unsigned int word, unsigned int j) {
    return (float)(((int)(word << (24 - 8 * j))) >> 24);
}

// Sums each of a warp's Q8_MAXM partial sums over its lanes and stores row `row` of out
// (+ bias) for the mm rows of x from m0.
__device__ __forceinline__ void q8_finish(float* acc, unsigned int lane, unsigned int row,
                                          unsigned int m0, unsigned int mm, MatmulParams p,
                                          unsigned int bias_kind, const void* bias, float* out) {
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
    q8_finish(acc, lane, row, m0, mm, p, bias_kind, bias, out);
}

// ---------------------------------------------------------------- int8 activations
//
// matmul_q8_int8 (Q8Activations::Int8 in src/quant.rs): the same sum with the rows of x
// quantized to Q8_0 blocks as the CPU's int8 path does (src/cpu/q8_dot.rs: d = max|x|/127
// in f32, q = round(x / d) half away from zero; WGSL: matmul_q8_int8 in
// shaders/matmul_q8.wgsl), then per word __dp4a (four int8 products summed in int32),
// scaled by d_w * d_x. The block quantizes Q8_TK values of its up to Q8_MAXM rows of x at
// a time into shared memory, one thread per block of 32; a block of x holding a NaN or
// inf gets a NaN scale, so its row's outputs are NaN.

#define Q8_TK 1024
#define Q8_TB (Q8_TK / 32)  // blocks of 32 per tile

// Rounds half away from zero (C's roundf).
__device__ __forceinline__ int q8_round(float v) { return (int)roundf(v); }

extern "C" __global__ void __launch_bounds__(Q8_WARPS * 32) matmul_q8_int8(
    MatmulParams p, unsigned int bias_kind,
    const float* __restrict__ x,        // (m, k)
    const unsigned int* __restrict__ q, // (n, k/4)
    const F16* __restrict__ d,          // (n, k/32)
    const void* __restrict__ bias,      // (n) of bias_kind, read if has_bias
    float* __restrict__ out)            // (m, n)
{
    __shared__ int qx[Q8_MAXM][Q8_TK / 4];
    __shared__ float dx[Q8_MAXM][Q8_TB];
    const unsigned int lane = threadIdx.x % 32;
    const unsigned int row = blockIdx.x * Q8_WARPS + threadIdx.x / 32;
    const unsigned int m0 = blockIdx.y * Q8_MAXM;
    const bool live = row < p.n;  // every thread takes part in the tiles' quantization
    const unsigned int mm = min((unsigned int)Q8_MAXM, p.m - m0);
    const size_t K = p.k, kw = K / 4, kb = K / 32;
    const unsigned int* qr = q + (size_t)(live ? row : 0) * kw;
    const F16* dr = d + (size_t)(live ? row : 0) * kb;
    float acc[Q8_MAXM];
#pragma unroll
    for (int r = 0; r < Q8_MAXM; ++r) acc[r] = 0.f;
    for (size_t k0 = 0; k0 < K; k0 += Q8_TK) {
        __syncthreads();  // the previous tile's reads of qx / dx are done
        {
            const unsigned int r = threadIdx.x / Q8_TB, b = threadIdx.x % Q8_TB;
            const size_t kk = k0 + 32 * (size_t)b;
            float scale = 0.f;
            int words[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            if (r < mm && kk < K) {
                const float* xb = x + (size_t)(m0 + r) * K + kk;
                float amax = 0.f;
                bool bad = false;
                for (int j = 0; j < 32; ++j) {
                    bad = bad || !isfinite(xb[j]);
                    amax = fmaxf(amax, fabsf(xb[j]));
                }
                scale = amax / 127.f;
                const float inv = scale != 0.f ? 1.f / scale : 0.f;
                for (int w = 0; w < 8; ++w) {
                    unsigned int word = 0;
                    for (int j = 0; j < 4; ++j) {
                        const int v = max(-127, min(127, q8_round(xb[4 * w + j] * inv)));
                        word |= ((unsigned int)v & 0xffu) << (8 * j);
                    }
                    words[w] = (int)word;
                }
                if (bad) scale = __int_as_float(0x7fc00000);
            }
            for (int w = 0; w < 8; ++w) qx[r][8 * b + w] = words[w];
            dx[r][b] = scale;
        }
        __syncthreads();
        if (live) {
            const size_t tw = min((size_t)(Q8_TK / 4), kw - k0 / 4);  // words of this tile
            for (size_t w = lane; w < tw; w += 32) {
                const int word = (int)qr[k0 / 4 + w];
                const float s = to_f32(dr[k0 / 32 + w / 8]);
#pragma unroll
                for (int r = 0; r < Q8_MAXM; ++r) {
                    if (r < (int)mm) {
                        const int dot = __dp4a(word, qx[r][w], 0);
                        acc[r] = fmaf((float)dot, s * dx[r][w / 8], acc[r]);
                    }
                }
            }
        }
    }
    if (!live) return;  // whole warps: row is one per warp
    q8_finish(acc, lane, row, m0, mm, p, bias_kind, bias, out);
}
