// 2-D convolution without bias (k = 1 or 3, any stride and padding), as implicit GEMM.
//
// Every kernel gives each invocation one pixel and a block of 16 channels held in four vec4
// registers, and gives the whole workgroup the same channel block. The operand indexed by
// that block (the weights, or the output gradient in the weight-gradient kernel) is then
// read at an address that is uniform across the workgroup: one load serves every
// invocation, which is what makes these kernels fast on CPUs (lavapipe turns uniform loads
// into a scalar load and a broadcast) as well as on GPUs (one cache line per warp). Each
// loaded pixel value feeds 16 FMAs.
//
// Out-of-range pixels (padding) are read at a clamped, valid index and replaced by zero,
// so every index stays in bounds without branches.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/conv.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

const TC: u32 = 16u;

// ---- weight packing -----------------------------------------------------------------------
// w is [Co, Ci, k, k]. The forward kernel wants, for each (ci, tap), the output channels
// contiguous; the input-gradient kernel wants, for each (co, tap), the input channels.

@group(0) @binding(1) var<storage, read> w_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> packed: array<f32>;

// packed[(ci * kk + tap) * cpad + co] = w[co, ci, tap], zero for co >= Co
@compute @workgroup_size(256)
fn conv_pack_forward(ids: Ids) {
    let wg = ids.wg;
    let nwg = ids.nwg;
    let lid = local_index(ids);
    let i = group_index(ids) * 256u + lid;
    let kk = p.k * p.k;
    if i >= p.ci * kk * p.cpad { return; }
    let co = i % p.cpad;
    let row = i / p.cpad;          // ci * kk + tap
    let ci = row / kk;
    let tap = row - ci * kk;
    var v = 0.0;
    if co < p.co { v = w_in[(co * p.ci + ci) * kk + tap]; }
    packed[i] = v;
}

// packed[(co * kk + tap) * cpad + ci] = w[co, ci, tap], zero for ci >= Ci
@compute @workgroup_size(256)
fn conv_pack_input(ids: Ids) {
    let wg = ids.wg;
    let nwg = ids.nwg;
    let lid = local_index(ids);
    let i = group_index(ids) * 256u + lid;
    let kk = p.k * p.k;
    if i >= p.co * kk * p.cpad { return; }
    let ci = i % p.cpad;
    let row = i / p.cpad;          // co * kk + tap
    let co = row / kk;
    let tap = row - co * kk;
    var v = 0.0;
    if ci < p.ci { v = w_in[(co * p.ci + ci) * kk + tap]; }
    packed[i] = v;
}

// ---- forward: y[n, co, oh, ow] = sum_{ci, kh, kw} w[co, ci, kh, kw] x[n, ci, oh*s+kh-pad, ow*s+kw-pad]

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wpack: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn store16(base: u32, stride: u32, count: u32, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) {
    // `count` channels of the 16 exist; channel j goes to base + j * stride.
    let v = array<f32, 16>(a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w,
                           a2.x, a2.y, a2.z, a2.w, a3.x, a3.y, a3.z, a3.w);
    for (var j = 0u; j < 16u; j++) {
        if j < count { y[base + j * stride] = v[j]; }
    }
}

// Grid: x/y fold the pixel blocks of 64, z is the block of 16 output channels.
@compute @workgroup_size(64)
fn conv_forward(ids: Ids) {
    let wg = ids.wg;
    let nwg = ids.nwg;
    let lid = local_index(ids);
    let ohw = p.oh * p.ow;
    let total = p.n * ohw;
    let q = (wg.x + wg.y * nwg.x) * 64u + lid;
    let qc = min(q, total - 1u);
    let n = qc / ohw;
    let r = qc - n * ohw;
    let oh = r / p.ow;
    let ow = r - oh * p.ow;
    let co0 = wg.z * TC;
    let ih0 = i32(oh * p.stride) - i32(p.pad);
    let iw0 = i32(ow * p.stride) - i32(p.pad);
    let hw = p.h * p.w;
    let kk = p.k * p.k;
    let row4 = p.cpad / 4u;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var wrow = co0 / 4u;           // vec4 index of (ci = 0, tap = 0, co0)
    var xbase = n * p.ci * hw;
    for (var ci = 0u; ci < p.ci; ci++) {
        for (var kh = 0u; kh < p.k; kh++) {
            let ih = ih0 + i32(kh);
            let row_ok = ih >= 0 && ih < i32(p.h);
            let xrow = xbase + u32(ih) * p.w;
            for (var kw = 0u; kw < p.k; kw++) {
                let iw = iw0 + i32(kw);
                let ok = row_ok && iw >= 0 && iw < i32(p.w);
                let xv = vec4<f32>(select(0.0, x[select(0u, xrow + u32(iw), ok)], ok));
                a0 = fma(wpack[wrow], xv, a0);
                a1 = fma(wpack[wrow + 1u], xv, a1);
                a2 = fma(wpack[wrow + 2u], xv, a2);
                a3 = fma(wpack[wrow + 3u], xv, a3);
                wrow += row4;
            }
        }
        xbase += hw;
    }
    if q < total && co0 < p.co {
        store16((n * p.co + co0) * ohw + r, ohw, min(TC, p.co - co0), a0, a1, a2, a3);
    }
}

