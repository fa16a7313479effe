// Row-wise argmax (first index on ties, NaN never wins). Mirrors
// src/cpu/argmax.rs::argmax. One workgroup of 256 invocations per row: each scans a
// strided slice keeping (best value, smallest index), then a tree reduction in
// workgroup memory. A row with nothing above -inf gives 0, as on the CPU.

//#include "common.wgsl"

const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: ArgmaxParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (rows, cols)
@group(0) @binding(2) var<storage, read_write> out: array<u32>;  // (rows)

var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

// Does (v1, i1) beat (v2, i2)? Larger value; on equal values the smaller index.
fn beats(v1: f32, i1: u32, v2: f32, i2: u32) -> bool {
    if i1 == NONE {
        return false;
    }
    if i2 == NONE {
        return true;
    }
    return v1 > v2 || (v1 == v2 && i1 < i2);
}

@compute @workgroup_size(256)
fn argmax(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = flat_workgroup(wg, nwg);
    if row >= p.rows { // uniform per workgroup
        return;
    }
    let base = row * p.cols;
    // Only values above -inf can win, as in the CPU loop (`v > best_v` from -inf):
    // NaN and -inf are never candidates.
    var bv = 0.0;
    var bi = NONE;
    for (var j = lid; j < p.cols; j += 256u) {
        let v = x[base + j];
        let candidate = v == v && bitcast<u32>(v) != 0xff800000u;
        if candidate && (bi == NONE || v > bv) {
            bv = v;
            bi = j;
        }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    for (var off = 128u; off > 0u; off = off / 2u) {
        workgroupBarrier();
        if lid < off {
            if beats(best_v[lid + off], best_i[lid + off], best_v[lid], best_i[lid]) {
                best_v[lid] = best_v[lid + off];
                best_i[lid] = best_i[lid + off];
            }
        }
    }
    if lid == 0u {
        out[row] = select(best_i[0], 0u, best_i[0] == NONE);
    }
}
