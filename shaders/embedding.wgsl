// Row gather: out[i, :] = table[ids[i], :] as f32. Mirrors src/cpu/embedding.rs::embedding.
// One invocation per output element. Ids out of range (>= rows) write zeros (the CPU
// backend reports them as an error; see src/ops/mod.rs, embedding).
//
// Large tables: the host may bind two windows of rows (`table` and `table_hi`, rows
// row0 .. row0+rows between them) and dispatch once per pair of windows; each dispatch
// writes the ids that fall in its rows, the one flagged `last` also the zeros for
// out-of-range ids.
// The table is decoded according to W_DTYPE (see matmul.wgsl).

//#include "common.wgsl"

// How the table is stored (DTYPE_* of common.wgsl), set by the host per pipeline.
override W_DTYPE: u32 = DTYPE_F32;

@group(0) @binding(0) var<uniform> p: EmbeddingParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;          // (count)
@group(0) @binding(2) var<storage, read> table: array<u32>;        // (rows, dim) rows row0.. of this window, as W_DTYPE words
@group(0) @binding(3) var<storage, read_write> out: array<f32>;    // (count, dim)
@group(0) @binding(4) var<uniform> win: WindowParams;
@group(0) @binding(5) var<storage, read> table_hi: array<u32>;     // the second window (rows row0+rows_a..)

// Element j of table row row0 + r, from whichever window holds it.
fn load_w(r: u32, j: u32) -> f32 {
    if r < win.rows_a {
        let i = win.w_off + r * p.dim + j;
        return decode(table[word_of(i, W_DTYPE)], i, W_DTYPE);
    }
    let i = win.w_off_b + (r - win.rows_a) * p.dim + j;
    return decode(table_hi[word_of(i, W_DTYPE)], i, W_DTYPE);
}

@compute @workgroup_size(64)
fn embedding(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_invocation(gid, nwg, 64u);
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
    out[e] = load_w(id - win.row0, j);
}
