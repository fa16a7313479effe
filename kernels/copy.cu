// Copy of `len` 4-byte elements (f32 or u32) between buffers at element offsets.
// CPU mirror: src/cpu/copy.rs::copy. Launched from src/cuda/ops.rs.

#include "common.cuh"

extern "C" __global__ void copy(CopyParams p, const unsigned int* __restrict__ src,
                                unsigned int* __restrict__ dst) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.len) dst[p.dst_offset + i] = src[p.src_offset + i];
}
