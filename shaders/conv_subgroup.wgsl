// 2-D convolution kernels for adapters with subgroups of at least 8 invocations.
//
// The workgroup shares a block of channels, so every invocation needs the same weights
// (or, in the weight gradient, the same output-gradient values). Rather than each
// invocation loading all of them, the 8 invocations of each group of 8 load 8 different
// values and pass them to each other with subgroupBroadcast: one load instead of eight.
// On CPUs (lavapipe) a load is far dearer than an FMA, and a broadcast is nearly free; on
// GPUs the broadcast replaces seven redundant cache accesses. Each invocation also owns
// two pixels, so every broadcast weight feeds two FMAs per channel.
//
// Invocations past the end work on a clamped pixel and
// store nothing (subgroup operations need every invocation to take part).

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/conv.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

// 16 channels of two pixels.
struct Acc {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
    b0: vec4<f32>,
    b1: vec4<f32>,
    b2: vec4<f32>,
    b3: vec4<f32>,
}

fn zero_acc() -> Acc {
    let z = vec4<f32>(0.0);
    return Acc(z, z, z, z, z, z, z, z);
}

// Channels 0..7 of the block come from `lo` of invocations 0..7, channels 8..15 from `hi`.
fn spread(lo: f32, hi: f32, xa: f32, xb: f32, acc: Acc) -> Acc {
    let w0 = vec4<f32>(subgroupBroadcast(lo, 0u), subgroupBroadcast(lo, 1u), subgroupBroadcast(lo, 2u), subgroupBroadcast(lo, 3u));
    let w1 = vec4<f32>(subgroupBroadcast(lo, 4u), subgroupBroadcast(lo, 5u), subgroupBroadcast(lo, 6u), subgroupBroadcast(lo, 7u));
    let w2 = vec4<f32>(subgroupBroadcast(hi, 0u), subgroupBroadcast(hi, 1u), subgroupBroadcast(hi, 2u), subgroupBroadcast(hi, 3u));
    let w3 = vec4<f32>(subgroupBroadcast(hi, 4u), subgroupBroadcast(hi, 5u), subgroupBroadcast(hi, 6u), subgroupBroadcast(hi, 7u));
    let va = vec4<f32>(xa);
    let vb = vec4<f32>(xb);
    return Acc(fma(w0, va, acc.a0), fma(w1, va, acc.a1), fma(w2, va, acc.a2), fma(w3, va, acc.a3),
               fma(w0, vb, acc.b0), fma(w1, vb, acc.b1), fma(w2, vb, acc.b2), fma(w3, vb, acc.b3));
}

fn to_array(a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) -> array<f32, 16> {
    return array<f32, 16>(a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w,
                          a2.x, a2.y, a2.z, a2.w, a3.x, a3.y, a3.z, a3.w);
}

// Whether every invocation of this subgroup lies past `total` work items (of one per
// invocation): such a subgroup can return at once, since subgroup operations only involve
// the subgroup's own invocations. (Otherwise it works on clamped items and stores nothing.)
fn subgroup_idle(ids: Ids, size: u32, total: u32) -> bool {
    return group_index(ids) * size + ids.sg_id * ids.sg_size >= total;
}

// A pair of horizontally adjacent pixels of an n x rows x cols grid.
struct Pair {
    n: u32,
    row: u32,
    col: u32,      // column of the first pixel (even)
    first: bool,   // first pixel exists
    second: bool,  // second pixel exists
}

fn pair_of(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, rows: u32, cols: u32) -> Pair {
    let half = (cols + 1u) / 2u;
    let total = p.n * rows * half;
    let q = (wg.x + wg.y * nwg.x) * 64u + lid;
    let qc = min(q, total - 1u);
    let n = qc / (rows * half);
    let r = qc - n * rows * half;
    let row = r / half;
    let col = 2u * (r - row * half);
    return Pair(n, row, col, q < total, q < total && col + 1u < cols);
}

