//! `shaders/depthwise.wgsl`: depthwise convolution (one filter per channel), its input
//! gradient as a gather over outputs, and its weight gradient as split partial sums.

use super::{kernels, shader};

crate::params! {
    /// The geometry of one depthwise convolution, shared by its kernels.
    pub struct DepthwiseParams {
        /// Batch.
        n: u32,
        /// Channels (input and output).
        c: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
        /// Output height.
        oh: u32,
        /// Output width.
        ow: u32,
        /// Kernel size (square, odd).
        k: u32,
        /// Stride (both directions).
        stride: u32,
        /// Zero padding on every side.
        pad: u32,
        /// Weight gradient: number of partial sums over output rows `(n, oh)`.
        splits: u32,
        /// Weight gradient: output rows per partial sum.
        rows_per_split: u32,
    }
}

shader!(SHADER, "depthwise.wgsl", DepthwiseParams, trusted: true, subgroups: false);

kernels! {
    KERNELS = SHADER: DepthwiseParams {
        /// `y[n, c] = conv(x[n, c], w[c])`.
        FORWARD = depthwise_forward(read x, read wt, write y);
        /// `dx[n, c] = conv_transpose(dy[n, c], w[c])`, gathered per input pixel.
        BACKWARD_INPUT = depthwise_backward_input(read dy, read wt, write dx);
        /// `splits` partial sums of `dw[c, tap]`, laid out `[c, tap, split]`.
        BACKWARD_WEIGHT = depthwise_backward_weight(read xw, read dyw, write dw_part);
    }
}
