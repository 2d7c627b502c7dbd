//! `shaders/conv_implicit.wgsl`: convolution as an implicit matrix product on workgroup
//! tiles, every direction; reads [`ImplicitGemmParams`].

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

shader!(SHADER, "conv_implicit.wgsl", ImplicitGemmParams, trusted: false, subgroups: false);

kernels! {
    KERNELS = SHADER: ImplicitGemmParams {
        /// 64 x 64 outputs per workgroup of 256, 4 x 4 per invocation, double-buffered
        /// workgroup tiles.
        IMPLICIT_GEMM = implicit_gemm(read a, read b, write c);
        /// The weight gradient's partial products summed over the splits of K.
        SUM_SPLITS = implicit_sum_splits(read partial, write summed);
    }
}