// ---- input gradient: dx[n, ci, ih, iw] = sum_{co, kh, kw : ih = oh*s+kh-pad, iw = ow*s+kw-pad} w[co, ci, kh, kw] dy[n, co, oh, ow]

@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> wpack_in: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

fn store16_dx(base: u32, stride: u32, count: u32, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) {
    let v = array<f32, 16>(a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w,
                           a2.x, a2.y, a2.z, a2.w, a3.x, a3.y, a3.z, a3.w);
    for (var j = 0u; j < 16u; j++) {
        if j < count { dx[base + j * stride] = v[j]; }
    }
}

// Grid: x/y fold the input-pixel blocks of 64, z is the block of 16 input channels.
@compute @workgroup_size(64)
fn conv_backward_input(ids: Ids) {
    let wg = ids.wg;
    let nwg = ids.nwg;
    let lid = local_index(ids);
    let hw = p.h * p.w;
    let total = p.n * hw;
    let q = (wg.x + wg.y * nwg.x) * 64u + lid;
    let qc = min(q, total - 1u);
    let n = qc / hw;
    let r = qc - n * hw;
    let ih = r / p.w;
    let iw = r - ih * p.w;
    let ci0 = wg.z * TC;
    let ohw = p.oh * p.ow;
    let s = i32(p.stride);
    let row4 = p.cpad / 4u;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var wrow = ci0 / 4u;           // vec4 index of (co = 0, tap = 0, ci0)
    var gbase = n * p.co * ohw;
    for (var co = 0u; co < p.co; co++) {
        for (var kh = 0u; kh < p.k; kh++) {
            let th = i32(ih) + i32(p.pad) - i32(kh);     // oh * stride
            let oh = th / s;
            let row_ok = th >= 0 && oh * s == th && oh < i32(p.oh);
            let grow = gbase + u32(oh) * p.ow;
            for (var kw = 0u; kw < p.k; kw++) {
                let tw = i32(iw) + i32(p.pad) - i32(kw);
                let ow = tw / s;
                let ok = row_ok && tw >= 0 && ow * s == tw && ow < i32(p.ow);
                let gv = vec4<f32>(select(0.0, dy[select(0u, grow + u32(ow), ok)], ok));
                a0 = fma(wpack_in[wrow], gv, a0);
                a1 = fma(wpack_in[wrow + 1u], gv, a1);
                a2 = fma(wpack_in[wrow + 2u], gv, a2);
                a3 = fma(wpack_in[wrow + 3u], gv, a3);
                wrow += row4;
            }
        }
        gbase += ohw;
    }
    if q < total && ci0 < p.ci {
        store16_dx((n * p.ci + ci0) * hw + r, hw, min(TC, p.ci - ci0), a0, a1, a2, a3);
    }
}

// ---- weight gradient: dw[co, ci, kh, kw] = sum_{n, oh, ow} dy[n, co, oh, ow] x[n, ci, oh*s+kh-pad, ow*s+kw-pad]
// Each invocation owns one (ci, kh, kw) and 16 output channels; the workgroup shares the
// output-channel block, so the 16 output-gradient values per pixel are uniform loads. The
// sum over output rows is split into `splits` partial sums (z) for parallelism when the
// weight is small and the image large; `conv_sum_splits` adds them.

