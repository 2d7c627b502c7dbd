//! Depthwise 2-D convolution without bias: each channel convolved with its own square filter
//! (groups = channels, channel multiplier 1), odd kernel sizes, any stride and padding. The
//! cheap operation of GhostNet's ghost modules and the spatial step of its bottlenecks.
//!
//! [`depthwise_conv2d`] records the node; `depthwise_conv2d_forward`,
//! `depthwise_conv2d_backward_input` and `depthwise_conv2d_backward_weight` launch the
//! kernels of `shaders/depthwise.wgsl`. Both kernel families run the same kernels: the
//! subgroup convolutions share loads across blocks of output channels, and here each output
//! channel reads one input channel and one filter, so there is nothing to share.

use super::conv::Conv2dConfig;
use super::reduce::sum_rows;
use super::{as_u32, expect_rank, groups};
use crate::error::{Error, Result};
use crate::kernels::depthwise::{self as k, DepthwiseParams};
use crate::tensor::{DType, Tensor};

/// Output pixels per partial sum of the weight gradient, about: enough work per invocation
/// to amortise writing its partial sum, enough partial sums to fill a device.
const PIXELS_PER_PARTIAL_SUM: usize = 512;

/// The geometry of one depthwise convolution, checked once and shared by its kernels.
#[derive(Clone, Copy, Debug)]
struct DepthwiseShape {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    oh: usize,
    ow: usize,
    cfg: Conv2dConfig,
}

impl DepthwiseShape {
    fn new(op: &'static str, x: &[usize], w: &[usize], cfg: Conv2dConfig) -> Result<Self> {
        let (n, c, h, wd) = (x[0], x[1], x[2], x[3]);
        let k = w[2];
        if w[0] != c || w[1] != 1 {
            return Err(Error::shape(
                op,
                format!("weight must be [C, 1, k, k] with C = {c} for input {x:?}, got {w:?}"),
            ));
        }
        if w[3] != k {
            return Err(Error::shape(
                op,
                format!("only square kernels are supported, got {w:?}"),
            ));
        }
        if k.is_multiple_of(2) {
            return Err(Error::shape(
                op,
                format!("kernel size must be odd, got {k} (weight {w:?})"),
            ));
        }
        if cfg.stride == 0 {
            return Err(Error::shape(op, "stride must be at least 1"));
        }
        if n == 0 || c == 0 || h == 0 || wd == 0 {
            return Err(Error::shape(op, format!("empty input {x:?}")));
        }
        // The kernels index in 32 bits and do signed tap arithmetic on padded sizes.
        let padded = |side: usize| {
            cfg.padding
                .checked_mul(2)
                .and_then(|p| p.checked_add(side))
                .filter(|&v| v <= i32::MAX as usize)
                .ok_or_else(|| {
                    Error::shape(
                        op,
                        format!(
                            "input {x:?} with padding {} does not fit in 31 bits",
                            cfg.padding
                        ),
                    )
                })
        };
        let (hp, wp) = (padded(h)?, padded(wd)?);
        if hp < k || wp < k {
            return Err(Error::shape(
                op,
                format!(
                    "input {x:?} with padding {} is smaller than the kernel {w:?}",
                    cfg.padding
                ),
            ));
        }
        let oh = (hp - k) / cfg.stride + 1;
        let ow = (wp - k) / cfg.stride + 1;
        let fits = |what: &str, dims: [usize; 4]| {
            let v = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            as_u32(op, what, v.unwrap_or(usize::MAX)).map(drop)
        };
        fits("input elements", [n, c, h, wd])?;
        fits("output elements", [n, c, oh, ow])?;
        let s = DepthwiseShape {
            n,
            c,
            h,
            w: wd,
            k,
            oh,
            ow,
            cfg,
        };
        fits(
            "weight-gradient partial sums",
            [s.weight_grad_splits().0, c, k, k],
        )?;
        Ok(s)
    }

    fn input_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    fn weight_shape(&self) -> [usize; 4] {
        [self.c, 1, self.k, self.k]
    }

    fn output_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.oh, self.ow]
    }

    /// Output rows `(n, oh)` per partial sum of the weight gradient, and how many partial
    /// sums that makes.
    fn weight_grad_splits(&self) -> (usize, usize) {
        let rows = self.n * self.oh;
        let per = PIXELS_PER_PARTIAL_SUM.div_ceil(self.ow).clamp(1, rows);
        (rows.div_ceil(per), per)
    }

    fn params(&self) -> DepthwiseParams {
        let (splits, rows_per_split) = self.weight_grad_splits();
        // A stride past the padded input leaves one output per row or column whatever its
        // value; capping it there keeps the kernels' signed arithmetic in range.
        let stride = self
            .cfg
            .stride
            .min(self.h.max(self.w) + 2 * self.cfg.padding);
        DepthwiseParams {
            n: self.n as u32,
            c: self.c as u32,
            h: self.h as u32,
            w: self.w as u32,
            oh: self.oh as u32,
            ow: self.ow as u32,
            k: self.k as u32,
            stride: stride as u32,
            pad: self.cfg.padding as u32,
            splits: splits as u32,
            rows_per_split: rows_per_split as u32,
        }
    }
}

