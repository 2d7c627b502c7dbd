
// ---- shared by every kernel (after the prelude) ----------------------------------------------

// The workgroup's position in a grid folded over x and y (see `Gpu::grid`).
fn group_index(ids: Ids) -> u32 {
    return ids.wg.x + ids.wg.y * ids.nwg.x;
}

// A global index for workgroups of `size` invocations in a folded grid.
fn flat_index(ids: Ids, size: u32) -> u32 {
    return group_index(ids) * size + local_index(ids);
}

