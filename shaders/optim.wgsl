// Fused optimizer steps: one pass over a parameter tensor reads the parameter, its gradient,
// the optimizer state and (optionally) the Grad Mult, and writes the parameter and state.
// Four elements per invocation; buffers are allocated in 16-byte multiples, so the vec4 tail
// stays in bounds (it updates padding nobody reads).

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/optim.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> mult: array<vec4<f32>>;

@group(0) @binding(4) var<storage, read_write> momentum_buf: array<vec4<f32>>;

// SGD as torch.optim.SGD with the RepOptimizer's Grad Mult applied before weight decay:
// d = g * M + wd * w; buf = momentum * buf + (1 - dampening) * d; d = nesterov ? d + momentum * buf : buf;
// w -= lr * d.
@compute @workgroup_size(256)
fn sgd_step(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i >= p.n4 { return; }
    let w = param[i];
    var d = grad[i];
    if p.has_mult == 1u { d = d * mult[i]; }
    d = d + p.weight_decay * w;
    var buf = d;
    if p.first == 0u { buf = p.momentum * momentum_buf[i] + (1.0 - p.dampening) * d; }
    momentum_buf[i] = buf;
    if p.nesterov == 1u { d = d + p.momentum * buf; } else { d = buf; }
    param[i] = w - p.lr * d;
}

@group(0) @binding(5) var<storage, read_write> exp_avg_sq: array<vec4<f32>>;

// AdamW as torch.optim.AdamW (decoupled decay), the gradient multiplied by the Grad Mult first.
@compute @workgroup_size(256)
fn adamw_step(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i >= p.n4 { return; }
    var g = grad[i];
    if p.has_mult == 1u { g = g * mult[i]; }
    let w = param[i] * (1.0 - p.lr * p.weight_decay);
    let m = p.beta1 * momentum_buf[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * exp_avg_sq[i] + (1.0 - p.beta2) * g * g;
    momentum_buf[i] = m;
    exp_avg_sq[i] = v;
    let denom = sqrt(v / p.bias_correction2) + p.eps;
    param[i] = w - (p.lr / p.bias_correction1) * m / denom;
}

// ---- the RepOptimizer's Grad Mult from per-channel factors --------------------------------
// For a [co, ci, 3, 3] kernel, M[c, d, h, w] = f[c] + (centre ? f[co + c] : 0)
// + (centre and c == d and identity ? 1 : 0), f holding s^p then t^p. Computing M instead
// of storing it saves a kernel-sized tensor per layer and its traffic. The steps read four
// elements per invocation like the others (`mults_of`, grad_mult4.wgsl, appended): one
// element each, with a workgroup per piece of one channel's row, took 2.6 times the dense
// Grad Mult's time per element on lavapipe, where every scalar load is a gather.

@group(0) @binding(1) var<storage, read_write> w1: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> g1: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> factors: array<f32>;
@group(0) @binding(4) var<storage, read_write> m1: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> v1: array<vec4<f32>>;

// The multipliers of vec4 i: its first element's channel and the next one's factors.
fn mults_at(i: u32) -> vec4<f32> {
    let e = 4u * i;
    let c = min(e / p.row, p.rows - 1u);
    let c1 = min(c + 1u, p.rows - 1u);
    let lo = vec2<f32>(factors[c], factors[p.rows + c]);
    let hi = vec2<f32>(factors[c1], factors[p.rows + c1]);
    return mults_of(lo, hi, p.identity == 1u, c, e, p.row);
}

// `each` and `centre` are the channel's two factors; `r` indexes its [ci, 3, 3] row.
fn structured_mult(each: f32, centre_term: f32, c: u32, r: u32) -> f32 {
    let d = r / 9u;
    var m = each;
    if r - d * 9u == 4u {
        m += centre_term;
        if p.identity == 1u && c == d { m += 1.0; }
    }
    return m;
}

// Grid: blocks of 256 vec4 (folded over x and y).
@compute @workgroup_size(256)
fn sgd_step_conv3x3(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i >= p.n4 { return; }
    let w = w1[i];
    var d = g1[i] * mults_at(i) + p.weight_decay * w;
    var buf = d;
    if p.first == 0u { buf = p.momentum * m1[i] + (1.0 - p.dampening) * d; }
    m1[i] = buf;
    if p.nesterov == 1u { d = d + p.momentum * buf; } else { d = buf; }
    w1[i] = w - p.lr * d;
}

@compute @workgroup_size(256)
fn adamw_step_conv3x3(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i >= p.n4 { return; }
    let g = g1[i] * mults_at(i);
    let w = w1[i] * (1.0 - p.lr * p.weight_decay);
    let m = p.beta1 * m1[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * v1[i] + (1.0 - p.beta2) * g * g;
    m1[i] = m;
    v1[i] = v;
    w1[i] = w - (p.lr / p.bias_correction1) * m / (sqrt(v / p.bias_correction2) + p.eps);
}

// Writes the dense M of a structured Grad Mult (for the unfused path and for checking), one
// element per invocation: grid x = blocks of 256 elements of one output channel's row, y =
// the output channel.
@group(0) @binding(1) var<storage, read> expand_factors: array<f32>;
@group(0) @binding(2) var<storage, read_write> dense: array<f32>;

@compute @workgroup_size(256)
fn expand_conv3x3_mult(ids: Ids) {
    let c = ids.wg.y;
    let r = ids.wg.x * 256u + local_index(ids);
    if r >= p.row { return; }
    dense[c * p.row + r] = structured_mult(expand_factors[c], expand_factors[p.rows + c], c, r);
}
