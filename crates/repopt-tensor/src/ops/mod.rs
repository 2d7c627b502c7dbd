//! Differentiable ops, all on one pattern (as llm.c pairs `layernorm_forward` with
//! `layernorm_backward`):
//!
//! - `op_forward` and `op_backward`: plain functions that launch the kernels and nothing
//!   else, callable and testable alone;
//! - `op`: the thin public op that checks its operands, calls `op_forward` and records a
//!   tape node whose closure calls `op_backward` with what the forward saved.
//!
//! Kernel choice, where an op has one, lives beside it (`conv::plan`), never inside the
//! launchers.

pub mod batchnorm;
pub mod bn_sum;
pub mod channels;
pub mod conv;
pub mod depthwise;
pub mod dropout;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod quant;
pub mod reduce;

pub use batchnorm::{
    BatchNormSaved, BatchNormStats, batch_norm2d, batch_norm2d_backward, batch_norm2d_forward,
};
pub use bn_sum::{BnBranch, batch_norm2d_sum_relu};
pub use conv::{
    Conv2dConfig, Direction, conv2d, conv2d_backward_input, conv2d_backward_weight, conv2d_with,
};
pub use depthwise::{
    depthwise_conv2d, depthwise_conv2d_backward_input, depthwise_conv2d_backward_weight,
    depthwise_conv2d_forward,
};
pub use dropout::{dropout, dropout_backward, dropout_forward};
pub use elementwise::{hard_sigmoid, hard_sigmoid_backward, hard_sigmoid_forward};
pub use linear::{
    linear, linear_backward, linear_forward, matmul, matmul_backward, matmul_forward,
};
pub use loss::{cross_entropy, cross_entropy_backward, cross_entropy_forward};
pub use pool::{global_avg_pool, global_avg_pool_backward, global_avg_pool_forward};
pub use quant::{
    ActQuant, abs_max, abs_max_per_channel, fake_quant_per_channel,
    fake_quant_per_channel_backward, fake_quant_per_channel_forward, fake_quant_per_tensor,
    fake_quant_per_tensor_backward, fake_quant_per_tensor_forward, histogram, histogram_into,
    min_max, min_max_into,
};

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Checks that `t` is an f32 tensor of rank `rank`.
pub(crate) fn expect_rank(op: &'static str, what: &str, t: &Tensor, rank: usize) -> Result<()> {
    t.expect_dtype(op, DType::F32)?;
    if t.shape().len() != rank {
        return Err(Error::shape(
            op,
            format!(
                "{what} must have {rank} dimensions, got shape {:?}",
                t.shape()
            ),
        ));
    }
    Ok(())
}

/// Checks that two tensors have the same shape and device.
pub(crate) fn expect_same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    a.same_gpu(op, b)?;
    if a.shape() != b.shape() {
        return Err(Error::shape(
            op,
            format!(
                "operands differ in shape: {:?} vs {:?}",
                a.shape(),
                b.shape()
            ),
        ));
    }
    Ok(())
}

/// Number of workgroups of `size` invocations covering `n` items.
pub(crate) fn groups(n: usize, size: usize) -> u32 {
    n.div_ceil(size) as u32
}

pub(crate) fn as_u32(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(op, format!("{what} = {v} does not fit in 32 bits")))
}
