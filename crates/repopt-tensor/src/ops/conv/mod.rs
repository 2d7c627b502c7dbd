//! 2-D convolution without bias (square kernels, any stride and padding; the models use
//! 3x3 with padding 1 and 1x1 with padding 0, stride 1 or 2).
//!
//! [`conv2d`] records the node; `conv2d_forward` and `conv2d_backward` launch the kernels
//! that `plan` chooses for the shape and device, or Winograd (`winograd`) or matrix
//! products (`gemm`) where `tune` picks them.

mod gemm;
mod implicit;
pub(crate) mod plan;
mod tune;
pub(crate) mod winograd;

use self::plan::ConvPlan;
pub use self::winograd::Direction;
use super::{as_u32, expect_rank};
use crate::error::{Error, Result};
use crate::kernels::conv::ConvParams;
use crate::tensor::{DType, Tensor};
use crate::tuning::ConvAlgorithm;

/// Stride and zero padding of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step between output pixels, in input pixels (same in both directions).
    pub stride: usize,
    /// Zeros added on every side of the input.
    pub padding: usize,
}

impl Conv2dConfig {
    /// `stride`, padding `(k - 1) / 2` for an odd kernel size `k` ("same" at stride 1).
    pub fn same(kernel: usize, stride: usize) -> Self {
        Conv2dConfig {
            stride,
            padding: (kernel - 1) / 2,
        }
    }
}

/// Channels per invocation in the conv kernels (`TC` in conv.wgsl).
const TC: usize = 16;

/// The geometry of one convolution, checked once and shared by its kernels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvShape {
    n: usize,
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    k: usize,
    oh: usize,
    ow: usize,
    cfg: Conv2dConfig,
}

impl ConvShape {
    pub(crate) fn new(x: &[usize], w: &[usize], cfg: Conv2dConfig) -> Result<Self> {
        let (n, ci, h, wd) = (x[0], x[1], x[2], x[3]);
        let (co, wci, kh, kw) = (w[0], w[1], w[2], w[3]);
        if wci != ci {
            return Err(Error::shape(
                "conv2d",
                format!("weight {w:?} expects {wci} input channels, input {x:?} has {ci}"),
            ));
        }
        if kh != kw {
            return Err(Error::shape(
                "conv2d",
                format!("only square kernels are supported, got {w:?}"),
            ));
        }
        if cfg.stride == 0 {
            return Err(Error::shape("conv2d", "stride must be at least 1"));
        }
        if h + 2 * cfg.padding < kh || wd + 2 * cfg.padding < kw {
            return Err(Error::shape(
                "conv2d",
                format!(
                    "input {x:?} with padding {} is smaller than the kernel {w:?}",
                    cfg.padding
                ),
            ));
        }
        let oh = (h + 2 * cfg.padding - kh) / cfg.stride + 1;
        let ow = (wd + 2 * cfg.padding - kw) / cfg.stride + 1;
        if n == 0 || ci == 0 || co == 0 {
            return Err(Error::shape(
                "conv2d",
                format!("empty operand: input {x:?}, weight {w:?}"),
            ));
        }
        let s = ConvShape {
            n,
            ci,
            h,
            w: wd,
            co,
            k: kh,
            oh,
            ow,
            cfg,
        };
        // Every index the kernels compute must fit in 32 bits.
        for (what, v) in [
            ("input elements", n * ci * h * wd),
            ("output elements", n * co * oh * ow),
            (
                "packed weight elements",
                ci.max(co).next_multiple_of(TC) * kh * kw * ci.max(co),
            ),
        ] {
            as_u32("conv2d", what, v)?;
        }
        Ok(s)
    }

    pub(crate) fn output_shape(&self) -> [usize; 4] {
        [self.n, self.co, self.oh, self.ow]
    }

