// Softmax cross-entropy with label smoothing, one invocation per sample.
//
// loss_n = logsumexp(z_n) - (1 - eps) * z_n[y_n] - eps / K * sum_k z_n[k]
// and its gradient with respect to the logits, already divided by N for the mean:
// grad[n, k] = (softmax(z_n)[k] - (1 - eps) * [k == y_n] - eps / K) / N.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/loss.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(64)
fn cross_entropy_forward(ids: Ids) {
    let row = flat_index(ids, 64u);
    if row >= p.n { return; }
    let base = row * p.k;
    var m = logits[base];
    for (var j = 1u; j < p.k; j++) { m = max(m, logits[base + j]); }
    var s = 0.0;
    var total = 0.0;
    for (var j = 0u; j < p.k; j++) {
        let z = logits[base + j];
        s += exp(z - m);
        total += z;
    }
    let lse = m + log(s);
    // Labels are validated on the host; the clamp only keeps a bad one from reading out of range.
    let y = min(labels[row], p.k - 1u);
    let on = 1.0 - p.smoothing;
    let off = p.smoothing / f32(p.k);
    row_loss[row] = lse - on * logits[base + y] - off * total;
    let inv_n = 1.0 / f32(p.n);
    for (var j = 0u; j < p.k; j++) {
        let prob = exp(logits[base + j] - lse);
        let target_p = select(0.0, on, j == y) + off;
        grad[base + j] = (prob - target_p) * inv_n;
    }
}
