//! Row-wise argmax. Mirrors `shaders/argmax.wgsl` and `kernels/argmax.cu`.

use crate::params::ArgmaxParams;

/// Index of the largest value of each row; the first on ties; NaN is skipped.
pub(crate) fn argmax(p: &ArgmaxParams, x: &[f32], out: &mut [u32]) {
    for (row, o) in x.chunks_exact(p.cols as usize).zip(out.iter_mut()) {
        let mut best = 0usize;
        let mut best_v = f32::NEG_INFINITY;
        for (j, &v) in row.iter().enumerate() {
            if v > best_v {
                best = j;
                best_v = v;
            }
        }
        *o = best as u32;
    }
}
