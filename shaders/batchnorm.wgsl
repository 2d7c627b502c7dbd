// Batch normalisation over [N, C, HW] per channel, optionally fused with a ReLU.
//
// Statistics and the parameters' gradients take one dispatch each: a workgroup per channel,
// whose 64 invocations stride through the channel's N x HW values (consecutive invocations
// on consecutive values, so loads coalesce on GPUs and every invocation has work even when
// HW is 1) and add their partial sums in workgroup memory. Statistics are two-pass (the
// mean, then the sum of squared deviations from it: exact and stable). The running
// statistics move towards the batch's with the unbiased variance. Backward recomputes xhat
// (and the ReLU mask) from the saved input instead of keeping the output.
//
// Every kernel has a twin (`...4`) that reads and writes four values at a time where HW is
// a multiple of 4 (the usual case: even image sides), so a vec4 never straddles two planes.
// On lavapipe, where each invocation's load is a gather, that measured 3-5x faster at
// [64, 12, 28, 28] and [32, 48, 16, 16] for every pass, and the same at HW = 4. The
// elementwise passes also run a workgroup per piece of one channel rather than a flat index:
// that spares two integer divisions per value (tens of cycles each per lane on a CPU) and
// loads the channel's parameters once; 1.3-1.7x at [64, 12, 28, 28] on its own.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/batchnorm.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

// ---- per-channel reductions ------------------------------------------------------------------

const WG: u32 = 64u;

var<workgroup> partial: array<vec2<f32>, 64>;

// The workgroup's sum of `v`; every invocation gets it. Called in uniform control flow.
fn workgroup_sum(lid: u32, v: vec2<f32>) -> vec2<f32> {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Nobody may overwrite `partial` before everyone has read the total.
    workgroupBarrier();
    return total;
}

// Walks channel c's values: element e = n * HW + i lives at (n * C + c) * HW + i. An
// invocation starts at some e and steps by a fixed stride, carrying (n, i) instead of
// dividing (integer division costs tens of cycles per lane on CPU adapters).
struct Walk {
    n: u32,
    i: u32,
}

// The position of element e, and equally the (n, i) advance of a stride of e elements.
// `hw` is the plane's length in the units walked: values, or vec4 of them.
fn walk_start(e: u32, hw: u32) -> Walk {
    return Walk(e / hw, e % hw);
}

fn walk_next(w: Walk, stride: Walk, hw: u32) -> Walk {
    var i = w.i + stride.i;
    var n = w.n + stride.n;
    if i >= hw {
        i -= hw;
        n += 1u;
    }
    return Walk(n, i);
}

fn walk_at(w: Walk, c: u32, hw: u32) -> u32 {
    return (w.n * p.c + c) * hw + w.i;
}

// ---- statistics -------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;         // [mean(C), invstd(C)]
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;

// Grid: one workgroup per channel (folded over x and y).
@compute @workgroup_size(64)
fn bn_stats(ids: Ids) {
    let c = group_index(ids);
    if c >= p.c { return; }
    let lid = local_index(ids);
    let count = p.n * p.hw;
    var s = 0.0;
    let stride = walk_start(WG, p.hw);
    var w = walk_start(lid, p.hw);
    for (var e = lid; e < count; e += WG) {
        s += x[walk_at(w, c, p.hw)];
        w = walk_next(w, stride, p.hw);
    }
    let mean = workgroup_sum(lid, vec2<f32>(s, 0.0)).x / f32(count);
    var q = 0.0;
    w = walk_start(lid, p.hw);
    for (var e = lid; e < count; e += WG) {
        let d = x[walk_at(w, c, p.hw)] - mean;
        q += d * d;
        w = walk_next(w, stride, p.hw);
    }
    let m2 = workgroup_sum(lid, vec2<f32>(q, 0.0)).x;
    if lid == 0u { write_stats(c, mean, m2, count); }
}

// Channel c's statistics from its mean and its sum of squared deviations m2 over `count`
// values, and the running statistics moved towards them.
fn write_stats(c: u32, mean: f32, m2: f32, count: u32) {
    stats[c] = mean;
    stats[p.c + c] = 1.0 / sqrt(m2 / f32(count) + p.eps);
    let unbiased = m2 / f32(max(count, 2u) - 1u);
    running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
    running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
}

