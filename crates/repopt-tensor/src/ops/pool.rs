//! Global average pooling.

use super::channels::nchw;
use super::elementwise::{launch, params};
use super::expect_rank;
use super::reduce::sum_rows;
use crate::error::Result;
use crate::kernels::elementwise as k;
use crate::tensor::{DType, Tensor};

/// Mean over the spatial dimensions, `[N, C, H, W]` -> `[N, C]` (no autograd).
pub fn global_avg_pool_forward(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = nchw(x);
    sum_rows(x, n * c, h * w, 1.0 / (h * w) as f32, &[n, c])
}

/// Gradient of [`global_avg_pool`]: `dy [N, C]` spread evenly over `input_shape`'s planes.
pub fn global_avg_pool_backward(dy: &Tensor, input_shape: &[usize]) -> Result<Tensor> {
    let dx = Tensor::empty(dy.gpu(), input_shape, DType::F32)?;
    let hw = input_shape[2] * input_shape[3];
    let mut p = params(dx.numel(), 1.0 / hw as f32, 0.0);
    p.hw = hw as u32;
    launch(&k::AVGPOOL_BACKWARD, p, &[dy, &dx], dx.numel())?;
    Ok(dx)
}

/// Mean over the spatial dimensions: `[N, C, H, W]` -> `[N, C]`.
///
/// ```no_run
/// use repopt_tensor::{ops::global_avg_pool, Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 6.0], &[1, 1, 2, 2])?;
/// assert_eq!(global_avg_pool(&x)?.to_vec()?, vec![3.0]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    expect_rank("global_avg_pool", "input", x, 4)?;
    let out = global_avg_pool_forward(x)?;
    let in_shape = x.shape().to_vec();
    Ok(Tensor::from_op(out, &[x], "global_avg_pool", move |g| {
        Ok(vec![Some(global_avg_pool_backward(g, &in_shape)?)])
    }))
}
