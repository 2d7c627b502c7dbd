//! `shaders/optim.wgsl`: fused optimizer steps with an optional Grad Mult.

use super::{kernels, shader};

crate::params! {
    /// One optimizer step over one parameter tensor.
    pub struct OptimParams {
        /// vec4 count.
        n4: u32,
        /// 1: multiply the gradient by `mult` first (the Grad Mult).
        has_mult: u32,
        /// 1: first step, the momentum buffer starts as the update itself.
        first: u32,
        /// 1: nesterov momentum.
        nesterov: u32,
        /// Learning rate.
        lr: f32,
        /// SGD momentum.
        momentum: f32,
        /// Weight decay (added to the gradient for SGD, decoupled for AdamW).
        weight_decay: f32,
        /// SGD dampening.
        dampening: f32,
        /// AdamW beta1.
        beta1: f32,
        /// AdamW beta2.
        beta2: f32,
        /// AdamW epsilon.
        eps: f32,
        /// `1 - beta1^t`.
        bias_correction1: f32,
        /// `1 - beta2^t`.
        bias_correction2: f32,
        /// Structured Grad Mult: elements per output channel (`ci * 9`).
        row: u32,
        /// Structured Grad Mult: output channels.
        rows: u32,
        /// Structured Grad Mult: 1 adds 1 at the diagonal centre.
        identity: u32,
    }
}

shader!(SHADER, "optim.wgsl", OptimParams, trusted: false, subgroups: false,
    f16: false, library: "grad_mult4.wgsl");

kernels! {
    KERNELS = SHADER: OptimParams {
        /// SGD with a dense (or no) Grad Mult.
        SGD_STEP = sgd_step(write param, read grad, read mult, write momentum_buf);
        /// AdamW with a dense (or no) Grad Mult.
        ADAMW_STEP = adamw_step(write param, read grad, read mult, write momentum_buf, write exp_avg_sq);
        /// SGD with a 3x3 kernel's structured Grad Mult.
        SGD_STEP_CONV3X3 = sgd_step_conv3x3(write w1, read g1, read factors, write m1);
        /// AdamW with a 3x3 kernel's structured Grad Mult.
        ADAMW_STEP_CONV3X3 = adamw_step_conv3x3(write w1, read g1, read factors, write m1, write v1);
        /// The dense multiplier of a structured Grad Mult.
        EXPAND_CONV3X3_MULT = expand_conv3x3_mult(read expand_factors, write dense);
    }
}
