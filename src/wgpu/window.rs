//! Big weights bound as windows of whole rows, each window within the adapter's
//! `max_storage_buffer_binding_size` and starting at an offset aligned to
//! `min_storage_buffer_offset_alignment` (see the module docs of `wgpu/mod.rs`). A
//! dispatch binds two windows (the shaders' `w` and `w_hi`), so a weight up to twice
//! the binding limit (the f32 LM head of mamba-130m on a 128 MiB adapter) is still one
//! dispatch.

use bytemuck::{Pod, Zeroable};

use super::{WgpuBackend, WgpuBuffer};
use crate::error::{Error, Result};

/// The window of rows of a large weight bound for one dispatch.
/// Declared for the shaders as `WindowParams` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(super) struct WindowParams {
    /// First row of the weight handled by this dispatch.
    pub(super) row0: u32,
    /// Rows handled by this dispatch.
    pub(super) rows: u32,
    /// Element offset of row `row0` inside the bound range.
    pub(super) w_off: u32,
    /// 1 for the last window (embedding: it writes the zeros of out-of-range ids).
    pub(super) last: u32,
    /// Rows in the first of the two windows; the rest are in the second.
    pub(super) rows_a: u32,
    /// Element offset of row `row0 + rows_a` inside the second window.
    pub(super) w_off_b: u32,
    pub(super) _pad0: u32,
    pub(super) _pad1: u32,
}

/// Two windows bound by one dispatch: what the shader's `WindowParams` says and the
/// byte ranges of `w` and `w_hi` (the second repeats the first when there is none).
pub(super) struct WindowPair {
    pub(super) params: WindowParams,
    pub(super) a: (u64, u64),
    pub(super) b: (u64, u64),
}

/// A window of whole rows of a big weight, bound for one dispatch.
pub(super) struct Window {
    pub(super) row0: u32,
    pub(super) rows: u32,
    /// Byte range of the buffer bound.
    pub(super) offset: u64,
    pub(super) size: u64,
    /// Element offset of row `row0` inside the bound range.
    pub(super) w_off: u32,
}

impl WgpuBackend {
    /// [`Self::windows`] two by two, as the dispatches bind them.
    pub(super) fn window_pairs(
        &self,
        w: &WgpuBuffer,
        rows: u32,
        row_elems: u32,
    ) -> Result<Vec<WindowPair>> {
        let wins = self.windows(w, rows, row_elems)?;
        let n = wins.len().div_ceil(2);
        Ok(wins
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| {
                let a = &pair[0];
                let b = pair.get(1).unwrap_or(a);
                let rows_b = pair.get(1).map_or(0, |b| b.rows);
                WindowPair {
                    params: WindowParams {
                        row0: a.row0,
                        rows: a.rows + rows_b,
                        w_off: a.w_off,
                        last: (i + 1 == n) as u32,
                        rows_a: a.rows,
                        w_off_b: b.w_off,
                        _pad0: 0,
                        _pad1: 0,
                    },
                    a: (a.offset, a.size),
                    b: (b.offset, b.size),
                }
            })
            .collect())
    }

    /// Row windows of a `(rows, row_elems)` weight so that each fits in one binding.
    pub(super) fn windows(&self, w: &WgpuBuffer, rows: u32, row_elems: u32) -> Result<Vec<Window>> {
        let total = w.buf.size();
        if total <= self.max_binding {
            return Ok(vec![Window {
                row0: 0,
                rows,
                offset: 0,
                size: total,
                w_off: 0,
            }]);
        }
        let esize = w.dtype.size() as u64;
        let row_bytes = row_elems as u64 * esize;
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        let per = (self.max_binding.saturating_sub(align + 4) / row_bytes) as u32;
        if per == 0 {
            return Err(Error::limit(
                "wgpu",
                "matmul",
                "weight",
                format!(
                    "one row ({row_bytes} bytes) exceeds the adapter's \
                     max_storage_buffer_binding_size ({} bytes)",
                    self.max_binding
                ),
            ));
        }
        let mut out = Vec::new();
        let mut row0 = 0u32;
        while row0 < rows {
            let n = per.min(rows - row0);
            let start = row0 as u64 * row_bytes;
            let aligned = start / align * align;
            let end = ((row0 + n) as u64 * row_bytes).div_ceil(4) * 4;
            let end = end.min(total);
            out.push(Window {
                row0,
                rows: n,
                offset: aligned,
                size: end - aligned,
                w_off: ((start - aligned) / esize) as u32,
            });
            row0 += n;
        }
        Ok(out)
    }
}
