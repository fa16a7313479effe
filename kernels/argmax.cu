// Row-wise argmax of f32 into u32: the first index of the largest value; NaN never
// wins; a row with nothing above -inf gives 0. CPU mirror: src/cpu/argmax.rs::argmax.
// Launched from src/cuda/ops.rs. One block per row: each thread scans a strided
// slice in ascending order (strict >, so it keeps its first maximum), then a warp
// shuffle and a shared-memory step reduce (value, index) pairs, ties to the lower index.

#include "common.cuh"

#define THREADS 256
#define NONE 0xffffffffu

__device__ __forceinline__ void pick(float& v, unsigned int& i, float ov, unsigned int oi) {
    if (oi == NONE) return;
    if (i == NONE || ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
}

extern "C" __global__ void __launch_bounds__(THREADS)
argmax(ArgmaxParams p, const float* __restrict__ x, unsigned int* __restrict__ out) {
    __shared__ float sv[THREADS / 32];
    __shared__ unsigned int si[THREADS / 32];
    const unsigned int row = blockIdx.x;
    const float* xr = x + (size_t)row * p.cols;
    float best = -__int_as_float(0x7f800000);   // -inf
    unsigned int bi = NONE;
    for (unsigned int j = threadIdx.x; j < p.cols; j += THREADS) {
        const float v = xr[j];
        if (v > best) { best = v; bi = j; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        unsigned int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        pick(best, bi, ov, oi);
    }
    if (threadIdx.x % 32 == 0) { sv[threadIdx.x / 32] = best; si[threadIdx.x / 32] = bi; }
    __syncthreads();
    if (threadIdx.x == 0) {
        float v = sv[0];
        unsigned int i = si[0];
        for (int k = 1; k < THREADS / 32; ++k) pick(v, i, sv[k], si[k]);
        out[row] = i == NONE ? 0u : i;
    }
}
