// Row gather out[i, :] = table[ids[i], :] as f32; table f32/f16/bf16.
// CPU mirror: src/cpu/linalg.rs::embedding. Launched from src/cuda/launch.rs.
// One thread per output element (consecutive threads along the row: coalesced).
// Ids past the table write zeros (the CPU backend reports an error instead).

// Keep in sync with src/params.rs::EmbeddingParams.
struct EmbeddingParams {
    unsigned int count, rows, dim, _pad0;
};

__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ float bf16_to_f32(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}
struct F16 { unsigned short bits; };
struct BF16 { unsigned short bits; };
__device__ __forceinline__ float load(const float* t, size_t i) { return t[i]; }
__device__ __forceinline__ float load(const F16* t, size_t i) { return f16_to_f32(t[i].bits); }
__device__ __forceinline__ float load(const BF16* t, size_t i) { return bf16_to_f32(t[i].bits); }

template <typename T>
__device__ void embedding_impl(const EmbeddingParams& p, const unsigned int* __restrict__ ids,
                               const T* __restrict__ table, float* __restrict__ out) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)p.count * p.dim) return;
    const unsigned int i = idx / p.dim, j = idx % p.dim;
    const unsigned int id = ids[i];
    out[idx] = id < p.rows ? load(table, (size_t)id * p.dim + j) : 0.f;
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