    fn params(&self, cpad: usize) -> ConvParams {
        ConvParams {
            n: self.n as u32,
            ci: self.ci as u32,
            h: self.h as u32,
            w: self.w as u32,
            co: self.co as u32,
            oh: self.oh as u32,
            ow: self.ow as u32,
            k: self.k as u32,
            stride: self.cfg.stride as u32,
            pad: self.cfg.padding as u32,
            cpad: cpad as u32,
            ..Default::default()
        }
    }
}

/// Runs `plan` on operands `a` and `b` (bound first and second; `b` is packed first when the
/// plan says so) into a new tensor of `out_shape`.
fn run(plan: &ConvPlan, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let gpu = a.gpu();
    let packed = match &plan.pack {
        Some((d, len)) => {
            let packed = Tensor::empty(gpu, &[*len], DType::F32)?;
            gpu.launch(d.kernel, &d.params, &[b.buffer(), packed.buffer()], d.grid)?;
            Some(packed)
        }
        None => None,
    };
    let b = packed.as_ref().unwrap_or(b);
    let numel: usize = out_shape.iter().product();
    let target = if plan.splits > 1 {
        Tensor::empty(gpu, &[plan.splits * numel], DType::F32)?
    } else if plan.zero_output {
        Tensor::zeros(gpu, out_shape)?
    } else {
        Tensor::empty(gpu, out_shape, DType::F32)?
    };
    for d in &plan.main {
        gpu.launch(
            d.kernel,
            &d.params,
            &[a.buffer(), b.buffer(), target.buffer()],
            d.grid,
        )?;
    }
    let Some(d) = &plan.sum_splits else {
        return Ok(target);
    };
    let out = Tensor::empty(gpu, out_shape, DType::F32)?;
    gpu.launch(
        d.kernel,
        &d.params,
        &[target.buffer(), out.buffer()],
        d.grid,
    )?;
    Ok(out)
}

/// The forward kernels alone (no autograd): `y = conv(x, w)`.
pub(crate) fn conv2d_forward(x: &Tensor, w: &Tensor, s: &ConvShape) -> Result<Tensor> {
    tune::run(x, w, s, Direction::Forward)
}

/// The input-gradient kernels alone: `dx = conv_transpose(dy, w)`.
pub(crate) fn conv2d_backward_input_raw(dy: &Tensor, w: &Tensor, s: &ConvShape) -> Result<Tensor> {
    tune::run(dy, w, s, Direction::BackwardInput)
}

/// The weight-gradient kernels alone: `dw = sum over pixels of dy x^T`.
pub(crate) fn conv2d_backward_weight_raw(x: &Tensor, dy: &Tensor, s: &ConvShape) -> Result<Tensor> {
    tune::run(x, dy, s, Direction::BackwardWeight)
}

/// Both gradients of [`conv2d`], each computed only when asked for.
pub(crate) fn conv2d_backward(
    dy: &Tensor,
    x: &Tensor,
    w: &Tensor,
    s: &ConvShape,
    (need_x, need_w): (bool, bool),
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dx = need_x
        .then(|| conv2d_backward_input_raw(dy, w, s))
        .transpose()?;
    let dw = need_w
        .then(|| conv2d_backward_weight_raw(x, dy, s))
        .transpose()?;
    Ok((dx, dw))
}

/// 2-D convolution of `x` `[N, Ci, H, W]` with `w` `[Co, Ci, k, k]`, no bias.
///
/// ```no_run
/// use repopt_tensor::{ops::{conv2d, Conv2dConfig}, Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let x = Tensor::zeros(&gpu, &[1, 3, 8, 8])?;
/// let w = Tensor::parameter(&gpu, &vec![0.1; 16 * 3 * 9], &[16, 3, 3, 3])?;
/// let y = conv2d(&x, &w, Conv2dConfig::same(3, 2))?;
/// assert_eq!(y.shape(), &[1, 16, 4, 4]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn conv2d(x: &Tensor, w: &Tensor, cfg: Conv2dConfig) -> Result<Tensor> {
    expect_rank("conv2d", "input", x, 4)?;
    expect_rank("conv2d", "weight", w, 4)?;
    x.same_gpu("conv2d", w)?;
    let s = ConvShape::new(x.shape(), w.shape(), cfg)?;
    let y = conv2d_forward(x, w, &s)?;
    let (xs, ws) = (x.detach(), w.detach());
    let needs = (x.requires_grad(), w.requires_grad());
    Ok(Tensor::from_op(y, &[x, w], "conv2d", move |g| {
        let (dx, dw) = conv2d_backward(g, &xs, &ws, &s, needs)?;
        Ok(vec![dx, dw])
    }))
}

