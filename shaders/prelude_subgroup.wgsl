// Invocation ids for adapters with subgroups. The engine prepends this (or
// prelude_plain.wgsl) to every kernel file; kernels take `ids: Ids` and index with the
// helpers below.
//
// The local index is rebuilt from the subgroup id and lane: any one-to-one numbering of a
// workgroup's invocations serves the kernels, and this one costs nothing, whereas
// lavapipe derives local_invocation_index with integer divisions per invocation (measured:
// twice the time of a whole element-wise kernel). Workgroup sizes are multiples of the
// subgroup size, so the numbering covers 0 .. size - 1 exactly.

struct Ids {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
}

fn local_index(ids: Ids) -> u32 {
    return ids.sg_id * ids.sg_size + ids.sg_lane;
}
