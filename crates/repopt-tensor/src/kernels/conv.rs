//! `shaders/conv.wgsl` (the plain family) and `shaders/conv_subgroup.wgsl` (kernels that share
//! loads across a subgroup); both read [`ConvParams`].

use super::{kernels, shader};

crate::params! {
    /// The geometry of one convolution, shared by every conv kernel.
    pub struct ConvParams {
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
        /// Stride (both directions).
        stride: u32,
        /// Zero padding on every side.
        pad: u32,
        /// Channel count of packed weights, a multiple of 16 (plain family).
        cpad: u32,
        /// Weight gradient: number of partial sums over output rows.
        splits: u32,
        /// Weight gradient: output rows `(n, oh)` per partial sum.
        rows_per_split: u32,
        /// Stride-2 input gradient: parity class (2 * row parity + column parity).
        phase: u32,
    }
}

shader!(SHADER, "conv.wgsl", ConvParams, trusted: true, subgroups: false);
shader!(SUBGROUP_SHADER, "conv_subgroup.wgsl", ConvParams, trusted: true, subgroups: true);

kernels! {
    KERNELS = SHADER: ConvParams {
        /// `packed[(ci * kk + tap) * cpad + co] = w[co, ci, tap]`, zero for `co >= Co`.
        PACK_FORWARD = conv_pack_forward(read w_in, write packed);
        /// `packed[(co * kk + tap) * cpad + ci] = w[co, ci, tap]`, zero for `ci >= Ci`.
        PACK_INPUT = conv_pack_input(read w_in, write packed);
        /// `y = conv(x, w)` from forward-packed weights.
        FORWARD = conv_forward(read x, read wpack, write y);
        /// `dx = conv_transpose(dy, w)` from input-packed weights.
        BACKWARD_INPUT = conv_backward_input(read dy, read wpack_in, write dx);
        /// `dw` (or `splits` partial sums of it) from `x` and `dy`.
        BACKWARD_WEIGHT = conv_backward_weight(read xw, read dyw, write dw_part);
        /// Sums the weight gradient's partial sums.
        SUM_SPLITS = conv_sum_splits(read parts, write dw);
    }
}

kernels! {
    SUBGROUP_KERNELS = SUBGROUP_SHADER: ConvParams {
        /// 3x3 forward, any stride.
        CONV3_FORWARD = conv3_forward(read x, read wt, write y);
        /// 1x1 forward, any stride.
        CONV1_FORWARD = conv1_forward(read x, read wt, write y);
        /// 3x3 stride-1 input gradient.
        CONV3_BACKWARD_INPUT = conv3_backward_input(read dy, read wb, write dx);
        /// 1x1 unpadded input gradient over the output grid (any stride).
        CONV1_BACKWARD_INPUT = conv1_backward_input(read dy, read wb, write dx);
        /// 3x3 stride-2 input gradient, one parity class of input pixels per dispatch.
        CONV3_BACKWARD_INPUT_S2 = conv3_backward_input_s2(read dy, read wb, write dx);
        /// 3x3 weight gradient.
        CONV3_BACKWARD_WEIGHT = conv3_backward_weight(read xw, read dyw, write dw_part);
        /// 1x1 weight gradient.
        CONV1_BACKWARD_WEIGHT = conv1_backward_weight(read xw, read dyw, write dw_part);
    }
}
