// Optimizer steps over several tensors in one dispatch (the `multi_tensor_apply` idea).
//
// A model carries dozens of tensors whose updates are a few workgroups each (batch-norm
// scales and shifts, biases, most of a small network's kernels), so launching them one by
// one costs more host time and driver work than arithmetic. One dispatch updates up to eight
// (seven with a structured Grad Mult, whose four bindings per tensor must stay within the
// 31 buffers some adapters allow a stage). The grid is the tensors' workgroups laid end to
// end: tensor t owns workgroups start_t .. start_{t+1}, so no workgroup idles whatever the
// sizes. WGSL cannot index bindings, hence the switch; every branch is uniform across its
// workgroup. Each update is its single-tensor kernel's in optim.wgsl (`sgd_step` without a
// Grad Mult, `sgd_step_conv3x3`) in the same order of operations, so both give identical
// bits.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/optim_multi.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

// Which tensor workgroup `g` belongs to: the number of later tensors' starts at or below it
// (unused slots start at the end of the grid, so they are never chosen while work remains).
fn tensor_of(g: u32) -> u32 {
    return u32(g >= p.start_1) + u32(g >= p.start_2) + u32(g >= p.start_3)
        + u32(g >= p.start_4) + u32(g >= p.start_5) + u32(g >= p.start_6)
        + u32(g >= p.start_7);
}

fn start_of(t: u32) -> u32 {
    switch t {
        case 1u: { return p.start_1; }
        case 2u: { return p.start_2; }
        case 3u: { return p.start_3; }
        case 4u: { return p.start_4; }
        case 5u: { return p.start_5; }
        case 6u: { return p.start_6; }
        case 7u: { return p.start_7; }
        default: { return 0u; }
    }
}

// ---- without a Grad Mult: eight tensors, four elements per invocation ----------------------
@group(0) @binding(1) var<storage, read_write> w0: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> g0: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m0: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> w1: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> g1: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> m1: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> w2: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> g2: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> m2: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> w3: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read> g3: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> m3: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> w4: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read> g4: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(16) var<storage, read_write> w5: array<vec4<f32>>;
@group(0) @binding(17) var<storage, read> g5: array<vec4<f32>>;
@group(0) @binding(18) var<storage, read_write> m5: array<vec4<f32>>;
@group(0) @binding(19) var<storage, read_write> w6: array<vec4<f32>>;
@group(0) @binding(20) var<storage, read> g6: array<vec4<f32>>;
@group(0) @binding(21) var<storage, read_write> m6: array<vec4<f32>>;
@group(0) @binding(22) var<storage, read_write> w7: array<vec4<f32>>;
@group(0) @binding(23) var<storage, read> g7: array<vec4<f32>>;
@group(0) @binding(24) var<storage, read_write> m7: array<vec4<f32>>;

struct Update {
    w: vec4<f32>,
    buf: vec4<f32>,
}

fn sgd(w: vec4<f32>, g: vec4<f32>, old: vec4<f32>, weight_decay: f32) -> Update {
    var d = g + weight_decay * w;
    var buf = d;
    if p.first == 0u { buf = p.momentum * old + (1.0 - p.dampening) * d; }
    if p.nesterov == 1u { d = d + p.momentum * buf; } else { d = buf; }
    return Update(w - p.lr * d, buf);
}

// Grid: the tensors' blocks of 256 vec4, end to end (folded over x and y).
@compute @workgroup_size(256)
fn sgd_step_multi(ids: Ids) {
    let g = group_index(ids);
    let t = tensor_of(g);
    let i = (g - start_of(t)) * 256u + local_index(ids);
    switch t {
        case 0u: {
            if i < p.n_0 {
                let u = sgd(w0[i], g0[i], m0[i], p.wd_0);
                w0[i] = u.w;
                m0[i] = u.buf;
            }
        }
        case 1u: {
            if i < p.n_1 {
                let u = sgd(w1[i], g1[i], m1[i], p.wd_1);
                w1[i] = u.w;
                m1[i] = u.buf;
            }
        }
        case 2u: {
            if i < p.n_2 {
                let u = sgd(w2[i], g2[i], m2[i], p.wd_2);
                w2[i] = u.w;
                m2[i] = u.buf;
            }
        }
        case 3u: {
            if i < p.n_3 {
                let u = sgd(w3[i], g3[i], m3[i], p.wd_3);
                w3[i] = u.w;
                m3[i] = u.buf;
            }
        }
        case 4u: {
            if i < p.n_4 {
                let u = sgd(w4[i], g4[i], m4[i], p.wd_4);
                w4[i] = u.w;
                m4[i] = u.buf;
            }
        }
        case 5u: {
            if i < p.n_5 {
                let u = sgd(w5[i], g5[i], m5[i], p.wd_5);
                w5[i] = u.w;
                m5[i] = u.buf;
            }
        }
        case 6u: {
            if i < p.n_6 {
                let u = sgd(w6[i], g6[i], m6[i], p.wd_6);
                w6[i] = u.w;
                m6[i] = u.buf;
            }
        }
        case 7u: {
            if i < p.n_7 {
                let u = sgd(w7[i], g7[i], m7[i], p.wd_7);
                w7[i] = u.w;
                m7[i] = u.buf;
            }
        }
        default: {}
    }
}

