// Convolution as an implicit matrix product, shaped for GPUs: every direction is one product
// C[M][N] = A[M][K] B[K][N] whose operands are gathered from the tensors as they are loaded,
// so no columns matrix is written or read (see conv_gemm.wgsl for the explicit form):
//   forward         y  [Co][N*OH*OW] = w [Co][Ci*k*k]  x patches [Ci*k*k][N*OH*OW]
//   input gradient  dx [Ci][N*H*W]   = w^T, flipped     x dy gathered back through the stride
//   weight gradient dw [Co][Ci*k*k]  = dy [Co][N*OH*OW] x patches^T
//
// A workgroup of 16 x 16 invocations owns a 64 x 64 tile of C; each invocation owns a 4 x 4
// register tile of it (four vec4 accumulators). The K dimension is walked 16 at a time through
// workgroup memory: each invocation loads 4 values of A and 4 of B, and from the shared tiles
// reads one vec4 of A and one of B per step of k for 16 FMAs. The shared tiles are double
// buffered: the loads of the next slice of K are issued before the current slice is
// multiplied and stored after it, so one barrier per slice suffices and the loads' latency
// hides behind the arithmetic. Grid z splits K (the weight gradient's K is every output pixel
// of the batch, its M x N only a few tiles); the splits' partial sums are added by
// `implicit_sum_splits`.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/conv_implicit.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
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

// The radices of K's index: taps, or in the weight gradient output pixels.
fn k_radices() -> vec2<u32> {
    return select(vec2<u32>(p.k, p.k), vec2<u32>(p.oh, p.ow), p.direction == WEIGHT_GRAD);
}

// The radices of a column index: output pixels, input pixels, or taps.
fn q_radices() -> vec2<u32> {
    if p.direction == FORWARD { return vec2<u32>(p.oh, p.ow); }
    if p.direction == INPUT_GRAD { return vec2<u32>(p.h, p.w); }
    return vec2<u32>(p.k, p.k);
}

// x[n][ch][oy*s - pad + ky][ox*s - pad + kx], zero outside the image.
fn input_patch(tap: vec3<u32>, o: vec3<u32>) -> f32 {
    let iy = i32(o.y * p.stride + tap.y) - i32(p.pad);
    let ix = i32(o.z * p.stride + tap.z) - i32(p.pad);
    let ok = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let at = ((o.x * p.ci + tap.x) * p.h + u32(max(iy, 0))) * p.w + u32(max(ix, 0));
    return select(0.0, b[select(0u, at, ok)], ok);
}

// A[m][t], `d` being t's digits; zero past the rows or this split's K.
fn load_a(m: u32, t: u32, d: vec3<u32>, k_end: u32) -> f32 {
    if m >= p.gm || t >= k_end { return 0.0; }
    if p.direction == FORWARD {
        return a[m * p.gk + t];
    }
    if p.direction == INPUT_GRAD {
        // A[ci][(co, ky, kx)] = w[co][ci][ky][kx].
        return a[((d.x * p.ci + m) * p.k + d.y) * p.k + d.z];
    }
    // A[co][(n, oy, ox)] = dy[n][co][oy][ox].
    return a[((d.x * p.co + m) * p.oh + d.y) * p.ow + d.z];
}

// One coordinate of the output gradient that input coordinate `i` reads through tap offset
// `kt`: (coordinate, whether it exists).
fn through_stride(i: u32, kt: u32, size: u32) -> vec2<u32> {
    let t = i32(i + p.pad) - i32(kt);
    var o: u32;
    var exact: bool;
    if p.stride == 1u {
        o = u32(max(t, 0));
        exact = true;
    } else if p.stride == 2u {
        o = u32(max(t, 0)) >> 1u;
        exact = (t & 1) == 0;
    } else {
        o = u32(max(t, 0)) / p.stride;
        exact = u32(max(t, 0)) == o * p.stride;
    }
    return vec2<u32>(o, u32(t >= 0 && exact && o < size));
}

// B[t][q], `d` and `e` being their digits; zero past this split's K or the columns.
fn load_b(t: u32, d: vec3<u32>, q: u32, e: vec3<u32>, k_end: u32) -> f32 {
    if t >= k_end || q >= p.gn { return 0.0; }
    if p.direction == FORWARD {
        return input_patch(d, e);
    }
    if p.direction == INPUT_GRAD {
        // B[(co, ky, kx)][(n, iy, ix)] = dy[n][co][oy][ox] where oy * s = iy + pad - ky.
        let y = through_stride(e.y, d.y, p.oh);
        let x = through_stride(e.z, d.z, p.ow);
        let ok = y.y == 1u && x.y == 1u;
        let at = ((e.x * p.co + d.x) * p.oh + y.x) * p.ow + x.x;
        return select(0.0, b[select(0u, at, ok)], ok);
    }
    // B[(n, oy, ox)][(ci, ky, kx)]: the patches transposed.
    return input_patch(e, d);
}

