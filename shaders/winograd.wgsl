// Winograd F(2x2, 3x3) for stride-1 3x3 convolutions with padding 1 (Lavin & Gray, 2016).
//
// Each 2x2 block of outputs ("tile") comes from a 4x4 block of inputs. In the transformed
// domain the convolution becomes 16 independent matrix products, one per position of the
// 4x4 block:
//   U[k] = (G g G^T)[k]        [co, ci]   the weights, transformed once per launch
//   V[k] = (B^T d B)[k]        [ci, P]    every tile's inputs (P = n * tiles)
//   M[k] = U[k] V[k]           [co, P]    the batched matmul kernel, 16 products
//   y    = A^T M A                        each tile's 2x2 outputs
// 16 multiplications per tile and channel pair instead of the direct convolution's 36; the
// transforms add only additions, and three passes over data the size of the activations.
// Tiles are numbered (n, tile row, tile column) and the tile index is the fastest-varying
// index of V and M, so neighbouring invocations touch neighbouring addresses.
//
// The input gradient of the same convolution is this one applied to dy with the weights
// transposed and rotated by 180 degrees (`flip`), read straight from the original layout.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/winograd.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

// Tile t as (image, tile row, tile column): tiles are numbered image by image, row by row.
fn tile_of(t: u32) -> vec3<u32> {
    let per_image = p.th * p.tw;
    let n = t / per_image;
    let rest = t - n * per_image;
    let ty = rest / p.tw;
    return vec3<u32>(n, ty, rest - ty * p.tw);
}

// ---- weights: u[k][o][c] = (G g G^T)[k] --------------------------------------------------

@group(0) @binding(1) var<storage, read> wsrc: array<f32>;
@group(0) @binding(2) var<storage, read_write> u: array<f32>;

// One 3-vector through G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
fn g_col(a: f32, b: f32, c: f32) -> vec4<f32> {
    return vec4<f32>(a, 0.5 * (a + b + c), 0.5 * (a - b + c), c);
}

// Grid: one invocation per (o, c) pair of this launch's output and input channels.
@compute @workgroup_size(64)
fn winograd_weights(ids: Ids) {
    let i = flat_index(ids, 64u);
    if i >= p.co * p.ci { return; }
    // Invocations enumerate the pairs in the order the transform is stored, so that the
    // writes (16 per pair) are contiguous and the reads (9) strided: `[o][c]`, or `[c][o]`
    // when weights_input_major (measured: the other way round made this kernel 1.3x slower).
    let input_major = p.weights_input_major == 1u;
    let o = select(i / p.ci, i % p.co, input_major);
    let c = select(i % p.ci, i / p.co, input_major);
    var g: array<f32, 9>;
    if p.flip == 0u {
        let base = (o * p.ci + c) * 9u;
        for (var t = 0u; t < 9u; t++) { g[t] = wsrc[base + t]; }
    } else {
        // The original weight is [ci, co, 3, 3] in this launch's terms; rotate its taps.
        let base = (c * p.co + o) * 9u;
        for (var t = 0u; t < 9u; t++) { g[t] = wsrc[base + 8u - t]; }
    }
    // Columns of G g (4 rows), then rows of (G g) G^T.
    let c0 = g_col(g[0], g[3], g[6]);
    let c1 = g_col(g[1], g[4], g[7]);
    let c2 = g_col(g[2], g[5], g[8]);
    let stride = p.co * p.ci;
    for (var r = 0u; r < 4u; r++) {
        let row = g_col(c0[r], c1[r], c2[r]);
        for (var s = 0u; s < 4u; s++) {
            u[(r * 4u + s) * stride + i] = row[s];
        }
    }
}

// ---- inputs: v[k][c][t] = (B^T d B)[k] ----------------------------------------------------

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;

fn x_at(plane: u32, r: i32, s: i32) -> f32 {
    let ok = r >= 0 && r < i32(p.h) && s >= 0 && s < i32(p.w);
    return select(0.0, x[select(0u, plane + u32(r) * p.w + u32(s), ok)], ok);
}

// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] applied to four values.
fn bt(d: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(d.x - d.z, d.y + d.z, d.z - d.y, d.y - d.w);
}

fn x_row(plane: u32, r: i32, s: i32) -> vec4<f32> {
    return vec4<f32>(x_at(plane, r, s), x_at(plane, r, s + 1), x_at(plane, r, s + 2), x_at(plane, r, s + 3));
}

// Grid: one invocation per (c, tile), the tile fastest.
@compute @workgroup_size(64)
fn winograd_inputs(ids: Ids) {
    let i = flat_index(ids, 64u);
    let tiles = p.n * p.th * p.tw;
    if i >= p.ci * tiles { return; }
    let c = i / tiles;
    let t = i - c * tiles;
    let tile = tile_of(t);
    let n = tile.x;
    let ty = tile.y;
    let tx = tile.z;
    let plane = (n * p.ci + c) * p.h * p.w;
    let r0 = i32(2u * ty) - 1;
    let s0 = i32(2u * tx) - 1;
    // B^T d: combine rows, then each row's columns.
    let d0 = x_row(plane, r0, s0);
    let d1 = x_row(plane, r0 + 1, s0);
    let d2 = x_row(plane, r0 + 2, s0);
    let d3 = x_row(plane, r0 + 3, s0);
    let rows = array<vec4<f32>, 4>(d0 - d2, d1 + d2, d2 - d1, d1 - d3);
    let stride = p.ci * tiles;
    // [k][c][tile] for the products over channels, [k][tile][c] for those over tiles (the
    // weight gradient), so that the matmul kernel reads neighbouring addresses either way.
    var at = i;
    if p.tile_major == 1u { at = t * p.ci + c; }
    for (var r = 0u; r < 4u; r++) {
        let e = bt(rows[r]);
        for (var s = 0u; s < 4u; s++) {
            v[(r * 4u + s) * stride + at] = e[s];
        }
    }
}

