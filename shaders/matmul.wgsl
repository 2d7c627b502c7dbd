// C[M, N] = A[M, K] B[K, N] (+ bias[N]), with arbitrary element strides for A and B so
// transposed operands need no copy. Grid z indexes a batch of such products, each matrix
// `batch_a`, `batch_b`, `batch_c` elements after the previous one.
//
// A workgroup owns 4 rows of C; each invocation owns 4 columns of those rows (16 results in
// four vec4 registers). The A values are read at addresses uniform across the workgroup (one
// load serves every invocation), the B values at addresses that step with the invocation.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/matmul.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

const WG: u32 = 64u;

fn store_row(c0: u32, m: u32, n0: u32, v: vec4<f32>) {
    if m >= p.m { return; }
    let vals = array<f32, 4>(v.x, v.y, v.z, v.w);
    for (var j = 0u; j < 4u; j++) {
        let n = n0 + j;
        if n < p.n {
            var out = vals[j];
            if p.has_bias == 1u { out += bias[n]; }
            let at = c0 + m * p.n + n;
            if p.accumulate == 1u { out += c[at]; }
            c[at] = out;
        }
    }
}

// Grid: x = column blocks of 256, y = row blocks of 4, z = the batch.
@compute @workgroup_size(64)
fn matmul(ids: Ids) {
    let m0 = ids.wg.y * 4u;
    let z = ids.wg.z;
    let n0 = ids.wg.x * (WG * 4u) + local_index(ids) * 4u;
    // Clamped indices keep every load in range; clamped results are never stored.
    let mlast = p.m - 1u;
    let nlast = p.n - 1u;
    let ra0 = min(m0, mlast) * p.sam;
    let ra1 = min(m0 + 1u, mlast) * p.sam;
    let ra2 = min(m0 + 2u, mlast) * p.sam;
    let ra3 = min(m0 + 3u, mlast) * p.sam;
    let cb = vec4<u32>(min(n0, nlast), min(n0 + 1u, nlast), min(n0 + 2u, nlast), min(n0 + 3u, nlast)) * p.sbn;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var ak = z * p.batch_a;
    var bk = z * p.batch_b;
    for (var k = 0u; k < p.k; k++) {
        let bv = vec4<f32>(b[bk + cb.x], b[bk + cb.y], b[bk + cb.z], b[bk + cb.w]);
        c0 = fma(vec4<f32>(a[ra0 + ak]), bv, c0);
        c1 = fma(vec4<f32>(a[ra1 + ak]), bv, c1);
        c2 = fma(vec4<f32>(a[ra2 + ak]), bv, c2);
        c3 = fma(vec4<f32>(a[ra3 + ak]), bv, c3);
        ak += p.sak;
        bk += p.sbk;
    }
    let cz = z * p.batch_c;
    store_row(cz, m0, n0, c0);
    store_row(cz, m0 + 1u, n0, c1);
    store_row(cz, m0 + 2u, n0, c2);
    store_row(cz, m0 + 3u, n0, c3);
}
