// Element-wise kernels: one element per invocation, 256 invocations per workgroup, the
// workgroup grid folded over x and y so large tensors fit the per-dimension limit.
//
// Buffers are bound at 1, 2, 3 in the order the host lists them; `p.n` is the element
// count and every kernel guards its tail.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/elementwise.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

// ---- out = f(a) -------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out2: array<f32>;

@group(0) @binding(1) var<storage, read_write> fill_dst: array<f32>;

// fill_dst = alpha
@compute @workgroup_size(256)
fn fill(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { fill_dst[i] = p.alpha; }
}

@compute @workgroup_size(256)
fn sigmoid_forward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out2[i] = 1.0 / (1.0 + exp(-a[i])); }
}

// relu6(x + 3) / 6, as torch.nn.functional.hardsigmoid.
@compute @workgroup_size(256)
fn hard_sigmoid_forward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out2[i] = clamp(a[i] + 3.0, 0.0, 6.0) / 6.0; }
}

// Global average pool backward: a is the [N*C] gradient, out the [N*C*HW] input gradient.
@compute @workgroup_size(256)
fn avgpool_backward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out2[i] = a[i / p.hw] * p.alpha; }
}

// ---- out = f(a, b) ----------------------------------------------------------------------

@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;

// a is y = sigmoid(x), b the output gradient.
@compute @workgroup_size(256)
fn sigmoid_backward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { let y = a[i]; out3[i] = b[i] * y * (1.0 - y); }
}

// a is the input x, b the output gradient. PyTorch's rule and arithmetic: dy * (1/6)
// strictly inside (-3, 3), 0 outside and at the kinks -3 and 3 themselves. Deciding on x
// rather than on the output keeps the rule exact: the output is already 1 for the largest
// f32 below 3.
@compute @workgroup_size(256)
fn hard_sigmoid_backward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { let x = a[i]; out3[i] = select(0.0, b[i] * (1.0 / 6.0), x > -3.0 && x < 3.0); }
}

// out[n,c,hw] = a[n,c,hw] * b[c]  (channel-wise scale; also its input gradient)
@compute @workgroup_size(256)
fn scale_channels(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out3[i] = a[i] * b[(i / p.hw) % p.c]; }
}

// out[n,c,hw] = a[n,c,hw] + b[c]  (channel bias, as in a convolution with bias)
@compute @workgroup_size(256)
fn add_channels(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out3[i] = a[i] + b[(i / p.hw) % p.c]; }
}

// out[n,c,hw] = a[n,c,hw] * b[n,c]  (per-sample channel gate, as in squeeze-excitation)
@compute @workgroup_size(256)
fn scale_planes(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out3[i] = a[i] * b[i / p.hw]; }
}

// out = a * b[0]: scales by a scalar that lives on the device (a loss gradient).
@compute @workgroup_size(256)
fn scale_by_device_scalar(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out3[i] = a[i] * b[0]; }
}

// ---- in place: acc = alpha * acc + beta * b ----------------------------------------------

@group(0) @binding(1) var<storage, read_write> acc: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;

// p.n counts vec4s; buffers are allocated in 16-byte multiples, so the tail is in bounds.
@compute @workgroup_size(256)
fn axpby_inplace(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { acc[i] = p.alpha * acc[i] + p.beta * b4[i]; }
}

// ---- plain copy, the bandwidth reference for the update benchmarks ----------------------

@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn copy_vec4(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { dst4[i] = src4[i]; }
}

// ---- the common ops four elements at a time -----------------------------------------------
// p.n counts vec4s; buffers are allocated in 16-byte multiples, so the last vec4 is in
// bounds (it computes padding nobody reads). Lane-wise vec4 arithmetic gives the bits of
// the scalar form. On lavapipe, where each invocation's load is a gather, four values per
// load measured 1.5-3x faster for relu, add and mul at [64, 12, 28, 28].

@group(0) @binding(3) var<storage, read_write> out3_4: array<vec4<f32>>;

// out = alpha * a
@compute @workgroup_size(256)
fn scale(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { dst4[i] = p.alpha * src4[i]; }
}

@compute @workgroup_size(256)
fn relu_forward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { dst4[i] = max(src4[i], vec4<f32>(0.0)); }
}

// out = alpha * a + beta * b
@compute @workgroup_size(256)
fn add_scaled(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out3_4[i] = p.alpha * src4[i] + p.beta * b4[i]; }
}

@compute @workgroup_size(256)
fn mul(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out3_4[i] = src4[i] * b4[i]; }
}

// a is y = relu(x), b the output gradient.
@compute @workgroup_size(256)
fn relu_backward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out3_4[i] = select(vec4<f32>(0.0), b4[i], src4[i] > vec4<f32>(0.0)); }
}

// `scale_channels` and `add_channels` where HW is a multiple of 4, so a vec4 lies in one
// plane: a quarter of the divisions and channel loads (1.5-3x on lavapipe at
// [64, 12, 28, 28]). b is read per channel (binding 2 as scalars).
@group(0) @binding(2) var<storage, read> per_channel: array<f32>;

@compute @workgroup_size(256)
fn scale_channels4(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out3_4[i] = src4[i] * per_channel[(4u * i / p.hw) % p.c]; }
}

@compute @workgroup_size(256)
fn add_channels4(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { out3_4[i] = src4[i] + per_channel[(4u * i / p.hw) % p.c]; }
}

// ---- gradient clipping: a[0] is the sum of squared gradients ------------------------------
// out2[0] = the norm, out3[0] = min(1, max_norm / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_.

@compute @workgroup_size(1)
fn clip_coefficient() {
    let norm = sqrt(a[0]);
    out2[0] = norm;
    out3[0] = min(1.0, p.alpha / (norm + 1e-6));
}

// ---- a CSLA / Hyper-Search block's sum: out = x0 * s0[c] + x1 * s1[c] (+ x2 * s2[c]) ---------
// Two or three branches scaled per channel and summed in one pass, where apart they take
// three scales and two sums. The terms are added in the order the separate passes add them.
// `p.alpha` is 1 where the third branch counts (else it is bound to the second's buffers
// and not read).
@group(0) @binding(1) var<storage, read> ss_x0: array<f32>;
@group(0) @binding(2) var<storage, read> ss_x1: array<f32>;
@group(0) @binding(3) var<storage, read> ss_x2: array<f32>;
@group(0) @binding(4) var<storage, read> ss_s0: array<f32>;
@group(0) @binding(5) var<storage, read> ss_s1: array<f32>;
@group(0) @binding(6) var<storage, read> ss_s2: array<f32>;
@group(0) @binding(7) var<storage, read_write> ss_out: array<f32>;

@compute @workgroup_size(256)
fn scaled_sum(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i >= p.n { return; }
    let c = (i / p.hw) % p.c;
    var v = ss_x0[i] * ss_s0[c] + ss_x1[i] * ss_s1[c];
    if p.alpha == 1.0 { v += ss_x2[i] * ss_s2[c]; }
    ss_out[i] = v;
}

// `scaled_sum` four elements at a time, where HW is a multiple of 4 (`p.n` counts vec4s).
@group(0) @binding(1) var<storage, read> ss4_x0: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> ss4_x1: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> ss4_x2: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> ss4_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn scaled_sum4(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i >= p.n { return; }
    let c = (4u * i / p.hw) % p.c;
    var v = ss4_x0[i] * ss_s0[c] + ss4_x1[i] * ss_s1[c];
    if p.alpha == 1.0 { v += ss4_x2[i] * ss_s2[c]; }
    ss4_out[i] = v;
}
