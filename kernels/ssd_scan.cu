// Mamba-2's scan in head form, f32. CPU mirror: src/cpu/ssd_scan.rs::ssd_scan. Launched
// from src/cuda/ops.rs.
//
// One thread per (batch, channel of E = heads * head_dim) walks the sequence with the
// channel's N states in a local array (SSD_MAX_N; the host refuses larger N). Per step
// one exp2f for the head's decay (A and dt are per head) and one pass over the states:
//   h[n] = exp(dt * A[h]) * h[n] + dt * x * B[g, n];  y = sum_n C[g, n] * h[n] + D[h] * x
//   out = y * silu(z).
// Sequential in time, it serves decode and short prompts; `ssd_scan_chunked` below
// serves prefills.

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

// ---- The chunked form, for prefills of SSD_Q steps or more ----
//
// One block of 256 threads per (batch, head, tile of SSD_PT channels) walks the sequence
// a chunk of SSD_Q steps at a time, the tile's state (SSD_PT x N) in shared memory. Per
// chunk, with acs the running sum of dt*A inside the chunk (inclusive) and xd = dt*x:
//   cb[t, s] = (C_t . B_s) * exp(acs[t] - acs[s])            for s <= t, else 0
//   y[t, p]  = sum_s cb[t, s] * xd[s, p] + exp(acs[t]) * sum_n C[t, n] * h[p, n]
//   h[p, n] <- exp(acs[end]) * h[p, n] + sum_s exp(acs[end] - acs[s]) * xd[s, p] * B[s, n]
// the recurrence above unrolled over the chunk (mamba_ssm's ssd_minimal_discrete with the
// chunk's states passed on at once); every phase is a small matmul spread over the block.
// Mirrors shaders/ssd_scan.wgsl's ssd_scan_chunked (the same tiles, so that both stay
// within WebGPU's 16 KiB of workgroup memory); launched when len >= SSD_Q
// (src/cuda/geometry.rs).

#define SSD_Q 32
#define SSD_PT 8
#define SSD_THREADS 256

