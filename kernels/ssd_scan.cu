// Mamba-2's scan in head form, f32. CPU mirror: src/cpu/ssd_scan.rs::ssd_scan. Launched
// from src/cuda/ops.rs.
//
// One thread per (batch, channel of E = heads * head_dim) walks the sequence with the
// channel's N states in a local array (SSD_MAX_N; the host refuses larger N). Per step
// one exp2f for the head's decay (A and dt are per head) and one pass over the states:
//   h[n] = exp(dt * A[h]) * h[n] + dt * x * B[g, n];  y = sum_n C[g, n] * h[n] + D[h] * x
//   out = y * silu(z).
// Sequential in time: the chunked SSD form (tensor-core matmuls inside a chunk, states
// passed between chunks) is the faster one for long prefills and is not written yet.

#include "common.cuh"

#define SSD_MAX_N 256

extern "C" __global__ void ssd_scan(
    SsdParams p,
    const float* __restrict__ x,        // (batch, L, E)
    const float* __restrict__ dt_raw,   // (batch, L, heads)
    const float* __restrict__ A,        // (heads)
    const float* __restrict__ Bm,       // (batch, L, G, N)
    const float* __restrict__ Cm,       // (batch, L, G, N)
    const float* __restrict__ Dv,       // (heads) or unused
    const float* __restrict__ z,        // (batch, L, E) or unused
    const float* __restrict__ dt_bias,  // (heads) or unused
    float* __restrict__ state,          // (batch, heads, head_dim, N) or unused
    float* __restrict__ out)            // (batch, L, E)
{
    const unsigned int e = p.heads * p.head_dim;
    const unsigned int bc = blockIdx.x * blockDim.x + threadIdx.x;
    if (bc >= p.batch * e) return;
    const unsigned int b = bc / e, ch = bc % e;
    const unsigned int h = ch / p.head_dim;
    const unsigned int g = h / (p.heads / p.groups);
    const unsigned int N = p.dstate;
    float hs[SSD_MAX_N];
    float* hp = state + (size_t)bc * N;
    for (unsigned int n = 0; n < N; ++n) hs[n] = p.state_mode == STATE_CARRY ? hp[n] : 0.f;
    const float a2 = A[h] * LOG2E;
    for (unsigned int t = p.t_begin; t < p.t_end; ++t) {
        const size_t row = (size_t)b * p.len + t;
        float dt = dt_raw[row * p.heads + h] + (p.has_dt_bias ? dt_bias[h] : 0.f);
        if (p.dt_softplus) dt = softplus_f(dt);
        const float decay = exp2f(dt * a2);
        const float xv = x[row * e + ch];
        const float dx = dt * xv;
        const float* bp = Bm + (row * p.groups + g) * N;
        const float* cp = Cm + (row * p.groups + g) * N;
        float y = 0.f;
        for (unsigned int n = 0; n < N; ++n) {
            const float hn = decay * hs[n] + dx * bp[n];
            hs[n] = hn;
            y += cp[n] * hn;
        }
        if (p.has_d) y += Dv[h] * xv;
        if (p.has_z) y *= silu_f(z[row * e + ch]);
        out[row * e + ch] = y;
    }
    if (p.state_mode != STATE_NONE)
        for (unsigned int n = 0; n < N; ++n) hp[n] = hs[n];
}
