// The fused decode step of a Mamba-1 layer (src/ops/decode.rs): mixer_in, x_proj and
// ssm_step; the fourth op is matmul.cu's matmul_rows accumulating into the residual.
// CPU mirror: src/cpu/decode_step.rs (the unfused reference ops back to back); WGSL:
// shaders/decode_step/. Launched from src/cuda/decode_step.rs.
//
// The two matrix-vector products are laid out as matmul_rows: one warp per weight row,
// lanes striding over K (coalesced), each weight read once for all (at most MAXM)
// sequences, f32 accumulation, warp-shuffle reduction. mixer_in first computes the
// inverse RMS of each sequence's residual in every block (the residual is only read, so
// no block waits for another) and applies it to the finished dot product.

#include "common.cuh"

#define MAXM 8   // sequences (src/ops/decode.rs, FUSED_MAX_BATCH)
#define WARPS 8  // weight rows per block

__device__ __forceinline__ float warp_sum(float s) {
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}

template <typename W>
__device__ void mixer_in_impl(const MixerInParams& p, unsigned int norm_kind,
                              const float* __restrict__ h, const void* __restrict__ norm_w,
                              const W* __restrict__ w_x, const W* __restrict__ w_z,
                              const float* __restrict__ conv_w, const float* __restrict__ conv_b,
                              float* __restrict__ conv_state, float* __restrict__ xc,
                              float* __restrict__ z) {
    __shared__ float part[MAXM][WARPS];
    __shared__ float inv_rms[MAXM];
    const unsigned int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const size_t D = p.d_model;
    const unsigned int E = p.d_inner;
    for (unsigned int m = 0; m < MAXM; ++m) {
        float s = 0.f;
        if (m < p.batch)
            for (size_t k = threadIdx.x; k < D; k += blockDim.x) s = fmaf(h[m * D + k], h[m * D + k], s);
        s = warp_sum(s);
        if (lane == 0) part[m][warp] = s;
    }
    __syncthreads();
    if (threadIdx.x < MAXM) {
        float t = 0.f;
        for (unsigned int w = 0; w < WARPS; ++w) t += part[threadIdx.x][w];
        inv_rms[threadIdx.x] = rsqrtf(t / (float)D + p.eps);
    }
    __syncthreads();

    const unsigned int row = blockIdx.x * WARPS + warp;  // output row of [x; z]
    if (row >= 2 * E) return;                             // whole warps exit together
    const W* wr = row < E ? w_x + (size_t)row * D : w_z + (size_t)(row - E) * D;
    float acc[MAXM];
#pragma unroll
    for (unsigned int m = 0; m < MAXM; ++m) acc[m] = 0.f;
    for (size_t k = lane; k < D; k += 32) {
        const float wv = ld(wr, k) * load_kind(norm_w, norm_kind, k);
#pragma unroll
        for (unsigned int m = 0; m < MAXM; ++m)
            if (m < p.batch) acc[m] = fmaf(h[m * D + k], wv, acc[m]);
    }
#pragma unroll
    for (unsigned int m = 0; m < MAXM; ++m) acc[m] = warp_sum(acc[m]);
    if (lane != 0) return;
    const unsigned int K = p.width;
    for (unsigned int m = 0; m < p.batch; ++m) {
        const float v = acc[m] * inv_rms[m];
        if (row >= E) {
            z[(size_t)m * E + row - E] = v;
            continue;
        }
        // The conv step of channel `row`: the state holds the last K-1 inputs, oldest first.
        float* st = conv_state + ((size_t)m * E + row) * (K - 1);
        const float* cw = conv_w + (size_t)row * K;
        float y = p.has_conv_bias ? conv_b[row] : 0.f;
        for (unsigned int j = 0; j + 1 < K; ++j) y = fmaf(cw[j], st[j], y);
        y = fmaf(cw[K - 1], v, y);
        for (unsigned int j = 0; j + 2 < K; ++j) st[j] = st[j + 1];
        st[K - 2] = v;
        xc[(size_t)m * E + row] = silu_f(y);
    }
}

template <typename W>
__device__ void x_proj_impl(const StepProjParams& p, const float* __restrict__ xc,
                            const W* __restrict__ w_dt, const W* __restrict__ w_b,
                            const W* __restrict__ w_c, float* __restrict__ dbc) {
    const unsigned int lane = threadIdx.x % 32;
    const unsigned int row = blockIdx.x * WARPS + threadIdx.x / 32;
    const unsigned int R = p.dt_rank, N = p.dstate, width = R + 2 * N;
    if (row >= width) return;
    const size_t E = p.d_inner;
    const W* wr = row < R       ? w_dt + (size_t)row * E
                  : row < R + N ? w_b + (size_t)(row - R) * E
                                : w_c + (size_t)(row - R - N) * E;
    float acc[MAXM];
#pragma unroll
    for (unsigned int m = 0; m < MAXM; ++m) acc[m] = 0.f;
    for (size_t k = lane; k < E; k += 32) {
        const float wv = ld(wr, k);
#pragma unroll
        for (unsigned int m = 0; m < MAXM; ++m)
            if (m < p.batch) acc[m] = fmaf(xc[m * E + k], wv, acc[m]);
    }
#pragma unroll
    for (unsigned int m = 0; m < MAXM; ++m) acc[m] = warp_sum(acc[m]);
    if (lane == 0)
        for (unsigned int m = 0; m < p.batch; ++m) dbc[(size_t)m * width + row] = acc[m];
}

