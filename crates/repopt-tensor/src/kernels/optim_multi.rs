//! `shaders/optim_multi.wgsl`: one SGD step over up to eight tensors per dispatch.

use super::{kernels, shader};

/// Tensors one dispatch of [`SGD_STEP_MULTI`] updates.
pub const TENSORS: usize = 8;

crate::params! {
    /// One SGD step over up to [`TENSORS`] tensors without Grad Mults.
    pub struct MultiSgdParams {
        /// 1: first step, each momentum buffer starts as the update itself.
        first: u32,
        /// 1: nesterov momentum.
        nesterov: u32,
        /// Learning rate.
        lr: f32,
        /// Momentum.
        momentum: f32,
        /// Dampening.
        dampening: f32,
        /// vec4 count of tensor 0 (0 where the slot is unused).
        n4_0: u32,
        /// vec4 count of tensor 1 (0 where the slot is unused).
        n4_1: u32,
        /// vec4 count of tensor 2 (0 where the slot is unused).
        n4_2: u32,
        /// vec4 count of tensor 3 (0 where the slot is unused).
        n4_3: u32,
        /// vec4 count of tensor 4 (0 where the slot is unused).
        n4_4: u32,
        /// vec4 count of tensor 5 (0 where the slot is unused).
        n4_5: u32,
        /// vec4 count of tensor 6 (0 where the slot is unused).
        n4_6: u32,
        /// vec4 count of tensor 7 (0 where the slot is unused).
        n4_7: u32,
        /// Weight decay of tensor 0.
        wd_0: f32,
        /// Weight decay of tensor 1.
        wd_1: f32,
        /// Weight decay of tensor 2.
        wd_2: f32,
        /// Weight decay of tensor 3.
        wd_3: f32,
        /// Weight decay of tensor 4.
        wd_4: f32,
        /// Weight decay of tensor 5.
        wd_5: f32,
        /// Weight decay of tensor 6.
        wd_6: f32,
        /// Weight decay of tensor 7.
        wd_7: f32,
    }
}

shader!(SHADER, "optim_multi.wgsl", MultiSgdParams, trusted: false, subgroups: false);

kernels! {
    KERNELS = SHADER: MultiSgdParams {
        /// SGD over tensors 0..8: (parameter, gradient, momentum buffer) each.
        SGD_STEP_MULTI = sgd_step_multi(write w0, read g0, write m0, write w1, read g1, write m1, write w2, read g2, write m2, write w3, read g3, write m3, write w4, read g4, write m4, write w5, read g5, write m5, write w6, read g6, write m6, write w7, read g7, write m7);
    }
}
