// The implicit matrix product of conv_implicit.wgsl, shared by the files that include it:
// each declares the uniform `p`, the operands and the functions that read them,
//   fn operand_a(i: u32) -> f32    // element i of a: w, or dy for the weight gradient
//   fn operand_b(i: u32) -> f32    // element i of b: x, or dy for the input gradient
// as f32 (conv_implicit.wgsl) or f16 widened on load (conv_implicit_f16.wgsl), so one body
// serves both and the sums are f32 either way.

@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const FORWARD: u32 = 0u;
const INPUT_GRAD: u32 = 1u;
const WEIGHT_GRAD: u32 = 2u;

// Two buffers of 16 k-steps x 16 vec4 (64 rows or columns).
var<workgroup> sa: array<vec4<f32>, 512>;
var<workgroup> sb: array<vec4<f32>, 512>;

// Indices are carried as mixed-radix digits (hi, mid, lo) with radices (mid, lo) = `r`:
// (channel, ky, kx) for taps, (image, row, column) for pixels. Each invocation decodes its
// indices once and then steps them along K with carries, so the inner loop divides nothing
// (integer division is a long sequence on GPUs and is scalarised on CPU adapters).
fn digits(i: u32, r: vec2<u32>) -> vec3<u32> {
    let rest = i / r.y;
    return vec3<u32>(rest / r.x, rest % r.x, i % r.y);
}

// `d` plus the index whose digits are `step` (each step digit below its radix).
fn advance(d: vec3<u32>, step: vec3<u32>, r: vec2<u32>) -> vec3<u32> {
    var lo = d.z + step.z;
    let c1 = u32(lo >= r.y);
    lo -= c1 * r.y;
    var mid = d.y + step.y + c1;
    let c2 = u32(mid >= r.x);
    mid -= c2 * r.x;
    return vec3<u32>(d.x + step.x + c2, mid, lo);
}

// What one workgroup's product is. The input gradient at stride s runs as s x s products,
// one per parity class of input pixels (grid z): input pixel (iy, ix) = (r * s + py,
// col * s + px) receives gradient only through the taps ky = ky0 + j * s (ky0 = (py + pad)
// mod s, likewise kx), so each class gathers only the taps that reach it, where masking
// would waste all but 1 / s^2 of the work.
struct Geometry {
    gn: u32,            // columns
    gk: u32,            // inner size
    kr: vec2<u32>,      // radices of K's index: taps (ky, kx) or pixels (row, column)
    qr: vec2<u32>,      // radices of a column index
    py: u32,            // input gradient: the class's pixel offsets and first taps
    px: u32,
    ky0: u32,
    kx0: u32,
}

fn geometry(parity: u32) -> Geometry {
    if p.direction == FORWARD {
        return Geometry(p.gn, p.gk, vec2<u32>(p.k, p.k), vec2<u32>(p.oh, p.ow), 0u, 0u, 0u, 0u);
    }
    if p.direction == WEIGHT_GRAD {
        return Geometry(p.gn, p.gk, vec2<u32>(p.oh, p.ow), vec2<u32>(p.k, p.k), 0u, 0u, 0u, 0u);
    }
    let py = parity / p.stride;
    let px = parity % p.stride;
    let rows = (p.h + p.stride - 1u - min(py, p.h)) / p.stride;
    let cols = (p.w + p.stride - 1u - min(px, p.w)) / p.stride;
    let ky0 = (py + p.pad) % p.stride;
    let kx0 = (px + p.pad) % p.stride;
    let nky = (p.k + p.stride - 1u - min(ky0, p.k)) / p.stride;
    let nkx = (p.k + p.stride - 1u - min(kx0, p.k)) / p.stride;
    return Geometry(p.n * rows * cols, p.co * nky * nkx, vec2<u32>(max(nky, 1u), max(nkx, 1u)),
                    vec2<u32>(max(rows, 1u), max(cols, 1u)), py, px, ky0, kx0);
}

