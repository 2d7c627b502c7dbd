//! `shaders/elementwise.wgsl`: one element per invocation (or four, for the vec4 kernels).

use super::{kernels, shader};

crate::params! {
    /// An element-wise kernel's sizes and scalars.
    pub struct ElementwiseParams {
        /// Elements (vec4s for the vec4 kernels).
        n: u32,
        /// Channels, for per-channel broadcasts.
        c: u32,
        /// Spatial size per channel, for per-channel broadcasts.
        hw: u32,
        /// First scalar.
        alpha: f32,
        /// Second scalar.
        beta: f32,
    }
}

shader!(SHADER, "elementwise.wgsl", ElementwiseParams, trusted: false, subgroups: false);

kernels! {
    KERNELS = SHADER: ElementwiseParams {
        /// `dst = alpha`.
        FILL = fill(write fill_dst);
        /// `out = alpha * a`.
        SCALE = scale(read src4, write dst4);
        /// `out = max(a, 0)`.
        RELU_FORWARD = relu_forward(read src4, write dst4);
        /// `out = 1 / (1 + exp(-a))`.
        SIGMOID_FORWARD = sigmoid_forward(read a, write out2);
        /// `out = clamp(a + 3, 0, 6) / 6`.
        HARD_SIGMOID_FORWARD = hard_sigmoid_forward(read a, write out2);
        /// `dx[n, c, h, w] = alpha * dy[n, c]`.
        AVGPOOL_BACKWARD = avgpool_backward(read a, write out2);
        /// `out = alpha * a + beta * b`.
        ADD_SCALED = add_scaled(read src4, read b4, write out3_4);
        /// `out = a * b`.
        MUL = mul(read src4, read b4, write out3_4);
        /// `dx = dy` where the saved output `a` is positive.
        RELU_BACKWARD = relu_backward(read src4, read b4, write out3_4);
        /// `dx = dy * y * (1 - y)` from the saved output `a`.
        SIGMOID_BACKWARD = sigmoid_backward(read a, read b, write out3);
        /// `dx = dy * (1/6)` where the saved input `a` is inside (-3, 3), else 0.
        HARD_SIGMOID_BACKWARD = hard_sigmoid_backward(read a, read b, write out3);
        /// `out[n, c, h, w] = a[n, c, h, w] * b[c]`.
        SCALE_CHANNELS = scale_channels(read a, read b, write out3);
        /// `out[n, c, h, w] = a[n, c, h, w] + b[c]`.
        ADD_CHANNELS = add_channels(read a, read b, write out3);
        /// [`SCALE_CHANNELS`] four elements at a time (HW a multiple of 4; `n` counts vec4s).
        SCALE_CHANNELS4 = scale_channels4(read src4, read per_channel, write out3_4);
        /// [`ADD_CHANNELS`] four elements at a time (HW a multiple of 4; `n` counts vec4s).
        ADD_CHANNELS4 = add_channels4(read src4, read per_channel, write out3_4);
        /// `out = x0 * s0[c] + x1 * s1[c] (+ x2 * s2[c] where alpha is 1)`.
        SCALED_SUM = scaled_sum(
            read ss_x0, read ss_x1, read ss_x2, read ss_s0, read ss_s1, read ss_s2, write ss_out
        );
        /// [`SCALED_SUM`] four elements at a time (HW a multiple of 4; `n` counts vec4s).
        SCALED_SUM4 = scaled_sum4(
            read ss4_x0, read ss4_x1, read ss4_x2, read ss_s0, read ss_s1, read ss_s2, write ss4_out
        );
        /// `out[n, c, h, w] = a[n, c, h, w] * b[n, c]`.
        SCALE_PLANES = scale_planes(read a, read b, write out3);
        /// `out = a * b[0]`.
        SCALE_BY_DEVICE_SCALAR = scale_by_device_scalar(read a, read b, write out3);
        /// `acc = alpha * acc + beta * b`, in place, vec4.
        AXPBY_INPLACE = axpby_inplace(write acc, read b4);
        /// `dst = src`, vec4.
        COPY_VEC4 = copy_vec4(read src4, write dst4);
        /// From `a[0]`, the sum of squares: the norm and the clipping coefficient.
        CLIP_COEFFICIENT = clip_coefficient(read a, write out2, write out3);
    }
}
