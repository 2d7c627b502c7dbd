//! `shaders/winograd.wgsl`: the transforms of Winograd F(2x2, 3x3); the 16 products between
//! them run on the batched matmul kernel.

use super::{kernels, shader};

crate::params! {
    /// The geometry of one Winograd launch (stride 1, padding 1, so output size = input size).
    pub struct WinogradParams {
        /// Batch.
        n: u32,
        /// Input channels of this launch (the convolution's `co` for an input gradient; for
        /// the weight gradient, the convolution's own).
        ci: u32,
        /// Output channels of this launch.
        co: u32,
        /// Height of the input and the output.
        h: u32,
        /// Width of the input and the output.
        w: u32,
        /// Tile rows, `ceil(h / 2)`.
        th: u32,
        /// Tile columns, `ceil(w / 2)`.
        tw: u32,
        /// 1: the weights are read as the input gradient needs them (transposed and rotated).
        flip: u32,
        /// 1: the inputs' transform is stored `[k][tile][c]` rather than `[k][c][tile]`.
        tile_major: u32,
        /// 1: the products are stored `[k][tile][o]` rather than `[k][o][tile]`.
        products_tile_major: u32,
        /// 1: the weights' transform is stored `[k][c][o]` rather than `[k][o][c]`.
        weights_input_major: u32,
    }
}

shader!(SHADER, "winograd.wgsl", WinogradParams, trusted: false, subgroups: false);

kernels! {
    KERNELS = SHADER: WinogradParams {
        /// `u[k][o][c] = (G g G^T)[k]` for every channel pair (or `u[k][c][o]`).
        WEIGHTS = winograd_weights(read wsrc, write u);
        /// `v[k][c][tile] = (B^T d B)[k]` for every channel and 4x4 input tile.
        INPUTS = winograd_inputs(read x, write v);
        /// `y = A^T m A` for every channel and 2x2 output tile.
        OUTPUTS = winograd_outputs(read m, write y);
        /// `dyt[k][o][tile] = (A dy A^T)[k]` for every channel and 2x2 output tile.
        OUTPUT_GRADS = winograd_output_grads(read dy, write dyt);
        /// `dw[o][c] = G^T mw[.][o][c] G` for every channel pair.
        WEIGHT_GRADS = winograd_weight_grads(read mw, write dw);
    }
}
