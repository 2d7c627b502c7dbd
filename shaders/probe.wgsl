// The adapter's arithmetic peak: each invocation runs independent FMA chains that never
// touch memory inside the loop, so the only limit is the ALUs. Twelve scalar chains per
// invocation (three vec4) hide FMA latency without spilling on 16-register CPUs.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/probe.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> sink: array<f32>;

@compute @workgroup_size(64)
fn fma_probe(ids: Ids) {
    let id = flat_index(ids, 64u);
    let seed = f32(id) * 1e-7;
    var a0 = vec4<f32>(seed, seed + 0.1, seed + 0.2, seed + 0.3);
    var a1 = a0 + 0.5;
    var a2 = a0 + 0.25;
    let m = vec4<f32>(p.mul);
    let c = vec4<f32>(p.add);
    for (var i = 0u; i < p.iterations; i++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
    }
    let s = a0 + a1 + a2;
    // Written only when impossible in practice, but the compiler cannot know that.
    if s.x + s.y + s.z + s.w == 1234.5678 { sink[id % 64u] = s.x; }
}
