// Selective scan (Mamba-1 forward): f32, f16 or bf16 I/O, f32 math.
// CPU mirror: src/cpu/selective_scan.rs::selective_scan. Launched from src/cuda/ops.rs.
//
// Entry points selective_scan_f32 / _f16 / _bf16 instantiate one template on the I/O
// element type T of u, delta, z, B, C and out (ops/check.rs makes them share it). A, D,
// delta_bias and the state stay float. Every value is widened to f32 as it is loaded and
// only `out` is rounded back to T (to nearest-even), so the half variants do the same
// arithmetic as the f32 one on half the bytes of the sequence tensors, which bound the
// scan. The conversions are
// those of common.cuh.
//
// Per batch b, channel d, state n, time t:
//   dt  = softplus?(delta[b,d,t] + delta_bias[d])
//   h_t = exp(dt * A[d,n]) * h_{t-1} + dt * B[b,g,n,t] * u[b,d,t]
//   y   = sum_n C[b,g,n,t] * h_t[n] + D[d] * u[b,d,t];   out = y * silu(z[b,d,t])
//
// Work split. A block owns CPB channels of one batch element (threadIdx.y = channel
// row) and walks the sequence in chunks of CHUNK = NT * ITEMS time steps. Each of the
// NT threads of a channel row holds ITEMS consecutive time steps in registers:
//   * u, delta (and at the end z) are loaded once per chunk; where the time stride is 1
//     and 16-byte aligned they are loaded 16 bytes at a time (two float4 for f32, one
//     uint4 of 8 halves for f16/bf16; a warp reads 1 KiB or 512 B contiguous), otherwise
//     (TokenMajor: time stride = dim) one scalar at a time. `out` is stored the same way.
//   * B and C of the chunk are staged in shared memory (widened to f32), NS states at a
//     time, once for all CPB channels of the block when those channels share one group;
//     otherwise each row reads them through L1/L2.
//   * ITEMS = 8 steps per thread keeps the shuffle work per step low (the scan across
//     the warp costs 12 shuffles per thread per state, whatever ITEMS is), so the
//     exp2 unit rather than the shuffles bounds the compute.
//   * For each state n: discretise in registers (exp2f with log2(e) folded into A),
//     combine the thread's ITEMS pairs sequentially, scan across the warp with shuffles
//     and across the NW warps of the row through shared memory, under
//         (a1, b1) o (a2, b2) = (a1 * a2, a2 * b1 + b2),
//     seed with the running state carried from the previous chunk, replay the ITEMS
//     steps to get h_t, and accumulate C * h_t into y. h never leaves registers except
//     the per-(channel, state) carry, which lives in shared memory.
//   * D skip and the z gate are fused; only `out` (and the final state) is written.

#include "common.cuh"

#define NT 64                 // threads per channel (along time)
#define NW (NT / 32)          // warps per channel
#define ITEMS 8               // time steps per thread (16 or 32 bytes per tensor)
#define CHUNK (NT * ITEMS)    // time steps per chunk
#define CPB 4                 // channels per block
#define NS 8                  // states staged in shared memory at a time

__device__ __forceinline__ float f16_lo(unsigned int w) {
    return to_f32(F16{(unsigned short)(w & 0xffffu)});
}
__device__ __forceinline__ float f16_hi(unsigned int w) {
    return to_f32(F16{(unsigned short)(w >> 16)});
}

