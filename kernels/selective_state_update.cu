// One decode step of the selective state space, f32. CPU mirror:
// src/cpu/selective_state_update.rs::selective_state_update. Launched from src/cuda/ops.rs.
//
// One thread per (batch, channel): it reads the channel's N states (float4 when N is a
// multiple of 4), updates them in registers, writes them back in place and writes
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
    const float dtx = dt * xv;
    const float dt2 = dt * LOG2E;

    float y = 0.f;
    if (N % 4 == 0) {
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
    if (p.has_d) y += Dv[d] * xv;
    if (p.has_z) y *= silu_f(z[bd]);
    out[bd] = y;
}
