//! Element-wise ops: sums, products, scaling and activations, each as a `*_forward` /
//! `*_backward` pair of launchers and a method on [`Tensor`] that records the node.

use super::{expect_same_shape, groups};
use crate::error::Result;
use crate::kernels::Kernel;
use crate::kernels::elementwise::{self as k, ElementwiseParams};
use crate::tensor::{DType, Tensor};

/// Parameters for `n` elements and the two scalars.
pub(crate) fn params(n: usize, alpha: f32, beta: f32) -> ElementwiseParams {
    ElementwiseParams {
        n: n as u32,
        alpha,
        beta,
        ..Default::default()
    }
}

/// Launches an element-wise kernel over `elements` items with `tensors` bound in order.
pub(crate) fn launch(
    kernel: &Kernel<ElementwiseParams>,
    params: ElementwiseParams,
    tensors: &[&Tensor],
    elements: usize,
) -> Result<()> {
    let gpu = tensors[0].gpu();
    let buffers: Vec<&wgpu::Buffer> = tensors.iter().map(|t| t.buffer()).collect();
    gpu.launch(kernel, &params, &buffers, gpu.grid(groups(elements, 256)))
}

/// `out = f(a)` into a new tensor of `a`'s shape, over `params.n` items (elements, or vec4s
/// for the kernels that take four per invocation).
pub(crate) fn unary(
    kernel: &Kernel<ElementwiseParams>,
    a: &Tensor,
    params: ElementwiseParams,
) -> Result<Tensor> {
    let out = Tensor::empty(a.gpu(), a.shape(), DType::F32)?;
    launch(kernel, params, &[a, &out], params.n as usize)?;
    Ok(out)
}

/// `out = f(a, b)` into a new tensor of `a`'s shape, over `params.n` items.
pub(crate) fn binary(
    kernel: &Kernel<ElementwiseParams>,
    a: &Tensor,
    b: &Tensor,
    params: ElementwiseParams,
) -> Result<Tensor> {
    let out = Tensor::empty(a.gpu(), a.shape(), DType::F32)?;
    launch(kernel, params, &[a, b, &out], params.n as usize)?;
    Ok(out)
}

/// The vec4 count of `t` (buffers are 16-byte multiples, so the last vec4 is in bounds).
fn vec4s(t: &Tensor) -> usize {
    t.numel().div_ceil(4)
}

/// Writes `value` into every element of `t` (in place).
pub(crate) fn fill(t: &Tensor, value: f32) -> Result<()> {
    launch(&k::FILL, params(t.numel(), value, 0.0), &[t], t.numel())
}

/// `alpha * a + beta * b` (no autograd).
pub fn add_scaled_forward(a: &Tensor, b: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    binary(&k::ADD_SCALED, a, b, params(vec4s(a), alpha, beta))
}

/// Gradients of `alpha * a + beta * b`: `(alpha * dy, beta * dy)` (a factor of 1 costs no
/// kernel).
pub fn add_scaled_backward(dy: &Tensor, alpha: f32, beta: f32) -> Result<(Tensor, Tensor)> {
    Ok((scale_backward(dy, alpha)?, scale_backward(dy, beta)?))
}

/// `alpha * a` (no autograd).
pub fn scale_forward(a: &Tensor, alpha: f32) -> Result<Tensor> {
    unary(&k::SCALE, a, params(vec4s(a), alpha, 0.0))
}

/// Gradient of `alpha * a`: `alpha * dy`.
pub fn scale_backward(dy: &Tensor, alpha: f32) -> Result<Tensor> {
    if alpha == 1.0 {
        return Ok(dy.clone());
    }
    scale_forward(dy, alpha)
}

/// `a * b` element-wise (no autograd).
pub fn mul_forward(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(&k::MUL, a, b, params(vec4s(a), 0.0, 0.0))
}

/// Gradients of `a * b`: `(dy * b, dy * a)`, each only where `needs` says so.
pub fn mul_backward(
    dy: &Tensor,
    a: &Tensor,
    b: &Tensor,
    needs: [bool; 2],
) -> Result<[Option<Tensor>; 2]> {
    Ok([
        needs[0].then(|| mul_forward(dy, b)).transpose()?,
        needs[1].then(|| mul_forward(dy, a)).transpose()?,
    ])
}

/// `max(x, 0)` (no autograd).
pub fn relu_forward(x: &Tensor) -> Result<Tensor> {
    unary(&k::RELU_FORWARD, x, params(vec4s(x), 0.0, 0.0))
}

/// Gradient of ReLU from its output `y`: `dy` where `y > 0`.
pub fn relu_backward(dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    binary(&k::RELU_BACKWARD, y, dy, params(vec4s(dy), 0.0, 0.0))
}

/// `1 / (1 + exp(-x))` (no autograd).
pub fn sigmoid_forward(x: &Tensor) -> Result<Tensor> {
    unary(&k::SIGMOID_FORWARD, x, params(x.numel(), 0.0, 0.0))
}

/// Gradient of the sigmoid from its output `y`: `dy * y * (1 - y)`.
pub fn sigmoid_backward(dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    binary(&k::SIGMOID_BACKWARD, y, dy, params(dy.numel(), 0.0, 0.0))
}

/// `relu6(x + 3) / 6 = clamp(x + 3, 0, 6) / 6` (no autograd).
pub fn hard_sigmoid_forward(x: &Tensor) -> Result<Tensor> {
    unary(&k::HARD_SIGMOID_FORWARD, x, params(x.numel(), 0.0, 0.0))
}