// One element, rounded to the I/O type.
__device__ __forceinline__ void st1(float* p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st1(F16* p, size_t i, float v) { p[i].bits = f32_to_f16_bits(v); }
__device__ __forceinline__ void st1(BF16* p, size_t i, float v) { p[i].bits = f32_to_bf16_bits(v); }

static_assert(ITEMS == 8, "load8/store8 move exactly ITEMS = 8 elements");

// Eight consecutive elements at a 16-byte aligned address, as f32 (f32: two float4;
// f16/bf16: one uint4, element 2k in the low half of word k, little-endian).
__device__ __forceinline__ void load8(const float* p, float v[8]) {
    float4 a = *reinterpret_cast<const float4*>(p);
    float4 b = *reinterpret_cast<const float4*>(p + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void load8(const F16* p, float v[8]) {
    uint4 q = *reinterpret_cast<const uint4*>(p);
    v[0] = f16_lo(q.x); v[1] = f16_hi(q.x); v[2] = f16_lo(q.y); v[3] = f16_hi(q.y);
    v[4] = f16_lo(q.z); v[5] = f16_hi(q.z); v[6] = f16_lo(q.w); v[7] = f16_hi(q.w);
}
__device__ __forceinline__ void load8(const BF16* p, float v[8]) {
    uint4 q = *reinterpret_cast<const uint4*>(p);
    v[0] = __uint_as_float(q.x << 16); v[1] = __uint_as_float(q.x & 0xffff0000u);
    v[2] = __uint_as_float(q.y << 16); v[3] = __uint_as_float(q.y & 0xffff0000u);
    v[4] = __uint_as_float(q.z << 16); v[5] = __uint_as_float(q.z & 0xffff0000u);
    v[6] = __uint_as_float(q.w << 16); v[7] = __uint_as_float(q.w & 0xffff0000u);
}

// Eight consecutive elements to a 16-byte aligned address, rounded to the I/O type.
__device__ __forceinline__ void store8(float* p, const float v[8]) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    *reinterpret_cast<float4*>(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ unsigned int pack_f16(float lo, float hi) {
    return (unsigned int)f32_to_f16_bits(lo) | ((unsigned int)f32_to_f16_bits(hi) << 16);
}
__device__ __forceinline__ unsigned int pack_bf16(float lo, float hi) {
    return (unsigned int)f32_to_bf16_bits(lo) | ((unsigned int)f32_to_bf16_bits(hi) << 16);
}
__device__ __forceinline__ void store8(F16* p, const float v[8]) {
    *reinterpret_cast<uint4*>(p) = make_uint4(pack_f16(v[0], v[1]), pack_f16(v[2], v[3]),
                                              pack_f16(v[4], v[5]), pack_f16(v[6], v[7]));
}
__device__ __forceinline__ void store8(BF16* p, const float v[8]) {
    *reinterpret_cast<uint4*>(p) = make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]),
                                              pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
}

// Loads ITEMS consecutive time steps starting at time t0 of the sequence at `base`.
// Positions at or past `len` read as 0. `vec`: time stride 1 and `base` a multiple of
// 16 bytes (t0 is a multiple of ITEMS, so p + base + t0 is too).
template <typename T>
__device__ __forceinline__ void load_items(const T* __restrict__ p, unsigned int base,
                                           unsigned int st, unsigned int t0,
                                           unsigned int len, bool vec, float v[ITEMS]) {
    if (vec && t0 + ITEMS <= len) {
        load8(p + base + t0, v);
    } else {
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
            unsigned int t = t0 + i;
            v[i] = t < len ? ld(p, base + (size_t)t * st) : 0.f;
        }
    }
}

// The scan for I/O element type T (float, F16 or BF16); the body of every entry point.
template <typename T>
__device__ __forceinline__ void
scan_impl(const ScanParams& p,
          const T* __restrict__ u,               // (batch, dim, L) via x strides
          const T* __restrict__ delta,           // like u
          const float* __restrict__ A,           // (dim, N)
          const T* __restrict__ Bm,              // (batch, G, N, L) via b strides, or (dim, N)
          const T* __restrict__ Cm,              // like Bm, via c strides
          const float* __restrict__ Dv,          // (dim) or unused
          const T* __restrict__ z,               // like u, or unused
          const float* __restrict__ delta_bias,  // (dim) or unused
          float* __restrict__ state,             // (batch, dim, N) or unused
          T* __restrict__ out)                   // like u
{
    __shared__ float4 sB[NS][CHUNK / 4];
    __shared__ float4 sC[NS][CHUNK / 4];
    __shared__ float wsum_a[2][CPB][NW];
    __shared__ float wsum_b[2][CPB][NW];
    extern __shared__ float carry[];               // [CPB][dstate]

    const unsigned int lane_t = threadIdx.x;       // 0..NT-1, along time
    const unsigned int row = threadIdx.y;          // 0..CPB-1, channel within block
    const unsigned int warp = lane_t / 32, lane = lane_t % 32;
    const unsigned int b = blockIdx.y;
    const unsigned int d0 = blockIdx.x * CPB;
    const unsigned int d = d0 + row;
    const bool ch_ok = d < p.dim;
    const unsigned int dc = ch_ok ? d : p.dim - 1;   // clamped for safe reads
    const unsigned int N = p.dstate, L = p.len;
    const unsigned int tid = row * NT + lane_t;

    const unsigned int xbase = b * p.x_sb + dc * p.x_sd;
    // Elements per 16 bytes: every row's base (and so every t0) is 16-byte aligned when
    // the channel and batch strides are multiples of it (allocations are 256-aligned).
    const unsigned int vec_elems = 16 / sizeof(T);
    const bool xvec = p.x_st == 1 && (p.x_sd % vec_elems == 0) && (p.x_sb % vec_elems == 0);

    // B/C of this row's group, and whether the whole block shares one group.
    const unsigned int d_last = min(d0 + CPB, p.dim) - 1;
    const unsigned int bbase = b * p.b_sb + (dc / p.b_group_dim) * p.b_sg;
    const unsigned int cbase = b * p.c_sb + (dc / p.c_group_dim) * p.c_sg;
    const bool stage_b = p.b_st != 0 && d0 / p.b_group_dim == d_last / p.b_group_dim;
    const bool stage_c = p.c_st != 0 && d0 / p.c_group_dim == d_last / p.c_group_dim;
    const unsigned int bbase0 = b * p.b_sb + (d0 / p.b_group_dim) * p.b_sg;
    const unsigned int cbase0 = b * p.c_sb + (d0 / p.c_group_dim) * p.c_sg;

    const float bias = p.has_delta_bias ? delta_bias[dc] : 0.f;
    const float dskip = p.has_d ? Dv[dc] : 0.f;

    for (unsigned int n = lane_t; n < N; n += NT) {
        float h0 = 0.f;
        if (p.state_mode == STATE_CARRY && ch_ok) h0 = state[((size_t)b * p.dim + d) * N + n];
        carry[row * N + n] = h0;
    }
    // (The first __syncthreads below orders these writes before any read.)

    for (unsigned int c0 = 0; c0 < L; c0 += CHUNK) {
        const unsigned int t0 = c0 + lane_t * ITEMS;
        float uu[ITEMS], dt[ITEMS], y[ITEMS];
        load_items(u, xbase, p.x_st, t0, L, xvec, uu);
        load_items(delta, xbase, p.x_st, t0, L, xvec, dt);
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
            float v = dt[i] + bias;
            v = p.delta_softplus ? softplus_f(v) : v;
            dt[i] = (t0 + i < L) ? v : 0.f;   // dt = 0 past the end: (a, b) = (1, 0)
            y[i] = 0.f;
        }

        for (unsigned int n0 = 0; n0 < N; n0 += NS) {
            const unsigned int ns = min((unsigned int)NS, N - n0);
            // Stage B/C[n0 .. n0+ns, c0 .. c0+CHUNK] for the block.
            __syncthreads();   // previous tile fully consumed
            if (stage_b || stage_c) {
                float* fb = reinterpret_cast<float*>(sB);
                float* fc = reinterpret_cast<float*>(sC);
                for (unsigned int k = tid; k < ns * CHUNK; k += NT * CPB) {
                    if (stage_b) {
                        // Walk memory in order: time-fastest when B's time stride is 1.
                        unsigned int nn = p.b_st == 1 ? k / CHUNK : k % ns;
                        unsigned int tt = p.b_st == 1 ? k % CHUNK : k / ns;
                        unsigned int t = c0 + tt;
                        fb[nn * CHUNK + tt] = t < L
                            ? ld(Bm, bbase0 + (n0 + nn) * p.b_sn + (size_t)t * p.b_st) : 0.f;
                    }
                    if (stage_c) {
                        unsigned int nn = p.c_st == 1 ? k / CHUNK : k % ns;
                        unsigned int tt = p.c_st == 1 ? k % CHUNK : k / ns;
                        unsigned int t = c0 + tt;
                        fc[nn * CHUNK + tt] = t < L
                            ? ld(Cm, cbase0 + (n0 + nn) * p.c_sn + (size_t)t * p.c_st) : 0.f;
                    }
                }
            }
            __syncthreads();

            for (unsigned int nn = 0; nn < ns; ++nn) {
                const unsigned int n = n0 + nn;
                const unsigned int par = n & 1;
                const float a2 = A[dc * N + n] * LOG2E;
                const float h_in = carry[row * N + n];   // read before the sync below

                float bv[ITEMS], cv[ITEMS];
                if (stage_b) {
#pragma unroll
                    for (int j = 0; j < ITEMS / 4; ++j) {
                        float4 q = sB[nn][lane_t * (ITEMS / 4) + j];
                        bv[4 * j] = q.x; bv[4 * j + 1] = q.y; bv[4 * j + 2] = q.z; bv[4 * j + 3] = q.w;
                    }
                } else {
#pragma unroll
                    for (int i = 0; i < ITEMS; ++i)
                        bv[i] = (t0 + i < L)
                            ? ld(Bm, bbase + n * p.b_sn + (size_t)(t0 + i) * p.b_st) : 0.f;
                }
                if (stage_c) {
#pragma unroll
                    for (int j = 0; j < ITEMS / 4; ++j) {
                        float4 q = sC[nn][lane_t * (ITEMS / 4) + j];
                        cv[4 * j] = q.x; cv[4 * j + 1] = q.y; cv[4 * j + 2] = q.z; cv[4 * j + 3] = q.w;
                    }
                } else {
#pragma unroll
                    for (int i = 0; i < ITEMS; ++i)
                        cv[i] = (t0 + i < L)
                            ? ld(Cm, cbase + n * p.c_sn + (size_t)(t0 + i) * p.c_st) : 0.f;
                }

                // Discretise and combine this thread's steps.
                float ea[ITEMS], eb[ITEMS];
                float ta = 1.f, tb = 0.f;
#pragma unroll
                for (int i = 0; i < ITEMS; ++i) {
                    ea[i] = exp2f(dt[i] * a2);
                    eb[i] = dt[i] * bv[i] * uu[i];
                    ta = ta * ea[i];
                    tb = ea[i] * tb + eb[i];
                }
                // Inclusive scan across the warp.
#pragma unroll
                for (int off = 1; off < 32; off <<= 1) {
                    float pa = __shfl_up_sync(0xffffffffu, ta, off);
                    float pb = __shfl_up_sync(0xffffffffu, tb, off);
                    if (lane >= (unsigned int)off) {
                        tb = ta * pb + tb;
                        ta = pa * ta;
                    }
                }
                if (lane == 31) {
                    wsum_a[par][row][warp] = ta;
                    wsum_b[par][row][warp] = tb;
                }
                // Exclusive prefix within the warp.
                float xa = __shfl_up_sync(0xffffffffu, ta, 1);
                float xb = __shfl_up_sync(0xffffffffu, tb, 1);
                if (lane == 0) { xa = 1.f; xb = 0.f; }
                __syncthreads();

                // State entering this thread's first step.
                float h = h_in;
                for (unsigned int w = 0; w < warp; ++w) h = wsum_a[par][row][w] * h + wsum_b[par][row][w];
                h = xa * h + xb;
#pragma unroll
                for (int i = 0; i < ITEMS; ++i) {
                    h = ea[i] * h + eb[i];
                    y[i] += cv[i] * h;
                }
                if (lane_t == NT - 1) carry[row * N + n] = h;   // past-the-end steps are identity
            }
        }

        // D skip, z gate, store.
        float zz[ITEMS];
        if (p.has_z) load_items(z, xbase, p.x_st, t0, L, xvec, zz);
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
            float v = y[i] + dskip * uu[i];
            if (p.has_z) v *= silu_f(zz[i]);
            y[i] = v;
        }
        if (ch_ok) {
            if (xvec && t0 + ITEMS <= L) {
                store8(out + xbase + t0, y);
            } else {
#pragma unroll
                for (int i = 0; i < ITEMS; ++i)
                    if (t0 + i < L) st1(out, xbase + (size_t)(t0 + i) * p.x_st, y[i]);
            }
        }
    }

    if (p.state_mode != 0) {
        __syncthreads();   // last carries written
        if (ch_ok)
            for (unsigned int n = lane_t; n < N; n += NT)
                state[((size_t)b * p.dim + d) * N + n] = carry[row * N + n];
    }
}