// `split` is the weight gradient's split of K (grid z), whose partial sums have a block of c.
fn store(m: u32, q: u32, v: f32, split: u32) {
    if m >= p.gm || q >= p.gn { return; }
    if p.direction == FORWARD {
        let o = digits(q, q_radices());
        c[((o.x * p.co + m) * p.oh + o.y) * p.ow + o.z] = v;
    } else if p.direction == INPUT_GRAD {
        let i = digits(q, q_radices());
        c[((i.x * p.ci + m) * p.h + i.y) * p.w + i.z] = v;
    } else {
        c[split * p.split_stride + m * p.gn + q] = v;
    }
}

// Grid: x = 64-column tiles, y = 64-row tiles, z = splits of K.
@compute @workgroup_size(256)
fn implicit_gemm(ids: Ids) {
    let lid = local_index(ids);
    let tx = lid % 16u;
    let ty = lid / 16u;
    let m0 = ids.wg.y * 64u;
    let n0 = ids.wg.x * 64u;
    let k_begin = ids.wg.z * p.k_per_split;
    let k_end = min(k_begin + p.k_per_split, p.gk);
    let slices = (k_end - k_begin + 15u) / 16u;
    // Loads: A along k (its contiguous direction in every direction), B along its columns
    // except in the weight gradient, where B's contiguous direction is k.
    let a_m = m0 + ty * 4u;
    let b_along_k = p.direction == WEIGHT_GRAD;
    let b_slot = select(tx, ty, b_along_k);
    let b_q = n0 + 4u * b_slot;
    let kr = k_radices();
    let step = digits(16u, kr);
    var ta = k_begin + tx;
    var tb = k_begin + select(ty, tx, b_along_k);
    var da = digits(ta, kr);
    var db = digits(tb, kr);
    let qr = q_radices();
    let last = p.gn - 1u;
    let e0 = digits(min(b_q, last), qr);
    let e1 = digits(min(b_q + 1u, last), qr);
    let e2 = digits(min(b_q + 2u, last), qr);
    let e3 = digits(min(b_q + 3u, last), qr);

    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
    var ra = vec4<f32>(load_a(a_m, ta, da, k_end), load_a(a_m + 1u, ta, da, k_end),
                       load_a(a_m + 2u, ta, da, k_end), load_a(a_m + 3u, ta, da, k_end));
    var rb = vec4<f32>(load_b(tb, db, b_q, e0, k_end), load_b(tb, db, b_q + 1u, e1, k_end),
                       load_b(tb, db, b_q + 2u, e2, k_end), load_b(tb, db, b_q + 3u, e3, k_end));
    sa[tx * 16u + ty] = ra;
    sb[(tb - k_begin) * 16u + b_slot] = rb;
    workgroupBarrier();
    for (var s = 0u; s < slices; s++) {
        let cur = (s & 1u) * 256u;
        let next = 256u - cur;
        let more = s + 1u < slices;
        if more {
            ta += 16u;
            tb += 16u;
            da = advance(da, step, kr);
            db = advance(db, step, kr);
            ra = vec4<f32>(load_a(a_m, ta, da, k_end), load_a(a_m + 1u, ta, da, k_end),
                           load_a(a_m + 2u, ta, da, k_end), load_a(a_m + 3u, ta, da, k_end));
            rb = vec4<f32>(load_b(tb, db, b_q, e0, k_end), load_b(tb, db, b_q + 1u, e1, k_end),
                           load_b(tb, db, b_q + 2u, e2, k_end), load_b(tb, db, b_q + 3u, e3, k_end));
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
            sb[next + (select(ty, tx, b_along_k)) * 16u + b_slot] = rb;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + ty * 4u + i;
        let q = n0 + tx * 4u;
        store(m, q, acc[i].x, ids.wg.z);
        store(m, q + 1u, acc[i].y, ids.wg.z);
        store(m, q + 2u, acc[i].z, ids.wg.z);
        store(m, q + 3u, acc[i].w, ids.wg.z);
    }
}

// ---- summed[i] = sum over the splits of partial[split * split_stride + i] (weight gradient)

@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> summed: array<f32>;

@compute @workgroup_size(64)
fn implicit_sum_splits(ids: Ids) {
    let i = flat_index(ids, 64u);
    if i >= p.gm * p.gn { return; }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        sum += partial[s * p.split_stride + i];
    }
    summed[i] = sum;
}