// ---- outputs: y = A^T m A -------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> m: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// A^T = [1 1 1 0; 0 1 -1 -1] applied to four values.
fn at2(d: vec4<f32>) -> vec2<f32> {
    return vec2<f32>(d.x + d.y + d.z, d.y - d.z - d.w);
}

// Grid: one invocation per (o, tile), the tile fastest.
@compute @workgroup_size(64)
fn winograd_outputs(ids: Ids) {
    let i = flat_index(ids, 64u);
    let tiles = p.n * p.th * p.tw;
    if i >= p.co * tiles { return; }
    let o = i / tiles;
    let t = i - o * tiles;
    let tile = tile_of(t);
    let n = tile.x;
    let ty = tile.y;
    let tx = tile.z;
    let stride = p.co * tiles;
    var at = i;
    if p.products_tile_major == 1u { at = t * p.co + o; }
    var rows: array<vec4<f32>, 4>;
    for (var r = 0u; r < 4u; r++) {
        let base = r * 4u * stride + at;
        rows[r] = vec4<f32>(m[base], m[base + stride], m[base + 2u * stride], m[base + 3u * stride]);
    }
    // A^T applied down the columns, then along each resulting row.
    let top = at2(rows[0] + rows[1] + rows[2]);
    let bottom = at2(rows[1] - rows[2] - rows[3]);
    let oy = 2u * ty;
    let ox = 2u * tx;
    let base = (n * p.co + o) * p.h * p.w + oy * p.w + ox;
    let right = ox + 1u < p.w;
    y[base] = top.x;
    if right { y[base + 1u] = top.y; }
    if oy + 1u < p.h {
        y[base + p.w] = bottom.x;
        if right { y[base + p.w + 1u] = bottom.y; }
    }
}

// ---- weight gradient: dw = G^T [sum over tiles of (A dy A^T) (.) (B^T d B)] G ----------------
// With z = U (.) V per tile, y = A^T z A gives dz = A dy A^T, and U = G g G^T gives
// dg = G^T dU G; dU summed over tiles and images is, at each of the 16 positions, a matrix
// product over tiles (the inputs' transform is the forward's).

@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dyt: array<f32>;

fn dy_at(plane: u32, r: u32, s: u32) -> f32 {
    let ok = r < p.h && s < p.w;
    return select(0.0, dy[select(0u, plane + r * p.w + s, ok)], ok);
}

// A = [1 0; 1 1; 1 -1; 0 -1] applied to two values.
fn a4(d: vec2<f32>) -> vec4<f32> {
    return vec4<f32>(d.x, d.x + d.y, d.x - d.y, -d.y);
}

// Grid: one invocation per (o, tile), the tile fastest: dyt[k][o][tile] = (A dy A^T)[k].
@compute @workgroup_size(64)
fn winograd_output_grads(ids: Ids) {
    let i = flat_index(ids, 64u);
    let tiles = p.n * p.th * p.tw;
    if i >= p.co * tiles { return; }
    let o = i / tiles;
    let t = i - o * tiles;
    let tile = tile_of(t);
    let n = tile.x;
    let ty = tile.y;
    let tx = tile.z;
    let plane = (n * p.co + o) * p.h * p.w;
    let oy = 2u * ty;
    let ox = 2u * tx;
    let d0 = vec2<f32>(dy_at(plane, oy, ox), dy_at(plane, oy, ox + 1u));
    let d1 = vec2<f32>(dy_at(plane, oy + 1u, ox), dy_at(plane, oy + 1u, ox + 1u));
    let rows = array<vec2<f32>, 4>(d0, d0 + d1, d0 - d1, -d1);
    let stride = p.co * tiles;
    for (var r = 0u; r < 4u; r++) {
        let e = a4(rows[r]);
        for (var s = 0u; s < 4u; s++) {
            dyt[(r * 4u + s) * stride + i] = e[s];
        }
    }
}

@group(0) @binding(1) var<storage, read> mw: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;

// G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1] applied to four values.
fn gt3(q: vec4<f32>) -> vec3<f32> {
    let h = 0.5 * (q.y + q.z);
    return vec3<f32>(q.x + h, 0.5 * (q.y - q.z), h + q.w);
}

// Grid: one invocation per (o, c): dw[o][c] = G^T mw[.][o][c] G.
@compute @workgroup_size(64)
fn winograd_weight_grads(ids: Ids) {
    let i = flat_index(ids, 64u);
    if i >= p.co * p.ci { return; }
    let stride = p.co * p.ci;
    var rows: array<vec4<f32>, 4>;
    for (var r = 0u; r < 4u; r++) {
        let base = r * 4u * stride + i;
        rows[r] = vec4<f32>(mw[base], mw[base + stride], mw[base + 2u * stride], mw[base + 3u * stride]);
    }
    // G^T down the columns (three rows), then along each row.
    let h = 0.5 * (rows[1] + rows[2]);
    let out = array<vec3<f32>, 3>(gt3(rows[0] + h), gt3(0.5 * (rows[1] - rows[2])), gt3(h + rows[3]));
    for (var r = 0u; r < 3u; r++) {
        for (var s = 0u; s < 3u; s++) {
            dw[i * 9u + r * 3u + s] = out[r][s];
        }
    }
}