// x[n][ch][oy*s - pad + ky][ox*s - pad + kx], zero outside the image.
fn input_patch(tap: vec3<u32>, o: vec3<u32>) -> f32 {
    let iy = i32(o.y * p.stride + tap.y) - i32(p.pad);
    let ix = i32(o.z * p.stride + tap.z) - i32(p.pad);
    let ok = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let at = ((o.x * p.ci + tap.x) * p.h + u32(max(iy, 0))) * p.w + u32(max(ix, 0));
    return select(0.0, operand_b(select(0u, at, ok)), ok);
}

// A[m][t], `d` being t's digits; zero past the rows or this split's K.
fn load_a(g: Geometry, m: u32, t: u32, d: vec3<u32>, k_end: u32) -> f32 {
    if m >= p.gm || t >= k_end { return 0.0; }
    if p.direction == FORWARD {
        return operand_a(m * p.gk + t);
    }
    if p.direction == INPUT_GRAD {
        // A[ci][(co, j, i)] = w[co][ci][ky0 + j * s][kx0 + i * s].
        let ky = g.ky0 + d.y * p.stride;
        let kx = g.kx0 + d.z * p.stride;
        return operand_a(((d.x * p.ci + m) * p.k + ky) * p.k + kx);
    }
    // A[co][(n, oy, ox)] = dy[n][co][oy][ox].
    return operand_a(((d.x * p.co + m) * p.oh + d.y) * p.ow + d.z);
}

// Division by the stride, exact by construction in the input gradient's classes.
fn by_stride(v: u32) -> u32 {
    if p.stride == 1u { return v; }
    if p.stride == 2u { return v >> 1u; }
    return v / p.stride;
}

// The input pixel a column of the input gradient's class stands for: (image, iy, ix).
fn class_pixel(g: Geometry, e: vec3<u32>) -> vec3<u32> {
    return vec3<u32>(e.x, e.y * p.stride + g.py, e.z * p.stride + g.px);
}

// B[t][q], `d` and `e` being their digits; zero past this split's K or the columns.
fn load_b(g: Geometry, t: u32, d: vec3<u32>, q: u32, e: vec3<u32>, k_end: u32) -> f32 {
    if t >= k_end || q >= g.gn { return 0.0; }
    if p.direction == FORWARD {
        return input_patch(d, e);
    }
    if p.direction == INPUT_GRAD {
        // B[(co, ky, kx)][(n, iy, ix)] = dy[n][co][oy][ox], oy * s = iy + pad - ky.
        let i = class_pixel(g, e);
        let ty = i32(i.y + p.pad) - i32(g.ky0 + d.y * p.stride);
        let tx = i32(i.z + p.pad) - i32(g.kx0 + d.z * p.stride);
        let oy = by_stride(u32(max(ty, 0)));
        let ox = by_stride(u32(max(tx, 0)));
        let ok = ty >= 0 && tx >= 0 && oy < p.oh && ox < p.ow;
        let at = ((i.x * p.co + d.x) * p.oh + oy) * p.ow + ox;
        return select(0.0, operand_b(select(0u, at, ok)), ok);
    }
    // B[(n, oy, ox)][(ci, ky, kx)]: the patches transposed.
    return input_patch(e, d);
}

// Rows m..m+3 of A at step t, as an invocation loads them into its slot of a shared tile.
fn four_a(g: Geometry, m: u32, t: u32, d: vec3<u32>, k_end: u32) -> vec4<f32> {
    return vec4<f32>(load_a(g, m, t, d, k_end), load_a(g, m + 1u, t, d, k_end),
                     load_a(g, m + 2u, t, d, k_end), load_a(g, m + 3u, t, d, k_end));
}

// Columns q..q+3 of B at step t, their digits `e`.
fn four_b(g: Geometry, t: u32, d: vec3<u32>, q: u32, e: array<vec3<u32>, 4>, k_end: u32) -> vec4<f32> {
    return vec4<f32>(load_b(g, t, d, q, e[0], k_end), load_b(g, t, d, q + 1u, e[1], k_end),
                     load_b(g, t, d, q + 2u, e[2], k_end), load_b(g, t, d, q + 3u, e[3], k_end));
}

