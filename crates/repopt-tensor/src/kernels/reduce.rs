//! `shaders/reduce.wgsl`: barrier-free sums.

use super::{kernels, shader};

crate::params! {
    /// A row or plane reduction.
    pub struct ReduceParams {
        /// Outputs.
        rows: u32,
        /// Inputs per output.
        cols: u32,
        /// `sum_chunks`: inputs per partial sum.
        chunk: u32,
        /// Channel reductions: spatial size.
        hw: u32,
        /// Scale applied to every output.
        alpha: f32,
    }
}

shader!(SHADER, "reduce.wgsl", ReduceParams, trusted: false, subgroups: false);

kernels! {
    KERNELS = SHADER: ReduceParams {
        /// `out[r] = alpha * sum_c a[r, c]`.
        SUM_ROWS = sum_rows(read a, write out2);
        /// Partial sums of runs of `chunk` inputs.
        SUM_CHUNKS = sum_chunks(read a, write out2);
        /// Sum of each `(n, c)` plane, laid out `[c, n]`.
        PLANE_SUMS = plane_sums(read a, write out2);
        /// `sum a * b` of each `(n, c)` plane, laid out `[c, n]`.
        PLANE_DOTS = plane_dots(read a, read b, write out3);
    }
}
