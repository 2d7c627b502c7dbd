// Fused optimizer steps: one pass over a parameter tensor reads the parameter, its gradient,
// the optimizer state and (optionally) the Grad Mult, and writes the parameter and state.
// Four elements per invocation; buffers are allocated in 16-byte multiples, so the vec4 tail
// stays in bounds (it updates padding nobody reads).

struct Params {
    n4: u32,          // vec4 count
    has_mult: u32,    // 1: multiply the gradient by `mult` first (the Grad Mult)
    first: u32,       // 1: first step, the momentum buffer starts as the update itself
    nesterov: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    dampening: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bias_correction1: f32,  // 1 - beta1^t
    bias_correction2: f32,  // 1 - beta2^t
    _pad0: f32,
    _pad1: f32,
    _pad2: f32,
}

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
