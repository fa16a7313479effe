// Selective scan, subgroup half: the row scan with subgroup shuffles instead of a tree in
// workgroup memory. The body and its contract: selective_scan.wgsl.
//   * each subgroup scans its invocations' aggregates with subgroupShuffleUp
//     (Hillis–Steele, log2(subgroup_size) steps);
//   * the last invocation of each subgroup publishes the subgroup's total in workgroup
//     memory; after one barrier every invocation folds the carry and the totals of the
//     subgroups before it into its exclusive prefix;
//   * every invocation reads the carry, so the row's root writes the next one into the
//     other half of a double-buffered array (chunk parity): nobody reads what is being
//     written.
// Two barriers per state instead of 2·log2(LANES) + 3.
//
// Requires Features::SUBGROUP (no `enable subgroups;`: naga 30 does not parse it, the
// feature is requested on the device instead). Chosen on the host only when the adapter's
// subgroup sizes are powers of two in [4, LANES], and assumes that subgroups are formed
// from consecutive local_invocation_index values (what every Vulkan/Metal/D3D12 driver
// does for a 1-d workgroup); the parity tests run both halves.

//#include "selective_scan.wgsl"

struct ScanInvocation {
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
}

const CARRY_COPIES: u32 = 2u; // chunk parity

fn carry_slot(row: u32, n: u32, chunk: u32) -> u32 {
    return ((chunk & 1u) * CH + row) * MAX_N + n;
}

// src/wgpu/kernels.rs, SCAN_MAX_WARPS.
const MAX_WARPS: u32 = 16u; // LANES / smallest subgroup size (4)

var<workgroup> tot_a: array<f32, CH * MAX_WARPS>; // subgroup totals (a part)
var<workgroup> tot_b: array<f32, CH * MAX_WARPS>; // (b part)

fn row_scan(inv: ScanInvocation, row: u32, lane: u32, n: u32, chunk: u32, agg_a: f32, agg_b: f32) -> f32 {
    let sg_size = inv.sg_size;
    let sg_lane = inv.sg_lane;
    let warp = lane / sg_size;
    let tot_base = row * MAX_WARPS;
    // Inclusive scan of the aggregates across the subgroup.
    var ia = agg_a;
    var ib = agg_b;
    for (var off = 1u; off < sg_size; off = off * 2u) {
        let qa = subgroupShuffleUp(ia, off);
        let qb = subgroupShuffleUp(ib, off);
        if sg_lane >= off {
            ib = ia * qb + ib;
            ia = qa * ia;
        }
    }
    // Exclusive prefix within the subgroup.
    var ea = subgroupShuffleUp(ia, 1u);
    var eb = subgroupShuffleUp(ib, 1u);
    if sg_lane == 0u {
        ea = 1.0;
        eb = 0.0;
    }
    workgroupBarrier(); // the previous state's readers are done with tot_a/b
    if sg_lane == sg_size - 1u {
        tot_a[tot_base + warp] = ia;
        tot_b[tot_base + warp] = ib;
    }
    workgroupBarrier();
    // State entering this subgroup: carry, then the earlier subgroups of the row.
    var h = carry[carry_slot(row, n, chunk)];
    for (var w = 0u; w < warp; w++) {
        h = tot_a[tot_base + w] * h + tot_b[tot_base + w];
    }
    return ea * h + eb;
}
