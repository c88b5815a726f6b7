//! Launcher of `cuda/embedding.cu`.

use super::{as_i32, grid_dims, DView, DViewMut, DeviceBuffer, Gpu, GpuFloat, LaunchCfg, EMBEDDING};
use crate::error::{check_len, Error, Result};

/// Same contract as `cpu::embedding::embedding_fwd`.  out: [n, c]   ids: [n]   table: [v, c]
/// Ids must be < v (the model validates them); an id ≥ v yields a NaN row, never an out-of-bounds read.
pub fn embedding_fwd<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut DViewMut<T>,
    ids: &DView<u32>,
    table: &DView<T>,
    n: usize,
    c: usize,
    v: usize,
) -> Result<()> {
    const OP: &str = "embedding_fwd";
    check_len(OP, "out", out.len(), n * c)?;
    check_len(OP, "ids", ids.len(), n)?;
    check_len(OP, "table", table.len(), v * c)?;
    if n == 0 || c == 0 {
        return Ok(());
    }
    let name = T::pick("embedding_fwd_f32", "embedding_fwd_bf16");
    let (c32, v32) = (as_i32(OP, "c", c)?, as_i32(OP, "v", v)?);
    let grid = grid_dims(OP, [(n, "rows"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&EMBEDDING, name, LaunchCfg::new(grid, 256));
    l.arg_mut(out).arg(ids).arg(table).i32(c32).i32(v32);
    // SAFETY: order and types match embedding_fwd_<T> in cuda/embedding.cu; lengths checked above.
    unsafe { l.run() }
}

/// The deterministic schedule of [`embedding_bwd`], built on the host from the batch's token ids:
/// the row indices sorted by (id, row) and cut into one segment per distinct id. Each segment is
/// summed by one block in row order, so no two blocks write one table row and no atomics are needed.
/// Built once per batch (the ids are on the host already), reusable for any number of launches.
pub struct EmbeddingGradPlan {
    order: DeviceBuffer<u32>,
    seg_start: DeviceBuffer<u32>,
    seg_id: DeviceBuffer<u32>,
    n: usize,
    v: usize,
}

impl EmbeddingGradPlan {
    /// The plan for `ids` over a table of `v` rows; an id ≥ v is an input error naming its row.
    pub fn new(gpu: &Gpu, ids: &[u32], v: usize) -> Result<EmbeddingGradPlan> {
        const OP: &str = "embedding_bwd";
        if let Some((r, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
            return Err(Error::input(format!("{OP}: id {id} of row {r} is not below the vocabulary size {v}")));
        }
        let n32 = u32::try_from(ids.len()).map_err(|_| Error::input(format!("{OP}: {} rows do not fit 32-bit indices", ids.len())))?;
        // a stable sort by id keeps the rows of one id ascending: the CPU's accumulation order
        let mut order: Vec<u32> = (0..n32).collect();
        order.sort_by_key(|&r| ids[r as usize]);
        let (mut seg_start, mut seg_id) = (Vec::new(), Vec::new());
        for (p, &r) in order.iter().enumerate() {
            if seg_id.last() != Some(&ids[r as usize]) {
                seg_start.push(p as u32);
                seg_id.push(ids[r as usize]);
            }
        }
        seg_start.push(n32);
        // zero-length uploads are avoided: an empty batch keeps one dummy entry and launches nothing
        let pad = |v: Vec<u32>| if v.is_empty() { vec![0] } else { v };
        Ok(EmbeddingGradPlan { order: gpu.htod(&pad(order))?, seg_start: gpu.htod(&seg_start)?, seg_id: gpu.htod(&pad(seg_id))?, n: ids.len(), v })
    }

    /// Distinct ids of the batch (the blocks of one launch).
    pub fn segments(&self) -> usize {
        self.seg_start.len() - 1
    }
}

/// Same contract as `cpu::embedding::embedding_bwd` with the ids of `plan`, accumulating into an f32
/// gradient table: dtable[ids[r], :] += dout[r, :], rows of one id added in ascending r (the f32 path
/// gives the CPU f32 reference's bits).   dtable: [v, c] (f32)   dout: [n, c]
pub fn embedding_bwd<T: GpuFloat>(gpu: &Gpu, dtable: &mut DViewMut<f32>, dout: &DView<T>, plan: &EmbeddingGradPlan, c: usize) -> Result<()> {
    const OP: &str = "embedding_bwd";
    check_len(OP, "dtable", dtable.len(), plan.v * c)?;
    check_len(OP, "dout", dout.len(), plan.n * c)?;
    if plan.segments() == 0 || c == 0 {
        return Ok(());
    }
    let name = T::pick("embedding_bwd_f32", "embedding_bwd_bf16");
    let c32 = as_i32(OP, "c", c)?;
    let grid = grid_dims(OP, [(plan.segments(), "distinct ids"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&EMBEDDING, name, LaunchCfg::new(grid, 256));
    l.arg_mut(dtable).arg(dout).arg(&plan.order.as_view()).arg(&plan.seg_start.as_view()).arg(&plan.seg_id.as_view()).i32(c32);
    // SAFETY: order and types match embedding_bwd_<T> in cuda/embedding.cu; dtable and dout lengths
    // checked above; the plan's rows are < n and its ids < v (checked when it was built), and its
    // segments are disjoint, so each table row is written by one block.
    unsafe { l.run() }
}
