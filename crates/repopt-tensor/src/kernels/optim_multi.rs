//! `shaders/optim_multi.wgsl`: one SGD step over several tensors per dispatch.

use super::{kernels, shader};

/// Tensors one dispatch of [`SGD_STEP_MULTI`] updates.
pub const TENSORS: usize = 8;

/// Tensors one dispatch of [`SGD_STEP_CONV3X3_MULTI`] updates (four bindings each).
pub const CONV3X3_TENSORS: usize = 7;

crate::params! {
    /// One SGD step over up to [`TENSORS`] tensors, their workgroups laid end to end.
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
        /// Tensor 0: vec4 count (0 where the slot is unused).
        n_0: u32,
        /// Tensor 1: vec4 count (0 where the slot is unused).
        n_1: u32,
        /// Tensor 2: vec4 count (0 where the slot is unused).
        n_2: u32,
        /// Tensor 3: vec4 count (0 where the slot is unused).
        n_3: u32,
        /// Tensor 4: vec4 count (0 where the slot is unused).
        n_4: u32,
        /// Tensor 5: vec4 count (0 where the slot is unused).
        n_5: u32,
        /// Tensor 6: vec4 count (0 where the slot is unused).
        n_6: u32,
        /// Tensor 7: vec4 count (0 where the slot is unused).
        n_7: u32,
        /// Tensor 1's first workgroup (tensor 0 starts at 0; unused slots at the grid's end).
        start_1: u32,
        /// Tensor 2's first workgroup (tensor 0 starts at 0; unused slots at the grid's end).
        start_2: u32,
        /// Tensor 3's first workgroup (tensor 0 starts at 0; unused slots at the grid's end).
        start_3: u32,
        /// Tensor 4's first workgroup (tensor 0 starts at 0; unused slots at the grid's end).
        start_4: u32,
        /// Tensor 5's first workgroup (tensor 0 starts at 0; unused slots at the grid's end).
        start_5: u32,
        /// Tensor 6's first workgroup (tensor 0 starts at 0; unused slots at the grid's end).
        start_6: u32,
        /// Tensor 7's first workgroup (tensor 0 starts at 0; unused slots at the grid's end).
        start_7: u32,
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
        /// Structured Grad Mult of tensor 0: elements per output channel (`ci * 9`).
        row_0: u32,
        /// Structured Grad Mult of tensor 1: elements per output channel (`ci * 9`).
        row_1: u32,
        /// Structured Grad Mult of tensor 2: elements per output channel (`ci * 9`).
        row_2: u32,
        /// Structured Grad Mult of tensor 3: elements per output channel (`ci * 9`).
        row_3: u32,
        /// Structured Grad Mult of tensor 4: elements per output channel (`ci * 9`).
        row_4: u32,
        /// Structured Grad Mult of tensor 5: elements per output channel (`ci * 9`).
        row_5: u32,
        /// Structured Grad Mult of tensor 6: elements per output channel (`ci * 9`).
        row_6: u32,
        /// Structured Grad Mult of tensor 0: output channels.
        rows_0: u32,
        /// Structured Grad Mult of tensor 1: output channels.
        rows_1: u32,
        /// Structured Grad Mult of tensor 2: output channels.
        rows_2: u32,
        /// Structured Grad Mult of tensor 3: output channels.
        rows_3: u32,
        /// Structured Grad Mult of tensor 4: output channels.
        rows_4: u32,
        /// Structured Grad Mult of tensor 5: output channels.
        rows_5: u32,
        /// Structured Grad Mult of tensor 6: output channels.
        rows_6: u32,
        /// Structured Grad Mult: bit t adds 1 at tensor t's diagonal centre.
        identity: u32,
    }
}

shader!(SHADER, "optim_multi.wgsl", MultiSgdParams, trusted: false, subgroups: false,
    f16: false, library: "grad_mult4.wgsl");

kernels! {
    KERNELS = SHADER: MultiSgdParams {
        /// SGD over tensors 0..8 without Grad Mults: (parameter, gradient, momentum buffer) each.
        SGD_STEP_MULTI = sgd_step_multi(write w0, read g0, write m0, write w1, read g1, write m1, write w2, read g2, write m2, write w3, read g3, write m3, write w4, read g4, write m4, write w5, read g5, write m5, write w6, read g6, write m6, write w7, read g7, write m7);
        /// SGD over tensors 0..7 with structured Grad Mults: (parameter, gradient, factors,
        /// momentum buffer) each.
        SGD_STEP_CONV3X3_MULTI = sgd_step_conv3x3_multi(write cw0, read cg0, read cf0, write cm0, write cw1, read cg1, read cf1, write cm1, write cw2, read cg2, read cf2, write cm2, write cw3, read cg3, read cf3, write cm3, write cw4, read cg4, read cf4, write cm4, write cw5, read cg5, read cf5, write cm5, write cw6, read cg6, read cf6, write cm6);
    }
}
