// Elementwise ops on f32. CPU mirror: src/cpu/elementwise.rs. Launched from
// src/cuda/launch.rs. One thread per element; the op code is uniform across the grid.

// Keep in sync with src/params.rs::ElementwiseParams (codes: src/ops.rs::Elementwise).
struct ElementwiseParams {
    unsigned int len, op, _pad0, _pad1;
};

#define OP_SILU 0u
#define OP_SOFTPLUS 1u
#define OP_ADD 2u
#define OP_MUL 3u
#define OP_MUL_SILU 4u

__device__ __forceinline__ float silu_f(float x) {
    return x / (1.f + expf(-x));
}

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
        case OP_SOFTPLUS: r = x > 20.f ? x : log1pf(expf(x)); break;
        case OP_ADD: r = x + b[i]; break;
        case OP_MUL: r = x * b[i]; break;
        default: r = x * silu_f(b[i]); break;   // OP_MUL_SILU
    }
    out[i] = r;
}
