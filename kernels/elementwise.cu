// Elementwise ops on f32. CPU mirror: src/cpu/elementwise.rs. Launched from
// src/cuda/ops.rs. One thread per element; the op code is uniform across the grid.

#include "common.cuh"

extern "C" __global__ void elementwise(ElementwiseParams p,
                                       const float* __restrict__ a,
                                       const float* __restrict__ b,   // unused for unary ops
                                       float* __restrict__ out) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.len) return;
    const float x = a[i];
    float r;
    switch (p.op) {
        case OP_SILU: r = silu_f(x); break;
        case OP_SOFTPLUS: r = softplus_f(x); break;
        case OP_ADD: r = x + b[i]; break;
        case OP_MUL: r = x * b[i]; break;
        default: r = x * silu_f(b[i]); break;   // OP_MUL_SILU
    }
    out[i] = r;
}
