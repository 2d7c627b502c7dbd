//! `shaders/conv_gemm.wgsl`: the data movement of convolution as matrix products (im2col,
//! col2im, and layout changes); the products run on the batched matmul kernel.

use super::{kernels, shader};

crate::params! {
    /// The geometry of one convolution, and the layout of the product it moves.
    pub struct GemmConvParams {
        /// Batch.
        n: u32,
        /// Input channels.
        ci: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
        /// Channels of the tensor moved between layouts (output channels, or for the input
        /// gradient's output gradient, the convolution's output channels).
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
        /// 1: the product is stored pixel-major, `[P][C]` (or `[P][K]`), not `[C][P]`.
        pixel_major: u32,
    }
}

shader!(SHADER, "conv_gemm.wgsl", GemmConvParams, trusted: false, subgroups: false);

kernels! {
    KERNELS = SHADER: GemmConvParams {
        /// `cols[tap][pixel]`: every output pixel's input patch.
        IM2COL = gemm_im2col(read x, write cols);
        /// `dx` from the patches' gradients, each input pixel summing those that read it.
        COL2IM = gemm_col2im(read dcols, write dx);
        /// An N, C, H, W tensor from a product's layout.
        TO_NCHW = gemm_to_nchw(read product, write nchw);
        /// A product's layout from an N, C, H, W tensor.
        FROM_NCHW = gemm_from_nchw(read from_nchw, write to_product);
    }
}