// ---- forward --------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn x_at(plane: u32, ih: i32, iw: i32) -> f32 {
    let ok = ih >= 0 && ih < i32(p.h) && iw >= 0 && iw < i32(p.w);
    return select(0.0, x[select(0u, plane + u32(ih) * p.w + u32(iw), ok)], ok);
}

// One tap for both pixels: weights at wlo/whi (this invocation's channel), inputs at (ih, iwa|iwb).
fn fwd_tap(acc: Acc, plane: u32, ih: i32, iwa: i32, iwb: i32, wlo: u32, whi: u32) -> Acc {
    return spread(wt[wlo], wt[whi], x_at(plane, ih, iwa), x_at(plane, ih, iwb), acc);
}

fn fwd_store(acc: Acc, pr: Pair, co0: u32) {
    let ohw = p.oh * p.ow;
    let base = (pr.n * p.co + co0) * ohw + pr.row * p.ow + pr.col;
    let count = min(16u, p.co - co0);
    let va = to_array(acc.a0, acc.a1, acc.a2, acc.a3);
    let vb = to_array(acc.b0, acc.b1, acc.b2, acc.b3);
    for (var j = 0u; j < 16u; j++) {
        if j < count {
            if pr.first { y[base + j * ohw] = va[j]; }
            if pr.second { y[base + j * ohw + 1u] = vb[j]; }
        }
    }
}

// One kernel row of taps for both pixels. The pixels are `stride` apart, so their inputs
// overlap: with stride 1 the row needs 4 distinct inputs rather than 6, with stride 2, 5.
fn fwd_row(acc: Acc, plane: u32, ih: i32, iwa: i32, w_lo: u32, w_hi: u32) -> Acc {
    let x0 = x_at(plane, ih, iwa);
    let x1 = x_at(plane, ih, iwa + 1);
    let x2 = x_at(plane, ih, iwa + 2);
    let x3 = x_at(plane, ih, iwa + 3);
    var b0 = x1;
    var b1 = x2;
    var b2 = x3;
    if p.stride == 2u {
        b0 = x2;
        b1 = x3;
        b2 = x_at(plane, ih, iwa + 4);
    }
    var a = spread(wt[w_lo], wt[w_hi], x0, b0, acc);
    a = spread(wt[w_lo + 1u], wt[w_hi + 1u], x1, b1, a);
    return spread(wt[w_lo + 2u], wt[w_hi + 2u], x2, b2, a);
}

// Grid: x/y fold blocks of 64 pixel pairs, z = block of 16 output channels.
// Stride 1 or 2 (the pair's second pixel is `stride` inputs to the right).
@compute @workgroup_size(64)
fn conv3_forward(ids: Ids) {
    if subgroup_idle(ids, 64u, p.n * p.oh * ((p.ow + 1u) / 2u)) { return; }
    let pr = pair_of(ids.wg, ids.nwg, local_index(ids), p.oh, p.ow);
    let co0 = ids.wg.z * 16u;
    let lane = ids.sg_lane & 7u;
    let kk = p.ci * 9u;
    var wlo = min(co0 + lane, p.co - 1u) * kk;
    var whi = min(co0 + 8u + lane, p.co - 1u) * kk;
    let ih0 = i32(pr.row * p.stride) - i32(p.pad);
    let iwa = i32(pr.col * p.stride) - i32(p.pad);
    var plane = pr.n * p.ci * p.h * p.w;
    var acc = zero_acc();
    for (var c = 0u; c < p.ci; c++) {
        acc = fwd_row(acc, plane, ih0, iwa, wlo, whi);
        acc = fwd_row(acc, plane, ih0 + 1, iwa, wlo + 3u, whi + 3u);
        acc = fwd_row(acc, plane, ih0 + 2, iwa, wlo + 6u, whi + 6u);
        wlo += 9u;
        whi += 9u;
        plane += p.h * p.w;
    }
    fwd_store(acc, pr, co0);
}