// 1 / sqrt(mean(v^2) + eps) of v[0 .. len).
__device__ __forceinline__ float inv_rms(const float* __restrict__ v, unsigned int len, float eps) {
    float s = 0.f;
    for (unsigned int j = 0; j < len; ++j) s = fmaf(v[j], v[j], s);
    return rsqrtf(s / (float)len + eps);
}

// One thread per (sequence, channel): dt = softplus(dt_proj[c] · dbc[..R] + dt_bias[c]),
// then the state update of selective_state_update.cu with B, C from dbc (with has_norm,
// Falcon-Mamba, Δ_low, B and C RMS-normalised first).
template <typename W>
__device__ void ssm_step_impl(const StepProjParams& p, const float* __restrict__ xc,
                              const float* __restrict__ dbc, const float* __restrict__ z,
                              const W* __restrict__ dt_proj, const float* __restrict__ dt_bias,
                              const float* __restrict__ A, const float* __restrict__ Dv,
                              float* __restrict__ state, float* __restrict__ y) {
    const unsigned int E = p.d_inner;
    const unsigned int bd = blockIdx.x * blockDim.x + threadIdx.x;
    if (bd >= p.batch * E) return;
    const unsigned int m = bd / E, c = bd % E;
    const unsigned int R = p.dt_rank, N = p.dstate;
    const float* row = dbc + (size_t)m * (R + 2 * N);
    // Falcon-Mamba's weightless RMSNorm of Δ_low, B and C, as scales on the raw values
    // (each thread recomputes them: R + 2N values). B's scale goes into x, C's onto y.
    float s_dt = 1.f, s_b = 1.f, s_c = 1.f;
    if (p.has_norm) {
        s_dt = inv_rms(row, R, p.norm_eps);
        s_b = inv_rms(row + R, N, p.norm_eps);
        s_c = inv_rms(row + R + N, N, p.norm_eps);
    }
    const W* wr = dt_proj + (size_t)c * R;
    float dt = 0.f;
    for (unsigned int j = 0; j < R; ++j) dt = fmaf(ld(wr, j), row[j] * s_dt, dt);
    dt = softplus_f(dt + dt_bias[c]);
    const float xv = xc[bd];
    float out = s_c * state_update_row(dt, xv * s_b, A + (size_t)c * N, row + R, row + R + N,
                                       state + (size_t)bd * N, N);
    out += Dv[c] * xv;
    y[bd] = out * silu_f(z[bd]);
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
mixer_in_f32(MixerInParams p, unsigned int norm_kind, const float* h, const void* norm_w,
            const float* w_x, const float* w_z, const float* conv_w, const float* conv_b,
            float* conv_state, float* xc, float* z) {
    mixer_in_impl(p, norm_kind, h, norm_w, w_x, w_z, conv_w, conv_b, conv_state, xc, z);
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
mixer_in_f16(MixerInParams p, unsigned int norm_kind, const float* h, const void* norm_w,
            const F16* w_x, const F16* w_z, const float* conv_w, const float* conv_b,
            float* conv_state, float* xc, float* z) {
    mixer_in_impl(p, norm_kind, h, norm_w, w_x, w_z, conv_w, conv_b, conv_state, xc, z);
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
mixer_in_bf16(MixerInParams p, unsigned int norm_kind, const float* h, const void* norm_w,
            const BF16* w_x, const BF16* w_z, const float* conv_w, const float* conv_b,
            float* conv_state, float* xc, float* z) {
    mixer_in_impl(p, norm_kind, h, norm_w, w_x, w_z, conv_w, conv_b, conv_state, xc, z);
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
x_proj_f32(StepProjParams p, const float* xc, const float* w_dt, const float* w_b, const float* w_c,
          float* dbc) {
    x_proj_impl(p, xc, w_dt, w_b, w_c, dbc);
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
x_proj_f16(StepProjParams p, const float* xc, const F16* w_dt, const F16* w_b, const F16* w_c,
          float* dbc) {
    x_proj_impl(p, xc, w_dt, w_b, w_c, dbc);
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
x_proj_bf16(StepProjParams p, const float* xc, const BF16* w_dt, const BF16* w_b, const BF16* w_c,
          float* dbc) {
    x_proj_impl(p, xc, w_dt, w_b, w_c, dbc);
}

extern "C" __global__ void ssm_step_f32(StepProjParams p, const float* xc, const float* dbc,
                                       const float* z, const float* dt_proj, const float* dt_bias,
                                       const float* A, const float* Dv, float* state, float* y) {
    ssm_step_impl(p, xc, dbc, z, dt_proj, dt_bias, A, Dv, state, y);
}

extern "C" __global__ void ssm_step_f16(StepProjParams p, const float* xc, const float* dbc,
                                       const float* z, const F16* dt_proj, const float* dt_bias,
                                       const float* A, const float* Dv, float* state, float* y) {
    ssm_step_impl(p, xc, dbc, z, dt_proj, dt_bias, A, Dv, state, y);
}

extern "C" __global__ void ssm_step_bf16(StepProjParams p, const float* xc, const float* dbc,
                                       const float* z, const BF16* dt_proj, const float* dt_bias,
                                       const float* A, const float* Dv, float* state, float* y) {
    ssm_step_impl(p, xc, dbc, z, dt_proj, dt_bias, A, Dv, state, y);
}
