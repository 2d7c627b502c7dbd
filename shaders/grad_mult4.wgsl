// The RepOptimizer's structured Grad Mult four elements at a time, for the optimizer kernels
// that read a [co, ci, 3, 3] kernel as vec4s (optim.wgsl, optim_multi.wgsl, which append
// this file). Element (c, d, h, w) gets f[c], plus f[co + c] at the centre tap, plus 1 at the
// centre where c == d with the identity branch (`structured_mult` in optim.wgsl, per element).
// A row (ci * 9 elements) holds at least 9, so four consecutive elements lie in at most two
// output channels.

// The multipliers of elements e .. e + 3 of a kernel with `row` elements per output channel:
// `c` is element e's channel, `lo` its factors (each, centre term), `hi` those of c + 1.
fn mults_of(lo: vec2<f32>, hi: vec2<f32>, identity: bool, c: u32, e: u32, row: u32) -> vec4<f32> {
    var out = vec4<f32>(0.0);
    let r0 = e - c * row;
    for (var j = 0u; j < 4u; j++) {
        let next = r0 + j >= row;
        let f = select(lo, hi, next);
        let cj = c + u32(next);
        let r = r0 + j - select(0u, row, next);
        let d = r / 9u;
        var m = f.x;
        if r - d * 9u == 4u {
            m += f.y;
            if identity && cj == d { m += 1.0; }
        }
        out[j] = m;
    }
    return out;
}
