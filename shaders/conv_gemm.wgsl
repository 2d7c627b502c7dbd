// Convolution as matrix products (any kernel size, stride and padding): the data-movement
// kernels around the batched matmul kernel.
//
// With P = N * OH * OW output pixels and K = Ci * k * k taps, the input's patches are
// gathered into cols [K][P] ("im2col"), and then
//   y  = W [Co][K] x cols [K][P]           (forward)
//   dcols = W^T [K][Co] x dy [Co][P]       (input gradient, then summed back: "col2im")
//   dw = dy [Co][P] x cols^T [P][K]        (weight gradient)
// Products come out [Co][P] (or [P][Co] where that keeps more of the matmul kernel busy), so
// two more kernels move activations between that layout and N, C, H, W.
// One invocation per output element everywhere: no reductions, no races.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/conv_gemm.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

// ---- cols[(c * k + ky) * k + kx][(n * oh + oy) * ow + ox] = x[n][c][oy*s - pad + ky][ox*s - pad + kx]

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> cols: array<f32>;

@compute @workgroup_size(64)
fn gemm_im2col(ids: Ids) {
    let i = flat_index(ids, 64u);
    let pixels = p.n * p.oh * p.ow;
    if i >= p.ci * p.k * p.k * pixels { return; }
    let tap = i / pixels;
    let q = i - tap * pixels;
    let c = tap / (p.k * p.k);
    let r = tap - c * p.k * p.k;
    let ky = r / p.k;
    let kx = r - ky * p.k;
    let n = q / (p.oh * p.ow);
    let s = q - n * p.oh * p.ow;
    let oy = s / p.ow;
    let ox = s - oy * p.ow;
    let iy = i32(oy * p.stride + ky) - i32(p.pad);
    let ix = i32(ox * p.stride + kx) - i32(p.pad);
    let ok = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let at = ((n * p.ci + c) * p.h + u32(max(iy, 0))) * p.w + u32(max(ix, 0));
    cols[i] = select(0.0, x[select(0u, at, ok)], ok);
}

// ---- dx[n][c][iy][ix] = sum of dcols over the taps and output pixels that read (iy, ix) ----
// dcols is [K][P], or [P][K] when `pixel_major`.

@group(0) @binding(1) var<storage, read> dcols: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(64)
fn gemm_col2im(ids: Ids) {
    let i = flat_index(ids, 64u);
    if i >= p.n * p.ci * p.h * p.w { return; }
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let c = (i / (p.w * p.h)) % p.ci;
    let n = i / (p.w * p.h * p.ci);
    let pixels = p.n * p.oh * p.ow;
    // Only taps with ky = iy + pad (mod stride) reach row iy, so the loops start at the first
    // such tap and step by the stride: a stride-2 3x3 visits 4 taps, not 9, and no tap pays
    // for a signed remainder.
    var sum = 0.0;
    let ry = iy + p.pad;
    let rx = ix + p.pad;
    for (var ky = ry % p.stride; ky < p.k && ky <= ry; ky += p.stride) {
        let oy = (ry - ky) / p.stride;
        if oy >= p.oh { continue; }
        for (var kx = rx % p.stride; kx < p.k && kx <= rx; kx += p.stride) {
            let ox = (rx - kx) / p.stride;
            if ox >= p.ow { continue; }
            let tap = (c * p.k + ky) * p.k + kx;
            let q = (n * p.oh + oy) * p.ow + ox;
            var at = tap * pixels + q;
            if p.pixel_major == 1u { at = q * p.ci * p.k * p.k + tap; }
            sum += dcols[at];
        }
    }
    dx[i] = sum;
}

// ---- between N, C, H, W and a product's [C][P] (or [P][C] when `pixel_major`) ------------
// P = N * S with S = OH * OW; `p.co` is the channel count of the tensor moved.

@group(0) @binding(1) var<storage, read> product: array<f32>;
@group(0) @binding(2) var<storage, read_write> nchw: array<f32>;

// Where element i of the N, C, H, W tensor sits in the product's layout.
fn product_index(i: u32) -> u32 {
    let spatial = p.oh * p.ow;
    let s = i % spatial;
    let c = (i / spatial) % p.co;
    let n = i / (spatial * p.co);
    let q = n * spatial + s;
    if p.pixel_major == 1u { return q * p.co + c; }
    return c * (p.n * spatial) + q;
}

@compute @workgroup_size(64)
fn gemm_to_nchw(ids: Ids) {
    let i = flat_index(ids, 64u);
    if i >= p.n * p.co * p.oh * p.ow { return; }
    nchw[i] = product[product_index(i)];
}

@group(0) @binding(1) var<storage, read> from_nchw: array<f32>;
@group(0) @binding(2) var<storage, read_write> to_product: array<f32>;

@compute @workgroup_size(64)
fn gemm_from_nchw(ids: Ids) {
    let i = flat_index(ids, 64u);
    if i >= p.n * p.co * p.oh * p.ow { return; }
    to_product[product_index(i)] = from_nchw[i];
}