fn add4(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// `bn_stats` four values at a time, where HW is a multiple of 4. Grid: as `bn_stats`'s.
@compute @workgroup_size(64)
fn bn_stats4(ids: Ids) {
    let c = group_index(ids);
    if c >= p.c { return; }
    let lid = local_index(ids);
    let hw = p.hw / 4u;
    let count = p.n * hw;
    var s = vec4<f32>(0.0);
    let stride = walk_start(WG, hw);
    var w = walk_start(lid, hw);
    for (var e = lid; e < count; e += WG) {
        s += x4[walk_at(w, c, hw)];
        w = walk_next(w, stride, hw);
    }
    let mean = workgroup_sum(lid, vec2<f32>(add4(s), 0.0)).x / f32(4u * count);
    var q = vec4<f32>(0.0);
    w = walk_start(lid, hw);
    for (var e = lid; e < count; e += WG) {
        let d = x4[walk_at(w, c, hw)] - mean;
        q += d * d;
        w = walk_next(w, stride, hw);
    }
    let m2 = workgroup_sum(lid, vec2<f32>(add4(q), 0.0)).x;
    if lid == 0u { write_stats(c, mean, m2, 4u * count); }
}

// ---- evaluation statistics from the running ones ----------------------------------------------

@group(0) @binding(1) var<storage, read> rmean: array<f32>;
@group(0) @binding(2) var<storage, read> rvar: array<f32>;
@group(0) @binding(3) var<storage, read_write> eval_stats: array<f32>;

@compute @workgroup_size(64)
fn bn_eval_stats(ids: Ids) {
    let c = flat_index(ids, 64u);
    if c < p.c {
        eval_stats[c] = rmean[c];
        eval_stats[p.c + c] = 1.0 / sqrt(rvar[c] + p.eps);
    }
}

// ---- normalise ------------------------------------------------------------------------------

@group(0) @binding(2) var<storage, read> st: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

// The elementwise passes (apply, input gradient) run a workgroup per piece of a channel:
// 256 invocations walk CHUNK_STEPS x 256 consecutive values of channel c, so the channel's
// statistics and parameters are the same for the whole workgroup (loaded once, where a flat
// index loads them per element after two divisions). Grid: C x `chunks` workgroups, folded.
const CHUNK_STEPS: u32 = 4u;
const CHUNK: u32 = 1024u;

// The channel and the piece's first unit of workgroup g, for `count` units per channel
// (c >= C past the grid's end).
fn chunk_of(g: u32, count: u32) -> vec2<u32> {
    let chunks = (count + CHUNK - 1u) / CHUNK;
    let c = g / chunks;
    return vec2<u32>(c, (g - c * chunks) * CHUNK);
}

@compute @workgroup_size(256)
fn bn_apply(ids: Ids) {
    let count = p.n * p.hw;
    let piece = chunk_of(group_index(ids), count);
    let c = piece.x;
    if c >= p.c { return; }
    let mean = st[c];
    let invstd = st[p.c + c];
    let scale = gamma[c];
    let shift = beta[c];
    let stride = walk_start(256u, p.hw);
    var e = piece.y + local_index(ids);
    var w = walk_start(e, p.hw);
    for (var k = 0u; k < CHUNK_STEPS; k++) {
        if e < count {
            let at = walk_at(w, c, p.hw);
            var v = (x[at] - mean) * invstd * scale + shift;
            if p.relu == 1u { v = max(v, 0.0); }
            y[at] = v;
        }
        e += 256u;
        w = walk_next(w, stride, p.hw);
    }
}

// `bn_apply` four values at a time, where HW is a multiple of 4 (a vec4 never straddles
// two planes). Grid: as `bn_apply`'s, in units of vec4.
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn bn_apply4(ids: Ids) {
    let hw = p.hw / 4u;
    let count = p.n * hw;
    let piece = chunk_of(group_index(ids), count);
    let c = piece.x;
    if c >= p.c { return; }
    let mean = st[c];
    let invstd = st[p.c + c];
    let scale = gamma[c];
    let shift = beta[c];
    let stride = walk_start(256u, hw);
    var e = piece.y + local_index(ids);
    var w = walk_start(e, hw);
    for (var k = 0u; k < CHUNK_STEPS; k++) {
        if e < count {
            let at = walk_at(w, c, hw);
            var v = (x4[at] - mean) * invstd * scale + shift;
            if p.relu == 1u { v = max(v, vec4<f32>(0.0)); }
            y4[at] = v;
        }
        e += 256u;
        w = walk_next(w, stride, hw);
    }
}

// ---- backward -------------------------------------------------------------------------------

@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_gamma: array<f32>;
@group(0) @binding(7) var<storage, read_write> grad_beta: array<f32>;

// The output gradient with the fused ReLU's mask applied (recomputed from x).
fn masked_dy(i: u32, c: u32) -> f32 {
    let g = dy[i];
    if p.relu == 1u {
        let pre = (x[i] - st[c]) * st[p.c + c] * gamma[c] + beta[c];
        return select(0.0, g, pre > 0.0);
    }
    return g;
}

// dgamma[c] = sum dy xhat, dbeta[c] = sum dy. Grid: one workgroup per channel.
@compute @workgroup_size(64)
fn bn_param_grads(ids: Ids) {
    let c = group_index(ids);
    if c >= p.c { return; }
    let lid = local_index(ids);
    let mean = st[c];
    let invstd = st[p.c + c];
    var sums = vec2<f32>(0.0);
    let stride = walk_start(WG, p.hw);
    var w = walk_start(lid, p.hw);
    for (var e = lid; e < p.n * p.hw; e += WG) {
        let at = walk_at(w, c, p.hw);
        let g = masked_dy(at, c);
        sums += vec2<f32>(g, g * (x[at] - mean) * invstd);
        w = walk_next(w, stride, p.hw);
    }
    let total = workgroup_sum(lid, sums);
    if lid == 0u {
        grad_beta[c] = total.x;
        grad_gamma[c] = total.y;
    }
}

// `bn_param_grads` four values at a time, where HW is a multiple of 4. Grid: as
// `bn_param_grads`'s.
@compute @workgroup_size(64)
fn bn_param_grads4(ids: Ids) {
    let c = group_index(ids);
    if c >= p.c { return; }
    let lid = local_index(ids);
    let hw = p.hw / 4u;
    let mean = st[c];
    let invstd = st[p.c + c];
    let scale = gamma[c];
    let shift = beta[c];
    var sum_dy = vec4<f32>(0.0);
    var sum_dy_xhat = vec4<f32>(0.0);
    let stride = walk_start(WG, hw);
    var w = walk_start(lid, hw);
    for (var e = lid; e < p.n * hw; e += WG) {
        let at = walk_at(w, c, hw);
        let xv = x4[at];
        var g = dy4[at];
        if p.relu == 1u {
            let pre = (xv - mean) * invstd * scale + shift;
            g = select(vec4<f32>(0.0), g, pre > vec4<f32>(0.0));
        }
        sum_dy += g;
        sum_dy_xhat += g * (xv - mean) * invstd;
        w = walk_next(w, stride, hw);
    }
    let total = workgroup_sum(lid, vec2<f32>(add4(sum_dy), add4(sum_dy_xhat)));
    if lid == 0u {
        grad_beta[c] = total.x;
        grad_gamma[c] = total.y;
    }
}

@group(0) @binding(6) var<storage, read> sums_gamma: array<f32>;
@group(0) @binding(7) var<storage, read> sums_beta: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

// Grid: as `bn_apply`'s.
@compute @workgroup_size(256)
fn bn_backward_input(ids: Ids) {
    let count = p.n * p.hw;
    let piece = chunk_of(group_index(ids), count);
    let c = piece.x;
    if c >= p.c { return; }
    let mean = st[c];
    let invstd = st[p.c + c];
    let m = f32(count);
    let mean_dy = sums_beta[c] / m;
    let mean_dy_xhat = sums_gamma[c] / m;
    let scale = gamma[c] * invstd;
    let stride = walk_start(256u, p.hw);
    var e = piece.y + local_index(ids);
    var w = walk_start(e, p.hw);
    for (var k = 0u; k < CHUNK_STEPS; k++) {
        if e < count {
            let at = walk_at(w, c, p.hw);
            var d = masked_dy(at, c);
            if p.training == 1u {
                let xhat = (x[at] - mean) * invstd;
                d = d - mean_dy - xhat * mean_dy_xhat;
            }
            dx[at] = scale * d;
        }
        e += 256u;
        w = walk_next(w, stride, p.hw);
    }
}

// `bn_backward_input` four values at a time, where HW is a multiple of 4. Grid: as
// `bn_apply4`'s.
@group(0) @binding(5) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> dx4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn bn_backward_input4(ids: Ids) {
    let hw = p.hw / 4u;
    let count = p.n * hw;
    let piece = chunk_of(group_index(ids), count);
    let c = piece.x;
    if c >= p.c { return; }
    let mean = st[c];
    let invstd = st[p.c + c];
    let scale = gamma[c];
    let shift = beta[c];
    let m = f32(p.n * p.hw);
    let mean_dy = sums_beta[c] / m;
    let mean_dy_xhat = sums_gamma[c] / m;
    let dscale = scale * invstd;
    let stride = walk_start(256u, hw);
    var e = piece.y + local_index(ids);
    var w = walk_start(e, hw);
    for (var k = 0u; k < CHUNK_STEPS; k++) {
        if e < count {
            let at = walk_at(w, c, hw);
            let xv = x4[at];
            var d = dy4[at];
            if p.relu == 1u {
                let pre = (xv - mean) * invstd * scale + shift;
                d = select(vec4<f32>(0.0), d, pre > vec4<f32>(0.0));
            }
            if p.training == 1u {
                let xhat = (xv - mean) * invstd;
                d = d - mean_dy - xhat * mean_dy_xhat;
            }
            dx4[at] = dscale * d;
        }
        e += 256u;
        w = walk_next(w, stride, hw);
    }
}

// ---- a RepVGG block's output: y = max(bn_0(x0) + bn_1(x1) [+ bn_2(x2)], 0) ----------------
// The block's batch-normalised branches summed and rectified in one pass, where apart they
// take three applies, two sums and a ReLU: six dispatches, and five tensors written and read
// back. Each branch brings its own statistics (from `bn_stats`) and affine parameters, and
// its terms are added in the order the separate passes add them. `p.relu` holds the number
// of branches: 2 where the block has no identity branch (the third set is then bound to the
// second's buffers and not read). Grid: as `bn_apply`'s.

@group(0) @binding(1) var<storage, read> br_x0: array<f32>;
@group(0) @binding(2) var<storage, read> br_x1: array<f32>;
@group(0) @binding(3) var<storage, read> br_x2: array<f32>;
@group(0) @binding(4) var<storage, read> br_st0: array<f32>;
@group(0) @binding(5) var<storage, read> br_st1: array<f32>;
@group(0) @binding(6) var<storage, read> br_st2: array<f32>;
@group(0) @binding(7) var<storage, read> br_g0: array<f32>;
@group(0) @binding(8) var<storage, read> br_g1: array<f32>;
@group(0) @binding(9) var<storage, read> br_g2: array<f32>;
@group(0) @binding(10) var<storage, read> br_b0: array<f32>;
@group(0) @binding(11) var<storage, read> br_b1: array<f32>;
@group(0) @binding(12) var<storage, read> br_b2: array<f32>;
@group(0) @binding(13) var<storage, read_write> br_y: array<f32>;

// Channel c's (mean, invstd, gamma, beta) of each branch.
struct Branches {
    a: vec4<f32>,
    b: vec4<f32>,
    c: vec4<f32>,
}

fn branches_of(c: u32) -> Branches {
    let a = vec4<f32>(br_st0[c], br_st0[p.c + c], br_g0[c], br_b0[c]);
    let b = vec4<f32>(br_st1[c], br_st1[p.c + c], br_g1[c], br_b1[c]);
    let d = vec4<f32>(br_st2[c], br_st2[p.c + c], br_g2[c], br_b2[c]);
    return Branches(a, b, d);
}

@compute @workgroup_size(256)
fn bn_sum_relu(ids: Ids) {
    let count = p.n * p.hw;
    let piece = chunk_of(group_index(ids), count);
    let c = piece.x;
    if c >= p.c { return; }
    let q = branches_of(c);
    let third = p.relu == 3u;
    let stride = walk_start(256u, p.hw);
    var e = piece.y + local_index(ids);
    var w = walk_start(e, p.hw);
    for (var k = 0u; k < CHUNK_STEPS; k++) {
        if e < count {
            let at = walk_at(w, c, p.hw);
            var v = (br_x0[at] - q.a.x) * q.a.y * q.a.z + q.a.w;
            v += (br_x1[at] - q.b.x) * q.b.y * q.b.z + q.b.w;
            if third { v += (br_x2[at] - q.c.x) * q.c.y * q.c.z + q.c.w; }
            br_y[at] = max(v, 0.0);
        }
        e += 256u;
        w = walk_next(w, stride, p.hw);
    }
}

// `bn_sum_relu` four values at a time, where HW is a multiple of 4. Grid: as `bn_apply4`'s.
@group(0) @binding(1) var<storage, read> br4_x0: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> br4_x1: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> br4_x2: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> br4_y: array<vec4<f32>>;

@compute @workgroup_size(256)
fn bn_sum_relu4(ids: Ids) {
    let hw = p.hw / 4u;
    let count = p.n * hw;
    let piece = chunk_of(group_index(ids), count);
    let c = piece.x;
    if c >= p.c { return; }
    let q = branches_of(c);
    let third = p.relu == 3u;
    let stride = walk_start(256u, hw);
    var e = piece.y + local_index(ids);
    var w = walk_start(e, hw);
    for (var k = 0u; k < CHUNK_STEPS; k++) {
        if e < count {
            let at = walk_at(w, c, hw);
            var v = (br4_x0[at] - q.a.x) * q.a.y * q.a.z + q.a.w;
            v += (br4_x1[at] - q.b.x) * q.b.y * q.b.z + q.b.w;
            if third { v += (br4_x2[at] - q.c.x) * q.c.y * q.c.z + q.c.w; }
            br4_y[at] = max(v, vec4<f32>(0.0));
        }
        e += 256u;
        w = walk_next(w, stride, hw);
    }
}
