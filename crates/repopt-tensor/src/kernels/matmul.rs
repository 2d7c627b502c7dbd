//! `shaders/matmul.wgsl`, and `shaders/matmul_subgroup.wgsl` and
//! `shaders/matmul_subgroup_vec.wgsl` (one body, `shaders/matmul_subgroup_body.wgsl`, reading
//! B element by element or in vec2/vec4 loads); all read [`MatmulParams`].

use super::{kernels, shader};

crate::params! {
    /// `C[m, n] = A[m, k] B[k, n] (+ bias[n])` with element strides for A and B, so
    /// transposed operands need no copy.
    pub struct MatmulParams {
        /// Rows of C.
        m: u32,
        /// Columns of C.
        n: u32,
        /// Inner size.
        k: u32,
        /// 1: add `bias[n]`.
        has_bias: u32,
        /// A's stride between rows.
        sam: u32,
        /// A's stride along k.
        sak: u32,
        /// B's stride along k.
        sbk: u32,
        /// B's stride between columns.
        sbn: u32,
        /// 1: `C += A B` (C is read first).
        accumulate: u32,
        /// Batched products (grid z indexes the batch): elements between A's matrices.
        batch_a: u32,
        /// Elements between B's matrices.
        batch_b: u32,
        /// Elements between C's matrices.
        batch_c: u32,
    }
}

shader!(SHADER, "matmul.wgsl", MatmulParams, trusted: true, subgroups: false);
shader!(SUBGROUP_SHADER, "matmul_subgroup.wgsl", MatmulParams, trusted: true, subgroups: true,
    f16: false, library: "matmul_subgroup_body.wgsl");
shader!(SUBGROUP_VEC_SHADER, "matmul_subgroup_vec.wgsl", MatmulParams, trusted: true,
    subgroups: true, f16: false, library: "matmul_subgroup_body.wgsl");

kernels! {
    KERNELS = SHADER: MatmulParams {
        /// 4 rows per workgroup, 4 columns per invocation.
        MATMUL = matmul(read a, read b, read bias, write c);
    }
}

kernels! {
    SUBGROUP_KERNELS = SUBGROUP_SHADER: MatmulParams {
        /// 16 rows per workgroup, A values shared with subgroup broadcasts.
        MATMUL_SUBGROUP = matmul(read a, read b, read bias, write c);
        /// The same with four columns per invocation.
        MATMUL_SUBGROUP_WIDE = matmul_wide(read a, read b, read bias, write c);
    }
}

kernels! {
    SUBGROUP_VEC_KERNELS = SUBGROUP_VEC_SHADER: MatmulParams {
        /// [`MATMUL_SUBGROUP`] reading each invocation's two columns of B in one load.
        MATMUL_SUBGROUP_PAIRS = matmul(read a, read b2, read bias, write c);
        /// [`MATMUL_SUBGROUP_WIDE`] reading each invocation's four columns of B in one load.
        MATMUL_SUBGROUP_QUADS = matmul_wide(read a, read b4, read bias, write c);
    }
}
