// The fused decode step of a Mamba-1 layer (src/ops/decode.rs): what its three modules
// decode_step/mixer_in.wgsl, decode_step/x_proj.wgsl and decode_step/ssm_step.wgsl
// share; the fourth op is matmul.wgsl's `matmul_decode` accumulating into the residual.
// Mirrors src/cpu/decode_step.rs, which runs the unfused reference ops.
//
// The two matrix-vector products are laid out as matmul.wgsl's `matmul_decode`: a
// workgroup of 256 invocations owns 8 weight rows, 32 invocations per row stride over K
// (coalesced), each weight element is read once for all (at most 8) sequences, and the
// partial sums are reduced in workgroup memory.
//
// Weights are bound as raw 32-bit words, decoded by W_DTYPE (in_proj, x_proj, dt_proj)
// and NORM_DTYPE (the norm weight); see `decode` in common.wgsl. The host binds them
// whole (the backend takes the fused path only when each fits one binding).

//#include "common.wgsl"

override W_DTYPE: u32 = DTYPE_F32;
override NORM_DTYPE: u32 = DTYPE_F32;

const ROWS: u32 = 8u;   // weight rows per workgroup
const LANES: u32 = 32u; // invocations per weight row
const MAX_M: u32 = 8u;  // sequences (src/ops/decode.rs, FUSED_MAX_BATCH)

var<workgroup> red: array<f32, 2048>; // [MAX_M][256] partial sums
var<workgroup> inv_rms: array<f32, 8>;

// Sums red[m][lid] over the 32 lanes of each row into lane 0 (all invocations call it).
fn reduce_lanes(lid: u32) {
    let lane = lid % LANES;
    for (var off = LANES / 2u; off > 0u; off = off / 2u) {
        workgroupBarrier();
        if lane < off {
            for (var i = 0u; i < MAX_M; i++) {
                red[i * 256u + lid] = red[i * 256u + lid] + red[i * 256u + lid + off];
            }
        }
    }
}