/// Launches `kernel` over `items` invocations with `a`, `b` and `out` bound in order.
fn launch(
    kernel: &crate::kernels::Kernel<DepthwiseParams>,
    s: &DepthwiseShape,
    [a, b, out]: [&Tensor; 3],
    items: usize,
) -> Result<()> {
    let gpu = a.gpu();
    gpu.launch(
        kernel,
        &s.params(),
        &[a.buffer(), b.buffer(), out.buffer()],
        gpu.grid(groups(items, 64)),
    )
}

fn forward(x: &Tensor, w: &Tensor, s: &DepthwiseShape) -> Result<Tensor> {
    let y = Tensor::empty(x.gpu(), &s.output_shape(), DType::F32)?;
    launch(&k::FORWARD, s, [x, w, &y], y.numel())?;
    Ok(y)
}

fn backward_input(dy: &Tensor, w: &Tensor, s: &DepthwiseShape) -> Result<Tensor> {
    let dx = Tensor::empty(dy.gpu(), &s.input_shape(), DType::F32)?;
    launch(&k::BACKWARD_INPUT, s, [dy, w, &dx], dx.numel())?;
    Ok(dx)
}

fn backward_weight(x: &Tensor, dy: &Tensor, s: &DepthwiseShape) -> Result<Tensor> {
    let (splits, _) = s.weight_grad_splits();
    let taps = s.c * s.k * s.k;
    let parts = splits * taps;
    // One partial sum per tap is the gradient itself, laid out [c, tap] as the weight.
    let shape = if splits == 1 {
        s.weight_shape().to_vec()
    } else {
        vec![parts]
    };
    let part = Tensor::empty(x.gpu(), &shape, DType::F32)?;
    launch(&k::BACKWARD_WEIGHT, s, [x, dy, &part], parts)?;
    if splits == 1 {
        return Ok(part);
    }
    sum_rows(&part, taps, splits, 1.0, &s.weight_shape())
}

/// Checks ranks and devices of two rank-4 operands.
fn check_operands(
    op: &'static str,
    (a, what_a): (&Tensor, &str),
    (b, what_b): (&Tensor, &str),
) -> Result<()> {
    expect_rank(op, what_a, a, 4)?;
    expect_rank(op, what_b, b, 4)?;
    a.same_gpu(op, b)
}