// ---- with the RepOptimizer's structured Grad Mult: seven tensors, four elements each -------
// Tensor t is a [rows_t, row_t / 9, 3, 3] kernel with factors f (`mults_of`, in
// grad_mult4.wgsl, appended to this file); bit t of `identity` adds the identity branch's
// 1. Four elements per invocation as without a Grad Mult: on lavapipe every scalar load is
// a gather, and one element each made this the slowest pass of a RepOpt-VGG step (2.6x the
// time per element of the dense Grad Mult's vec4 kernel, which moves more bytes).

@group(0) @binding(1) var<storage, read_write> cw0: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> cg0: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cf0: array<f32>;
@group(0) @binding(4) var<storage, read_write> cm0: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> cw1: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> cg1: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> cf1: array<f32>;
@group(0) @binding(8) var<storage, read_write> cm1: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> cw2: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> cg2: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read> cf2: array<f32>;
@group(0) @binding(12) var<storage, read_write> cm2: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> cw3: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read> cg3: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read> cf3: array<f32>;
@group(0) @binding(16) var<storage, read_write> cm3: array<vec4<f32>>;
@group(0) @binding(17) var<storage, read_write> cw4: array<vec4<f32>>;
@group(0) @binding(18) var<storage, read> cg4: array<vec4<f32>>;
@group(0) @binding(19) var<storage, read> cf4: array<f32>;
@group(0) @binding(20) var<storage, read_write> cm4: array<vec4<f32>>;
@group(0) @binding(21) var<storage, read_write> cw5: array<vec4<f32>>;
@group(0) @binding(22) var<storage, read> cg5: array<vec4<f32>>;
@group(0) @binding(23) var<storage, read> cf5: array<f32>;
@group(0) @binding(24) var<storage, read_write> cm5: array<vec4<f32>>;
@group(0) @binding(25) var<storage, read_write> cw6: array<vec4<f32>>;
@group(0) @binding(26) var<storage, read> cg6: array<vec4<f32>>;
@group(0) @binding(27) var<storage, read> cf6: array<f32>;
@group(0) @binding(28) var<storage, read_write> cm6: array<vec4<f32>>;

fn sgd_mult(w: vec4<f32>, g: vec4<f32>, m: vec4<f32>, old: vec4<f32>, weight_decay: f32) -> Update {
    var d = g * m + weight_decay * w;
    var buf = d;
    if p.first == 0u { buf = p.momentum * old + (1.0 - p.dampening) * d; }
    if p.nesterov == 1u { d = d + p.momentum * buf; } else { d = buf; }
    return Update(w - p.lr * d, buf);
}

