// Depthwise convolution without bias: every channel convolved with its own k x k filter
// (groups = channels, channel multiplier 1), any odd k, stride and padding.
//
// x is [N, C, H, W], w is [C, 1, k, k], y is [N, C, OH, OW]. One invocation per output
// pixel (forward) or input pixel (input gradient); consecutive invocations share a plane and
// hence a filter, so the weight loads are uniform across most of a workgroup.
//
// Instead of masking padded taps, each kernel first works out the range of taps (or output
// pixels) that land inside the image and loops over exactly that range: no tap is wasted
// (at stride 2 a gather would otherwise skip three taps in four), and every index is in
// bounds by construction, which is what lets the file run without bounds checks.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/depthwise.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(2) var<storage, read> wt: array<f32>;

// ---- forward: y[n, c, oh, ow] = sum_{kh, kw} w[c, kh, kw] x[n, c, oh*s+kh-pad, ow*s+kw-pad]

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn depthwise_forward(ids: Ids) {
    let q = flat_index(ids, 64u);
    let ohw = p.oh * p.ow;
    if q >= p.n * p.c * ohw { return; }
    let plane = q / ohw;               // n * C + c
    let r = q - plane * ohw;
    let oh = r / p.ow;
    let ow = r - oh * p.ow;
    let c = plane % p.c;
    let k = i32(p.k);
    // Taps kh in [kh_lo, kh_hi) read rows ih0 + kh inside [0, H).
    let ih0 = i32(oh * p.stride) - i32(p.pad);
    let iw0 = i32(ow * p.stride) - i32(p.pad);
    let kh_lo = max(0, -ih0);
    let kh_hi = min(k, i32(p.h) - ih0);
    let kw_lo = max(0, -iw0);
    let kw_hi = min(k, i32(p.w) - iw0);
    let xplane = plane * p.h * p.w;
    let wplane = c * p.k * p.k;
    var s = 0.0;
    for (var kh = kh_lo; kh < kh_hi; kh++) {
        let xrow = xplane + u32(ih0 + kh) * p.w;
        let wrow = wplane + u32(kh) * p.k;
        for (var kw = kw_lo; kw < kw_hi; kw++) {
            s = fma(wt[wrow + u32(kw)], x[xrow + u32(iw0 + kw)], s);
        }
    }
    y[q] = s;
}

// ---- input gradient: dx[n, c, ih, iw] = sum over (oh, kh) with oh*s + kh = ih + pad, and the
// same for columns, of w[c, kh, kw] dy[n, c, oh, ow]. Each input pixel gathers from the
// outputs that read it, so no two invocations write the same element (no atomics).

@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

// Output indices o in [lo, hi] whose tap t - o*s lies in [0, k), clamped to [0, limit).
// The tap range gives o >= ceil((t - k + 1) / s) and o <= floor(t / s); t >= 0 always, and
// a negative numerator only ever needs the clamp to 0 (truncating division gives <= 0).
fn gather_range(t: i32, limit: u32) -> vec2<i32> {
    let s = i32(p.stride);
    let lo = max(0, (t - i32(p.k) + s) / s);
    let hi = min(i32(limit) - 1, t / s);
    return vec2<i32>(lo, hi);
}

@compute @workgroup_size(64)
fn depthwise_backward_input(ids: Ids) {
    let q = flat_index(ids, 64u);
    let hw = p.h * p.w;
    if q >= p.n * p.c * hw { return; }
    let plane = q / hw;
    let r = q - plane * hw;
    let ih = r / p.w;
    let iw = r - ih * p.w;
    let c = plane % p.c;
    let s = i32(p.stride);
    let th = i32(ih + p.pad);          // = oh * s + kh
    let tw = i32(iw + p.pad);          // = ow * s + kw
    let rows = gather_range(th, p.oh);
    let cols = gather_range(tw, p.ow);
    let gplane = plane * p.oh * p.ow;
    let wplane = c * p.k * p.k;
    var acc = 0.0;
    for (var oh = rows.x; oh <= rows.y; oh++) {
        let grow = gplane + u32(oh) * p.ow;
        let wrow = wplane + u32(th - oh * s) * p.k;
        for (var ow = cols.x; ow <= cols.y; ow++) {
            acc = fma(wt[wrow + u32(tw - ow * s)], dy[grow + u32(ow)], acc);
        }
    }
    dx[q] = acc;
}

// ---- weight gradient: dw[c, kh, kw] = sum_{n, oh, ow} dy[n, c, oh, ow] x[n, c, oh*s+kh-pad, ow*s+kw-pad]
// C * k * k sums of N * OH * OW products are too few to fill a device alone, so each sum is
// split over runs of `rows_per_split` output rows (n, oh), and a second pass (`sum_rows` of
// reduce.wgsl) adds the `splits` partial sums. Two passes without barriers rather than one
// workgroup-shared tree: on lavapipe every barrier is a coroutine switch per invocation.
// Consecutive invocations are the taps of one (split, channel), so they read the same output
// gradient row and neighbouring input pixels.

@group(0) @binding(1) var<storage, read> xw: array<f32>;
@group(0) @binding(2) var<storage, read> dyw: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw_part: array<f32>;

// Output positions o in [lo, hi] whose input o*s + tap - pad lies in [0, size).
fn tap_range(tap: u32, size: u32, limit: u32) -> vec2<i32> {
    let s = i32(p.stride);
    let first = i32(p.pad) - i32(tap);                   // o * s >= first
    let lo = max(0, select(0, (first + s - 1) / s, first > 0));
    let hi = min(i32(limit) - 1, (i32(size) - 1 + first) / s);
    return vec2<i32>(lo, select(hi, lo - 1, i32(size) - 1 + first < 0));
}

@compute @workgroup_size(64)
fn depthwise_backward_weight(ids: Ids) {
    let q = flat_index(ids, 64u);
    let kk = p.k * p.k;
    let ckk = p.c * kk;
    if q >= p.splits * ckk { return; }
    let split = q / ckk;
    let ct = q - split * ckk;          // c * kk + tap
    let c = ct / kk;
    let tap = ct - c * kk;
    let kh = tap / p.k;
    let kw = tap - kh * p.k;
    let s = p.stride;
    let rows = tap_range(kh, p.h, p.oh);
    let cols = tap_range(kw, p.w, p.ow);
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let row_begin = split * p.rows_per_split;
    let row_end = min(row_begin + p.rows_per_split, p.n * p.oh);
    var acc = 0.0;
    for (var row = row_begin; row < row_end; row++) {
        let n = row / p.oh;
        let oh = row - n * p.oh;
        if i32(oh) < rows.x || i32(oh) > rows.y { continue; }
        let plane = n * p.c + c;
        let xrow = plane * hw + (oh * s + kh - p.pad) * p.w + kw - p.pad;
        let grow = plane * ohw + oh * p.ow;
        for (var ow = cols.x; ow <= cols.y; ow++) {
            acc = fma(dyw[grow + u32(ow)], xw[xrow + u32(ow) * s], acc);
        }
    }
    dw_part[ct * p.splits + split] = acc;
}
