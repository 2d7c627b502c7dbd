//! Sums: whole-tensor, per row, per channel; and [`Tensor::sum`] / [`Tensor::mean`].

use super::elementwise::scale_by_device_scalar;
use super::groups;
use crate::error::Result;
use crate::kernels::reduce::{self as k, ReduceParams};
use crate::tensor::{DType, Tensor};

/// Longest run one invocation sums before the sum is split into partial sums.
const RUN: usize = 1024;

/// Row sums of `a` viewed as `[rows, cols]`, times `alpha`, shaped `out_shape` (no gradient).
/// Rows longer than [`RUN`] are summed in runs first, then the runs are summed.
pub(crate) fn sum_rows(
    a: &Tensor,
    rows: usize,
    cols: usize,
    alpha: f32,
    out_shape: &[usize],
) -> Result<Tensor> {
    let gpu = a.gpu();
    if cols > RUN {
        let chunks = cols.div_ceil(RUN);
        let partial = Tensor::empty(gpu, &[rows * chunks], DType::F32)?;
        let p = ReduceParams {
            rows: rows as u32,
            cols: cols as u32,
            chunk: RUN as u32,
            alpha: 1.0,
            ..Default::default()
        };
        gpu.launch(
            &k::SUM_CHUNKS,
            &p,
            &[a.buffer(), partial.buffer()],
            gpu.grid(groups(rows * chunks, 64)),
        )?;
        return sum_rows(&partial, rows, chunks, alpha, out_shape);
    }
    let out = Tensor::empty(gpu, out_shape, DType::F32)?;
    let p = ReduceParams {
        rows: rows as u32,
        cols: cols as u32,
        alpha,
        ..Default::default()
    };
    gpu.launch(
        &k::SUM_ROWS,
        &p,
        &[a.buffer(), out.buffer()],
        gpu.grid(groups(rows, 64)),
    )?;
    Ok(out)
}

/// Per-channel reduction of `[N, C, HW]` tensors: `sum a` or, with `b`, `sum a * b`.
/// One pass sums each `(n, c)` plane, a second sums the planes of each channel.
pub(crate) fn channel_reduce(
    a: &Tensor,
    b: Option<&Tensor>,
    n: usize,
    c: usize,
    hw: usize,
) -> Result<Tensor> {
    let gpu = a.gpu();
    let planes = Tensor::empty(gpu, &[c * n], DType::F32)?;
    let p = ReduceParams {
        rows: (n * c) as u32,
        cols: c as u32,
        hw: hw as u32,
        alpha: 1.0,
        ..Default::default()
    };
    let grid = gpu.grid(groups(n * c, 64));
    match b {
        Some(b) => gpu.launch(
            &k::PLANE_DOTS,
            &p,
            &[a.buffer(), b.buffer(), planes.buffer()],
            grid,
        )?,
        None => gpu.launch(&k::PLANE_SUMS, &p, &[a.buffer(), planes.buffer()], grid)?,
    }
    sum_rows(&planes, c, n, 1.0, &[c])
}

/// The sum of every element of `a`, as a one-element tensor (no autograd).
pub fn sum_forward(a: &Tensor) -> Result<Tensor> {
    sum_rows(a, 1, a.numel(), 1.0, &[1])
}

/// Gradient of a sum: the one-element `dy` broadcast to `shape`.
pub fn sum_backward(dy: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let ones = Tensor::full(dy.gpu(), shape, 1.0)?;
    scale_by_device_scalar(&ones, dy)
}

impl Tensor {
    /// Sum of all elements, as a one-element tensor.
    pub fn sum(&self) -> Result<Tensor> {
        self.expect_dtype("sum", DType::F32)?;
        let out = sum_forward(self)?;
        let shape = self.shape().to_vec();
        Ok(Tensor::from_op(out, &[self], "sum", move |g| {
            Ok(vec![Some(sum_backward(g, &shape)?)])
        }))
    }

    /// Mean of all elements, as a one-element tensor.
    pub fn mean(&self) -> Result<Tensor> {
        self.sum()?.scale(1.0 / self.numel() as f32)
    }
}
