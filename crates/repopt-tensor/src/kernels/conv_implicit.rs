//! `shaders/conv_implicit.wgsl` and `shaders/conv_implicit_f16.wgsl`: convolution as an
//! implicit matrix product on workgroup tiles, every direction, on f32 or f16 operands (the
//! product's body, `shaders/conv_implicit_product.wgsl`, is shared); reads
//! [`ImplicitGemmParams`].

use super::{kernels, shader};

crate::params! {
    /// One direction of a convolution as the product `C[gm][gn] = A[gm][gk] B[gk][gn]`.
    pub struct ImplicitGemmParams {
        /// Batch.
        n: u32,
        /// Input channels.
        ci: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
        /// Output channels.
        co: u32,
        /// Output height.
        oh: u32,
        /// Output width.
        ow: u32,
        /// Kernel size (square).
        k: u32,
        /// Stride.
        stride: u32,
        /// Zero padding.
        pad: u32,
        /// 0: forward, 1: input gradient, 2: weight gradient.
        direction: u32,
        /// Rows of the product.
        gm: u32,
        /// Columns of the product.
        gn: u32,
        /// Inner size of the product.
        gk: u32,
        /// K covered by one split (grid z), a multiple of 16.
        k_per_split: u32,
        /// Splits of K.
        splits: u32,
        /// Elements between the splits' partial products (weight gradient).
        split_stride: u32,
    }
}

shader!(SHADER, "conv_implicit.wgsl", ImplicitGemmParams, trusted: false, subgroups: false, f16: false,
    library: "conv_implicit_product.wgsl");
shader!(F16_SHADER, "conv_implicit_f16.wgsl", ImplicitGemmParams, trusted: false, subgroups: false, f16: true,
    library: "conv_implicit_product.wgsl");

kernels! {
    KERNELS = SHADER: ImplicitGemmParams {
        /// 64 x 64 outputs per workgroup of 256, 4 x 4 per invocation, double-buffered
        /// workgroup tiles.
        IMPLICIT_GEMM = implicit_gemm(read a, read b, write c);
        /// The weight gradient's partial products summed over the splits of K.
        SUM_SPLITS = implicit_sum_splits(read partial, write summed);
    }
}

kernels! {
    F16_KERNELS = F16_SHADER: ImplicitGemmParams {
        /// [`IMPLICIT_GEMM`] on operands stored as f16, summed in f32.
        IMPLICIT_GEMM_F16 = implicit_gemm(read a, read b, write c);
        /// Both operands of one direction rounded to f16, two elements per invocation.
        TO_HALF = to_half(read a_full, read b_full, write a_half, write b_half);
    }
}