// Grid: the tensors' blocks of 256 vec4, end to end (folded over x and y).
@compute @workgroup_size(256)
fn sgd_step_conv3x3_multi(ids: Ids) {
    let g = group_index(ids);
    let t = tensor_of(g);
    let i = (g - start_of(t)) * 256u + local_index(ids);
    switch t {
        case 0u: {
            if i < p.n_0 {
                let e = 4u * i;
                let c = min(e / p.row_0, p.rows_0 - 1u);
                let c1 = min(c + 1u, p.rows_0 - 1u);
                let lo = vec2<f32>(cf0[c], cf0[p.rows_0 + c]);
                let hi = vec2<f32>(cf0[c1], cf0[p.rows_0 + c1]);
                let m = mults_of(lo, hi, (p.identity & 1u) != 0u, c, e, p.row_0);
                let u = sgd_mult(cw0[i], cg0[i], m, cm0[i], p.wd_0);
                cw0[i] = u.w;
                cm0[i] = u.buf;
            }
        }
        case 1u: {
            if i < p.n_1 {
                let e = 4u * i;
                let c = min(e / p.row_1, p.rows_1 - 1u);
                let c1 = min(c + 1u, p.rows_1 - 1u);
                let lo = vec2<f32>(cf1[c], cf1[p.rows_1 + c]);
                let hi = vec2<f32>(cf1[c1], cf1[p.rows_1 + c1]);
                let m = mults_of(lo, hi, (p.identity & 2u) != 0u, c, e, p.row_1);
                let u = sgd_mult(cw1[i], cg1[i], m, cm1[i], p.wd_1);
                cw1[i] = u.w;
                cm1[i] = u.buf;
            }
        }
        case 2u: {
            if i < p.n_2 {
                let e = 4u * i;
                let c = min(e / p.row_2, p.rows_2 - 1u);
                let c1 = min(c + 1u, p.rows_2 - 1u);
                let lo = vec2<f32>(cf2[c], cf2[p.rows_2 + c]);
                let hi = vec2<f32>(cf2[c1], cf2[p.rows_2 + c1]);
                let m = mults_of(lo, hi, (p.identity & 4u) != 0u, c, e, p.row_2);
                let u = sgd_mult(cw2[i], cg2[i], m, cm2[i], p.wd_2);
                cw2[i] = u.w;
                cm2[i] = u.buf;
            }
        }
        case 3u: {
            if i < p.n_3 {
                let e = 4u * i;
                let c = min(e / p.row_3, p.rows_3 - 1u);
                let c1 = min(c + 1u, p.rows_3 - 1u);
                let lo = vec2<f32>(cf3[c], cf3[p.rows_3 + c]);
                let hi = vec2<f32>(cf3[c1], cf3[p.rows_3 + c1]);
                let m = mults_of(lo, hi, (p.identity & 8u) != 0u, c, e, p.row_3);
                let u = sgd_mult(cw3[i], cg3[i], m, cm3[i], p.wd_3);
                cw3[i] = u.w;
                cm3[i] = u.buf;
            }
        }
        case 4u: {
            if i < p.n_4 {
                let e = 4u * i;
                let c = min(e / p.row_4, p.rows_4 - 1u);
                let c1 = min(c + 1u, p.rows_4 - 1u);
                let lo = vec2<f32>(cf4[c], cf4[p.rows_4 + c]);
                let hi = vec2<f32>(cf4[c1], cf4[p.rows_4 + c1]);
                let m = mults_of(lo, hi, (p.identity & 16u) != 0u, c, e, p.row_4);
                let u = sgd_mult(cw4[i], cg4[i], m, cm4[i], p.wd_4);
                cw4[i] = u.w;
                cm4[i] = u.buf;
            }
        }
        case 5u: {
            if i < p.n_5 {
                let e = 4u * i;
                let c = min(e / p.row_5, p.rows_5 - 1u);
                let c1 = min(c + 1u, p.rows_5 - 1u);
                let lo = vec2<f32>(cf5[c], cf5[p.rows_5 + c]);
                let hi = vec2<f32>(cf5[c1], cf5[p.rows_5 + c1]);
                let m = mults_of(lo, hi, (p.identity & 32u) != 0u, c, e, p.row_5);
                let u = sgd_mult(cw5[i], cg5[i], m, cm5[i], p.wd_5);
                cw5[i] = u.w;
                cm5[i] = u.buf;
            }
        }
        case 6u: {
            if i < p.n_6 {
                let e = 4u * i;
                let c = min(e / p.row_6, p.rows_6 - 1u);
                let c1 = min(c + 1u, p.rows_6 - 1u);
                let lo = vec2<f32>(cf6[c], cf6[p.rows_6 + c]);
                let hi = vec2<f32>(cf6[c1], cf6[p.rows_6 + c1]);
                let m = mults_of(lo, hi, (p.identity & 64u) != 0u, c, e, p.row_6);
                let u = sgd_mult(cw6[i], cg6[i], m, cm6[i], p.wd_6);
                cw6[i] = u.w;
                cm6[i] = u.buf;
            }
        }
        default: {}
    }
}
