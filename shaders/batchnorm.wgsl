// Batch normalisation over [N, C, HW] per channel, optionally fused with a ReLU.
//
// Statistics take two barrier-free passes: each (n, c) plane yields its mean and sum of
// squared deviations, then one invocation per channel merges them (Chan et al.'s
// combination, exact and stable). The running statistics move towards the batch's with the
// unbiased variance. Backward recomputes xhat (and the ReLU mask) from the saved input
// instead of keeping the output, and reduces the same way.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/batchnorm.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

// ---- statistics: plane pass -------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> plane_stats: array<f32>;   // [2, C, N]: mean, M2

@compute @workgroup_size(64)
fn bn_plane_stats(ids: Ids) {
    let k = flat_index(ids, 64u);   // k = n * C + c
    if k >= p.n * p.c { return; }
    let n = k / p.c;
    let c = k - n * p.c;
    let base = k * p.hw;
    var s = 0.0;
    for (var i = 0u; i < p.hw; i++) {
        s += x[base + i];
    }
    let mean = s / f32(p.hw);
    var q = 0.0;
    for (var i = 0u; i < p.hw; i++) {
        let d = x[base + i] - mean;
        q += d * d;
    }
    plane_stats[c * p.n + n] = mean;
    plane_stats[(p.c + c) * p.n + n] = q;
}

// ---- statistics: channel pass -----------------------------------------------------------------

@group(0) @binding(1) var<storage, read> planes: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;         // [mean(C), invstd(C)]
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;

@compute @workgroup_size(64)
fn bn_channel_stats(ids: Ids) {
    let c = flat_index(ids, 64u);
    if c >= p.c { return; }
    var s = 0.0;
    for (var n = 0u; n < p.n; n++) {
        s += planes[c * p.n + n];
    }
    let mean = s / f32(p.n);
    var m2 = 0.0;
    for (var n = 0u; n < p.n; n++) {
        let d = planes[c * p.n + n] - mean;
        m2 += planes[(p.c + c) * p.n + n] + f32(p.hw) * d * d;
    }
    let count = p.n * p.hw;
    let var_biased = m2 / f32(count);
    stats[c] = mean;
    stats[p.c + c] = 1.0 / sqrt(var_biased + p.eps);
    let unbiased = m2 / f32(max(count, 2u) - 1u);
    running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
    running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
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
@group(0) @binding(6) var<storage, read_write> plane_grads: array<f32>;   // [2, C, N]: sum dy, sum dy xhat

// The output gradient with the fused ReLU's mask applied (recomputed from x).
fn masked_dy(i: u32, c: u32) -> f32 {
    let g = dy[i];
    if p.relu == 1u {
        let pre = (x[i] - st[c]) * st[p.c + c] * gamma[c] + beta[c];
        return select(0.0, g, pre > 0.0);
    }
    return g;
}

@compute @workgroup_size(64)
fn bn_plane_grads(ids: Ids) {
    let k = flat_index(ids, 64u);
    if k >= p.n * p.c { return; }
    let n = k / p.c;
    let c = k - n * p.c;
    let mean = st[c];
    let invstd = st[p.c + c];
    let base = k * p.hw;
    var s = 0.0;
    var sx = 0.0;
    for (var i = 0u; i < p.hw; i++) {
        let g = masked_dy(base + i, c);
        s += g;
        sx += g * (x[base + i] - mean) * invstd;
    }
    plane_grads[c * p.n + n] = s;
    plane_grads[(p.c + c) * p.n + n] = sx;
}

@group(0) @binding(1) var<storage, read> pgrads: array<f32>;
@group(0) @binding(2) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> dbeta: array<f32>;

// dgamma[c] = sum dy xhat, dbeta[c] = sum dy
@compute @workgroup_size(64)
fn bn_channel_grads(ids: Ids) {
    let c = flat_index(ids, 64u);
    if c >= p.c { return; }
    var s = 0.0;
    var sx = 0.0;
    for (var n = 0u; n < p.n; n++) {
        s += pgrads[c * p.n + n];
        sx += pgrads[(p.c + c) * p.n + n];
    }
    dgamma[c] = sx;
    dbeta[c] = s;
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
