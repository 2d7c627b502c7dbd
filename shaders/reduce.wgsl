// Reductions without workgroup barriers: each invocation sums a contiguous run on its own
// and, when one pass cannot cover everything, a second pass sums the partial sums. (On
// lavapipe a barrier turns every invocation into a coroutine switch; these kernels have
// none, and their runs are contiguous.)

// `Params` (binding 0) is generated from its declaration in
// crates/repopt-tensor/src/kernels/reduce.rs and prepended to this file.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;

@group(0) @binding(2) var<storage, read_write> out2: array<f32>;

// out[r] = alpha * sum_c a[r * cols + c]   (one invocation per row)
@compute @workgroup_size(64)
fn sum_rows(ids: Ids) {
    let r = flat_index(ids, 64u);
    if r >= p.rows { return; }
    let base = r * p.cols;
    var s = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        s += a[base + c];
    }
    out2[r] = p.alpha * s;
}

// out[r * chunks + j] = sum of row r's inputs j*chunk .. (j+1)*chunk, chunks = ceil(cols / chunk)
@compute @workgroup_size(64)
fn sum_chunks(ids: Ids) {
    let chunks = (p.cols + p.chunk - 1u) / p.chunk;
    let k = flat_index(ids, 64u);
    if k >= p.rows * chunks { return; }
    let r = k / chunks;
    let j = k - r * chunks;
    let begin = j * p.chunk;
    let end = min(begin + p.chunk, p.cols);
    let base = r * p.cols;
    var s = 0.0;
    for (var c = begin; c < end; c++) {
        s += a[base + c];
    }
    out2[k] = s;
}

// a is [N, C, HW]: out[c * N + n] = sum_hw a[n, c, hw]   (first pass of a per-channel sum)
@compute @workgroup_size(64)
fn plane_sums(ids: Ids) {
    let k = flat_index(ids, 64u);
    let n_c = p.rows;   // N * C
    if k >= n_c { return; }
    let c_count = p.cols;
    let n = k / c_count;
    let c = k - n * c_count;
    let base = k * p.hw;
    var s = 0.0;
    for (var i = 0u; i < p.hw; i++) {
        s += a[base + i];
    }
    out2[c * (n_c / c_count) + n] = s;
}

@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;

// a, b are [N, C, HW]: out[c * N + n] = sum_hw a * b   (first pass of a per-channel dot product)
@compute @workgroup_size(64)
fn plane_dots(ids: Ids) {
    let k = flat_index(ids, 64u);
    let n_c = p.rows;
    if k >= n_c { return; }
    let c_count = p.cols;
    let n = k / c_count;
    let c = k - n * c_count;
    let base = k * p.hw;
    var s = 0.0;
    for (var i = 0u; i < p.hw; i++) {
        s += a[base + i] * b[base + i];
    }
    out3[c * (n_c / c_count) + n] = s;
}
