//! 2-D convolution without bias (square kernels, any stride and padding; the models use
//! 3x3 with padding 1 and 1x1 with padding 0, stride 1 or 2).

use bytemuck::{Pod, Zeroable};

use super::{as_u32, expect_rank, groups};
use crate::error::{Error, Result};
use crate::launch::shaders::{CONV, CONV_SUBGROUP};
use crate::tensor::{DType, Tensor};

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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default, Debug)]
struct ConvParams {
    n: u32,
    ci: u32,
    h: u32,
    w: u32,
    co: u32,
    oh: u32,
    ow: u32,
    k: u32,
    stride: u32,
    pad: u32,
    cpad: u32,
    splits: u32,
    rows_per_split: u32,
    phase: u32,
    _pad: [u32; 2],
}

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

fn pack(entry: &'static str, w: &Tensor, p: ConvParams, rows: usize) -> Result<Tensor> {
    let len = rows * p.cpad as usize;
    let packed = Tensor::empty(w.gpu(), &[len], DType::F32)?;
    let gpu = w.gpu();
    gpu.launch(
        &CONV,
        entry,
        bytemuck::bytes_of(&p),
        &[w.buffer(), packed.buffer()],
        gpu.grid(groups(len, 256)),
    );
    Ok(packed)
}

/// Grid over pixel pairs (the subgroup kernels give each invocation two adjacent pixels).
fn pair_grid(x: &Tensor, n: usize, rows: usize, cols: usize, channel_blocks: usize) -> [u32; 3] {
    let mut grid = x.gpu().grid(groups(n * rows * cols.div_ceil(2), 64));
    grid[2] = channel_blocks as u32;
    grid
}

/// Whether the subgroup family has kernels for this shape: it covers 1x1 and 3x3, the
/// sizes the models use; other sizes run on the plain family on every adapter.
fn subgroup_family(gpu: &crate::Gpu, s: &ConvShape) -> bool {
    gpu.uses_subgroup_kernels() && (s.k == 1 || s.k == 3)
}

/// Forward kernel only (no autograd): `y = conv(x, w)`.
pub(crate) fn forward_raw(x: &Tensor, w: &Tensor, s: &ConvShape) -> Result<Tensor> {
    if subgroup_family(x.gpu(), s) {
        let y = Tensor::empty(x.gpu(), &s.output_shape(), DType::F32)?;
        let grid = pair_grid(x, s.n, s.oh, s.ow, s.co.div_ceil(TC));
        let entry = if s.k == 3 {
            "conv3_forward"
        } else {
            "conv1_forward"
        };
        let p = s.params(0);
        x.gpu().launch(
            &CONV_SUBGROUP,
            entry,
            bytemuck::bytes_of(&p),
            &[x.buffer(), w.buffer(), y.buffer()],
            grid,
        );
        return Ok(y);
    }
    let cpad = s.co.next_multiple_of(TC);
    let p = s.params(cpad);
    let packed = pack("conv_pack_forward", w, p, s.ci * s.k * s.k)?;
    let y = Tensor::empty(x.gpu(), &s.output_shape(), DType::F32)?;
    let gpu = x.gpu();
    let mut grid = gpu.grid(groups(s.n * s.oh * s.ow, 64));
    grid[2] = (cpad / TC) as u32;
    gpu.launch(
        &CONV,
        "conv_forward",
        bytemuck::bytes_of(&p),
        &[x.buffer(), packed.buffer(), y.buffer()],
        grid,
    );
    Ok(y)
}

/// Input-gradient kernel only: `dx = conv_transpose(dy, w)`.
pub(crate) fn backward_input_raw(dy: &Tensor, w: &Tensor, s: &ConvShape) -> Result<Tensor> {
    let subgroups = subgroup_family(dy.gpu(), s);
    if subgroups && s.k == 3 && s.cfg.stride == 2 {
        // One dispatch per parity class of input pixels; each covers its own pixels.
        let dx = Tensor::empty(dy.gpu(), &[s.n, s.ci, s.h, s.w], DType::F32)?;
        for phase in 0..4u32 {
            let (ph, pw) = ((phase / 2) as usize, (phase % 2) as usize);
            let rows = (s.h + 1 - ph) / 2;
            let cols = (s.w + 1 - pw) / 2;
            if rows == 0 || cols == 0 {
                continue;
            }
            let mut p = s.params(0);
            p.phase = phase;
            let grid = pair_grid(dy, s.n, rows, cols, s.ci.div_ceil(TC));
            dy.gpu().launch(
                &CONV_SUBGROUP,
                "conv3_backward_input_s2",
                bytemuck::bytes_of(&p),
                &[dy.buffer(), w.buffer(), dx.buffer()],
                grid,
            );
        }
        return Ok(dx);
    }
    // 1x1 without padding runs over the output grid; with a stride, the input pixels no
    // output pixel reads from keep the zeros they start with.
    let unpadded_1x1 = s.k == 1 && s.cfg.padding == 0;
    if subgroups && (unpadded_1x1 || (s.k == 3 && s.cfg.stride == 1)) {
        let dx = if s.k == 1 && s.cfg.stride > 1 {
            Tensor::zeros(dy.gpu(), &[s.n, s.ci, s.h, s.w])?
        } else {
            Tensor::empty(dy.gpu(), &[s.n, s.ci, s.h, s.w], DType::F32)?
        };
        let (entry, grid) = if s.k == 1 {
            let grid = pair_grid(dy, s.n, s.oh, s.ow, s.ci.div_ceil(TC));
            ("conv1_backward_input", grid)
        } else {
            let grid = pair_grid(dy, s.n, s.h, s.w, s.ci.div_ceil(TC));
            ("conv3_backward_input", grid)
        };
        let p = s.params(0);
        dy.gpu().launch(
            &CONV_SUBGROUP,
            entry,
            bytemuck::bytes_of(&p),
            &[dy.buffer(), w.buffer(), dx.buffer()],
            grid,
        );
        return Ok(dx);
    }
    let cpad = s.ci.next_multiple_of(TC);
    let p = s.params(cpad);
    let packed = pack("conv_pack_input", w, p, s.co * s.k * s.k)?;
    let dx = Tensor::empty(dy.gpu(), &[s.n, s.ci, s.h, s.w], DType::F32)?;
    let gpu = dy.gpu();
    let mut grid = gpu.grid(groups(s.n * s.h * s.w, 64));
    grid[2] = (cpad / TC) as u32;
    gpu.launch(
        &CONV,
        "conv_backward_input",
        bytemuck::bytes_of(&p),
        &[dy.buffer(), packed.buffer(), dx.buffer()],
        grid,
    );
    Ok(dx)
}

