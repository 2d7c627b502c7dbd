//! Per-channel and per-plane broadcasts over `[N, C, H, W]`: a channel scale (constant or
//! trainable), a sum of channel-scaled branches (a CSLA or Hyper-Search block), a channel
//! bias, and a per-sample channel gate (squeeze-excitation).

use super::elementwise::{binary, launch, mul_forward};
use super::expect_rank;
use super::reduce::{channel_reduce, sum_rows};
use crate::error::{Error, Result};
use crate::kernels::Kernel;
use crate::kernels::elementwise::{self as k, ElementwiseParams};
use crate::tensor::{DType, Tensor};

/// `[N, C, H, W]` dims of a rank-4 tensor.
pub(crate) fn nchw(t: &Tensor) -> (usize, usize, usize, usize) {
    let s = t.shape();
    (s[0], s[1], s[2], s[3])
}

fn planes(x: &Tensor) -> ElementwiseParams {
    let (_, c, h, w) = nchw(x);
    ElementwiseParams {
        n: x.numel() as u32,
        c: c as u32,
        hw: (h * w) as u32,
        ..Default::default()
    }
}

/// A per-channel broadcast of `b` over `x`: `by4` four elements per invocation where a
/// plane's length is a multiple of 4 (a vec4 then lies in one plane), else `scalar`.
fn per_channel(
    (scalar, by4): (&Kernel<ElementwiseParams>, &Kernel<ElementwiseParams>),
    x: &Tensor,
    b: &Tensor,
) -> Result<Tensor> {
    let mut params = planes(x);
    if params.hw.is_multiple_of(4) {
        params.n /= 4;
        return binary(by4, x, b, params);
    }
    binary(scalar, x, b, params)
}

/// `x[n, c, h, w] * scale[c]` (no autograd).
pub fn scale_channels_forward(x: &Tensor, scale: &Tensor) -> Result<Tensor> {
    per_channel((&k::SCALE_CHANNELS, &k::SCALE_CHANNELS4), x, scale)
}

/// Gradients of `x * scale[c]` with respect to `x` and `scale`, where `needs` says so.
pub fn scale_channels_backward(
    dy: &Tensor,
    x: &Tensor,
    scale: &Tensor,
    needs: [bool; 2],
) -> Result<[Option<Tensor>; 2]> {
    let (n, c, h, w) = nchw(x);
    Ok([
        needs[0]
            .then(|| scale_channels_forward(dy, scale))
            .transpose()?,
        needs[1]
            .then(|| channel_reduce(dy, Some(x), n, c, h * w))
            .transpose()?,
    ])
}

/// `sum over k of x_k[n, c, h, w] * s_k[c]` for two or three `(x_k, s_k)` branches of one
/// shape, in one pass (no autograd).
pub fn scaled_sum_forward(branches: &[(&Tensor, &Tensor)]) -> Result<Tensor> {
    let (x0, s0) = branches[0];
    let (x1, s1) = branches[1];
    let (x2, s2) = branches.get(2).copied().unwrap_or(branches[1]);
    let mut params = planes(x0);
    params.alpha = (branches.len() == 3) as u32 as f32;
    let kernel = if params.hw.is_multiple_of(4) {
        params.n /= 4;
        &k::SCALED_SUM4
    } else {
        &k::SCALED_SUM
    };
    let out = Tensor::empty(x0.gpu(), x0.shape(), DType::F32)?;
    launch(
        kernel,
        params,
        &[x0, x1, x2, s0, s1, s2, &out],
        params.n as usize,
    )?;
    Ok(out)
}

/// `x[n, c, h, w] + bias[c]` (no autograd).
pub fn add_channels_forward(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    per_channel((&k::ADD_CHANNELS, &k::ADD_CHANNELS4), x, bias)
}

/// Gradients of `x + bias[c]`: `dy` itself, and its per-channel sums where `needs[1]`.
pub fn add_channels_backward(dy: &Tensor, needs: [bool; 2]) -> Result<[Option<Tensor>; 2]> {
    let (n, c, h, w) = nchw(dy);
    Ok([
        needs[0].then(|| dy.clone()),
        needs[1]
            .then(|| channel_reduce(dy, None, n, c, h * w))
            .transpose()?,
    ])
}

/// `x[n, c, h, w] * gate[n, c]` (no autograd).
pub fn scale_planes_forward(x: &Tensor, gate: &Tensor) -> Result<Tensor> {
    binary(&k::SCALE_PLANES, x, gate, planes(x))
}

/// Gradients of `x * gate[n, c]` with respect to `x` and `gate`, where `needs` says so.
pub fn scale_planes_backward(
    dy: &Tensor,
    x: &Tensor,
    gate: &Tensor,
    needs: [bool; 2],
) -> Result<[Option<Tensor>; 2]> {
    let (n, c, h, w) = nchw(x);
    Ok([
        needs[0]
            .then(|| scale_planes_forward(dy, gate))
            .transpose()?,
        needs[1]
            .then(|| sum_rows(&mul_forward(dy, x)?, n * c, h * w, 1.0, &[n, c]))
            .transpose()?,
    ])
}