// `split` is the weight gradient's split of K (grid z), whose partial sums have a block of c.
fn store(g: Geometry, m: u32, q: u32, v: f32, split: u32) {
    if m >= p.gm || q >= g.gn { return; }
    if p.direction == FORWARD {
        let o = digits(q, g.qr);
        c[((o.x * p.co + m) * p.oh + o.y) * p.ow + o.z] = v;
    } else if p.direction == INPUT_GRAD {
        let i = class_pixel(g, digits(q, g.qr));
        c[((i.x * p.ci + m) * p.h + i.y) * p.w + i.z] = v;
    } else {
        c[split * p.split_stride + m * p.gn + q] = v;
    }
}

// Grid: x = 64-column tiles, y = 64-row tiles, z = splits of K (weight gradient) or parity
// classes (input gradient).
@compute @workgroup_size(256)
fn implicit_gemm(ids: Ids) {
    let by_class = p.direction == INPUT_GRAD;
    let g = geometry(select(0u, ids.wg.z, by_class));
    let split = select(ids.wg.z, 0u, by_class);
    let m0 = ids.wg.y * 64u;
    let n0 = ids.wg.x * 64u;
    // The grid fits the largest class; the others' surplus tiles have nothing to do.
    if n0 >= g.gn { return; }
    let lid = local_index(ids);
    let tx = lid % 16u;
    let ty = lid / 16u;
    let k_begin = split * p.k_per_split;
    let k_end = min(k_begin + p.k_per_split, g.gk);
    let slices = (k_end - k_begin + 15u) / 16u;
    // Loads: A along k (its contiguous direction in every direction), B along its columns
    // except in the weight gradient, where B's contiguous direction is k.
    let a_m = m0 + ty * 4u;
    let b_along_k = p.direction == WEIGHT_GRAD;
    // This invocation's k and group of four columns in B's shared tile.
    let b_k = select(ty, tx, b_along_k);
    let b_slot = select(tx, ty, b_along_k);
    let b_q = n0 + 4u * b_slot;
    let step = digits(16u, g.kr);
    var ta = k_begin + tx;
    var tb = k_begin + b_k;
    var da = digits(ta, g.kr);
    var db = digits(tb, g.kr);
    let last = g.gn - 1u;
    var e: array<vec3<u32>, 4>;
    for (var j = 0u; j < 4u; j++) { e[j] = digits(min(b_q + j, last), g.qr); }

    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
    var ra = four_a(g, a_m, ta, da, k_end);
    var rb = four_b(g, tb, db, b_q, e, k_end);
    sa[tx * 16u + ty] = ra;
    sb[b_k * 16u + b_slot] = rb;
    workgroupBarrier();
    for (var s = 0u; s < slices; s++) {
        let cur = (s & 1u) * 256u;
        let next = 256u - cur;
        let more = s + 1u < slices;
        if more {
            ta += 16u;
            tb += 16u;
            da = advance(da, step, g.kr);
            db = advance(db, step, g.kr);
            ra = four_a(g, a_m, ta, da, k_end);
            rb = four_b(g, tb, db, b_q, e, k_end);
        }
        for (var kk = 0u; kk < 16u; kk++) {
            let av = sa[cur + kk * 16u + ty];
            let bv = sb[cur + kk * 16u + tx];
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
        if more {
            sa[next + tx * 16u + ty] = ra;
            sb[next + b_k * 16u + b_slot] = rb;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + ty * 4u + i;
        let q = n0 + tx * 4u;
        store(g, m, q, acc[i].x, split);
        store(g, m, q + 1u, acc[i].y, split);
        store(g, m, q + 2u, acc[i].z, split);
        store(g, m, q + 3u, acc[i].w, split);
    }
}