extern "C" __global__ void __launch_bounds__(SSD_THREADS) ssd_scan_chunked(
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
    // The tile's state, [p * (N + 1) + n]: the padded row keeps the 8 channels of a
    // phase-3 read in different banks.
    __shared__ float sh_h[SSD_PT * (SSD_MAX_N + 1)];
    __shared__ float sh_cb[SSD_Q * SSD_Q];      // cb[t * SSD_Q + s]
    __shared__ float sh_xd[SSD_Q * SSD_PT];     // dt * x, [s * SSD_PT + p]
    __shared__ float sh_dt[SSD_Q];
    __shared__ float sh_acs[SSD_Q];
    __shared__ float sh_din[SSD_Q];   // exp(acs[t]): the decay from the chunk's start
    __shared__ float sh_dout[SSD_Q];  // exp(acs[end] - acs[s]): the decay to its end
    const unsigned int li = threadIdx.x;
    const unsigned int n_pt = (p.head_dim + SSD_PT - 1) / SSD_PT;
    const unsigned int wg = blockIdx.x;  // (batch, head, channel tile)
    if (wg >= p.batch * p.heads * n_pt) return;
    const unsigned int e = p.heads * p.head_dim;
    const unsigned int bh = wg / n_pt, b = bh / p.heads, h = bh % p.heads;
    const unsigned int g = h / (p.heads / p.groups);
    const unsigned int p0 = (wg % n_pt) * SSD_PT;
    const unsigned int pc = min((unsigned int)SSD_PT, p.head_dim - p0);
    const unsigned int N = p.dstate, tile = SSD_PT * N;
    const size_t s0 = ((size_t)bh * p.head_dim + p0) * N;  // the tile's state, (batch, E, N)
    const unsigned int hs = N + 1;  // sh_h's row stride
    for (unsigned int k = li; k < tile; k += SSD_THREADS)
        sh_h[k + k / N] = p.state_mode == STATE_CARRY && k / N < pc ? state[s0 + k] : 0.f;
    const float a2 = A[h] * LOG2E;
    for (unsigned int t0 = p.t_begin; t0 < p.t_end; t0 += SSD_Q) {
        const unsigned int cl = min((unsigned int)SSD_Q, p.t_end - t0);  // steps here
        const size_t row0 = (size_t)b * p.len + t0;
        if (li < SSD_Q) {
            float dt = 0.f;
            if (li < cl) {
                dt = dt_raw[(row0 + li) * p.heads + h] + (p.has_dt_bias ? dt_bias[h] : 0.f);
                if (p.dt_softplus) dt = softplus_f(dt);
            }
            sh_dt[li] = dt;
        }
        __syncthreads();
        if (li < SSD_Q) {
            float acc = 0.f;  // in units of log2: the decays are exp2f
            for (unsigned int r = 0; r <= li; ++r) acc += sh_dt[r] * a2;
            sh_acs[li] = acc;
        }
        {
            const unsigned int s = li / SSD_PT, pp = li % SSD_PT;
            sh_xd[li] = s < cl && pp < pc
                ? sh_dt[s] * x[(row0 + s) * e + h * p.head_dim + p0 + pp] : 0.f;
        }
        __syncthreads();
        if (li < SSD_Q) {
            sh_din[li] = exp2f(sh_acs[li]);
            sh_dout[li] = exp2f(sh_acs[cl - 1] - sh_acs[li]);
        }
        {
            // cb in 2x2 blocks, one per thread: rows t0, t0 + 1 against columns s0, s0 + 1,
            // so that each B and C value loaded serves two products.
            const unsigned int t0 = (li / 16) * 2, s0b = (li % 16) * 2;
            float c00 = 0.f, c01 = 0.f, c10 = 0.f, c11 = 0.f;
            if (s0b <= t0 + 1 && t0 < cl) {
                const size_t last = cl - 1;
                const float* ca = Cm + ((row0 + t0) * p.groups + g) * N;
                const float* cb = Cm + ((row0 + min((size_t)t0 + 1, last)) * p.groups + g) * N;
                const float* ba = Bm + ((row0 + min((size_t)s0b, last)) * p.groups + g) * N;
                const float* bb = Bm + ((row0 + min((size_t)s0b + 1, last)) * p.groups + g) * N;
                for (unsigned int n = 0; n < N; ++n) {
                    c00 = fmaf(ca[n], ba[n], c00);
                    c01 = fmaf(ca[n], bb[n], c01);
                    c10 = fmaf(cb[n], ba[n], c10);
                    c11 = fmaf(cb[n], bb[n], c11);
                }
            }
            // C_t . B_s times the decay from s to t; zero above the diagonal and past cl.
            auto entry = [&](float dot, unsigned int t, unsigned int s) {
                return s > t || t >= cl ? 0.f : dot * exp2f(sh_acs[t] - sh_acs[s]);
            };
            sh_cb[t0 * SSD_Q + s0b] = entry(c00, t0, s0b);
            sh_cb[t0 * SSD_Q + s0b + 1] = entry(c01, t0, s0b + 1);
            sh_cb[(t0 + 1) * SSD_Q + s0b] = entry(c10, t0 + 1, s0b);
            sh_cb[(t0 + 1) * SSD_Q + s0b + 1] = entry(c11, t0 + 1, s0b + 1);
        }
        __syncthreads();
        {
            const unsigned int t = li / SSD_PT, pp = li % SSD_PT;
            if (t < cl && pp < pc) {
                float y = 0.f;
                for (unsigned int s = 0; s <= t; ++s) y += sh_cb[t * SSD_Q + s] * sh_xd[s * SSD_PT + pp];
                const float* ct = Cm + ((row0 + t) * p.groups + g) * N;
                float off = 0.f;
                for (unsigned int n = 0; n < N; ++n) off += ct[n] * sh_h[pp * hs + n];
                y += sh_din[t] * off;
                const size_t o = (row0 + t) * e + h * p.head_dim + p0 + pp;
                if (p.has_d) y += Dv[h] * x[o];
                if (p.has_z) y *= silu_f(z[o]);
                out[o] = y;
            }
        }
        __syncthreads();
        const float dend = sh_din[cl - 1];
        for (unsigned int k = li; k < tile; k += SSD_THREADS) {
            const unsigned int pp = k / N, n = k % N;
            float hv = dend * sh_h[pp * hs + n];
            for (unsigned int s = 0; s < cl; ++s)
                hv += sh_dout[s] * sh_xd[s * SSD_PT + pp] * Bm[((row0 + s) * p.groups + g) * N + n];
            sh_h[pp * hs + n] = hv;
        }
        __syncthreads();
    }
    if (p.state_mode != STATE_NONE)
        for (unsigned int k = li; k < tile; k += SSD_THREADS)
            if (k / N < pc) state[s0 + k] = sh_h[k + k / N];
}