@compute @workgroup_size(64)
fn conv1_forward(ids: Ids) {
    let wg = ids.wg;
    let nwg = ids.nwg;
    let lid = local_index(ids);
    let sg = ids.sg_lane;
    if subgroup_idle(ids, 64u, p.n * p.oh * ((p.ow + 1u) / 2u)) { return; }
    let pr = pair_of(wg, nwg, lid, p.oh, p.ow);
    let co0 = wg.z * 16u;
    let lane = sg & 7u;
    var wlo = min(co0 + lane, p.co - 1u) * p.ci;
    var whi = min(co0 + 8u + lane, p.co - 1u) * p.ci;
    let ih = i32(pr.row * p.stride) - i32(p.pad);
    let iwa = i32(pr.col * p.stride) - i32(p.pad);
    let iwb = iwa + i32(p.stride);
    var plane = pr.n * p.ci * p.h * p.w;
    var acc = zero_acc();
    for (var c = 0u; c < p.ci; c++) {
        acc = fwd_tap(acc, plane, ih, iwa, iwb, wlo, whi);
        wlo += 1u;
        whi += 1u;
        plane += p.h * p.w;
    }
    fwd_store(acc, pr, co0);
}

// ---- input gradient ---------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> wb: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

// Stores the 16 channels of a pair into dx: the first pixel at `base`, the second `gap`
// columns to its right.
fn dx_store(acc: Acc, pr: Pair, ci0: u32, base: u32, gap: u32) {
    let hw = p.h * p.w;
    let count = min(16u, p.ci - ci0);
    let va = to_array(acc.a0, acc.a1, acc.a2, acc.a3);
    let vb = to_array(acc.b0, acc.b1, acc.b2, acc.b3);
    for (var j = 0u; j < 16u; j++) {
        if j < count {
            if pr.first { dx[base + j * hw] = va[j]; }
            if pr.second { dx[base + j * hw + gap] = vb[j]; }
        }
    }
}

fn in_store(acc: Acc, pr: Pair, ci0: u32) {
    dx_store(acc, pr, ci0, (pr.n * p.ci + ci0) * p.h * p.w + pr.row * p.w + pr.col, 1u);
}

fn dy_val(plane: u32, oh: i32, ow: i32) -> f32 {
    let ok = oh >= 0 && oh < i32(p.oh) && ow >= 0 && ow < i32(p.ow);
    return select(0.0, dy[select(0u, plane + u32(oh) * p.ow + u32(ow), ok)], ok);
}

// One kernel row (kh) of a stride-1 input gradient for input pixels (ih, iw) and (ih, iw + 1):
// tap kw reaches output column iw + pad - kw, so the two pixels share three of their
// four output-gradient values.
fn in_row_s1(acc: Acc, plane: u32, oh: i32, c0: i32, w_lo: u32, w_hi: u32) -> Acc {
    let d0 = dy_val(plane, oh, c0 - 2);
    let d1 = dy_val(plane, oh, c0 - 1);
    let d2 = dy_val(plane, oh, c0);
    let d3 = dy_val(plane, oh, c0 + 1);
    var a = spread(wb[w_lo], wb[w_hi], d2, d3, acc);
    a = spread(wb[w_lo + 1u], wb[w_hi + 1u], d1, d2, a);
    return spread(wb[w_lo + 2u], wb[w_hi + 2u], d0, d1, a);
}