/// Checks a per-channel operand of a rank-4 input: rank, device and `expected` shape.
fn check(op: &'static str, what: &str, x: &Tensor, t: &Tensor, expected: &[usize]) -> Result<()> {
    expect_rank(op, "input", x, 4)?;
    expect_rank(op, what, t, expected.len())?;
    x.same_gpu(op, t)?;
    if t.shape() != expected {
        return Err(Error::shape(
            op,
            format!(
                "{what} must be {expected:?} for input {:?}, got {:?}",
                x.shape(),
                t.shape()
            ),
        ));
    }
    Ok(())
}

impl Tensor {
    /// `self[n, c, h, w] * scale[c]`: a channel-wise scale, constant or trainable.
    pub fn scale_channels(&self, scale: &Tensor) -> Result<Tensor> {
        let c = self.shape().get(1).copied().unwrap_or(0);
        check("scale_channels", "scale", self, scale, &[c])?;
        let out = scale_channels_forward(self, scale)?;
        let (x, s) = (self.detach(), scale.detach());
        let needs = [self.requires_grad(), scale.requires_grad()];
        Ok(Tensor::from_op(
            out,
            &[self, scale],
            "scale_channels",
            move |g| Ok(scale_channels_backward(g, &x, &s, needs)?.to_vec()),
        ))
    }

    /// `sum over k of x_k[n, c, h, w] * s_k[c]` over two or three `(x_k, s_k)` branches
    /// of one shape: the branch sum of a CSLA or Hyper-Search block, in one pass where
    /// [`scale_channels`](Self::scale_channels) and `add` take one per scale and one per sum.
    ///
    /// ```no_run
    /// use repopt_tensor::{Gpu, Tensor};
    /// let gpu = Gpu::from_env()?;
    /// let a = Tensor::from_slice(&gpu, &[1.0, 2.0], &[1, 2, 1, 1])?;
    /// let b = Tensor::from_slice(&gpu, &[3.0, 4.0], &[1, 2, 1, 1])?;
    /// let (sa, sb) = (Tensor::full(&gpu, &[2], 2.0)?, Tensor::full(&gpu, &[2], 0.5)?);
    /// let y = Tensor::scaled_sum(&[(&a, &sa), (&b, &sb)])?;
    /// assert_eq!(y.to_vec()?, vec![3.5, 6.0]);
    /// # Ok::<(), repopt_tensor::Error>(())
    /// ```
    pub fn scaled_sum(branches: &[(&Tensor, &Tensor)]) -> Result<Tensor> {
        const OP: &str = "scaled_sum";
        if !(2..=3).contains(&branches.len()) {
            return Err(Error::shape(
                OP,
                format!("needs two or three branches, got {}", branches.len()),
            ));
        }
        let x0 = branches[0].0;
        for (i, &(x, s)) in branches.iter().enumerate() {
            let c = x.shape().get(1).copied().unwrap_or(0);
            check(OP, "scale", x, s, &[c])?;
            x0.same_gpu(OP, x)?;
            if x.shape() != x0.shape() {
                return Err(Error::shape(
                    OP,
                    format!(
                        "branch {i} has shape {:?}, branch 0 {:?}",
                        x.shape(),
                        x0.shape()
                    ),
                ));
            }
        }
        let out = scaled_sum_forward(branches)?;
        let kept: Vec<(Tensor, Tensor)> = branches
            .iter()
            .map(|(x, s)| (x.detach(), s.detach()))
            .collect();
        let needs: Vec<[bool; 2]> = branches
            .iter()
            .map(|(x, s)| [x.requires_grad(), s.requires_grad()])
            .collect();
        let inputs: Vec<&Tensor> = branches.iter().flat_map(|&(x, s)| [x, s]).collect();
        Ok(Tensor::from_op(out, &inputs, OP, move |g| {
            let mut grads = Vec::with_capacity(2 * kept.len());
            for ((x, s), needs) in kept.iter().zip(&needs) {
                grads.extend(scale_channels_backward(g, x, s, *needs)?);
            }
            Ok(grads)
        }))
    }

    /// `self[n, c, h, w] + bias[c]`: a per-channel bias (a convolution's bias term).
    pub fn add_channels(&self, bias: &Tensor) -> Result<Tensor> {
        let c = self.shape().get(1).copied().unwrap_or(0);
        check("add_channels", "bias", self, bias, &[c])?;
        let out = add_channels_forward(self, bias)?;
        let needs = [self.requires_grad(), bias.requires_grad()];
        Ok(Tensor::from_op(
            out,
            &[self, bias],
            "add_channels",
            move |g| Ok(add_channels_backward(g, needs)?.to_vec()),
        ))
    }

    /// `self[n, c, h, w] * gate[n, c]`: a per-sample channel gate (squeeze-excitation).
    pub fn scale_planes(&self, gate: &Tensor) -> Result<Tensor> {
        let nc = self
            .shape()
            .get(..2)
            .map(<[usize]>::to_vec)
            .unwrap_or_default();
        check("scale_planes", "gate", self, gate, &nc)?;
        let out = scale_planes_forward(self, gate)?;
        let (x, gt) = (self.detach(), gate.detach());
        let needs = [self.requires_grad(), gate.requires_grad()];
        Ok(Tensor::from_op(
            out,
            &[self, gate],
            "scale_planes",
            move |g| Ok(scale_planes_backward(g, &x, &gt, needs)?.to_vec()),
        ))
    }
}
