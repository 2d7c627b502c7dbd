// The matmul kernels of matmul_subgroup.wgsl, shared by the files that include it: each
// declares the uniform `p`, the buffers a, bias and c, and how B's columns are read,
//   fn b_pair(k_offset: u32, columns: vec2<u32>) -> vec2<f32>   // an invocation's 2 columns
//   fn b_quad(k_offset: u32, columns: vec4<u32>) -> vec4<f32>   // its 4 columns (wide form)
// at row offset `k_offset` of B, `columns` being each column's offset (column * sbn):
// element by element (matmul_subgroup.wgsl), or as one vec2 or vec4 load where the columns
// are adjacent and aligned (matmul_subgroup_vec.wgsl).

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
        let bp = b_pair(bk, vec2<u32>(cb0, cb1));
        let b0 = vec4<f32>(bp.x);
        let b1 = vec4<f32>(bp.y);
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
        let bq = b_quad(bk, vec4<u32>(cb0, cb1, cb2, cb3));
        let b0 = vec4<f32>(bq.x);
        let b1 = vec4<f32>(bq.y);
        let b2 = vec4<f32>(bq.z);
        let b3 = vec4<f32>(bq.w);
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
