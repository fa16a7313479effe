// What every kernel shares, declared once: the parameter structs (the same fields, in
// the same order, as the #[repr(C)] structs of src/params.rs), their flag codes, the
// 16-bit float types with their conversions, and the math helpers. Each .cu file starts
// with `#include "common.cuh"`; NVRTC gets this file as a header
// (src/cuda/nvrtc.rs, `compile`). The WGSL shaders hold the same structs in
// shaders/common.wgsl.
//
// No CUDA headers: NVRTC from pip ships none, so half conversions are inline PTX `cvt`
// (f16) and bit operations (bf16).
#pragma once

// ---- Parameter structs (src/params.rs) ----

struct ScanParams {
    unsigned int batch, dim, len, dstate;
    unsigned int x_sb, x_sd, x_st;
    unsigned int b_sb, b_sg, b_sn, b_st, b_group_dim;
    unsigned int c_sb, c_sg, c_sn, c_st, c_group_dim;
    unsigned int has_d, has_z, has_delta_bias, delta_softplus;
    unsigned int state_mode;  // STATE_*
    unsigned int _pad0, _pad1;
};

struct SsdParams {
    unsigned int batch, len, heads, head_dim, dstate, groups;
    unsigned int has_d, has_z, has_dt_bias, dt_softplus, state_mode;
    unsigned int t_begin, t_end, _pad0, _pad1, _pad2;
};

struct StepParams {
    unsigned int batch, dim, dstate, group_dim, groups;
    unsigned int has_d, has_z, has_dt_bias, dt_softplus;
    unsigned int _pad0, _pad1, _pad2;
};

struct ConvParams {
    unsigned int batch, dim, len, width;
    unsigned int x_sb, x_sd, x_st;
    unsigned int has_bias, silu;
    unsigned int state_mode;  // STATE_*
    unsigned int _pad0, _pad1;
};

struct MatmulParams {
    unsigned int m, n, k, has_bias, accumulate;
    unsigned int _pad0, _pad1, _pad2;
};

struct MixerInParams {
    unsigned int batch, d_model, d_inner, width;
    float eps;
    unsigned int has_conv_bias, _pad0, _pad1;
};

struct StepProjParams {
    unsigned int batch, d_inner, dt_rank, dstate, has_norm;
    float norm_eps;
    unsigned int _pad0, _pad1;
};

struct NormParams {
    unsigned int rows, dim;
    float eps;
    unsigned int has_residual, groups, _pad0, _pad1, _pad2;
};

struct EmbeddingParams {
    unsigned int count, rows, dim, _pad0;
};

struct ElementwiseParams {
    unsigned int len, op, _pad0, _pad1;
};

struct ArgmaxParams {
    unsigned int rows, cols, _pad0, _pad1;
};

struct CopyParams {
    unsigned int len, src_offset, dst_offset, _pad0;
};

// `state_mode` of ScanParams / ConvParams (src/params.rs, STATE_*).
#define STATE_NONE 0u
#define STATE_FINAL 1u
#define STATE_CARRY 2u

// `op` of ElementwiseParams (src/ops/mod.rs, the Elementwise discriminants).
#define OP_SILU 0u
#define OP_SOFTPLUS 1u
#define OP_ADD 2u
#define OP_MUL 3u
#define OP_MUL_SILU 4u

// ---- 16-bit floats: raw bits (f16 IEEE half, bf16 the top half of an f32) ----

struct F16 { unsigned short bits; };
struct BF16 { unsigned short bits; };

__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ float bf16_to_f32(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(F16 v) { return f16_to_f32(v.bits); }
__device__ __forceinline__ float to_f32(BF16 v) { return bf16_to_f32(v.bits); }

// Element i of a float / F16 / BF16 array, widened to f32.
template <typename T>
__device__ __forceinline__ float ld(const T* __restrict__ p, size_t i) { return to_f32(p[i]); }

__device__ __forceinline__ unsigned short f32_to_f16_bits(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
// Round to nearest-even in integer arithmetic (cvt.rn.bf16.f32 needs sm_80; this runs
// anywhere). NaN stays NaN (quietened); overflow rounds to infinity as it should.
__device__ __forceinline__ unsigned short f32_to_bf16_bits(float f) {
    unsigned int x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (unsigned short)(x >> 16);
}

// A small tensor whose float type is chosen at run time (a bias, a norm weight):
// KIND_F32 / KIND_F16 / KIND_BF16 (src/cuda/geometry.rs, `bias_kind`).
#define KIND_F32 0u
#define KIND_F16 1u
#define KIND_BF16 2u
__device__ __forceinline__ float load_kind(const void* b, unsigned int kind, size_t i) {
    if (kind == KIND_F16) return ld(static_cast<const F16*>(b), i);
    if (kind == KIND_BF16) return ld(static_cast<const BF16*>(b), i);
    return ld(static_cast<const float*>(b), i);
}

// ---- Math (as the CPU reference's helpers in src/cpu/common.rs) ----

#define LOG2E 1.4426950408889634f

// PyTorch's softplus: linear above the threshold 20.
__device__ __forceinline__ float softplus_f(float x) {
    return x > 20.f ? x : log1pf(expf(x));
}

__device__ __forceinline__ float silu_f(float x) {
    return x / (1.f + expf(-x));
}

// ---- The state update of one channel (selective_state_update.cu, decode_step.cu) ----

// h[k] = exp(dt * A[k]) * h[k] + dt * x * B[k] for the N states of one channel, in
// place (float4 when N is a multiple of 4 and the rows are 16-byte aligned: B and C of
// the fused step sit at any offset of their row); returns sum_k C[k] * h[k].
__device__ __forceinline__ float state_update_row(float dt, float xv, const float* __restrict__ ap,
                                                  const float* __restrict__ bp,
                                                  const float* __restrict__ cp,
                                                  float* __restrict__ hp, unsigned int N) {
    const float dtx = dt * xv;
    const float dt2 = dt * LOG2E;
    float y = 0.f;
    const size_t addr = (size_t)ap | (size_t)bp | (size_t)cp | (size_t)hp;
    if (N % 4 == 0 && addr % 16 == 0) {
        for (unsigned int k = 0; k < N; k += 4) {
            float4 h = *reinterpret_cast<const float4*>(hp + k);
            float4 a = *reinterpret_cast<const float4*>(ap + k);
            float4 bb = *reinterpret_cast<const float4*>(bp + k);
            float4 cc = *reinterpret_cast<const float4*>(cp + k);
            h.x = exp2f(dt2 * a.x) * h.x + dtx * bb.x;
            h.y = exp2f(dt2 * a.y) * h.y + dtx * bb.y;
            h.z = exp2f(dt2 * a.z) * h.z + dtx * bb.z;
            h.w = exp2f(dt2 * a.w) * h.w + dtx * bb.w;
            y += cc.x * h.x + cc.y * h.y + cc.z * h.z + cc.w * h.w;
            *reinterpret_cast<float4*>(hp + k) = h;
        }
    } else {
        for (unsigned int k = 0; k < N; ++k) {
            float h = exp2f(dt2 * ap[k]) * hp[k] + dtx * bp[k];
            y += cp[k] * h;
            hp[k] = h;
        }
    }
    return y;
}
