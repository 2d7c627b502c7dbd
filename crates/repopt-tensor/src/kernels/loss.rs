//! `shaders/loss.wgsl`: softmax cross-entropy with label smoothing.

use super::{kernels, shader};

crate::params! {
    /// A batch of logits.
    pub struct LossParams {
        /// Samples.
        n: u32,
        /// Classes.
        k: u32,
        /// Label smoothing in [0, 1).
        smoothing: f32,
    }
}

shader!(SHADER, "loss.wgsl", LossParams, trusted: false, subgroups: false);

kernels! {
    KERNELS = SHADER: LossParams {
        /// Per-sample loss and the gradient of the mean loss.
        CROSS_ENTROPY_FORWARD = cross_entropy_forward(read logits, read labels, write row_loss, write grad);
    }
}
