// Selective scan, shared-memory half: the row scan as a work-efficient Blelloch scan in
// workgroup memory, for every adapter. The body and its contract: selective_scan.wgsl.
//
// The LANES aggregates of a row are scanned up and down a tree; the root of the
// down-sweep is seeded with (1, h_carry), so the exclusive prefix of invocation j *is*
// the state entering its first step. 2·log2(LANES) + 3 barriers per state.

//#include "selective_scan.wgsl"

struct ScanInvocation {
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
}

// Only the row's root reads and writes its carry, so one copy suffices.
const CARRY_COPIES: u32 = 1u;

fn carry_slot(row: u32, n: u32, chunk: u32) -> u32 {
    return row * MAX_N + n;
}

var<workgroup> scan_a: array<f32, CH * LANES>; // pairs being scanned (a part)
var<workgroup> scan_b: array<f32, CH * LANES>; // (b part)

fn row_scan(inv: ScanInvocation, row: u32, lane: u32, n: u32, chunk: u32, agg_a: f32, agg_b: f32) -> f32 {
    let s = row * LANES + lane;
    workgroupBarrier(); // the previous state's readers are done with scan_a/b
    scan_a[s] = agg_a;
    scan_b[s] = agg_b;
    // Up-sweep: node bi becomes left(ai) ∘ right(bi).
    for (var off = 1u; off < LANES; off = off * 2u) {
        workgroupBarrier();
        if lane < LANES / (2u * off) {
            let ai = row * LANES + off * (2u * lane + 1u) - 1u;
            let bi = row * LANES + off * (2u * lane + 2u) - 1u;
            scan_b[bi] = scan_a[bi] * scan_b[ai] + scan_b[bi];
            scan_a[bi] = scan_a[ai] * scan_a[bi];
        }
    }
    workgroupBarrier();
    // Seed the down-sweep at the root with the state entering the chunk.
    if lane == LANES - 1u {
        scan_a[s] = 1.0;
        scan_b[s] = carry[carry_slot(row, n, chunk)];
    }
    // Down-sweep: left child gets the parent's prefix P, right child P ∘ left.
    for (var off = LANES / 2u; off > 0u; off = off / 2u) {
        workgroupBarrier();
        if lane < LANES / (2u * off) {
            let ai = row * LANES + off * (2u * lane + 1u) - 1u;
            let bi = row * LANES + off * (2u * lane + 2u) - 1u;
            let la = scan_a[ai];
            let lb = scan_b[ai];
            let qa = scan_a[bi];
            let qb = scan_b[bi];
            scan_a[ai] = qa;
            scan_b[ai] = qb;
            scan_a[bi] = qa * la;
            scan_b[bi] = la * qb + lb;
        }
    }
    workgroupBarrier();
    return scan_b[s];
}
