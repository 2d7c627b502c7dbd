//! Gradient clipping by the joint L2 norm, on the device.

use super::ParamSpec;
use crate::error::Result;
use crate::kernels::elementwise::{CLIP_COEFFICIENT, ElementwiseParams};
use crate::ops::elementwise::scale_by_device_scalar;
use crate::ops::reduce::sum_rows;
use crate::tensor::Tensor;

/// Scales the gradients of `params` so that their joint L2 norm is at most `max_norm`
/// (as `torch.nn.utils.clip_grad_norm_`), entirely on the device. Returns the norm before
/// clipping as a one-element device tensor, so callers read it only when they log.
pub fn clip_grad_norm(params: &[ParamSpec], max_norm: f32) -> Result<Option<Tensor>> {
    let _guard = crate::NoGradGuard::new();
    let grads: Vec<(usize, Tensor)> = params
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.tensor.grad().map(|g| (i, g)))
        .collect();
    let Some((_, first)) = grads.first() else {
        return Ok(None);
    };
    let gpu = first.gpu().clone();
    let mut total: Option<Tensor> = None;
    for (_, g) in &grads {
        let sq = sum_rows(&g.mul(g)?, 1, g.numel(), 1.0, &[1])?;
        total = Some(match total {
            None => sq,
            Some(t) => t.add(&sq)?,
        });
    }
    let total = total.expect("at least one gradient");
    let norm = Tensor::empty(&gpu, &[1], crate::DType::F32)?;
    let coef = Tensor::empty(&gpu, &[1], crate::DType::F32)?;
    let p = ElementwiseParams {
        n: 1,
        alpha: max_norm,
        ..Default::default()
    };
    gpu.launch(
        &CLIP_COEFFICIENT,
        &p,
        &[total.buffer(), norm.buffer(), coef.buffer()],
        [1, 1, 1],
    )?;
    for (i, g) in grads {
        params[i]
            .tensor
            .set_grad(Some(scale_by_device_scalar(&g, &coef)?))?;
    }
    Ok(Some(norm))
}
