// Fake quantization and the statistics that calibrate it.
//
// A grid is (s, zp, qmin, qmax): v maps to the index q = clamp(round(v * inv) + zp, qmin,
// qmax) and comes back as (q - zp) * s. The quotient is v times inv = 1 / s rounded to f32,
// and `round` rounds halves to even: both as PyTorch's fake_quantize kernels do (they call
// nearbyint), so ties land on the same grid points. The straight-through gradient passes
// where the unclamped index lies in [qmin, qmax], bounds included, as in PyTorch.
//
// Special values are told apart by their bits: WGSL lets an implementation assume that
// float operations never see NaN or infinity, so float comparisons cannot be trusted to.
//
// Histograms count with one atomic add per value, so only the counts ever leave the device.
// Min/max reductions run without barriers, as the sums of reduce.wgsl do.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/quant.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// A positive, normal, finite scale: the only kind whose reciprocal is finite and nonzero.
// Anything else (0, negative, subnormal, infinite, NaN) has no usable grid.
fn usable_scale(s: f32) -> bool {
    let sign_and_exponent = bitcast<u32>(s) >> 23u;
    return sign_and_exponent >= 1u && sign_and_exponent <= 254u;
}

fn grid_index(v: f32, inv: f32) -> f32 {
    return round(v * inv) + p.zero_point;
}

// NaN stays NaN, as in PyTorch (a clamp would be free to turn it into a bound).
fn fake_quant(v: f32, s: f32, inv: f32) -> f32 {
    if is_nan(v) { return v; }
    return (clamp(grid_index(v, inv), p.qmin, p.qmax) - p.zero_point) * s;
}

fn passes(v: f32, inv: f32) -> bool {
    if is_nan(v) { return false; }
    let q = grid_index(v, inv);
    return q >= p.qmin && q <= p.qmax;
}

@group(0) @binding(1) var<storage, read> x: array<f32>;

// ---- one grid for the whole tensor, four values per invocation ----------------------------
// p.n counts vec4s; buffers are allocated in 16-byte multiples, so the last vec4 is in
// bounds (its padding lanes compute values nobody reads). Lane by lane the arithmetic is
// the scalar form's. On lavapipe, where each invocation's load is a gather, this made
// `repopt quantize` of a quick-pipeline run (six INT8 evaluations of 2,000 images) take
// 5.46, 5.34 and 5.69 s against 6.53, 5.57 and 5.91 s, interleaved, with the same output.

@group(0) @binding(1) var<storage, read> xq4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> yq4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn fake_quant_forward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n {
        let v = xq4[i];
        yq4[i] = vec4<f32>(
            fake_quant(v.x, p.scale, p.inv_scale),
            fake_quant(v.y, p.scale, p.inv_scale),
            fake_quant(v.z, p.scale, p.inv_scale),
            fake_quant(v.w, p.scale, p.inv_scale));
    }
}

@group(0) @binding(2) var<storage, read> dyq4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dxq4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn fake_quant_backward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n {
        let v = xq4[i];
        let ok = vec4<bool>(
            passes(v.x, p.inv_scale),
            passes(v.y, p.inv_scale),
            passes(v.z, p.inv_scale),
            passes(v.w, p.inv_scale));
        dxq4[i] = select(vec4<f32>(0.0), dyq4[i], ok);
    }
}

// ---- one grid per channel (the first dimension), zp = 0 -------------------------------------

@group(0) @binding(2) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> y3: array<f32>;

// A channel without a usable scale is all zeros: the limit of the grid as s goes to 0 or
// to infinity, and what a scale of 0 (an all-zero channel at calibration) stands for.
@compute @workgroup_size(256)
fn fake_quant_channels_forward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i >= p.n { return; }
    let s = scales[i / p.inner];
    if usable_scale(s) {
        y3[i] = fake_quant(x[i], s, 1.0 / s);
    } else {
        y3[i] = 0.0;
    }
}

@group(0) @binding(3) var<storage, read> dy3: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx4: array<f32>;

// Such a channel passes its whole gradient, so that its weights keep training until it is
// given a scale.
@compute @workgroup_size(256)
fn fake_quant_channels_backward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i >= p.n { return; }
    let s = scales[i / p.inner];
    let keep = !usable_scale(s) || passes(x[i], 1.0 / s);
    dx4[i] = select(0.0, dy3[i], keep);
}

// ---- histograms -----------------------------------------------------------------------------

@group(0) @binding(2) var<storage, read_write> counts: array<atomic<u32>>;

// Bin floor((v - lo) * inv_width), clamped into the bins: values below lo count in the
// first, values at or above hi (and infinities) in the last. NaN is not counted.
@compute @workgroup_size(256)
fn histogram(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i >= p.n { return; }
    var v = x[i];
    if is_nan(v) { return; }
    if p.abs != 0u { v = abs(v); }
    let bin = clamp(floor((v - p.lo) * p.inv_width), 0.0, f32(p.bins - 1u));
    atomicAdd(&counts[u32(bin)], 1u);
}

// ---- min / max ------------------------------------------------------------------------------

@group(0) @binding(2) var<storage, read_write> runs: array<f32>;

// Item i of row r as (min, max): a value twice (its magnitude with p.abs), or a pair that
// an earlier pass wrote.
fn extremes_of(r: u32, i: u32) -> vec2<f32> {
    let k = r * p.cols + i;
    if p.pairs != 0u { return vec2<f32>(x[2u * k], x[2u * k + 1u]); }
    let v = select(x[k], abs(x[k]), p.abs != 0u);
    return vec2<f32>(v, v);
}

// runs[2k], runs[2k + 1] = min, max of run k (row k / chunks) over the items that are not
// NaN, or (+inf, -inf) when there are none; with p.max_only, runs[k] = the max alone. A row
// of no items is one empty run.
@compute @workgroup_size(64)
fn min_max_runs(ids: Ids) {
    let chunks = max((p.cols + p.chunk - 1u) / p.chunk, 1u);
    let k = flat_index(ids, 64u);
    if k >= p.rows * chunks { return; }
    let r = k / chunks;
    let begin = (k - r * chunks) * p.chunk;
    let end = min(begin + p.chunk, p.cols);
    var lo = p.inf;
    var hi = -p.inf;
    for (var i = begin; i < end; i++) {
        let m = extremes_of(r, i);
        if !is_nan(m.x) { lo = min(lo, m.x); }
        if !is_nan(m.y) { hi = max(hi, m.y); }
    }
    if p.max_only != 0u {
        runs[k] = hi;
        return;
    }
    if p.accumulate != 0u {
        let old = vec2<f32>(runs[2u * k], runs[2u * k + 1u]);
        if !is_nan(old.x) { lo = min(lo, old.x); }
        if !is_nan(old.y) { hi = max(hi, old.y); }
    }
    runs[2u * k] = lo;
    runs[2u * k + 1u] = hi;
}
