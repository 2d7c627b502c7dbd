// Batch normalisation over [N, C, HW] per channel, optionally fused with a ReLU.
//
// Statistics and the parameters' gradients take one dispatch each: a workgroup per channel,
// whose 64 invocations stride through the channel's N x HW values (consecutive invocations
// on consecutive values, so loads coalesce on GPUs and every invocation has work even when
// HW is 1) and add their partial sums in workgroup memory. Statistics are two-pass (the
// mean, then the sum of squared deviations from it: exact and stable). The running
// statistics move towards the batch's with the unbiased variance. Backward recomputes xhat
// (and the ReLU mask) from the saved input instead of keeping the output.

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

// Walks channel c's values: element e = n * HW + i lives at (n * C + c) * HW + i. Each
// invocation starts at e = lid and steps by 64, carrying (n, i) instead of dividing.
struct Walk {
    n: u32,
    i: u32,
}

fn walk_start(lid: u32) -> Walk {
    return Walk(lid / p.hw, lid % p.hw);
}

fn walk_next(w: Walk) -> Walk {
    var i = w.i + WG % p.hw;
    var n = w.n + WG / p.hw;
    if i >= p.hw {
        i -= p.hw;
        n += 1u;
    }
    return Walk(n, i);
}

fn walk_at(w: Walk, c: u32) -> u32 {
    return (w.n * p.c + c) * p.hw + w.i;
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
    var w = walk_start(lid);
    for (var e = lid; e < count; e += WG) {
        s += x[walk_at(w, c)];
        w = walk_next(w);
    }
    let mean = workgroup_sum(lid, vec2<f32>(s, 0.0)).x / f32(count);
    var q = 0.0;
    w = walk_start(lid);
    for (var e = lid; e < count; e += WG) {
        let d = x[walk_at(w, c)] - mean;
        q += d * d;
        w = walk_next(w);
    }
    let m2 = workgroup_sum(lid, vec2<f32>(q, 0.0)).x;
    if lid == 0u {
        stats[c] = mean;
        stats[p.c + c] = 1.0 / sqrt(m2 / f32(count) + p.eps);
        let unbiased = m2 / f32(max(count, 2u) - 1u);
        running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
        running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
    }
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

@compute @workgroup_size(256)
fn bn_apply(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n * p.c * p.hw {
        let c = (i / p.hw) % p.c;
        var v = (x[i] - st[c]) * st[p.c + c] * gamma[c] + beta[c];
        if p.relu == 1u { v = max(v, 0.0); }
        y[i] = v;
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
    var w = walk_start(lid);
    for (var e = lid; e < p.n * p.hw; e += WG) {
        let at = walk_at(w, c);
        let g = masked_dy(at, c);
        sums += vec2<f32>(g, g * (x[at] - mean) * invstd);
        w = walk_next(w);
    }
    let total = workgroup_sum(lid, sums);
    if lid == 0u {
        grad_beta[c] = total.x;
        grad_gamma[c] = total.y;
    }
}

@group(0) @binding(6) var<storage, read> sums_gamma: array<f32>;
@group(0) @binding(7) var<storage, read> sums_beta: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn bn_backward_input(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n * p.c * p.hw {
        let c = (i / p.hw) % p.c;
        let invstd = st[p.c + c];
        let g = masked_dy(i, c);
        var d = g;
        if p.training == 1u {
            let m = f32(p.n * p.hw);
            let xhat = (x[i] - st[c]) * invstd;
            d = g - sums_beta[c] / m - xhat * sums_gamma[c] / m;
        }
        dx[i] = gamma[c] * invstd * d;
    }
}
