// Row gather: out[i, :] = table[ids[i], :] as f32. Mirrors src/cpu/linalg.rs::embedding.
// One invocation per output element. Ids out of range (>= rows) write zeros (the CPU
// backend reports them as an error; see src/ops.rs::embedding).
//
// Large tables: the host may bind a window of rows row0 .. row0+rows (starting w_off
// elements into the bound range) and dispatch once per window; each dispatch writes the
// ids that fall in its window, the one flagged `last` also the zeros for out-of-range ids.
// The table is decoded according to W_DTYPE (see matmul.wgsl).

// Keep in sync with src/params.rs::EmbeddingParams.
struct EmbeddingParams {
    count: u32,
    rows: u32,
    dim: u32,
    _pad0: u32,
}

// Keep in sync with src/wgpu/mod.rs::WindowParams.
struct WindowParams {
    row0: u32,
    rows: u32,
    w_off: u32,
    last: u32,
}

// Keep in sync with src/wgpu/kernels.rs (WDtype codes).
override W_DTYPE: u32 = 0u; // 0 f32, 1 f16, 2 bf16

@group(0) @binding(0) var<uniform> p: EmbeddingParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;          // (count)
@group(0) @binding(2) var<storage, read> table: array<u32>;        // (rows, dim) rows row0.. of this window, as W_DTYPE words
@group(0) @binding(3) var<storage, read_write> out: array<f32>;    // (count, dim)
@group(0) @binding(4) var<uniform> win: WindowParams;

fn load_w(i: u32) -> f32 {
    if W_DTYPE == 0u {
        return bitcast<f32>(table[i]);
    }
    let word = table[i >> 1u];
    let bits = select(word & 0xffffu, word >> 16u, (i & 1u) == 1u);
    if W_DTYPE == 1u {
        return unpack2x16float(bits).x;
    }
    return bitcast<f32>(bits << 16u);
}

@compute @workgroup_size(64)
fn embedding(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.y * nwg.x * 64u + gid.x;
    if e >= p.count * p.dim {
        return;
    }
    let i = e / p.dim;
    let j = e % p.dim;
    let id = ids[i];
    if id >= p.rows {
        if win.last != 0u {
            out[e] = 0.0;
        }
        return;
    }
    if id < win.row0 || id >= win.row0 + win.rows {
        return;
    }
    out[e] = load_w(win.w_off + (id - win.row0) * p.dim + j);
}
