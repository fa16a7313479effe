// Row gather out[i, :] = table[ids[i], :] as f32; table f32/f16/bf16.
// CPU mirror: src/cpu/embedding.rs::embedding. Launched from src/cuda/ops.rs.
// One thread per output element (consecutive threads along the row: coalesced).
// Ids past the table write zeros (the CPU backend reports an error instead).

#include "common.cuh"

template <typename T>
__device__ void embedding_impl(const EmbeddingParams& p, const unsigned int* __restrict__ ids,
                               const T* __restrict__ table, float* __restrict__ out) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)p.count * p.dim) return;
    const unsigned int i = idx / p.dim, j = idx % p.dim;
    const unsigned int id = ids[i];
    out[idx] = id < p.rows ? ld(table, (size_t)id * p.dim + j) : 0.f;
}

extern "C" __global__ void embedding_f32(EmbeddingParams p, const unsigned int* ids,
                                         const float* table, float* out) {
    embedding_impl(p, ids, table, out);
}
extern "C" __global__ void embedding_f16(EmbeddingParams p, const unsigned int* ids,
                                         const F16* table, float* out) {
    embedding_impl(p, ids, table, out);
}
extern "C" __global__ void embedding_bf16(EmbeddingParams p, const unsigned int* ids,
                                          const BF16* table, float* out) {
    embedding_impl(p, ids, table, out);
}
