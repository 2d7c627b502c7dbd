//! Softmax cross-entropy with label smoothing.

use super::elementwise::scale_by_device_scalar;
use super::reduce::sum_rows;
use super::{expect_rank, groups};
use crate::error::{Error, Result};
use crate::kernels::loss::{CROSS_ENTROPY_FORWARD, LossParams};
use crate::tensor::{DType, Tensor};

/// Mean softmax cross-entropy of `logits` `[N, K]` against `labels` (`u32`, `[N]`), with the
/// target distribution `(1 - smoothing)` on the label plus `smoothing / K` on every class.
///
/// Labels must be below `K` (the data loaders check this when reading files).
///
/// ```no_run
/// use repopt_tensor::{ops::cross_entropy, Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let logits = Tensor::parameter(&gpu, &[2.0, 0.0, 0.0, 0.0, 2.0, 0.0], &[2, 3])?;
/// let labels = Tensor::from_u32(&gpu, &[0, 1], &[2])?;
/// let loss = cross_entropy(&logits, &labels, 0.1)?;
/// loss.backward()?;
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f32) -> Result<Tensor> {
    expect_rank("cross_entropy", "logits", logits, 2)?;
    labels.expect_dtype("cross_entropy", DType::U32)?;
    logits.same_gpu("cross_entropy", labels)?;
    let n = logits.shape()[0];
    if labels.shape() != [n] {
        return Err(Error::shape(
            "cross_entropy",
            format!(
                "labels must be [{n}] for logits {:?}, got {:?}",
                logits.shape(),
                labels.shape()
            ),
        ));
    }
    if !(0.0..1.0).contains(&smoothing) {
        return Err(Error::invalid(
            "cross_entropy",
            format!("label smoothing must be in [0, 1), got {smoothing}"),
        ));
    }
    let (loss, grad) = cross_entropy_forward(logits, labels, smoothing)?;
    Ok(Tensor::from_op(
        loss,
        &[logits],
        "cross_entropy",
        move |g| Ok(vec![Some(cross_entropy_backward(g, &grad)?)]),
    ))
}

/// The mean loss (a one-element tensor) and, computed in the same pass, the gradient of that
/// mean with respect to the logits, which [`cross_entropy_backward`] scales (no autograd).
pub fn cross_entropy_forward(
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f32,
) -> Result<(Tensor, Tensor)> {
    let gpu = logits.gpu();
    let (n, k) = (logits.shape()[0], logits.shape()[1]);
    let row_loss = Tensor::empty(gpu, &[n], DType::F32)?;
    let grad = Tensor::empty(gpu, &[n, k], DType::F32)?;
    let p = LossParams {
        n: n as u32,
        k: k as u32,
        smoothing,
    };
    gpu.launch(
        &CROSS_ENTROPY_FORWARD,
        &p,
        &[
            logits.buffer(),
            labels.buffer(),
            row_loss.buffer(),
            grad.buffer(),
        ],
        gpu.grid(groups(n, 64)),
    )?;
    let loss = sum_rows(&row_loss, 1, n, 1.0 / n as f32, &[1])?;
    Ok((loss, grad))
}

/// Gradient of the logits: the forward's `grad` times the one-element `dy` (read on the
/// device, never on the host).
pub fn cross_entropy_backward(dy: &Tensor, grad: &Tensor) -> Result<Tensor> {
    scale_by_device_scalar(grad, dy)
}
