// RMSNorm over the last dim with an optional fused residual add; weight f32/f16/bf16.
// CPU mirror: src/cpu/rms_norm.rs::rms_norm. Launched from src/cuda/ops.rs.
//
// One block per row (a segment of p.dim values; with p.groups > 1, segment s is
// scaled by the weight from (s % groups) * dim on: Mamba-2's grouped norm). With a
// residual: r = residual + x is stored back first, then
// out = r * rsqrt(mean(r^2) + eps) * w. Each thread keeps its elements of the row in
// a register pass and a second pass re-reads them (the row is L1/L2 resident).

#include "common.cuh"

#define THREADS 256

template <typename W>
__device__ void rms_norm_impl(const NormParams& p, const float* __restrict__ x,
                              const W* __restrict__ w, float* __restrict__ residual,
                              float* __restrict__ out) {
    __shared__ float partial[THREADS / 32];
    const unsigned int row = blockIdx.x;
    const size_t off = (size_t)row * p.dim;
    float ss = 0.f;
    for (unsigned int i = threadIdx.x; i < p.dim; i += THREADS) {
        float v = x[off + i];
        if (p.has_residual) {
            v += residual[off + i];
            residual[off + i] = v;
        }
        ss += v * v;
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
    __syncthreads();
    float tot = 0.f;
#pragma unroll
    for (int k = 0; k < THREADS / 32; ++k) tot += partial[k];
    const float inv = rsqrtf(tot / (float)p.dim + p.eps);
    const float* src = p.has_residual ? residual : x;
    const unsigned int w0 = (row % p.groups) * p.dim;
    for (unsigned int i = threadIdx.x; i < p.dim; i += THREADS)
        out[off + i] = (src[off + i] * inv) * ld(w, w0 + i);
}

extern "C" __global__ void __launch_bounds__(THREADS)
rms_norm_f32(NormParams p, const float* x, const float* w, float* residual, float* out) {
    rms_norm_impl(p, x, w, residual, out);
}
extern "C" __global__ void __launch_bounds__(THREADS)
rms_norm_f16(NormParams p, const float* x, const F16* w, float* residual, float* out) {
    rms_norm_impl(p, x, w, residual, out);
}
extern "C" __global__ void __launch_bounds__(THREADS)
rms_norm_bf16(NormParams p, const float* x, const BF16* w, float* residual, float* out) {
    rms_norm_impl(p, x, w, residual, out);
}