// Stride-1 input gradient. Grid: x/y fold blocks of 64 input-pixel pairs, z = block of 16
// input channels.
@compute @workgroup_size(64)
fn conv3_backward_input(ids: Ids) {
    if subgroup_idle(ids, 64u, p.n * p.h * ((p.w + 1u) / 2u)) { return; }
    let pr = pair_of(ids.wg, ids.nwg, local_index(ids), p.h, p.w);
    let ci0 = ids.wg.z * 16u;
    let lane = ids.sg_lane & 7u;
    // w[co, ci, tap] for this invocation's input channel, stepping through co.
    var wlo = min(ci0 + lane, p.ci - 1u) * 9u;
    var whi = min(ci0 + 8u + lane, p.ci - 1u) * 9u;
    let step = p.ci * 9u;
    let oh0 = i32(pr.row + p.pad);
    let c0 = i32(pr.col + p.pad);
    var plane = pr.n * p.co * p.oh * p.ow;
    var acc = zero_acc();
    for (var c = 0u; c < p.co; c++) {
        acc = in_row_s1(acc, plane, oh0, c0, wlo, whi);
        acc = in_row_s1(acc, plane, oh0 - 1, c0, wlo + 3u, whi + 3u);
        acc = in_row_s1(acc, plane, oh0 - 2, c0, wlo + 6u, whi + 6u);
        wlo += step;
        whi += step;
        plane += p.oh * p.ow;
    }
    in_store(acc, pr, ci0);
}

// 1x1 without padding: input pixel (row * stride, col * stride) receives gradient from
// output pixel (row, col) alone, and no other input pixel receives any. The grid runs over
// pairs of output pixels; with a stride, dx is zeroed beforehand, so the pixels in between
// are never touched (rather than tested tap by tap with integer divisions).
@compute @workgroup_size(64)
fn conv1_backward_input(ids: Ids) {
    if subgroup_idle(ids, 64u, p.n * p.oh * ((p.ow + 1u) / 2u)) { return; }
    let pr = pair_of(ids.wg, ids.nwg, local_index(ids), p.oh, p.ow);
    let ci0 = ids.wg.z * 16u;
    let lane = ids.sg_lane & 7u;
    var wlo = min(ci0 + lane, p.ci - 1u);
    var whi = min(ci0 + 8u + lane, p.ci - 1u);
    let ohw = p.oh * p.ow;
    var at = pr.n * p.co * ohw + pr.row * p.ow + pr.col;
    // The second pixel of a pair past the right edge reads the first one's value instead.
    let next = select(0u, 1u, pr.second);
    var acc = zero_acc();
    for (var c = 0u; c < p.co; c++) {
        acc = spread(wb[wlo], wb[whi], dy[at], dy[at + next], acc);
        wlo += p.ci;
        whi += p.ci;
        at += ohw;
    }
    let first = (pr.n * p.ci + ci0) * p.h * p.w + p.stride * (pr.row * p.w + pr.col);
    dx_store(acc, pr, ci0, first, p.stride);
}

// Stride 2: an input pixel receives gradient only through the taps whose parity matches
// its own (ih + pad - kh even), so masking every tap wastes three quarters of the work.
// Instead each dispatch takes one parity class of input pixels (p.phase), for which the
// valid taps are the same for every invocation, and loops over those taps alone. An
// invocation owns two same-parity pixels of a row (two columns apart).
@compute @workgroup_size(64)
fn conv3_backward_input_s2(ids: Ids) {
    let ph = p.phase / 2u;
    let pw = p.phase % 2u;
    let rows = (p.h - ph + 1u) / 2u;
    let cols = (p.w - pw + 1u) / 2u;
    if subgroup_idle(ids, 64u, p.n * rows * ((cols + 1u) / 2u)) { return; }
    let pr = pair_of(ids.wg, ids.nwg, local_index(ids), rows, cols);
    let ih = 2u * pr.row + ph;
    let iwa = 2u * pr.col + pw;
    let ci0 = ids.wg.z * 16u;
    let lane = ids.sg_lane & 7u;
    let wlo0 = min(ci0 + lane, p.ci - 1u) * 9u;
    let whi0 = min(ci0 + 8u + lane, p.ci - 1u) * 9u;
    let step = p.ci * 9u;
    let kh0 = (ph + p.pad) % 2u;
    let kw0 = (pw + p.pad) % 2u;
    var plane = pr.n * p.co * p.oh * p.ow;
    var wlo = wlo0;
    var whi = whi0;
    var acc = zero_acc();
    for (var c = 0u; c < p.co; c++) {
        for (var kh = kh0; kh < 3u; kh += 2u) {
            let th = i32(ih + p.pad) - i32(kh);
            let oh = th / 2;
            let row_ok = th >= 0 && oh < i32(p.oh);
            let grow = plane + u32(max(oh, 0)) * p.ow;
            for (var kw = kw0; kw < 3u; kw += 2u) {
                let tw = i32(iwa + p.pad) - i32(kw);
                let owa = tw / 2;
                let oka = row_ok && tw >= 0 && owa < i32(p.ow);
                let okb = row_ok && owa + 1 < i32(p.ow);
                let ga = select(0.0, dy[select(0u, grow + u32(owa), oka)], oka);
                let gb = select(0.0, dy[select(0u, grow + u32(owa + 1), okb)], okb);
                let tap = kh * 3u + kw;
                acc = spread(wb[wlo + tap], wb[whi + tap], ga, gb, acc);
            }
        }
        wlo += step;
        whi += step;
        plane += p.oh * p.ow;
    }
    dx_store(acc, pr, ci0, (pr.n * p.ci + ci0) * p.h * p.w + ih * p.w + iwa, 2u);
}

