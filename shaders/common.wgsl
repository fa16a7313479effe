// What every shader shares, declared once: the parameter structs (the same fields, in
// the same order, as the #[repr(C)] structs of src/params.rs and the window of
// src/wgpu/window.rs), their flag codes, and the math helpers. Joined into each shader
// by its `//#include "common.wgsl"` line (src/wgpu/kernels.rs, `shader_source`).
// The CUDA kernels hold the same structs in kernels/common.cuh.

// ---- Parameter structs (src/params.rs) ----

struct ScanParams {
    batch: u32,
    dim: u32,
    len: u32,
    dstate: u32,
    x_sb: u32,
    x_sd: u32,
    x_st: u32,
    b_sb: u32,
    b_sg: u32,
    b_sn: u32,
    b_st: u32,
    b_group_dim: u32,
    c_sb: u32,
    c_sg: u32,
    c_sn: u32,
    c_st: u32,
    c_group_dim: u32,
    has_d: u32,
    has_z: u32,
    has_delta_bias: u32,
    delta_softplus: u32,
    state_mode: u32,
    _pad0: u32,
    _pad1: u32,
}

struct SsdParams {
    batch: u32,
    len: u32,
    heads: u32,
    head_dim: u32,
    dstate: u32,
    groups: u32,
    has_d: u32,
    has_z: u32,
    has_dt_bias: u32,
    dt_softplus: u32,
    state_mode: u32,
    t_begin: u32,
    t_end: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct StepParams {
    batch: u32,
    dim: u32,
    dstate: u32,
    group_dim: u32,
    groups: u32,
    has_d: u32,
    has_z: u32,
    has_dt_bias: u32,
    dt_softplus: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct ConvParams {
    batch: u32,
    dim: u32,
    len: u32,
    width: u32,
    x_sb: u32,
    x_sd: u32,
    x_st: u32,
    has_bias: u32,
    silu: u32,
    state_mode: u32,
    _pad0: u32,
    _pad1: u32,
}

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct MixerInParams {
    batch: u32,
    d_model: u32,
    d_inner: u32,
    width: u32,
    eps: f32,
    has_conv_bias: u32,
    _pad0: u32,
    _pad1: u32,
}

struct StepProjParams {
    batch: u32,
    d_inner: u32,
    dt_rank: u32,
    dstate: u32,
    has_norm: u32,
    norm_eps: f32,
    _pad0: u32,
    _pad1: u32,
}

struct NormParams {
    rows: u32,
    dim: u32,
    eps: f32,
    has_residual: u32,
    groups: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct EmbeddingParams {
    count: u32,
    rows: u32,
    dim: u32,
    _pad0: u32,
}

struct ElementwiseParams {
    len: u32,
    op: u32,
    _pad0: u32,
    _pad1: u32,
}

struct ArgmaxParams {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

struct CopyParams {
    len: u32,
    src_offset: u32,
    dst_offset: u32,
    _pad0: u32,
}

// A large weight bound in pieces (src/wgpu/window.rs, WindowParams): a dispatch binds
// two windows of whole rows, `w` (rows row0 .. row0+rows_a) and `w_hi` (the next
// rows - rows_a rows), each a binding of its own.
struct WindowParams {
    row0: u32,    // first weight row of this dispatch
    rows: u32,    // weight rows in this dispatch (both windows)
    w_off: u32,   // element offset of row row0 inside the first window
    last: u32,    // 1 for the last dispatch (embedding writes the zeros of ids past the table)
    rows_a: u32,  // rows in the first window
    w_off_b: u32, // element offset of row row0 + rows_a inside the second window
    _pad0: u32,
    _pad1: u32,
}

// `state_mode` of ScanParams / ConvParams (src/params.rs, STATE_*).
const STATE_NONE: u32 = 0u;
const STATE_FINAL: u32 = 1u;
const STATE_CARRY: u32 = 2u;

// `op` of ElementwiseParams (src/ops/mod.rs, the Elementwise discriminants).
const OP_SILU: u32 = 0u;
const OP_SOFTPLUS: u32 = 1u;
const OP_ADD: u32 = 2u;
const OP_MUL: u32 = 3u;
const OP_MUL_SILU: u32 = 4u;

// Weight storage codes of the W_DTYPE / BIAS_DTYPE overrides (src/wgpu/kernels.rs, WDtype).
const DTYPE_F32: u32 = 0u;
const DTYPE_F16: u32 = 1u;
const DTYPE_BF16: u32 = 2u;

// ---- Weights bound as raw 32-bit words ----
// f32, or f16 / bf16 packed two per word (element 2i in the low half), so half weights
// stay half in memory on every adapter without shader-f16.

// The word that holds element i.
fn word_of(i: u32, dtype: u32) -> u32 {
    return select(i >> 1u, i, dtype == DTYPE_F32);
}

// Element i, given the word `word_of(i, dtype)` holds.
fn decode(word: u32, i: u32, dtype: u32) -> f32 {
    if dtype == DTYPE_F32 {
        return bitcast<f32>(word);
    }
    let bits = select(word & 0xffffu, word >> 16u, (i & 1u) == 1u);
    if dtype == DTYPE_F16 {
        return unpack2x16float(bits).x;
    }
    return bitcast<f32>(bits << 16u);
}

// ---- Dispatch grids ----
// The host folds grids longer than the per-dimension limit into y.

// Flat invocation index of a 2-d grid of `width`-wide workgroups.
fn flat_invocation(gid: vec3<u32>, nwg: vec3<u32>, width: u32) -> u32 {
    return gid.y * nwg.x * width + gid.x;
}

// Flat workgroup index of a 2-d grid.
fn flat_workgroup(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y * nwg.x + wg.x;
}

// ---- Math (as the CPU reference's helpers in src/cpu/common.rs) ----

// log(1 + y), accurate for small y (WGSL has no log1p).
fn log1p_(y: f32) -> f32 {
    let w = 1.0 + y;
    if w == 1.0 {
        return y;
    }
    return log(w) * (y / (w - 1.0));
}

// PyTorch's softplus (beta 1, threshold 20).
fn softplus(v: f32) -> f32 {
    if v > 20.0 {
        return v;
    }
    return log1p_(exp(v));
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// exp(v) of the decay factor exp(Δ·A) (v ≤ 0). A state with a long memory (|v| ≪ 1)
// multiplies ~1/|v| of these factors, so a systematic error of the hardware exp (seen:
// ~½ ulp low on llvmpipe) accumulates into the state; near 0 the Taylor series is exact
// to < v⁵/120 and rounds once, without bias.
fn exp_decay(v: f32) -> f32 {
    if abs(v) < 0.0625 {
        return fma(v, fma(v, fma(v, fma(v, 1.0 / 24.0, 1.0 / 6.0), 0.5), 1.0), 1.0);
    }
    return exp(v);
}
