//! Batch normalisation over `[N, C, H, W]`, optionally fused with the ReLU that follows it.
//!
//! [`batch_norm2d`] records the node; [`batch_norm2d_forward`] and [`batch_norm2d_backward`]
//! launch the kernels.

use super::{expect_rank, groups};

use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::kernels::Kernel;
use crate::kernels::batchnorm::{self as k, BnParams};
use crate::tensor::{DType, Tensor};

/// Running statistics of a batch-norm layer, updated in place by training-mode forwards.
#[derive(Clone, Debug)]
pub struct BatchNormStats {
    /// Running mean per channel (starts at 0).
    pub running_mean: Tensor,
    /// Running unbiased variance per channel (starts at 1).
    pub running_var: Tensor,
    /// Weight of the newest batch in the running averages (PyTorch's default 0.1).
    pub momentum: f32,
    /// Added to the variance before the square root (PyTorch's default 1e-5).
    pub eps: f32,
}

impl BatchNormStats {
    /// Fresh statistics for `channels` channels with PyTorch's defaults.
    pub fn new(gpu: &Gpu, channels: usize) -> Result<Self> {
        Ok(BatchNormStats {
            running_mean: Tensor::zeros(gpu, &[channels])?,
            running_var: Tensor::full(gpu, &[channels], 1.0)?,
            momentum: 0.1,
            eps: 1e-5,
        })
    }
}

/// `gamma * (x - mean) / sqrt(var + eps) + beta` per channel, then `max(., 0)` if `relu`.
///
/// In training mode the batch's own statistics normalise (biased variance) and the running
/// statistics move towards them (unbiased variance, `momentum`); in evaluation mode the
/// running statistics normalise and nothing is updated.
///
/// ```no_run
/// use repopt_tensor::{ops::{batch_norm2d, BatchNormStats}, Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0], &[2, 2, 1, 1])?;
/// let gamma = Tensor::parameter(&gpu, &[1.0, 1.0], &[2])?;
/// let beta = Tensor::parameter(&gpu, &[0.0, 0.0], &[2])?;
/// let stats = BatchNormStats::new(&gpu, 2)?;
/// let y = batch_norm2d(&x, &gamma, &beta, &stats, true, false)?;
/// assert_eq!(y.shape(), &[2, 2, 1, 1]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn batch_norm2d(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &BatchNormStats,
    training: bool,
    relu: bool,
) -> Result<Tensor> {
    check("batch_norm2d", x, gamma, beta, stats, training)?;
    let (y, saved) = batch_norm2d_forward(x, gamma, beta, stats, training, relu)?;
    let (xs, gs, bs) = (x.detach(), gamma.detach(), beta.detach());
    let needs = [
        x.requires_grad(),
        gamma.requires_grad(),
        beta.requires_grad(),
    ];
    Ok(Tensor::from_op(
        y,
        &[x, gamma, beta],
        "batch_norm2d",
        move |dy| {
            let grads = batch_norm2d_backward(dy, &xs, &saved, &gs, &bs, needs)?;
            Ok(grads.to_vec())
        },
    ))
}

/// Checks one layer's operands for `op`: a 4-D input, parameters and statistics of one value
/// per channel on the same device, and more than one value per channel to train on.
pub(super) fn check(
    op: &'static str,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &BatchNormStats,
    training: bool,
) -> Result<()> {
    expect_rank(op, "input", x, 4)?;
    let [n, c, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    for (what, t) in [
        ("weight", gamma),
        ("bias", beta),
        ("running_mean", &stats.running_mean),
        ("running_var", &stats.running_var),
    ] {
        x.same_gpu(op, t)?;
        if t.shape() != [c] {
            return Err(Error::shape(
                op,
                format!("{what} must have shape [{c}], got {:?}", t.shape()),
            ));
        }
    }
    if training && n * h * w < 2 {
        return Err(Error::shape(
            op,
            format!(
                "training needs more than one value per channel, input is {:?}",
                x.shape()
            ),
        ));
    }
    Ok(())
}

pub(super) fn bn_params(
    x: &Tensor,
    relu: bool,
    training: bool,
    stats: Option<&BatchNormStats>,
) -> BnParams {
    let s = x.shape();
    BnParams {
        n: s[0] as u32,
        c: s[1] as u32,
        hw: (s[2] * s[3]) as u32,
        relu: relu as u32,
        momentum: stats.map_or(0.0, |st| st.momentum),
        eps: stats.map_or(0.0, |st| st.eps),
        training: training as u32,
    }
}

/// What [`batch_norm2d_backward`] needs from its forward besides the input.
#[derive(Clone, Debug)]
pub struct BatchNormSaved {
    /// The per-channel statistics the forward normalised with: `[mean(C), 1 / std(C)]`.
    pub stats: Tensor,
    /// Whether those were the batch's statistics (training) or the running ones.
    pub training: bool,
    /// Whether a ReLU followed.
    pub relu: bool,
}

/// The forward kernels alone (no autograd; operands as [`batch_norm2d`] checks them):
/// returns the output and what the backward needs. Updates the running statistics in
/// training mode.
pub fn batch_norm2d_forward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &BatchNormStats,
    training: bool,
    relu: bool,
) -> Result<(Tensor, BatchNormSaved)> {
    let gpu = x.gpu();
    let params = bn_params(x, relu, training, Some(stats));
    let saved = statistics(x, stats, training)?;
    let y = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let (apply, pieces) = elementwise(&params, &k::APPLY, &k::APPLY4);
    gpu.launch(
        apply,
        &params,
        &[
            x.buffer(),
            saved.buffer(),
            gamma.buffer(),
            beta.buffer(),
            y.buffer(),
        ],
        gpu.grid(pieces),
    )?;
    let saved = BatchNormSaved {
        stats: saved,
        training,
        relu,
    };
    Ok((y, saved))
}

