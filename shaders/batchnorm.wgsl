// Batch normalisation over [N, C, HW] per channel, optionally fused with a ReLU.
//
// Training: `bn_stats` computes the batch mean and 1/sqrt(biased var + eps) per channel
// (one workgroup per channel, two passes over the data for a stable variance) and updates
// the running statistics with the unbiased variance. `bn_apply` normalises. Backward
// recomputes xhat (and the ReLU mask) from the saved input instead of keeping the output.

struct Params {
    n: u32,
    c: u32,
    hw: u32,
    relu: u32,       // 1: y = max(bn(x), 0)
    momentum: f32,
    eps: f32,
    training: u32,   // backward only: 1 if the statistics were batch statistics
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

var<workgroup> partial: array<f32, 256>;

fn tree_sum(lid: u32, v: f32) -> f32 {
    workgroupBarrier();
    partial[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if lid < s {
            partial[lid] = partial[lid] + partial[lid + s];
        }
        workgroupBarrier();
    }
    return partial[0];
}

fn channel_of(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

fn index(j: u32, c: u32) -> u32 {
    let n = j / p.hw;
    return (n * p.c + c) * p.hw + (j - n * p.hw);
}

// ---- statistics ---------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;         // [mean(C), invstd(C)]
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;

@compute @workgroup_size(256)
fn bn_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let c = min(channel_of(wg, nwg), p.c - 1u);
    let count = p.n * p.hw;
    var s = 0.0;
    for (var j = lid; j < count; j += 256u) {
        s += x[index(j, c)];
    }
    let mean = tree_sum(lid, s) / f32(count);
    var q = 0.0;
    for (var j = lid; j < count; j += 256u) {
        let d = x[index(j, c)] - mean;
        q += d * d;
    }
    let var_biased = tree_sum(lid, q) / f32(count);
    if lid == 0u && channel_of(wg, nwg) < p.c {
        stats[c] = mean;
        stats[p.c + c] = 1.0 / sqrt(var_biased + p.eps);
        let unbiased = var_biased * f32(count) / f32(max(count, 2u) - 1u);
        running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
        running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
    }
}

// ---- evaluation statistics from the running ones ------------------------------------------

@group(0) @binding(1) var<storage, read> rmean: array<f32>;
@group(0) @binding(2) var<storage, read> rvar: array<f32>;
@group(0) @binding(3) var<storage, read_write> eval_stats: array<f32>;

@compute @workgroup_size(256)
fn bn_eval_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c < p.c {
        eval_stats[c] = rmean[c];
        eval_stats[p.c + c] = 1.0 / sqrt(rvar[c] + p.eps);
    }
}

// ---- normalise ----------------------------------------------------------------------------

@group(0) @binding(2) var<storage, read> st: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn bn_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if i < p.n * p.c * p.hw {
        let c = (i / p.hw) % p.c;
        var v = (x[i] - st[c]) * st[p.c + c] * gamma[c] + beta[c];
        if p.relu == 1u { v = max(v, 0.0); }
        y[i] = v;
    }
}

// ---- backward -----------------------------------------------------------------------------

@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(7) var<storage, read_write> dbeta: array<f32>;

// The output gradient with the fused ReLU's mask applied (recomputed from x).
fn masked_dy(i: u32, c: u32) -> f32 {
    let g = dy[i];
    if p.relu == 1u {
        let pre = (x[i] - st[c]) * st[p.c + c] * gamma[c] + beta[c];
        return select(0.0, g, pre > 0.0);
    }
    return g;
}

// dgamma[c] = sum dy * xhat, dbeta[c] = sum dy  (one workgroup per channel)
@compute @workgroup_size(256)
fn bn_backward_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let c = min(channel_of(wg, nwg), p.c - 1u);
    let count = p.n * p.hw;
    let mean = st[c];
    let invstd = st[p.c + c];
    var s = 0.0;
    var sx = 0.0;
    for (var j = lid; j < count; j += 256u) {
        let i = index(j, c);
        let g = masked_dy(i, c);
        s += g;
        sx += g * (x[i] - mean) * invstd;
    }
    let sum_dy = tree_sum(lid, s);
    let sum_dy_xhat = tree_sum(lid, sx);
    if lid == 0u && channel_of(wg, nwg) < p.c {
        dgamma[c] = sum_dy_xhat;
        dbeta[c] = sum_dy;
    }
}

@group(0) @binding(6) var<storage, read> sums_gamma: array<f32>;
@group(0) @binding(7) var<storage, read> sums_beta: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn bn_backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
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
