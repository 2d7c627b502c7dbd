// Convolution as an implicit matrix product, shaped for GPUs: every direction is one product
// C[M][N] = A[M][K] B[K][N] whose operands are gathered from the tensors as they are loaded,
// so no columns matrix is written or read (see conv_gemm.wgsl for the explicit form):
//   forward         y  [Co][N*OH*OW] = w [Co][Ci*k*k]  x patches [Ci*k*k][N*OH*OW]
//   input gradient  dx [Ci][N*H*W]   = w^T, flipped     x dy gathered back through the stride
//   weight gradient dw [Co][Ci*k*k]  = dy [Co][N*OH*OW] x patches^T
//
// A workgroup of 16 x 16 invocations owns a 64 x 64 tile of C; each invocation owns a 4 x 4
// register tile of it (four vec4 accumulators). The K dimension is walked 16 at a time through
// workgroup memory: each invocation loads 4 values of A and 4 of B, and from the shared tiles
// reads one vec4 of A and one of B per step of k for 16 FMAs. The shared tiles are double
// buffered: the loads of the next slice of K are issued before the current slice is
// multiplied and stored after it, so one barrier per slice suffices and the loads' latency
// hides behind the arithmetic. Grid z splits K (the weight gradient's K is every output pixel
// of the batch, its M x N only a few tiles); the splits' partial sums are added by
// `implicit_sum_splits`.

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/conv_implicit.rs and prepended to this file; the product's
// body, shared with conv_implicit_f16.wgsl, is conv_implicit_product.wgsl, appended to it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

fn operand_a(i: u32) -> f32 {
    return a[i];
}

fn operand_b(i: u32) -> f32 {
    return b[i];
}

// ---- summed[i] = sum over the splits of partial[split * split_stride + i] (weight gradient)

@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> summed: array<f32>;

@compute @workgroup_size(64)
fn implicit_sum_splits(ids: Ids) {
    let i = flat_index(ids, 64u);
    if i >= p.gm * p.gn { return; }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        sum += partial[s * p.split_stride + i];
    }
    summed[i] = sum;
}
