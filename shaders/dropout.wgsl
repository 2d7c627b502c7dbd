// Inverted dropout (as torch.nn.functional.dropout in training): element i is kept with
// probability 1 - p and scaled by 1 / (1 - p), or zeroed.
//
// The mask is never stored or uploaded: element i's 32 random bits are the first word of
// Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3", SC 2011; the Random123 and JAX generator) of the counter (i, 0) under the key (the
// 64-bit seed). Integer adds, rotations and xors only, so every adapter computes the same
// bits, and the backward kernel recomputes the forward's mask from the seed. Element i is
// dropped when bits < ceil(p * 2^32), i.e. when bits / 2^32, uniform on [0, 1), is below p.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/dropout.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;

fn rotl(v: u32, r: u32) -> u32 {
    return (v << r) | (v >> (32u - r));
}

// Four Threefry rounds with rotations r, then the key injection number `s`.
fn threefry_rounds(v: vec2<u32>, r: vec4<u32>, k0: u32, k1: u32, s: u32) -> vec2<u32> {
    var c = v;
    for (var j = 0u; j < 4u; j++) {
        c.x += c.y;
        c.y = rotl(c.y, r[j]) ^ c.x;
    }
    return vec2<u32>(c.x + k0, c.y + k1 + s);
}

// First word of Threefry-2x32-20 of the counter (i, 0) keyed by the seed.
fn random_bits(i: u32) -> u32 {
    let ra = vec4<u32>(13u, 15u, 26u, 6u);
    let rb = vec4<u32>(17u, 29u, 16u, 24u);
    let k0 = p.seed_lo;
    let k1 = p.seed_hi;
    let k2 = 0x1BD11BDAu ^ k0 ^ k1;
    var c = vec2<u32>(i + k0, k1);
    c = threefry_rounds(c, ra, k1, k2, 1u);
    c = threefry_rounds(c, rb, k2, k0, 2u);
    c = threefry_rounds(c, ra, k0, k1, 3u);
    c = threefry_rounds(c, rb, k1, k2, 4u);
    c = threefry_rounds(c, ra, k2, k0, 5u);
    return c.x;
}

fn kept(i: u32) -> bool {
    return random_bits(i) >= p.threshold;
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// Dropped elements are 0 whatever x holds (a dropped inf or NaN does not propagate).
@compute @workgroup_size(256)
fn dropout_forward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { y[i] = select(0.0, x[i] * p.scale, kept(i)); }
}

@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn dropout_backward(ids: Ids) {
    let i = flat_index(ids, 256u);
    if i < p.n { dx[i] = select(0.0, dy[i] * p.scale, kept(i)); }
}
