// C[M, N] = A[M, K] B[K, N] (+ bias[N]) for adapters with subgroups of at least 8.
//
// A workgroup owns 16 rows of C; each invocation owns two columns of them (32 results).
// The 16 A values a step needs are the same for every invocation, so invocations 0..7 of
// each group of 8 load them (two each) and pass them on with subgroupBroadcast, as in
// conv_subgroup.wgsl. Grid z indexes a batch of products, as in matmul.wgsl.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/matmul.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

// Subgroup operations stay out of branches (they need every invocation of the subgroup).
fn lanes_0_3(v: f32) -> vec4<f32> {
    return vec4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u));
}

fn lanes_4_7(v: f32) -> vec4<f32> {
    return vec4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

fn store_column(c0: u32, col: u32, m0: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    if col >= p.n { return; }
    let vals = array<f32, 16>(v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w,
                              v2.x, v2.y, v2.z, v2.w, v3.x, v3.y, v3.z, v3.w);
    var extra = 0.0;
    if p.has_bias == 1u { extra = bias[col]; }
    for (var i = 0u; i < 16u; i++) {
        let m = m0 + i;
        if m < p.m {
            var out = vals[i] + extra;
            let at = c0 + m * p.n + col;
            if p.accumulate == 1u { out += c[at]; }
            c[at] = out;
        }
    }
}

// Grid: x = blocks of 128 columns (64 invocations x 2), y = blocks of 16 rows, z = the batch.
@compute @workgroup_size(64)
fn matmul(ids: Ids) {
    let n_pairs = (p.n + 1u) / 2u;
    if ids.wg.x * 64u + ids.sg_id * ids.sg_size >= n_pairs { return; }
    let m0 = ids.wg.y * 16u;
    let pair = min(ids.wg.x * 64u + local_index(ids), n_pairs - 1u);
    let n0 = 2u * pair;
    let nlast = p.n - 1u;
    let lane = ids.sg_lane & 7u;
    let mlast = p.m - 1u;
    let z = ids.wg.z;
    var ra = z * p.batch_a + min(m0 + lane, mlast) * p.sam;
    var rb = z * p.batch_a + min(m0 + 8u + lane, mlast) * p.sam;
    let cb0 = min(n0, nlast) * p.sbn;
    let cb1 = min(n0 + 1u, nlast) * p.sbn;
    var bk = z * p.batch_b;
    var x0 = vec4<f32>(0.0);
    var x1 = vec4<f32>(0.0);
    var x2 = vec4<f32>(0.0);
    var x3 = vec4<f32>(0.0);
    var y0 = vec4<f32>(0.0);
    var y1 = vec4<f32>(0.0);
    var y2 = vec4<f32>(0.0);
    var y3 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        let lo = a[ra];
        let hi = a[rb];
        let b0 = vec4<f32>(b[bk + cb0]);
        let b1 = vec4<f32>(b[bk + cb1]);
        let w0 = lanes_0_3(lo);
        let w1 = lanes_4_7(lo);
        let w2 = lanes_0_3(hi);
        let w3 = lanes_4_7(hi);
        x0 = fma(w0, b0, x0);
        x1 = fma(w1, b0, x1);
        x2 = fma(w2, b0, x2);
        x3 = fma(w3, b0, x3);
        y0 = fma(w0, b1, y0);
        y1 = fma(w1, b1, y1);
        y2 = fma(w2, b1, y2);
        y3 = fma(w3, b1, y3);
        ra += p.sak;
        rb += p.sak;
        bk += p.sbk;
    }
    let cz = z * p.batch_c;
    store_column(cz, n0, m0, x0, x1, x2, x3);
    store_column(cz, n0 + 1u, m0, y0, y1, y2, y3);
}

// The same with four columns per invocation (256 per workgroup): 64 results per invocation,
// so each pair of shared A values and each B value feed twice the FMAs. For wide products;
// the launcher picks the form that leaves fewer invocations idle.
@compute @workgroup_size(64)
fn matmul_wide(ids: Ids) {
    let n_quads = (p.n + 3u) / 4u;
    if ids.wg.x * 64u + ids.sg_id * ids.sg_size >= n_quads { return; }
    let m0 = ids.wg.y * 16u;
    let quad = min(ids.wg.x * 64u + local_index(ids), n_quads - 1u);
    let n0 = 4u * quad;
    let nlast = p.n - 1u;
    let lane = ids.sg_lane & 7u;
    let mlast = p.m - 1u;
    let z = ids.wg.z;
    var ra = z * p.batch_a + min(m0 + lane, mlast) * p.sam;
    var rb = z * p.batch_a + min(m0 + 8u + lane, mlast) * p.sam;
    let cb0 = min(n0, nlast) * p.sbn;
    let cb1 = min(n0 + 1u, nlast) * p.sbn;
    let cb2 = min(n0 + 2u, nlast) * p.sbn;
    let cb3 = min(n0 + 3u, nlast) * p.sbn;
    var bk = z * p.batch_b;
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }
    for (var k = 0u; k < p.k; k++) {
        let lo = a[ra];
        let hi = a[rb];
        let w0 = lanes_0_3(lo);
        let w1 = lanes_4_7(lo);
        let w2 = lanes_0_3(hi);
        let w3 = lanes_4_7(hi);
        let b0 = vec4<f32>(b[bk + cb0]);
        let b1 = vec4<f32>(b[bk + cb1]);
        let b2 = vec4<f32>(b[bk + cb2]);
        let b3 = vec4<f32>(b[bk + cb3]);
        acc[0] = fma(w0, b0, acc[0]);
        acc[1] = fma(w1, b0, acc[1]);
        acc[2] = fma(w2, b0, acc[2]);
        acc[3] = fma(w3, b0, acc[3]);
        acc[4] = fma(w0, b1, acc[4]);
        acc[5] = fma(w1, b1, acc[5]);
        acc[6] = fma(w2, b1, acc[6]);
        acc[7] = fma(w3, b1, acc[7]);
        acc[8] = fma(w0, b2, acc[8]);
        acc[9] = fma(w1, b2, acc[9]);
        acc[10] = fma(w2, b2, acc[10]);
        acc[11] = fma(w3, b2, acc[11]);
        acc[12] = fma(w0, b3, acc[12]);
        acc[13] = fma(w1, b3, acc[13]);
        acc[14] = fma(w2, b3, acc[14]);
        acc[15] = fma(w3, b3, acc[15]);
        ra += p.sak;
        rb += p.sak;
        bk += p.sbk;
    }
    let cz = z * p.batch_c;
    for (var j = 0u; j < 4u; j++) {
        store_column(cz, n0 + j, m0, acc[4u * j], acc[4u * j + 1u], acc[4u * j + 2u], acc[4u * j + 3u]);
    }
}