fn check_output(op: &'static str, dy: &Tensor, s: &DepthwiseShape) -> Result<()> {
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

/// The forward kernel alone (no autograd): `y = depthwise_conv(x, w)` for `x` `[N, C, H, W]`
/// and `w` `[C, 1, k, k]`, giving `[N, C, OH, OW]`.
pub fn depthwise_conv2d_forward(x: &Tensor, w: &Tensor, cfg: Conv2dConfig) -> Result<Tensor> {
    const OP: &str = "depthwise_conv2d_forward";
    check_operands(OP, (x, "input"), (w, "weight"))?;
    let s = DepthwiseShape::new(OP, x.shape(), w.shape(), cfg)?;
    forward(x, w, &s)
}

/// The input gradient of [`depthwise_conv2d`] alone: `dy` `[N, C, OH, OW]` and `w`
/// `[C, 1, k, k]` to `dx` `[N, C, H, W]` for the given input size `(H, W)` (no autograd).
/// Each input pixel gathers from the outputs that read it, so every size and stride
/// (stride 2 with an odd input included) is exact and needs no atomics.
pub fn depthwise_conv2d_backward_input(
    dy: &Tensor,
    w: &Tensor,
    input_hw: (usize, usize),
    cfg: Conv2dConfig,
) -> Result<Tensor> {
    const OP: &str = "depthwise_conv2d_backward_input";
    check_operands(OP, (dy, "output gradient"), (w, "weight"))?;
    let xs = [dy.shape()[0], w.shape()[0], input_hw.0, input_hw.1];
    let s = DepthwiseShape::new(OP, &xs, w.shape(), cfg)?;
    check_output(OP, dy, &s)?;
    backward_input(dy, w, &s)
}

/// The weight gradient of [`depthwise_conv2d`] alone: `x` `[N, C, H, W]` and `dy`
/// `[N, C, OH, OW]` to `dw` `[C, 1, k, k]` (no autograd). Each of the `C k k` sums over
/// `N OH OW` pixels is split into partial sums of about 512 pixels, then the partial sums
/// are added.
pub fn depthwise_conv2d_backward_weight(
    x: &Tensor,
    dy: &Tensor,
    kernel: usize,
    cfg: Conv2dConfig,
) -> Result<Tensor> {
    const OP: &str = "depthwise_conv2d_backward_weight";
    check_operands(OP, (x, "input"), (dy, "output gradient"))?;
    let ws = [x.shape()[1], 1, kernel, kernel];
    let s = DepthwiseShape::new(OP, x.shape(), &ws, cfg)?;
    check_output(OP, dy, &s)?;
    backward_weight(x, dy, &s)
}

/// Depthwise 2-D convolution of `x` `[N, C, H, W]` with `w` `[C, 1, k, k]`, no bias: channel
/// `c` of the output is channel `c` of the input convolved with filter `c` (PyTorch's
/// `conv2d(x, w, stride, padding, groups=C)`). `k` must be odd.
///
/// ```
/// use repopt_tensor::ops::{depthwise_conv2d, Conv2dConfig};
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let x = Tensor::full(&gpu, &[1, 2, 5, 5], 1.0)?;
/// // Channel 0 sums its 3x3 window, channel 1 doubles the centre pixel.
/// let mut taps = vec![1.0; 9];
/// taps.extend([0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
/// let w = Tensor::parameter(&gpu, &taps, &[2, 1, 3, 3])?;
/// let y = depthwise_conv2d(&x, &w, Conv2dConfig::same(3, 2))?;
/// assert_eq!(y.shape(), &[1, 2, 3, 3]);
/// let v = y.to_vec()?;
/// // A corner window holds 4 pixels of the padded input, the centre one 9.
/// assert_eq!((v[0], v[4], v[9]), (4.0, 9.0, 2.0));
/// y.sum()?.backward()?;
/// assert_eq!(w.grad().unwrap().shape(), &[2, 1, 3, 3]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, cfg: Conv2dConfig) -> Result<Tensor> {
    const OP: &str = "depthwise_conv2d";
    check_operands(OP, (x, "input"), (w, "weight"))?;
    let s = DepthwiseShape::new(OP, x.shape(), w.shape(), cfg)?;
    let y = forward(x, w, &s)?;
    let (xs, ws) = (x.detach(), w.detach());
    let (need_x, need_w) = (x.requires_grad(), w.requires_grad());
    Ok(Tensor::from_op(y, &[x, w], OP, move |g| {
        let dx = need_x.then(|| backward_input(g, &ws, &s)).transpose()?;
        let dw = need_w.then(|| backward_weight(&xs, g, &s)).transpose()?;
        Ok(vec![dx, dw])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(stride: usize, padding: usize) -> Conv2dConfig {
        Conv2dConfig { stride, padding }
    }

    #[test]
    fn output_shapes_follow_the_usual_formula() {
        let s = DepthwiseShape::new("t", &[2, 3, 7, 5], &[3, 1, 3, 3], cfg(2, 1)).unwrap();
        assert_eq!(s.output_shape(), [2, 3, 4, 3]);
        let s = DepthwiseShape::new("t", &[1, 4, 9, 11], &[4, 1, 5, 5], cfg(2, 2)).unwrap();
        assert_eq!(s.output_shape(), [1, 4, 5, 6]);
        let s = DepthwiseShape::new("t", &[1, 4, 1, 1], &[4, 1, 3, 3], cfg(1, 1)).unwrap();
        assert_eq!(s.output_shape(), [1, 4, 1, 1]);
    }

    #[test]
    fn bad_geometry_is_a_shape_error() {
        for (x, w, c, wanted) in [
            ([1, 4, 6, 6], [3, 1, 3, 3], cfg(1, 1), "C = 4"),
            ([1, 4, 6, 6], [4, 2, 3, 3], cfg(1, 1), "[C, 1, k, k]"),
            ([1, 4, 6, 6], [4, 1, 3, 5], cfg(1, 1), "square"),
            ([1, 4, 6, 6], [4, 1, 2, 2], cfg(1, 1), "odd"),
            ([1, 4, 6, 6], [4, 1, 0, 0], cfg(1, 0), "odd"),
            ([1, 4, 6, 6], [4, 1, 3, 3], cfg(0, 1), "stride"),
            (
                [1, 4, 2, 6],
                [4, 1, 5, 5],
                cfg(1, 1),
                "smaller than the kernel",
            ),
            ([0, 4, 6, 6], [4, 1, 3, 3], cfg(1, 1), "empty"),
            ([1, 4, 6, 6], [4, 1, 3, 3], cfg(1, usize::MAX), "31 bits"),
        ] {
            match DepthwiseShape::new("t", &x, &w, c) {
                Err(Error::Shape { message, .. }) => {
                    assert!(message.contains(wanted), "{x:?} {w:?}: {message}")
                }
                other => panic!("{x:?} {w:?} {c:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn weight_gradient_splits_cover_every_row_once() {
        for (x, k) in [
            ([1, 3, 1, 1], 3),
            ([32, 16, 112, 112], 3),
            ([32, 960, 7, 7], 5),
            ([3, 5, 9, 2000], 5),
        ] {
            let s =
                DepthwiseShape::new("t", &x, &[x[1], 1, k, k], Conv2dConfig::same(k, 1)).unwrap();
            let (splits, per) = s.weight_grad_splits();
            let rows = s.n * s.oh;
            assert!(
                splits * per >= rows && (splits - 1) * per < rows,
                "{splits} x {per} for {rows}"
            );
        }
    }
}