/// The input gradient of [`conv2d`] alone: `dy` `[N, Co, OH, OW]` and `w` `[Co, Ci, k, k]` to
/// `dx` `[N, Ci, H, W]` for the given input size `(H, W)` (no autograd).
pub fn conv2d_backward_input(
    dy: &Tensor,
    w: &Tensor,
    input_hw: (usize, usize),
    cfg: Conv2dConfig,
) -> Result<Tensor> {
    expect_rank("conv2d_backward_input", "output gradient", dy, 4)?;
    expect_rank("conv2d_backward_input", "weight", w, 4)?;
    let ds = dy.shape();
    let s = ConvShape::new(
        &[ds[0], w.shape()[1], input_hw.0, input_hw.1],
        w.shape(),
        cfg,
    )?;
    check_output("conv2d_backward_input", dy, &s)?;
    conv2d_backward_input_raw(dy, w, &s)
}

/// The weight gradient of [`conv2d`] alone: `x` `[N, Ci, H, W]` and `dy` `[N, Co, OH, OW]` to
/// `dw` `[Co, Ci, k, k]` (no autograd).
pub fn conv2d_backward_weight(
    x: &Tensor,
    dy: &Tensor,
    kernel: usize,
    cfg: Conv2dConfig,
) -> Result<Tensor> {
    expect_rank("conv2d_backward_weight", "input", x, 4)?;
    expect_rank("conv2d_backward_weight", "output gradient", dy, 4)?;
    let xs = x.shape();
    let s = ConvShape::new(xs, &[dy.shape()[1], xs[1], kernel, kernel], cfg)?;
    check_output("conv2d_backward_weight", dy, &s)?;
    conv2d_backward_weight_raw(x, dy, &s)
}