// Entry points, one per I/O type (src/cuda/geometry.rs picks by the dtype of `out`). Parameter
// lists differ only in the element type of u, delta, B, C, z and out.
extern "C" __global__ void __launch_bounds__(NT * CPB)
selective_scan_f32(ScanParams p, const float* __restrict__ u, const float* __restrict__ delta,
                   const float* __restrict__ A, const float* __restrict__ Bm,
                   const float* __restrict__ Cm, const float* __restrict__ Dv,
                   const float* __restrict__ z, const float* __restrict__ delta_bias,
                   float* __restrict__ state, float* __restrict__ out) {
    scan_impl<float>(p, u, delta, A, Bm, Cm, Dv, z, delta_bias, state, out);
}
extern "C" __global__ void __launch_bounds__(NT * CPB)
selective_scan_f16(ScanParams p, const F16* __restrict__ u, const F16* __restrict__ delta,
                   const float* __restrict__ A, const F16* __restrict__ Bm,
                   const F16* __restrict__ Cm, const float* __restrict__ Dv,
                   const F16* __restrict__ z, const float* __restrict__ delta_bias,
                   float* __restrict__ state, F16* __restrict__ out) {
    scan_impl<F16>(p, u, delta, A, Bm, Cm, Dv, z, delta_bias, state, out);
}
extern "C" __global__ void __launch_bounds__(NT * CPB)
selective_scan_bf16(ScanParams p, const BF16* __restrict__ u, const BF16* __restrict__ delta,
                    const float* __restrict__ A, const BF16* __restrict__ Bm,
                    const BF16* __restrict__ Cm, const float* __restrict__ Dv,
                    const BF16* __restrict__ z, const float* __restrict__ delta_bias,
                    float* __restrict__ state, BF16* __restrict__ out) {
    scan_impl<BF16>(p, u, delta, A, Bm, Cm, Dv, z, delta_bias, state, out);
}
