//! A RepVGG block's output, `max(bn_0(x_0) + bn_1(x_1) [+ bn_2(x_2)], 0)`: two or three
//! batch-normalised branches summed and rectified. [`batch_norm2d_sum_relu`] records the
//! node; its forward is each branch's statistics and one pass over the branches
//! (`bn_sum_relu` in `shaders/batchnorm.wgsl`) where apart they take three applies, two sums
//! and a ReLU. Backward is the ReLU's mask from the output, then each branch's batch-norm
//! backward.

use super::batchnorm::{
    BatchNormSaved, BatchNormStats, batch_norm2d, batch_norm2d_backward, bn_params, check,
    elementwise, statistics,
};
use super::elementwise::relu_backward;
use crate::error::{Error, Result};
use crate::kernels::batchnorm as k;
use crate::tensor::{DType, Tensor};

/// One batch-normalised branch of [`batch_norm2d_sum_relu`]: its input, affine parameters
/// and running statistics.
#[derive(Clone, Copy, Debug)]
pub struct BnBranch<'a> {
    /// `[N, C, H, W]`, the same shape in every branch.
    pub x: &'a Tensor,
    /// Scale per channel.
    pub gamma: &'a Tensor,
    /// Shift per channel.
    pub beta: &'a Tensor,
    /// Running statistics, updated in training mode.
    pub stats: &'a BatchNormStats,
}

/// Bindings of the fused kernel.
const BINDINGS: u32 = 13;

/// `max(sum of batch_norm2d(branch), 0)` over two or three branches of one shape, in
/// training mode (batch statistics, running statistics updated) or evaluation mode.
///
/// The same as [`batch_norm2d`] on each branch, summed in order and then rectified, within
/// fp32 rounding; one pass writes the output instead of six. An adapter that allows fewer
/// storage buffers per stage than the pass binds (13) gets the separate passes.
///
/// ```no_run
/// use repopt_tensor::ops::{batch_norm2d_sum_relu, BatchNormStats, BnBranch};
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let a = Tensor::from_slice(&gpu, &[1.0, -2.0, 3.0, 4.0], &[2, 1, 1, 2])?;
/// let b = Tensor::from_slice(&gpu, &[0.5, 0.5, -1.0, 2.0], &[2, 1, 1, 2])?;
/// let (gamma, beta) = (Tensor::full(&gpu, &[1], 1.0)?, Tensor::zeros(&gpu, &[1])?);
/// let (sa, sb) = (BatchNormStats::new(&gpu, 1)?, BatchNormStats::new(&gpu, 1)?);
/// let branch = |x, stats| BnBranch { x, gamma: &gamma, beta: &beta, stats };
/// let y = batch_norm2d_sum_relu(&[branch(&a, &sa), branch(&b, &sb)], true)?;
/// assert_eq!(y.shape(), &[2, 1, 1, 2]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn batch_norm2d_sum_relu(branches: &[BnBranch], training: bool) -> Result<Tensor> {
    const OP: &str = "batch_norm2d_sum_relu";
    let Some(first) = branches.first() else {
        return Err(Error::shape(OP, "needs two or three branches, got none"));
    };
    if !(2..=3).contains(&branches.len()) {
        return Err(Error::shape(
            OP,
            format!("needs two or three branches, got {}", branches.len()),
        ));
    }
    for (i, b) in branches.iter().enumerate() {
        check(OP, b.x, b.gamma, b.beta, b.stats, training)?;
        first.x.same_gpu(OP, b.x)?;
        if b.x.shape() != first.x.shape() {
            return Err(Error::shape(
                OP,
                format!(
                    "branch {i} has shape {:?}, branch 0 {:?}",
                    b.x.shape(),
                    first.x.shape()
                ),
            ));
        }
    }
    let gpu = first.x.gpu();
    if gpu.limits().max_storage_buffers_per_shader_stage < BINDINGS {
        return unfused(branches, training);
    }
    let (y, saved) = forward(branches, training)?;
    let kept: Vec<[Tensor; 3]> = branches
        .iter()
        .map(|b| [b.x.detach(), b.gamma.detach(), b.beta.detach()])
        .collect();
    let needs: Vec<[bool; 3]> = branches
        .iter()
        .map(|b| [b.x, b.gamma, b.beta].map(Tensor::requires_grad))
        .collect();
    let inputs: Vec<&Tensor> = branches
        .iter()
        .flat_map(|b| [b.x, b.gamma, b.beta])
        .collect();
    let out = y.detach();
    Ok(Tensor::from_op(y, &inputs, OP, move |dy| {
        let dy = relu_backward(dy, &out)?;
        let mut grads = Vec::with_capacity(3 * kept.len());
        for (([x, gamma, beta], saved), needs) in kept.iter().zip(&saved).zip(&needs) {
            grads.extend(batch_norm2d_backward(&dy, x, saved, gamma, beta, *needs)?);
        }
        Ok(grads)
    }))
}

/// The forward kernels alone: each branch's statistics, then the fused pass. Returns the
/// output and, per branch, what its batch-norm backward needs (with no ReLU of its own).
fn forward(branches: &[BnBranch], training: bool) -> Result<(Tensor, Vec<BatchNormSaved>)> {
    let first = branches[0].x;
    let gpu = first.gpu();
    let saved = branches
        .iter()
        .map(|b| statistics(b.x, b.stats, training))
        .collect::<Result<Vec<_>>>()?;
    // The branch count rides in the parameter block's `relu` field (see the kernel).
    let mut params = bn_params(first, false, training, None);
    params.relu = branches.len() as u32;
    let third = branches.len() - 1;
    let (i0, i1, i2) = (0, 1, third.max(1));
    let y = Tensor::empty(gpu, first.shape(), DType::F32)?;
    let (kernel, pieces) = elementwise(&params, &k::SUM_RELU, &k::SUM_RELU4);
    gpu.launch(
        kernel,
        &params,
        &[
            branches[i0].x.buffer(),
            branches[i1].x.buffer(),
            branches[i2].x.buffer(),
            saved[i0].buffer(),
            saved[i1].buffer(),
            saved[i2].buffer(),
            branches[i0].gamma.buffer(),
            branches[i1].gamma.buffer(),
            branches[i2].gamma.buffer(),
            branches[i0].beta.buffer(),
            branches[i1].beta.buffer(),
            branches[i2].beta.buffer(),
            y.buffer(),
        ],
        gpu.grid(pieces),
    )?;
    let saved = saved
        .into_iter()
        .map(|stats| BatchNormSaved {
            stats,
            training,
            relu: false,
        })
        .collect();
    Ok((y, saved))
}

/// The separate passes: each branch's batch norm, the sums, the ReLU.
fn unfused(branches: &[BnBranch], training: bool) -> Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    for b in branches {
        let y = batch_norm2d(b.x, b.gamma, b.beta, b.stats, training, false)?;
        sum = Some(match sum {
            Some(s) => s.add(&y)?,
            None => y,
        });
    }
    sum.expect("two or three branches").relu()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fused_pass_binds_what_its_kernel_declares() {
        assert_eq!(k::SUM_RELU.info.bindings.len() as u32, BINDINGS);
        assert_eq!(k::SUM_RELU4.info.bindings.len() as u32, BINDINGS);
    }
}
