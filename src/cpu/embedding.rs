//! Row gather. Mirrors `shaders/embedding.wgsl` and `kernels/embedding.cu` (which write
//! zeros for an id past the table; the reference reports it).

use super::Floats;
use crate::error::{Error, Result};
use crate::params::EmbeddingParams;

/// `out[i, :] = table[ids[i], :]`; an id past the table is an error.
pub(crate) fn embedding(
    p: &EmbeddingParams,
    ids: &[u32],
    table: Floats<'_>,
    out: &mut [f32],
) -> Result<()> {
    let dim = p.dim as usize;
    for (i, (&id, o)) in ids.iter().zip(out.chunks_exact_mut(dim)).enumerate() {
        if id >= p.rows {
            return Err(Error::Index {
                op: "embedding",
                index: id as u64,
                position: i,
                rows: p.rows as usize,
            });
        }
        table.read_into(id as usize * dim, o);
    }
    Ok(())
}