/// Gradient of the hard sigmoid from its input `x`: `dy * (1/6)` (1/6 rounded to f32) where
/// `-3 < x < 3`, and 0 elsewhere, the kinks `x = -3` and `x = 3` included (PyTorch's
/// `hardsigmoid_backward`).
pub fn hard_sigmoid_backward(dy: &Tensor, x: &Tensor) -> Result<Tensor> {
    expect_same_shape("hard_sigmoid_backward", dy, x)?;
    binary(
        &k::HARD_SIGMOID_BACKWARD,
        x,
        dy,
        params(dy.numel(), 0.0, 0.0),
    )
}

/// The hard sigmoid `relu6(x + 3) / 6` (PyTorch's `F.hardsigmoid`), the gate of GhostNet's
/// squeeze-excitation; also [`Tensor::hard_sigmoid`].
///
/// Its gradient is `1/6` strictly inside `(-3, 3)` and 0 outside; at the kinks `-3` and `3`
/// it is 0, as in PyTorch (whose `relu6` also has gradient 0 at its boundaries).
///
/// ```
/// use repopt_tensor::ops::hard_sigmoid;
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let x = Tensor::parameter(&gpu, &[-4.0, -3.0, 0.0, 1.5, 3.0, 5.0], &[6])?;
/// let y = hard_sigmoid(&x)?;
/// assert_eq!(y.to_vec()?, vec![0.0, 0.0, 0.5, 0.75, 1.0, 1.0]);
/// y.sum()?.backward()?;
/// let g = 1.0 / 6.0;
/// assert_eq!(x.grad().unwrap().to_vec()?, vec![0.0, 0.0, g, g, 0.0, 0.0]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn hard_sigmoid(x: &Tensor) -> Result<Tensor> {
    x.expect_dtype("hard_sigmoid", DType::F32)?;
    let out = hard_sigmoid_forward(x)?;
    let xs = x.detach();
    Ok(Tensor::from_op(out, &[x], "hard_sigmoid", move |g| {
        Ok(vec![Some(hard_sigmoid_backward(g, &xs)?)])
    }))
}

/// `a * s[0]` where `s` is a one-element device tensor (no host read).
pub(crate) fn scale_by_device_scalar(a: &Tensor, s: &Tensor) -> Result<Tensor> {
    binary(
        &k::SCALE_BY_DEVICE_SCALAR,
        a,
        s,
        params(a.numel(), 0.0, 0.0),
    )
}

/// In place on the device: `acc = alpha * acc + beta * b` (both with the same element count).
pub fn axpby_inplace(acc: &Tensor, alpha: f32, b: &Tensor, beta: f32) -> Result<()> {
    expect_same_shape("axpby_inplace", acc, b)?;
    let n4 = acc.numel().div_ceil(4);
    launch(&k::AXPBY_INPLACE, params(n4, alpha, beta), &[acc, b], n4)
}

/// Copies `src` into `dst` with a compute kernel (one read and one write per element): the
/// bandwidth reference the update benchmarks compare against.
pub fn copy_kernel(src: &Tensor, dst: &Tensor) -> Result<()> {
    expect_same_shape("copy_kernel", src, dst)?;
    let n4 = src.numel().div_ceil(4);
    launch(&k::COPY_VEC4, params(n4, 0.0, 0.0), &[src, dst], n4)
}

impl Tensor {
    /// Element-wise sum of two tensors of the same shape.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.add_scaled(1.0, other, 1.0)
    }

    /// `alpha * self + beta * other`.
    pub fn add_scaled(&self, alpha: f32, other: &Tensor, beta: f32) -> Result<Tensor> {
        expect_same_shape("add_scaled", self, other)?;
        let out = add_scaled_forward(self, other, alpha, beta)?;
        Ok(Tensor::from_op(
            out,
            &[self, other],
            "add_scaled",
            move |g| {
                let (da, db) = add_scaled_backward(g, alpha, beta)?;
                Ok(vec![Some(da), Some(db)])
            },
        ))
    }

    /// Element-wise difference.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.add_scaled(1.0, other, -1.0)
    }

    /// Element-wise product.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        expect_same_shape("mul", self, other)?;
        let out = mul_forward(self, other)?;
        let (a, b) = (self.detach(), other.detach());
        let needs = [self.requires_grad(), other.requires_grad()];
        Ok(Tensor::from_op(out, &[self, other], "mul", move |g| {
            Ok(mul_backward(g, &a, &b, needs)?.to_vec())
        }))
    }

    /// `alpha * self`.
    pub fn scale(&self, alpha: f32) -> Result<Tensor> {
        self.expect_dtype("scale", DType::F32)?;
        let out = scale_forward(self, alpha)?;
        Ok(Tensor::from_op(out, &[self], "scale", move |g| {
            Ok(vec![Some(scale_backward(g, alpha)?)])
        }))
    }

    /// `max(self, 0)`.
    pub fn relu(&self) -> Result<Tensor> {
        self.expect_dtype("relu", DType::F32)?;
        let out = relu_forward(self)?;
        let y = out.detach();
        Ok(Tensor::from_op(out, &[self], "relu", move |g| {
            Ok(vec![Some(relu_backward(g, &y)?)])
        }))
    }

    /// `1 / (1 + exp(-self))`.
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.expect_dtype("sigmoid", DType::F32)?;
        let out = sigmoid_forward(self)?;
        let y = out.detach();
        Ok(Tensor::from_op(out, &[self], "sigmoid", move |g| {
            Ok(vec![Some(sigmoid_backward(g, &y)?)])
        }))
    }

    /// `relu6(self + 3) / 6`: [`hard_sigmoid`].
    pub fn hard_sigmoid(&self) -> Result<Tensor> {
        hard_sigmoid(self)
    }
}