/// What a forward normalises with, `[mean(C), 1 / std(C)]`: the batch's statistics in
/// training mode (moving the running ones towards them), else the running ones.
pub(super) fn statistics(x: &Tensor, stats: &BatchNormStats, training: bool) -> Result<Tensor> {
    let gpu = x.gpu();
    let params = bn_params(x, false, training, Some(stats));
    let c = params.c as usize;
    let saved = Tensor::empty(gpu, &[2 * c], DType::F32)?;
    if training {
        gpu.launch(
            variant(&params, &k::STATS, &k::STATS4),
            &params,
            &[
                x.buffer(),
                saved.buffer(),
                stats.running_mean.buffer(),
                stats.running_var.buffer(),
            ],
            gpu.grid(c as u32),
        )?;
    } else {
        gpu.launch(
            &k::EVAL_STATS,
            &params,
            &[
                stats.running_mean.buffer(),
                stats.running_var.buffer(),
                saved.buffer(),
            ],
            gpu.grid(groups(c, 64)),
        )?;
    }
    Ok(saved)
}

/// `by4`, the four-at-a-time twin, where a plane's length is a multiple of 4 (a vec4 never
/// straddles two planes), else `scalar`.
fn variant<'k>(
    p: &BnParams,
    scalar: &'k Kernel<BnParams>,
    by4: &'k Kernel<BnParams>,
) -> &'k Kernel<BnParams> {
    if p.hw.is_multiple_of(4) { by4 } else { scalar }
}

/// The elementwise passes' kernel, scalar or four values at a time where a plane's length
/// allows (each then touches a quarter of the elements), and its workgroups: each channel
/// in pieces of `CHUNK` units (see `bn_apply` in `shaders/batchnorm.wgsl`).
pub(super) fn elementwise<'k>(
    p: &BnParams,
    scalar: &'k Kernel<BnParams>,
    by4: &'k Kernel<BnParams>,
) -> (&'k Kernel<BnParams>, u32) {
    const CHUNK: u32 = 1024;
    let unit = if p.hw.is_multiple_of(4) { 4 } else { 1 };
    (
        variant(p, scalar, by4),
        p.c * (p.n * p.hw / unit).div_ceil(CHUNK),
    )
}

/// The backward kernels alone: from the output gradient `dy`, the forward's input `x`, what
/// [`batch_norm2d_forward`] saved and the affine parameters, the gradients of `x`, `gamma`
/// and `beta`; `dx` only where `needs[0]` says so. (The ReLU mask is recomputed from `x`
/// rather than saved.)
pub fn batch_norm2d_backward(
    dy: &Tensor,
    x: &Tensor,
    saved: &BatchNormSaved,
    gamma: &Tensor,
    beta: &Tensor,
    needs: [bool; 3],
) -> Result<[Option<Tensor>; 3]> {
    let gpu = dy.gpu();
    let params = bn_params(x, saved.relu, saved.training, None);
    let saved = &saved.stats;
    let c = params.c as usize;
    let dgamma = Tensor::empty(gpu, &[c], DType::F32)?;
    let dbeta = Tensor::empty(gpu, &[c], DType::F32)?;
    gpu.launch(
        variant(&params, &k::PARAM_GRADS, &k::PARAM_GRADS4),
        &params,
        &[
            x.buffer(),
            saved.buffer(),
            gamma.buffer(),
            beta.buffer(),
            dy.buffer(),
            dgamma.buffer(),
            dbeta.buffer(),
        ],
        gpu.grid(c as u32),
    )?;
    let dx = if needs[0] {
        let dx = Tensor::empty(gpu, x.shape(), DType::F32)?;
        let (kernel, pieces) = elementwise(&params, &k::BACKWARD_INPUT, &k::BACKWARD_INPUT4);
        gpu.launch(
            kernel,
            &params,
            &[
                x.buffer(),
                saved.buffer(),
                gamma.buffer(),
                beta.buffer(),
                dy.buffer(),
                dgamma.buffer(),
                dbeta.buffer(),
                dx.buffer(),
            ],
            gpu.grid(pieces),
        )?;
        Some(dx)
    } else {
        None
    };
    Ok([dx, needs[1].then_some(dgamma), needs[2].then_some(dbeta)])
}