// ---- weight gradient ----------------------------------------------------------------------------
// dw[co, ci, kh, kw] = sum over pixels of dy[n, co, oh, ow] x[n, ci, oh*s+kh-pad, ow*s+kw-pad].
// Each invocation owns one (ci, kh) and its three kw taps (one tap for 1x1) for 8 output
// channels, whose dy values invocations 0..7 load and broadcast. z splits the pixel rows
// into partial sums, added by conv_sum_splits in conv.wgsl.

@group(0) @binding(1) var<storage, read> xw: array<f32>;
@group(0) @binding(2) var<storage, read> dyw: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw_part: array<f32>;

fn xw_at(plane: u32, row_ok: bool, xrow: u32, iw: i32) -> f32 {
    let ok = row_ok && iw >= 0 && iw < i32(p.w);
    return select(0.0, xw[select(0u, plane + xrow + u32(iw), ok)], ok);
}

fn spread8(v: f32) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(
        vec4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)),
        vec4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u)));
}

// Grid: x = blocks of 64 (ci, kh) rows, y = blocks of 8 output channels, z = split.
@compute @workgroup_size(64)
fn conv3_backward_weight(ids: Ids) {
    let wg = ids.wg;
    let lid = local_index(ids);
    let sg = ids.sg_lane;
    let rows3 = p.ci * 3u;
    if wg.x * 64u + ids.sg_id * ids.sg_size >= rows3 { return; }
    let rr = wg.x * 64u + lid;
    let rc = min(rr, rows3 - 1u);
    let ci = rc / 3u;
    let kh = rc - ci * 3u;
    let co0 = wg.y * 8u;
    let lane = sg & 7u;
    let my_co = min(co0 + lane, p.co - 1u);
    let ohw = p.oh * p.ow;
    var t0a = vec4<f32>(0.0);
    var t0b = vec4<f32>(0.0);
    var t1a = vec4<f32>(0.0);
    var t1b = vec4<f32>(0.0);
    var t2a = vec4<f32>(0.0);
    var t2b = vec4<f32>(0.0);
    let rows = p.n * p.oh;
    let row_begin = wg.z * p.rows_per_split;
    let row_end = min(row_begin + p.rows_per_split, rows);
    for (var row = row_begin; row < row_end; row++) {
        let n = row / p.oh;
        let oh = row - n * p.oh;
        let ih = i32(oh * p.stride + kh) - i32(p.pad);
        let row_ok = ih >= 0 && ih < i32(p.h);
        let plane = (n * p.ci + ci) * p.h * p.w;
        let xrow = u32(max(ih, 0)) * p.w;
        let grow = (n * p.co + my_co) * ohw + oh * p.ow;
        for (var ow = 0u; ow < p.ow; ow++) {
            let iw = i32(ow * p.stride) - i32(p.pad);
            let g = spread8(dyw[grow + ow]);
            let x0 = vec4<f32>(xw_at(plane, row_ok, xrow, iw));
            let x1 = vec4<f32>(xw_at(plane, row_ok, xrow, iw + 1));
            let x2 = vec4<f32>(xw_at(plane, row_ok, xrow, iw + 2));
            t0a = fma(g[0], x0, t0a);
            t0b = fma(g[1], x0, t0b);
            t1a = fma(g[0], x1, t1a);
            t1b = fma(g[1], x1, t1b);
            t2a = fma(g[0], x2, t2a);
            t2b = fma(g[1], x2, t2b);
        }
    }
    if rr < rows3 && co0 < p.co {
        let count = min(8u, p.co - co0);
        let ck = p.ci * 9u;
        let base = (wg.z * p.co + co0) * ck + ci * 9u + kh * 3u;
        let v0 = array<f32, 8>(t0a.x, t0a.y, t0a.z, t0a.w, t0b.x, t0b.y, t0b.z, t0b.w);
        let v1 = array<f32, 8>(t1a.x, t1a.y, t1a.z, t1a.w, t1b.x, t1b.y, t1b.z, t1b.w);
        let v2 = array<f32, 8>(t2a.x, t2a.y, t2a.z, t2a.w, t2b.x, t2b.y, t2b.z, t2b.w);
        for (var j = 0u; j < 8u; j++) {
            if j < count {
                dw_part[base + j * ck] = v0[j];
                dw_part[base + j * ck + 1u] = v1[j];
                dw_part[base + j * ck + 2u] = v2[j];
            }
        }
    }
}

