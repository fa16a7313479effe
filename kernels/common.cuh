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
    unsigned int batch, d_inner, dt_rank, dstate;
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

// ---- Math (as the CPU reference's helpers in src/cpu/common.rs) ----

#define LOG2E 1.4426950408889634f

// PyTorch's softplus: linear above the threshold 20.
__device__ __forceinline__ float softplus_f(float x) {
    return x > 20.f ? x : log1pf(expf(x));
}

__device__ __forceinline__ float silu_f(float x) {
    return x / (1.f + expf(-x));
}
