// out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]); x, out f32; w, bias f32/f16/bf16.
// CPU mirror: src/cpu/matmul.rs::matmul. Launched from src/cuda/matmul.rs.
//
// Large m goes through cuBLAS SGEMM (f32 weights directly; f16/bf16 weights are first
// widened to f32 by `widen_*` into a scratch buffer, then `bias_rows` pre-fills out
// with the bias and SGEMM accumulates with beta = 1). Small m (decode: m = 1) runs
// `matmul_rows_*`: weight-bandwidth bound, so each weight is read once, as 16-byte
// vectors, and converted in registers. One warp per output column n, up to MAXM rows
// of x per block (blockIdx.y tiles larger m); f32 accumulation, warp-shuffle reduction.

#include "common.cuh"

#define MAXM 8
#define WARPS 8

// The bias may have another float type than the weight (`load_kind` of common.cuh).
__device__ __forceinline__ float load_bias(const void* b, unsigned int kind, size_t i) {
    return load_kind(b, kind, i);
}

// Eight consecutive weights starting at an index that is a multiple of 8 (16 bytes for
// f16/bf16, two float4 for f32).
__device__ __forceinline__ void load8(const float* w, size_t i, float v[8]) {
    float4 a = *reinterpret_cast<const float4*>(w + i);
    float4 b = *reinterpret_cast<const float4*>(w + i + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void unpack_f16(uint4 q, float v[8]) {
    unsigned int s[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        v[2 * j] = f16_to_f32((unsigned short)(s[j] & 0xffffu));
        v[2 * j + 1] = f16_to_f32((unsigned short)(s[j] >> 16));
    }
}
__device__ __forceinline__ void load8(const F16* w, size_t i, float v[8]) {
    unpack_f16(*reinterpret_cast<const uint4*>(w + i), v);
}
__device__ __forceinline__ void load8(const BF16* w, size_t i, float v[8]) {
    uint4 q = *reinterpret_cast<const uint4*>(w + i);
    unsigned int s[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        v[2 * j] = __uint_as_float(s[j] << 16);
        v[2 * j + 1] = __uint_as_float(s[j] & 0xffff0000u);
    }
}

template <typename W>
__device__ void matmul_rows_impl(const MatmulParams& p, unsigned int bias_kind,
                                 const float* __restrict__ x, const W* __restrict__ w,
                                 const void* __restrict__ bias, float* __restrict__ out) {
    const unsigned int lane = threadIdx.x % 32;
    const unsigned int col = blockIdx.x * WARPS + threadIdx.x / 32;
    const unsigned int m0 = blockIdx.y * MAXM;
    if (col >= p.n) return;   // whole warps exit together
    const unsigned int mm = min((unsigned int)MAXM, p.m - m0);
    const size_t K = p.k;
    const W* wr = w + (size_t)col * K;
    const float* xr = x + (size_t)m0 * K;
    float acc[MAXM];
#pragma unroll
    for (int r = 0; r < MAXM; ++r) acc[r] = 0.f;

    size_t kv = 0;
    if (K % 8 == 0) {
        kv = K;
        for (size_t k = (size_t)lane * 8; k < K; k += 32 * 8) {
            float wv[8];
            load8(wr, k, wv);
#pragma unroll
            for (int r = 0; r < MAXM; ++r) {
                if (r < (int)mm) {
                    float xv[8];
                    load8(xr + r * K, k, xv);
#pragma unroll
                    for (int j = 0; j < 8; ++j) acc[r] = fmaf(xv[j], wv[j], acc[r]);
                }
            }
        }
    }
    for (size_t k = kv + lane; k < K; k += 32) {
        const float wv = ld(wr, k);
#pragma unroll
        for (int r = 0; r < MAXM; ++r)
            if (r < (int)mm) acc[r] = fmaf(xr[r * K + k], wv, acc[r]);
    }
#pragma unroll
    for (int r = 0; r < MAXM; ++r) {
        float s = acc[r];
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        acc[r] = s;
    }
    if (lane == 0) {
        const float bv = p.has_bias ? load_bias(bias, bias_kind, col) : 0.f;
        for (unsigned int r = 0; r < mm; ++r) {
            float* o = out + (size_t)(m0 + r) * p.n + col;
            *o = acc[r] + bv + (p.accumulate ? *o : 0.f);
        }
    }
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
matmul_rows_f32(MatmulParams p, unsigned int bias_kind, const float* x, const float* w,
                const void* bias, float* out) {
    matmul_rows_impl(p, bias_kind, x, w, bias, out);
}
extern "C" __global__ void __launch_bounds__(WARPS * 32)
matmul_rows_f16(MatmulParams p, unsigned int bias_kind, const float* x, const F16* w,
                const void* bias, float* out) {
    matmul_rows_impl(p, bias_kind, x, w, bias, out);
}
extern "C" __global__ void __launch_bounds__(WARPS * 32)
matmul_rows_bf16(MatmulParams p, unsigned int bias_kind, const float* x, const BF16* w,
                const void* bias, float* out) {
    matmul_rows_impl(p, bias_kind, x, w, bias, out);
}

// dst[i] = (float)src[i] for i < len.
template <typename W>
__device__ void widen_impl(unsigned int len, const W* __restrict__ src, float* __restrict__ dst) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) dst[i] = ld(src, i);
}
extern "C" __global__ void widen_f16(unsigned int len, const F16* src, float* dst) {
    widen_impl(len, src, dst);
}
extern "C" __global__ void widen_bf16(unsigned int len, const BF16* src, float* dst) {
    widen_impl(len, src, dst);
}

// out[r, c] = bias[c] (+= with p.accumulate) for the m x n output, before an
// accumulating SGEMM.
extern "C" __global__ void bias_rows(MatmulParams p, unsigned int bias_kind, const void* bias,
                                     float* __restrict__ out) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)p.m * p.n)
        out[i] = load_bias(bias, bias_kind, i % p.n) + (p.accumulate ? out[i] : 0.f);
}
