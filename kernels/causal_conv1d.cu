// Causal depthwise conv1d, f32: over a sequence and one decode step.
// CPU mirror: src/cpu/causal_conv1d.rs (causal_conv1d, causal_conv1d_update).
// Launched from src/cuda/ops.rs.
//
// Sequence: `causal_conv1d` runs one thread per output element, with the fastest thread
// index on whichever axis has stride 1 (time for ChannelMajor, channel for TokenMajor),
// so loads and stores coalesce in both layouts. Inputs before t = 0 come from the conv
// state (state_mode carry) or are zero. When a state is kept, `causal_conv1d_state`
// then shifts the sequence into it: launched after the conv on the same stream, so the
// conv has read the old state before it is overwritten.

#include "common.cuh"

extern "C" __global__ void causal_conv1d(
    ConvParams p,
    const float* __restrict__ x,       // (batch, dim, L) via x strides
    const float* __restrict__ w,       // (dim, K)
    const float* __restrict__ bias,    // (dim) or unused
    const float* __restrict__ state,   // (batch, dim, K-1) or unused
    float* __restrict__ out)           // like x
{
    const unsigned int idx = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int total = p.batch * p.dim * p.len;
    if (idx >= total) return;
    unsigned int b, d, t;
    if (p.x_st == 1) {          // time fastest
        t = idx % p.len; d = (idx / p.len) % p.dim; b = idx / (p.len * p.dim);
    } else {                    // channel fastest
        d = idx % p.dim; t = (idx / p.dim) % p.len; b = idx / (p.len * p.dim);
    }
    const unsigned int K = p.width, pre = K - 1;
    const unsigned int base = b * p.x_sb + d * p.x_sd;
    const float* wd = w + (size_t)d * K;
    const float* sd = state + ((size_t)b * p.dim + d) * pre;
    float acc = p.has_bias ? bias[d] : 0.f;
    for (unsigned int j = 0; j < K; ++j) {
        // Extended position e = t + j in (state ++ x); x index e - pre.
        const unsigned int e = t + j;
        float v;
        if (e >= pre) v = x[base + (e - pre) * p.x_st];
        else v = p.state_mode == STATE_CARRY ? sd[e] : 0.f;
        acc += wd[j] * v;
    }
    out[base + t * p.x_st] = p.silu ? silu_f(acc) : acc;
}

extern "C" __global__ void causal_conv1d_state(
    ConvParams p,
    const float* __restrict__ x,   // (batch, dim, L) via x strides
    float* __restrict__ state)     // (batch, dim, K-1), updated in place
{
    const unsigned int bd = blockIdx.x * blockDim.x + threadIdx.x;
    if (bd >= p.batch * p.dim) return;
    const unsigned int b = bd / p.dim, d = bd % p.dim;
    const unsigned int pre = p.width - 1;
    const unsigned int base = b * p.x_sb + d * p.x_sd;
    float* sd = state + (size_t)bd * pre;
    // new[j] = ext[len + j]; ascending j reads index len + j > j before it is written.
    for (unsigned int j = 0; j < pre; ++j) {
        const unsigned int e = p.len + j;
        float v;
        if (e >= pre) v = x[base + (e - pre) * p.x_st];
        else v = p.state_mode == STATE_CARRY ? sd[e] : 0.f;
        sd[j] = v;
    }
}

extern "C" __global__ void causal_conv1d_update(
    ConvParams p,
    const float* __restrict__ x,      // (batch, dim)
    const float* __restrict__ w,      // (dim, K)
    const float* __restrict__ bias,   // (dim) or unused
    float* __restrict__ state,        // (batch, dim, K-1), updated in place
    float* __restrict__ out)          // (batch, dim)
{
    const unsigned int bd = blockIdx.x * blockDim.x + threadIdx.x;
    if (bd >= p.batch * p.dim) return;
    const unsigned int d = bd % p.dim;
    const unsigned int K = p.width, pre = K - 1;
    const float* wd = w + (size_t)d * K;
    float* sd = state + (size_t)bd * pre;
    const float xv = x[bd];
    float acc = p.has_bias ? bias[d] : 0.f;
    for (unsigned int j = 0; j < pre; ++j) {
        const float s = sd[j];
        acc += wd[j] * s;
        if (j > 0) sd[j - 1] = s;
    }
    acc += wd[pre] * xv;
    sd[pre - 1] = xv;
    out[bd] = p.silu ? silu_f(acc) : acc;
}