@group(0) @binding(1) var<storage, read> xw: array<f32>;
@group(0) @binding(2) var<storage, read> dyw: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw_part: array<f32>;

// Grid: x = blocks of 64 (ci, tap) pairs, y = blocks of 16 output channels, z = split.
@compute @workgroup_size(64)
fn conv_backward_weight(ids: Ids) {
    let wg = ids.wg;
    let lid = local_index(ids);
    let kk = p.k * p.k;
    let ck = p.ci * kk;
    let rr = wg.x * 64u + lid;
    let rc = min(rr, ck - 1u);
    let ci = rc / kk;
    let tap = rc - ci * kk;
    let kh = tap / p.k;
    let kw = tap - kh * p.k;
    let co0 = wg.y * TC;
    let cmax = p.co - 1u;
    let ohw = p.oh * p.ow;
    let hw = p.h * p.w;
    // Channel offsets into dy, clamped so the block's tail past Co reads valid memory.
    let c0 = vec4<u32>(min(co0, cmax), min(co0 + 1u, cmax), min(co0 + 2u, cmax), min(co0 + 3u, cmax)) * ohw;
    let c1 = vec4<u32>(min(co0 + 4u, cmax), min(co0 + 5u, cmax), min(co0 + 6u, cmax), min(co0 + 7u, cmax)) * ohw;
    let c2 = vec4<u32>(min(co0 + 8u, cmax), min(co0 + 9u, cmax), min(co0 + 10u, cmax), min(co0 + 11u, cmax)) * ohw;
    let c3 = vec4<u32>(min(co0 + 12u, cmax), min(co0 + 13u, cmax), min(co0 + 14u, cmax), min(co0 + 15u, cmax)) * ohw;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    let rows = p.n * p.oh;
    let row_begin = wg.z * p.rows_per_split;
    let row_end = min(row_begin + p.rows_per_split, rows);
    for (var row = row_begin; row < row_end; row++) {
        let n = row / p.oh;
        let oh = row - n * p.oh;
        let ih = i32(oh * p.stride + kh) - i32(p.pad);
        let row_ok = ih >= 0 && ih < i32(p.h);
        let xrow = (n * p.ci + ci) * hw + u32(ih) * p.w;
        let grow = n * p.co * ohw + oh * p.ow;
        for (var ow = 0u; ow < p.ow; ow++) {
            let iw = i32(ow * p.stride + kw) - i32(p.pad);
            let ok = row_ok && iw >= 0 && iw < i32(p.w);
            let xv = vec4<f32>(select(0.0, xw[select(0u, xrow + u32(iw), ok)], ok));
            let g = grow + ow;
            a0 = fma(vec4<f32>(dyw[g + c0.x], dyw[g + c0.y], dyw[g + c0.z], dyw[g + c0.w]), xv, a0);
            a1 = fma(vec4<f32>(dyw[g + c1.x], dyw[g + c1.y], dyw[g + c1.z], dyw[g + c1.w]), xv, a1);
            a2 = fma(vec4<f32>(dyw[g + c2.x], dyw[g + c2.y], dyw[g + c2.z], dyw[g + c2.w]), xv, a2);
            a3 = fma(vec4<f32>(dyw[g + c3.x], dyw[g + c3.y], dyw[g + c3.z], dyw[g + c3.w]), xv, a3);
        }
    }
    if rr < ck && co0 < p.co {
        let v = array<f32, 16>(a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w,
                               a2.x, a2.y, a2.z, a2.w, a3.x, a3.y, a3.z, a3.w);
        let count = min(TC, p.co - co0);
        let base = (wg.z * p.co + co0) * ck + rr;
        for (var j = 0u; j < 16u; j++) {
            if j < count { dw_part[base + j * ck] = v[j]; }
        }
    }
}

@group(0) @binding(1) var<storage, read> parts: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;

// dw[i] = sum_s parts[s * len + i], len = Co * Ci * kk
@compute @workgroup_size(256)
fn conv_sum_splits(ids: Ids) {
    let wg = ids.wg;
    let nwg = ids.nwg;
    let lid = local_index(ids);
    let len = p.co * p.ci * p.k * p.k;
    let i = group_index(ids) * 256u + lid;
    if i >= len { return; }
    var s = 0.0;
    for (var z = 0u; z < p.splits; z++) {
        s += parts[z * len + i];
    }
    dw[i] = s;
}
