// SGD over up to eight small tensors in one dispatch (the `multi_tensor_apply` idea).
//
// A model carries dozens of tiny tensors (batch-norm scales and shifts, biases) whose
// updates are a workgroup or two each, so launching them one by one costs more host time
// and more gaps between kernels than arithmetic. One dispatch updates eight: grid x covers
// the largest, z picks the tensor. WGSL cannot index bindings, hence the switch; every
// branch is uniform across its workgroup. The update is `sgd_step`'s in optim.wgsl without a
// Grad Mult (tensors with one keep their own kernels), in the same order of operations, so
// both give identical bits.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/optim_multi.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

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

// Grid: x = blocks of 256 vec4 of the largest tensor, z = the tensor.
@compute @workgroup_size(256)
fn sgd_step_multi(ids: Ids) {
    let i = ids.wg.x * 256u + local_index(ids);
    switch ids.wg.z {
        case 0u: {
            if i < p.n4_0 {
                let u = sgd(w0[i], g0[i], m0[i], p.wd_0);
                w0[i] = u.w;
                m0[i] = u.buf;
            }
        }
        case 1u: {
            if i < p.n4_1 {
                let u = sgd(w1[i], g1[i], m1[i], p.wd_1);
                w1[i] = u.w;
                m1[i] = u.buf;
            }
        }
        case 2u: {
            if i < p.n4_2 {
                let u = sgd(w2[i], g2[i], m2[i], p.wd_2);
                w2[i] = u.w;
                m2[i] = u.buf;
            }
        }
        case 3u: {
            if i < p.n4_3 {
                let u = sgd(w3[i], g3[i], m3[i], p.wd_3);
                w3[i] = u.w;
                m3[i] = u.buf;
            }
        }
        case 4u: {
            if i < p.n4_4 {
                let u = sgd(w4[i], g4[i], m4[i], p.wd_4);
                w4[i] = u.w;
                m4[i] = u.buf;
            }
        }
        case 5u: {
            if i < p.n4_5 {
                let u = sgd(w5[i], g5[i], m5[i], p.wd_5);
                w5[i] = u.w;
                m5[i] = u.buf;
            }
        }
        case 6u: {
            if i < p.n4_6 {
                let u = sgd(w6[i], g6[i], m6[i], p.wd_6);
                w6[i] = u.w;
                m6[i] = u.buf;
            }
        }
        case 7u: {
            if i < p.n4_7 {
                let u = sgd(w7[i], g7[i], m7[i], p.wd_7);
                w7[i] = u.w;
                m7[i] = u.buf;
            }
        }
        default: {}
    }
}