/// One direction of [`conv2d`] with a chosen algorithm instead of the device's tuning (no
/// autograd), for benchmarks and checks. The operands `(a, b)` are `(x, w)` for
/// [`Direction::Forward`], `(dy, w)` for [`Direction::BackwardInput`] and `(x, dy)` for
/// [`Direction::BackwardWeight`], with `x` `[N, Ci, H, W]`, `w` `[Co, Ci, k, k]` (`k` from
/// `kernel` where no `w` is given) and `dy` `[N, Co, OH, OW]`; `input_hw` is the input size
/// where no `x` is given. An error names the algorithm when it does not apply.
///
/// ```no_run
/// use repopt_tensor::{ops::{conv2d_with, Conv2dConfig, Direction}, tuning::ConvAlgorithm, Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let x = Tensor::zeros(&gpu, &[1, 3, 8, 8])?;
/// let w = Tensor::zeros(&gpu, &[16, 3, 3, 3])?;
/// let cfg = Conv2dConfig::same(3, 1);
/// let y = conv2d_with(ConvAlgorithm::Winograd, Direction::Forward, (&x, &w), (8, 8), 3, cfg)?;
/// assert_eq!(y.shape(), &[1, 16, 8, 8]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn conv2d_with(
    algorithm: ConvAlgorithm,
    direction: Direction,
    (a, b): (&Tensor, &Tensor),
    input_hw: (usize, usize),
    kernel: usize,
    cfg: Conv2dConfig,
) -> Result<Tensor> {
    const OP: &str = "conv2d_with";
    expect_rank(OP, "first operand", a, 4)?;
    expect_rank(OP, "second operand", b, 4)?;
    a.same_gpu(OP, b)?;
    let (sa, sb) = (a.shape(), b.shape());
    let s = match direction {
        Direction::Forward => ConvShape::new(sa, sb, cfg)?,
        Direction::BackwardInput => {
            let s = ConvShape::new(&[sa[0], sb[1], input_hw.0, input_hw.1], sb, cfg)?;
            check_output(OP, a, &s)?;
            s
        }
        Direction::BackwardWeight => {
            let s = ConvShape::new(sa, &[sb[1], sa[1], kernel, kernel], cfg)?;
            check_output(OP, b, &s)?;
            s
        }
    };
    if !tune::candidates(a.gpu(), &s).contains(&algorithm) {
        let why = match algorithm {
            ConvAlgorithm::Winograd => format!(
                "Winograd computes 3x3 convolutions with stride 1 and padding 1 only (and \
                 operands that fit one buffer), not kernel {}, stride {}, padding {}",
                s.k, cfg.stride, cfg.padding
            ),
            ConvAlgorithm::Implicit => IMPLICIT_NEEDS.to_string(),
            ConvAlgorithm::ImplicitF16 => format!(
                "{IMPLICIT_NEEDS}, and f16 in shaders (SHADER_F16; this adapter: {})",
                if a.gpu().features().contains(wgpu::Features::SHADER_F16) {
                    "yes"
                } else {
                    "no"
                }
            ),
            _ => "the patches of this convolution do not fit one buffer for matrix products"
                .to_string(),
        };
        return Err(Error::invalid(OP, why));
    }
    tune::run_with(algorithm, a, b, &s, direction)
}

const IMPLICIT_NEEDS: &str = "the implicit product needs workgroups of 256 invocations with \
     16 KiB of workgroup memory, and tensors that fit one buffer and the grid";

fn check_output(op: &'static str, dy: &Tensor, s: &ConvShape) -> Result<()> {
    if dy.shape() != s.output_shape() {
        return Err(Error::shape(
            op,
            format!(
                "output gradient is {:?}, the convolution produces {:?}",
                dy.shape(),
                s.output_shape()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shapes_follow_the_usual_formula() {
        let cfg = Conv2dConfig::same(3, 2);
        let s = ConvShape::new(&[2, 3, 7, 5], &[8, 3, 3, 3], cfg).unwrap();
        assert_eq!(s.output_shape(), [2, 8, 4, 3]);
        let s = ConvShape::new(
            &[1, 4, 6, 6],
            &[4, 4, 1, 1],
            Conv2dConfig {
                stride: 1,
                padding: 0,
            },
        )
        .unwrap();
        assert_eq!(s.output_shape(), [1, 4, 6, 6]);
        assert!(ConvShape::new(&[1, 4, 6, 6], &[4, 3, 3, 3], cfg).is_err());
        assert!(
            ConvShape::new(
                &[1, 3, 1, 1],
                &[4, 3, 3, 3],
                Conv2dConfig {
                    stride: 1,
                    padding: 0
                }
            )
            .is_err()
        );
    }

    #[test]
    fn weight_gradient_splits_cover_every_row_once() {
        // (Both kernel families share the split logic; the subgroup grid is checked.)
        for (n, ci, h, co) in [
            (1, 3, 5, 4),
            (32, 3, 224, 64),
            (32, 512, 7, 512),
            (2, 48, 16, 48),
        ] {
            let s =
                ConvShape::new(&[n, ci, h, h], &[co, ci, 3, 3], Conv2dConfig::same(3, 1)).unwrap();
            for busy in [32, 512] {
                let (splits, per) = plan::weight_grad_splits(&s, plan::Family::Subgroup, busy);
                let rows = n * s.oh;
                assert!(
                    splits * per >= rows && (splits - 1) * per < rows,
                    "{splits} x {per} for {rows}"
                );
            }
        }
    }
}
