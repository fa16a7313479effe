// One decode step of the selective state space, f32. CPU mirror:
// src/cpu/selective_state_update.rs::selective_state_update. Launched from src/cuda/ops.rs.
//
// One thread per (batch, channel): it reads the channel's N states (float4 when N is a
// multiple of 4; `state_update_row` of common.cuh), updates them in registers, writes
// them back in place and writes
//   out = (sum_n C[n] * h[n] + D * x) * silu(z).
// B/C (batch, G, N) are the same for every channel of a group, so they are served by
// L1 to the threads of a warp.

#include "common.cuh"

extern "C" __global__ void selective_state_update(
    StepParams p,
    const float* __restrict__ x,        // (batch, dim)
    const float* __restrict__ dt_raw,   // (batch, dim)
    const float* __restrict__ A,        // (dim, N)
    const float* __restrict__ Bm,       // (batch, G, N)
    const float* __restrict__ Cm,       // (batch, G, N)
    const float* __restrict__ Dv,       // (dim) or unused
    const float* __restrict__ z,        // (batch, dim) or unused
    const float* __restrict__ dt_bias,  // (dim) or unused
    float* __restrict__ state,          // (batch, dim, N), updated in place
    float* __restrict__ out)            // (batch, dim)
{
    const unsigned int bd = blockIdx.x * blockDim.x + threadIdx.x;
    if (bd >= p.batch * p.dim) return;
    const unsigned int b = bd / p.dim, d = bd % p.dim;
    const unsigned int N = p.dstate;
    const unsigned int g = d / p.group_dim;
    const float* bp = Bm + ((size_t)b * p.groups + g) * N;
    const float* cp = Cm + ((size_t)b * p.groups + g) * N;
    const float* ap = A + (size_t)d * N;
    float* hp = state + (size_t)bd * N;

    const float xv = x[bd];
    float dt = dt_raw[bd] + (p.has_dt_bias ? dt_bias[d] : 0.f);
    if (p.dt_softplus) dt = softplus_f(dt);
    float y = state_update_row(dt, xv, ap, bp, cp, hp, N);
    if (p.has_d) y += Dv[d] * xv;
    if (p.has_z) y *= silu_f(z[bd]);
    out[bd] = y;
}
