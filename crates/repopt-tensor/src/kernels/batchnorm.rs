//! `shaders/batchnorm.wgsl`: batch-norm statistics, apply (with an optional ReLU) and backward.

use super::{kernels, shader};

crate::params! {
    /// One batch-norm layer over `[N, C, HW]`.
    pub struct BnParams {
        /// Batch.
        n: u32,
        /// Channels.
        c: u32,
        /// Spatial size per channel.
        hw: u32,
        /// 1: `y = max(bn(x), 0)`; in the branch sum, the number of branches (2 or 3).
        relu: u32,
        /// Weight of the batch in the running statistics.
        momentum: f32,
        /// Added to the variance.
        eps: f32,
        /// Backward only: 1 if the statistics were batch statistics.
        training: u32,
    }
}

shader!(SHADER, "batchnorm.wgsl", BnParams, trusted: false, subgroups: false);

kernels! {
    KERNELS = SHADER: BnParams {
        /// Mean and inverse deviation per channel (a workgroup each); moves the running
        /// statistics.
        STATS = bn_stats(read x, write stats, write running_mean, write running_var);
        /// [`STATS`] four values at a time (HW a multiple of 4).
        STATS4 = bn_stats4(read x4, write stats, write running_mean, write running_var);
        /// Normalising statistics from the running ones (evaluation).
        EVAL_STATS = bn_eval_stats(read rmean, read rvar, write eval_stats);
        /// `y = gamma * xhat + beta` (then ReLU).
        APPLY = bn_apply(read x, read st, read gamma, read beta, write y);
        /// [`APPLY`] four values at a time (HW a multiple of 4).
        APPLY4 = bn_apply4(read x4, read st, read gamma, read beta, write y4);
        /// `dgamma = sum dy * xhat`, `dbeta = sum dy` per channel (a workgroup each).
        PARAM_GRADS = bn_param_grads(
            read x, read st, read gamma, read beta, read dy, write grad_gamma, write grad_beta
        );
        /// [`PARAM_GRADS`] four values at a time (HW a multiple of 4).
        PARAM_GRADS4 = bn_param_grads4(
            read x4, read st, read gamma, read beta, read dy4, write grad_gamma, write grad_beta
        );
        /// `dx` from the saved input, statistics and the channel sums.
        BACKWARD_INPUT = bn_backward_input(
            read x, read st, read gamma, read beta, read dy, read sums_gamma, read sums_beta, write dx
        );
        /// A RepVGG block's output: its two or three branches normalised, summed and
        /// rectified in one pass.
        SUM_RELU = bn_sum_relu(
            read br_x0, read br_x1, read br_x2, read br_st0, read br_st1, read br_st2,
            read br_g0, read br_g1, read br_g2, read br_b0, read br_b1, read br_b2, write br_y
        );
        /// [`SUM_RELU`] four values at a time (HW a multiple of 4).
        SUM_RELU4 = bn_sum_relu4(
            read br4_x0, read br4_x1, read br4_x2, read br_st0, read br_st1, read br_st2,
            read br_g0, read br_g1, read br_g2, read br_b0, read br_b1, read br_b2, write br4_y
        );
        /// [`BACKWARD_INPUT`] four values at a time (HW a multiple of 4).
        BACKWARD_INPUT4 = bn_backward_input4(
            read x4, read st, read gamma, read beta, read dy4, read sums_gamma, read sums_beta, write dx4
        );
    }
}
