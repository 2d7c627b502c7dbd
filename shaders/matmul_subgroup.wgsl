// C[M, N] = A[M, K] B[K, N] (+ bias[N]) for adapters with subgroups of at least 8.
//
// A workgroup owns 16 rows of C; each invocation owns two columns of them (32 results).
// The 16 A values a step needs are the same for every invocation, so invocations 0..7 of
// each group of 8 load them (two each) and pass them on with subgroupBroadcast, as in
// conv_subgroup.wgsl. Grid z indexes a batch of products, as in matmul.wgsl.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/matmul.rs and prepended to this file; the kernels are
// matmul_subgroup_body.wgsl, appended to it, which matmul_subgroup_vec.wgsl shares.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

fn b_pair(k_offset: u32, columns: vec2<u32>) -> vec2<f32> {
    return vec2<f32>(b[k_offset + columns.x], b[k_offset + columns.y]);
}

fn b_quad(k_offset: u32, columns: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(b[k_offset + columns.x], b[k_offset + columns.y], b[k_offset + columns.z],
                     b[k_offset + columns.w]);
}
