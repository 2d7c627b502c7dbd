// The kernels of matmul_subgroup.wgsl reading an invocation's adjacent columns of B in one
// load: two columns as a vec2 (`matmul`), four as a vec4 (`matmul_wide`). On lavapipe a load
// whose address differs between invocations is a gather, and gathers are what bound these
// kernels on CPUs (AMD's most): reading 2 or 4 floats per load cuts the loads of B 2 or 4
// times (measured on an AMD EPYC host: matmul 1024^3 1.2x faster, A0's products 16% less
// time; also reading A's rows as vec4s, 4 steps of k per iteration, measured 1.5-2x
// slower, so A is read as before). The launcher uses this file where the
// columns are adjacent and every pair or quad aligned: B's columns contiguous (sbn = 1), and
// n, sbk and batch_b multiples of 2 (pairs) or 4 (quads).
//
// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/matmul.rs and prepended to this file; the kernels are
// matmul_subgroup_body.wgsl, appended to it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b2: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

// `columns.x` is a multiple of 2 (4) and the others follow it: one aligned load.
fn b_pair(k_offset: u32, columns: vec2<u32>) -> vec2<f32> {
    return b2[(k_offset + columns.x) / 2u];
}

fn b_quad(k_offset: u32, columns: vec4<u32>) -> vec4<f32> {
    return b4[(k_offset + columns.x) / 4u];
}
