// The implicit matrix product of conv_implicit.wgsl with its operands stored as f16: half the
// bytes of every load the product gathers (each input value is read once per tap, so the
// gathers, not the arithmetic, are what a GPU's caches carry), widened to f32 as loaded, with
// f32 workgroup tiles and f32 sums. `to_half` converts both operands in one pass first. The
// result differs from the f32 product by the rounding of the operands to 11 significant bits
// (relative 2^-12 each), so the engine runs it only when asked for (`implicit-f16`).
//
// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/conv_implicit.rs and prepended to this file; the product's
// body is conv_implicit_product.wgsl, appended to it.

enable f16;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;

fn operand_a(i: u32) -> f32 {
    return f32(a[i]);
}

fn operand_b(i: u32) -> f32 {
    return f32(b[i]);
}

// ---- a_half, b_half = the product's operands rounded to f16, two elements per invocation

@group(0) @binding(1) var<storage, read> a_full: array<f32>;
@group(0) @binding(2) var<storage, read> b_full: array<f32>;
@group(0) @binding(3) var<storage, read_write> a_half: array<vec2<f16>>;
@group(0) @binding(4) var<storage, read_write> b_half: array<vec2<f16>>;

// Elements of the operands (a, b) in this direction: the forward reads (w, x), the input
// gradient (w, dy), the weight gradient (dy, x).
fn operand_lengths() -> vec2<u32> {
    let x = p.n * p.ci * p.h * p.w;
    let w = p.co * p.ci * p.k * p.k;
    let dy = p.n * p.co * p.oh * p.ow;
    if p.direction == 0u { return vec2<u32>(w, x); }
    if p.direction == 1u { return vec2<u32>(w, dy); }
    return vec2<u32>(dy, x);
}

// Grid: one invocation per pair of the longer operand; an odd length's last pair is padded
// with zero.
@compute @workgroup_size(64)
fn to_half(ids: Ids) {
    let i = flat_index(ids, 64u);
    let len = operand_lengths();
    let j = 2u * i;
    if j < len.x {
        let hi = select(0.0, a_full[min(j + 1u, len.x - 1u)], j + 1u < len.x);
        a_half[i] = vec2<f16>(f16(a_full[j]), f16(hi));
    }
    if j < len.y {
        let hi = select(0.0, b_full[min(j + 1u, len.y - 1u)], j + 1u < len.y);
        b_half[i] = vec2<f16>(f16(b_full[j]), f16(hi));
    }
}