/// The weight-gradient grid's x and y (z holds the splits), and the kernel that uses it.
fn weight_grad_layout(
    s: &ConvShape,
    subgroups: bool,
) -> ([u32; 2], &'static str, &'static crate::Shader) {
    if subgroups {
        let rows = if s.k == 3 { s.ci * 3 } else { s.ci };
        let entry = if s.k == 3 {
            "conv3_backward_weight"
        } else {
            "conv1_backward_weight"
        };
        (
            [groups(rows, 64), s.co.div_ceil(8) as u32],
            entry,
            &CONV_SUBGROUP,
        )
    } else {
        (
            [groups(s.ci * s.k * s.k, 64), s.co.div_ceil(TC) as u32],
            "conv_backward_weight",
            &CONV,
        )
    }
}

/// How many partial sums the weight gradient uses: enough workgroups to fill a GPU when the
/// weight is small, one when it is large.
fn weight_grad_splits(s: &ConvShape, subgroups: bool) -> (usize, usize) {
    let [gx, gy] = weight_grad_layout(s, subgroups).0;
    let base = (gx * gy) as usize;
    let rows = s.n * s.oh;
    let wanted = 512usize.div_ceil(base).clamp(1, 64).min(rows);
    let rows_per_split = rows.div_ceil(wanted);
    (rows.div_ceil(rows_per_split), rows_per_split)
}

/// Weight-gradient kernel only: `dw = sum over pixels of dy x^T`.
pub(crate) fn backward_weight_raw(x: &Tensor, dy: &Tensor, s: &ConvShape) -> Result<Tensor> {
    let subgroups = subgroup_family(x.gpu(), s);
    let ([gx, gy], entry, shader) = weight_grad_layout(s, subgroups);
    let (splits, rows_per_split) = weight_grad_splits(s, subgroups);
    let mut p = s.params(0);
    p.splits = splits as u32;
    p.rows_per_split = rows_per_split as u32;
    let gpu = x.gpu();
    let wshape = [s.co, s.ci, s.k, s.k];
    let len = s.co * s.ci * s.k * s.k;
    let grid = [gx, gy, splits as u32];
    let target = if splits == 1 {
        Tensor::empty(gpu, &wshape, DType::F32)?
    } else {
        Tensor::empty(gpu, &[splits * len], DType::F32)?
    };
    gpu.launch(
        shader,
        entry,
        bytemuck::bytes_of(&p),
        &[x.buffer(), dy.buffer(), target.buffer()],
        grid,
    );
    if splits == 1 {
        return Ok(target);
    }
    let dw = Tensor::empty(gpu, &wshape, DType::F32)?;
    gpu.launch(
        &CONV,
        "conv_sum_splits",
        bytemuck::bytes_of(&p),
        &[target.buffer(), dw.buffer()],
        gpu.grid(groups(len, 256)),
    );
    Ok(dw)
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
    let y = forward_raw(x, w, &s)?;
    let (xs, ws) = (x.detach(), w.detach());
    let (need_x, need_w) = (x.requires_grad(), w.requires_grad());
    Ok(Tensor::from_op(y, &[x, w], "conv2d", move |g| {
        Ok(vec![
            if need_x {
                Some(backward_input_raw(g, &ws, &s)?)
            } else {
                None
            },
            if need_w {
                Some(backward_weight_raw(&xs, g, &s)?)
            } else {
                None
            },
        ])
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
    backward_input_raw(dy, w, &s)
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
    backward_weight_raw(x, dy, &s)
}

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
            let (splits, per) = weight_grad_splits(&s, true);
            let rows = n * s.oh;
            assert!(
                splits * per >= rows && (splits - 1) * per < rows,
                "{splits} x {per} for {rows}"
            );
        }
    }
}
