//! Global average pooling.

use super::elementwise::{ElementwiseParams, nchw, sum_rows};
use super::{expect_rank, groups};
use crate::error::Result;
use crate::launch::shaders::ELEMENTWISE;
use crate::tensor::{DType, Tensor};

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
    let (n, c, h, w) = nchw(x);
    let hw = h * w;
    let out = sum_rows(x, n * c, hw, 1.0 / hw as f32, &[n, c])?;
    let in_shape = x.shape().to_vec();
    Ok(Tensor::from_op(out, &[x], "global_avg_pool", move |g| {
        let gpu = g.gpu();
        let dx = Tensor::empty(gpu, &in_shape, DType::F32)?;
        let p = ElementwiseParams {
            n: (n * c * hw) as u32,
            hw: hw as u32,
            alpha: 1.0 / hw as f32,
            ..Default::default()
        };
        gpu.launch(
            &ELEMENTWISE,
            "avgpool_backward",
            bytemuck::bytes_of(&p),
            &[g.buffer(), dx.buffer()],
            gpu.grid(groups(n * c * hw, 256)),
        );
        Ok(vec![Some(dx)])
    }))
}