// Grid: x = blocks of 64 input channels, y = blocks of 8 output channels, z = split.
@compute @workgroup_size(64)
fn conv1_backward_weight(ids: Ids) {
    let wg = ids.wg;
    let lid = local_index(ids);
    let sg = ids.sg_lane;
    if wg.x * 64u + ids.sg_id * ids.sg_size >= p.ci { return; }
    let rr = wg.x * 64u + lid;
    let ci = min(rr, p.ci - 1u);
    let co0 = wg.y * 8u;
    let lane = sg & 7u;
    let my_co = min(co0 + lane, p.co - 1u);
    let ohw = p.oh * p.ow;
    var ta = vec4<f32>(0.0);
    var tb = vec4<f32>(0.0);
    let rows = p.n * p.oh;
    let row_begin = wg.z * p.rows_per_split;
    let row_end = min(row_begin + p.rows_per_split, rows);
    for (var row = row_begin; row < row_end; row++) {
        let n = row / p.oh;
        let oh = row - n * p.oh;
        let ih = i32(oh * p.stride) - i32(p.pad);
        let row_ok = ih >= 0 && ih < i32(p.h);
        let plane = (n * p.ci + ci) * p.h * p.w;
        let xrow = u32(max(ih, 0)) * p.w;
        let grow = (n * p.co + my_co) * ohw + oh * p.ow;
        for (var ow = 0u; ow < p.ow; ow++) {
            let g = spread8(dyw[grow + ow]);
            let xv = vec4<f32>(xw_at(plane, row_ok, xrow, i32(ow * p.stride) - i32(p.pad)));
            ta = fma(g[0], xv, ta);
            tb = fma(g[1], xv, tb);
        }
    }
    if rr < p.ci && co0 < p.co {
        let count = min(8u, p.co - co0);
        let base = (wg.z * p.co + co0) * p.ci + ci;
        let v = array<f32, 8>(ta.x, ta.y, ta.z, ta.w, tb.x, tb.y, tb.z, tb.w);
        for (var j = 0u; j < 8u; j++) {
            if j < count { dw_part[base + j * p.ci] = v[j]; }
        }
    }
}
