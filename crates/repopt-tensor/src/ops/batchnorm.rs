//! Batch normalisation over `[N, C, H, W]`, optionally fused with the ReLU that follows it.

use bytemuck::{Pod, Zeroable};

use super::{expect_rank, groups};

use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::launch::shaders::BATCHNORM;
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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct BnParams {
    n: u32,
    c: u32,
    hw: u32,
    relu: u32,
    momentum: f32,
    eps: f32,
    training: u32,
    _pad: u32,
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
    expect_rank("batch_norm2d", "input", x, 4)?;
    let [n, c, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    for (what, t) in [
        ("weight", gamma),
        ("bias", beta),
        ("running_mean", &stats.running_mean),
        ("running_var", &stats.running_var),
    ] {
        x.same_gpu("batch_norm2d", t)?;
        if t.shape() != [c] {
            return Err(Error::shape(
                "batch_norm2d",
                format!("{what} must have shape [{c}], got {:?}", t.shape()),
            ));
        }
    }
    if training && n * h * w < 2 {
        return Err(Error::shape(
            "batch_norm2d",
            format!(
                "training needs more than one value per channel, input is {:?}",
                x.shape()
            ),
        ));
    }
    let gpu = x.gpu();
    let params = BnParams {
        n: n as u32,
        c: c as u32,
        hw: (h * w) as u32,
        relu: relu as u32,
        momentum: stats.momentum,
        eps: stats.eps,
        training: training as u32,
        _pad: 0,
    };
    let bytes = bytemuck::bytes_of(&params);
    let st = Tensor::empty(gpu, &[2 * c], DType::F32)?;
    let plane_grid = gpu.grid(groups(n * c, 64));
    let channel_grid = gpu.grid(groups(c, 64));
    if training {
        let planes = Tensor::empty(gpu, &[2 * c * n], DType::F32)?;
        gpu.launch(
            &BATCHNORM,
            "bn_plane_stats",
            bytes,
            &[x.buffer(), planes.buffer()],
            plane_grid,
        );
        gpu.launch(
            &BATCHNORM,
            "bn_channel_stats",
            bytes,
            &[
                planes.buffer(),
                st.buffer(),
                stats.running_mean.buffer(),
                stats.running_var.buffer(),
            ],
            channel_grid,
        );
    } else {
        gpu.launch(
            &BATCHNORM,
            "bn_eval_stats",
            bytes,
            &[
                stats.running_mean.buffer(),
                stats.running_var.buffer(),
                st.buffer(),
            ],
            channel_grid,
        );
    }
    let y = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let elem_grid = gpu.grid(groups(x.numel(), 256));
    gpu.launch(
        &BATCHNORM,
        "bn_apply",
        bytes,
        &[
            x.buffer(),
            st.buffer(),
            gamma.buffer(),
            beta.buffer(),
            y.buffer(),
        ],
        elem_grid,
    );
    let (xs, gs, bs) = (x.detach(), gamma.detach(), beta.detach());
    let (need_x, need_g, need_b) = (
        x.requires_grad(),
        gamma.requires_grad(),
        beta.requires_grad(),
    );
    Ok(Tensor::from_op(
        y,
        &[x, gamma, beta],
        "batch_norm2d",
        move |dy| {
            let gpu = dy.gpu();
            let dgamma = Tensor::empty(gpu, &[c], DType::F32)?;
            let dbeta = Tensor::empty(gpu, &[c], DType::F32)?;
            let planes = Tensor::empty(gpu, &[2 * c * n], DType::F32)?;
            let bytes = bytemuck::bytes_of(&params);
            gpu.launch(
                &BATCHNORM,
                "bn_plane_grads",
                bytes,
                &[
                    xs.buffer(),
                    st.buffer(),
                    gs.buffer(),
                    bs.buffer(),
                    dy.buffer(),
                    planes.buffer(),
                ],
                plane_grid,
            );
            gpu.launch(
                &BATCHNORM,
                "bn_channel_grads",
                bytes,
                &[planes.buffer(), dgamma.buffer(), dbeta.buffer()],
                channel_grid,
            );
            let dx = if need_x {
                let dx = Tensor::empty(gpu, xs.shape(), DType::F32)?;
                gpu.launch(
                    &BATCHNORM,
                    "bn_backward_input",
                    bytes,
                    &[
                        xs.buffer(),
                        st.buffer(),
                        gs.buffer(),
                        bs.buffer(),
                        dy.buffer(),
                        dgamma.buffer(),
                        dbeta.buffer(),
                        dx.buffer(),
                    ],
                    elem_grid,
                );
                Some(dx)
            } else {
                None
            };
            Ok(vec![dx, need_g.then_some(dgamma), need_b.then_some(dbeta)])
        },
    ))
}
