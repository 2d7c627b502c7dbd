// Reductions: one workgroup per output element, 256 invocations striding over the inputs,
// then a tree in workgroup memory. Sums are accumulated in f32 per invocation first, which
// keeps each partial sum short (n / 256 terms) before the tree combines them.

struct Params {
    rows: u32,   // outputs
    cols: u32,   // inputs per output (sum_rows)
    n: u32,      // batch (channel reductions)
    hw: u32,     // spatial size (channel reductions)
    alpha: f32,  // scale applied to every output
    _pad0: f32,
    _pad1: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;

var<workgroup> partial: array<f32, 256>;

fn tree_sum(lid: u32, v: f32) -> f32 {
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

fn row_of(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

@group(0) @binding(2) var<storage, read_write> out2: array<f32>;

// out[r] = alpha * sum_c a[r * cols + c]   (sum, mean, global average pooling)
@compute @workgroup_size(256)
fn sum_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let r = row_of(wg, nwg);
    var s = 0.0;
    if r < p.rows {
        let base = r * p.cols;
        for (var c = lid; c < p.cols; c += 256u) {
            s += a[base + c];
        }
    }
    let total = tree_sum(lid, s);
    if lid == 0u && r < p.rows {
        out2[r] = p.alpha * total;
    }
}

// a is [N, C, HW]: out[c] = alpha * sum_{n, hw} a[n, c, hw]   (bias-like gradients)
@compute @workgroup_size(256)
fn channel_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let c = row_of(wg, nwg);
    var s = 0.0;
    if c < p.rows {
        let count = p.n * p.hw;
        for (var j = lid; j < count; j += 256u) {
            let n = j / p.hw;
            s += a[(n * p.rows + c) * p.hw + (j - n * p.hw)];
        }
    }
    let total = tree_sum(lid, s);
    if lid == 0u && c < p.rows {
        out2[c] = p.alpha * total;
    }
}

@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;

// a, b are [N, C, HW]: out[c] = alpha * sum_{n, hw} a * b   (channel-scale gradients)
@compute @workgroup_size(256)
fn channel_dot(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let c = row_of(wg, nwg);
    var s = 0.0;
    if c < p.rows {
        let count = p.n * p.hw;
        for (var j = lid; j < count; j += 256u) {
            let n = j / p.hw;
            let i = (n * p.rows + c) * p.hw + (j - n * p.hw);
            s += a[i] * b[i];
        }
    }
    let total = tree_sum(lid, s);
    if lid == 0u && c < p.rows {
        out3[c] = p.alpha * total;
    }
}
