// The RepOptimizer's structured Grad Mult four elements at a time, for the optimizer kernels
// that read a [co, ci, 3, 3] kernel as vec4s (optim.wgsl, optim_multi.wgsl, which append
// this file). Element (c, d, h, w) gets f[c], plus f[co + c] at the centre tap, plus 1 at the
// centre where c == d with the identity branch (`structured_mult` in optim.wgsl, per element).
// A row (ci * 9 elements) holds at least 9, so four consecutive elements lie in at most two
// output channels, and at most one of them is a centre tap. Finding that one element rather
// than testing each of the four made the update 1.1-1.2x faster on lavapipe (`repopt bench
// update`, its structured row).

// The multipliers of elements e .. e + 3 of a kernel with `row` elements per output channel:
// `c` is element e's channel, `lo` its factors (each, centre term), `hi` those of c + 1.
fn mults_of(lo: vec2<f32>, hi: vec2<f32>, identity: bool, c: u32, e: u32, row: u32) -> vec4<f32> {
    let r0 = e - c * row;
    let next = vec4<u32>(r0) + vec4<u32>(0u, 1u, 2u, 3u) >= vec4<u32>(row);
    var m = select(vec4<f32>(lo.x), vec4<f32>(hi.x), next);
    // Taps repeat every 9 elements (rows are multiples of 9): at most one of the four is a
    // centre tap, element jc, if jc < 4.
    let jc = (13u - e % 9u) % 9u;
    if jc < 4u {
        let crossed = r0 + jc >= row;
        let r = r0 + jc - select(0u, row, crossed);
        let f = select(lo, hi, crossed);
        var add = f.y;
        if identity && c + u32(crossed) == r / 9u { add += 1.0; }
        m[jc] += add;
    }
    return m;
}
