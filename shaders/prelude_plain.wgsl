// Invocation ids for adapters without subgroups. The engine prepends this (or
// prelude_subgroup.wgsl) to every kernel file; kernels take `ids: Ids` and index with
// the helpers below.

struct Ids {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
}

fn local_index(ids: Ids) -> u32 {
    return ids.local;
}
