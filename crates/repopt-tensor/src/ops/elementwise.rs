//! Element-wise ops, channel-wise scaling and whole-tensor sums.

use bytemuck::{Pod, Zeroable};

use super::{expect_rank, expect_same_shape, groups};
use crate::error::{Error, Result};
use crate::launch::shaders::{ELEMENTWISE, REDUCE};
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct ElementwiseParams {
    pub n: u32,
    pub c: u32,
    pub hw: u32,
    pub _pad: u32,
    pub alpha: f32,
    pub beta: f32,
    pub _pad1: f32,
    pub _pad2: f32,
}

impl ElementwiseParams {
    fn n(n: usize) -> Self {
        ElementwiseParams {
            n: n as u32,
            ..Default::default()
        }
    }
}

fn launch(entry: &'static str, params: ElementwiseParams, buffers: &[&Tensor], elements: usize) {
    let gpu = buffers[0].gpu();
    let bufs: Vec<&wgpu::Buffer> = buffers.iter().map(|t| t.buffer()).collect();
    gpu.launch(
        &ELEMENTWISE,
        entry,
        bytemuck::bytes_of(&params),
        &bufs,
        gpu.grid(groups(elements, 256)),
    );
}

/// Writes `value` into every element of `t` (in place).
pub(crate) fn fill(t: &Tensor, value: f32) {
    let mut p = ElementwiseParams::n(t.numel());
    p.alpha = value;
    launch("fill", p, &[t], t.numel());
}

fn unary(entry: &'static str, a: &Tensor, params: ElementwiseParams) -> Result<Tensor> {
    let out = Tensor::empty(a.gpu(), a.shape(), DType::F32)?;
    launch(entry, params, &[a, &out], a.numel());
    Ok(out)
}

fn binary(
    entry: &'static str,
    a: &Tensor,
    b: &Tensor,
    params: ElementwiseParams,
) -> Result<Tensor> {
    let out = Tensor::empty(a.gpu(), a.shape(), DType::F32)?;
    launch(entry, params, &[a, b, &out], a.numel());
    Ok(out)
}

/// `alpha * a + beta * b`, no gradient recorded.
pub(crate) fn add_scaled_raw(a: &Tensor, b: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    let mut p = ElementwiseParams::n(a.numel());
    p.alpha = alpha;
    p.beta = beta;
    binary("add_scaled", a, b, p)
}

fn scale_raw(a: &Tensor, alpha: f32) -> Result<Tensor> {
    let mut p = ElementwiseParams::n(a.numel());
    p.alpha = alpha;
    unary("scale", a, p)
}

fn mul_raw(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("mul", a, b, ElementwiseParams::n(a.numel()))
}

/// `a * s[0]` where `s` is a one-element device tensor (no host read).
pub(crate) fn scale_by_device_scalar(a: &Tensor, s: &Tensor) -> Result<Tensor> {
    binary(
        "scale_by_device_scalar",
        a,
        s,
        ElementwiseParams::n(a.numel()),
    )
}

/// In place on the device: `acc = alpha * acc + beta * b` (both with the same element count).
pub fn axpby_inplace(acc: &Tensor, alpha: f32, b: &Tensor, beta: f32) -> Result<()> {
    expect_same_shape("axpby_inplace", acc, b)?;
    let n4 = acc.numel().div_ceil(4);
    let mut p = ElementwiseParams::n(n4);
    p.alpha = alpha;
    p.beta = beta;
    launch("axpby_inplace", p, &[acc, b], n4);
    Ok(())
}

/// Copies `src` into `dst` with a compute kernel (one read and one write per element): the
/// bandwidth reference the update benchmarks compare against.
pub fn copy_kernel(src: &Tensor, dst: &Tensor) -> Result<()> {
    expect_same_shape("copy_kernel", src, dst)?;
    let n4 = src.numel().div_ceil(4);
    launch("copy_vec4", ElementwiseParams::n(n4), &[src, dst], n4);
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReduceParams {
    rows: u32,
    cols: u32,
    chunk: u32,
    hw: u32,
    alpha: f32,
    _pad: [f32; 3],
}

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
            hw: 0,
            alpha: 1.0,
            _pad: [0.0; 3],
        };
        gpu.launch(
            &REDUCE,
            "sum_chunks",
            bytemuck::bytes_of(&p),
            &[a.buffer(), partial.buffer()],
            gpu.grid(groups(rows * chunks, 64)),
        );
        return sum_rows(&partial, rows, chunks, alpha, out_shape);
    }
    let out = Tensor::empty(gpu, out_shape, DType::F32)?;
    let p = ReduceParams {
        rows: rows as u32,
        cols: cols as u32,
        chunk: 0,
        hw: 0,
        alpha,
        _pad: [0.0; 3],
    };
    gpu.launch(
        &REDUCE,
        "sum_rows",
        bytemuck::bytes_of(&p),
        &[a.buffer(), out.buffer()],
        gpu.grid(groups(rows, 64)),
    );
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
        chunk: 0,
        hw: hw as u32,
        alpha: 1.0,
        _pad: [0.0; 3],
    };
    let grid = gpu.grid(groups(n * c, 64));
    match b {
        Some(b) => gpu.launch(
            &REDUCE,
            "plane_dots",
            bytemuck::bytes_of(&p),
            &[a.buffer(), b.buffer(), planes.buffer()],
            grid,
        ),
        None => gpu.launch(
            &REDUCE,
            "plane_sums",
            bytemuck::bytes_of(&p),
            &[a.buffer(), planes.buffer()],
            grid,
        ),
    }
    sum_rows(&planes, c, n, 1.0, &[c])
}

/// `[N, C, H, W]` dims of a rank-4 tensor.
pub(crate) fn nchw(t: &Tensor) -> (usize, usize, usize, usize) {
    let s = t.shape();
    (s[0], s[1], s[2], s[3])
}

impl Tensor {
    /// Element-wise sum of two tensors of the same shape.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        expect_same_shape("add", self, other)?;
        let out = add_scaled_raw(self, other, 1.0, 1.0)?;
        Ok(Tensor::from_op(out, &[self, other], "add", |g| {
            Ok(vec![Some(g.clone()), Some(g.clone())])
        }))
    }

    /// `alpha * self + beta * other`.
    pub fn add_scaled(&self, alpha: f32, other: &Tensor, beta: f32) -> Result<Tensor> {
        expect_same_shape("add_scaled", self, other)?;
        let out = add_scaled_raw(self, other, alpha, beta)?;
        Ok(Tensor::from_op(
            out,
            &[self, other],
            "add_scaled",
            move |g| Ok(vec![Some(scale_raw(g, alpha)?), Some(scale_raw(g, beta)?)]),
        ))
    }

    /// Element-wise difference.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.add_scaled(1.0, other, -1.0)
    }

    /// Element-wise product.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        expect_same_shape("mul", self, other)?;
        let out = mul_raw(self, other)?;
        let (a, b) = (self.detach(), other.detach());
        let (need_a, need_b) = (self.requires_grad(), other.requires_grad());
        Ok(Tensor::from_op(out, &[self, other], "mul", move |g| {
            Ok(vec![
                if need_a { Some(mul_raw(g, &b)?) } else { None },
                if need_b { Some(mul_raw(g, &a)?) } else { None },
            ])
        }))
    }

    /// `alpha * self`.
    pub fn scale(&self, alpha: f32) -> Result<Tensor> {
        self.expect_dtype("scale", DType::F32)?;
        let out = scale_raw(self, alpha)?;
        Ok(Tensor::from_op(out, &[self], "scale", move |g| {
            Ok(vec![Some(scale_raw(g, alpha)?)])
        }))
    }

    /// `max(self, 0)`.
    pub fn relu(&self) -> Result<Tensor> {
        self.expect_dtype("relu", DType::F32)?;
        let out = unary("relu_forward", self, ElementwiseParams::n(self.numel()))?;
        let y = out.detach();
        Ok(Tensor::from_op(out, &[self], "relu", move |g| {
            Ok(vec![Some(binary(
                "relu_backward",
                &y,
                g,
                ElementwiseParams::n(g.numel()),
            )?)])
        }))
    }

    /// `1 / (1 + exp(-self))`.
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.expect_dtype("sigmoid", DType::F32)?;
        let out = unary("sigmoid_forward", self, ElementwiseParams::n(self.numel()))?;
        let y = out.detach();
        Ok(Tensor::from_op(out, &[self], "sigmoid", move |g| {
            Ok(vec![Some(binary(
                "sigmoid_backward",
                &y,
                g,
                ElementwiseParams::n(g.numel()),
            )?)])
        }))
    }

    /// Sum of all elements, as a one-element tensor.
    pub fn sum(&self) -> Result<Tensor> {
        self.expect_dtype("sum", DType::F32)?;
        let out = sum_rows(self, 1, self.numel(), 1.0, &[1])?;
        let shape = self.shape().to_vec();
        Ok(Tensor::from_op(out, &[self], "sum", move |g| {
            let ones = Tensor::full(g.gpu(), &shape, 1.0)?;
            Ok(vec![Some(scale_by_device_scalar(&ones, g)?)])
        }))
    }

    /// Mean of all elements, as a one-element tensor.
    pub fn mean(&self) -> Result<Tensor> {
        self.sum()?.scale(1.0 / self.numel() as f32)
    }

    /// `self[n, c, h, w] * scale[c]`: a channel-wise scale, constant or trainable.
    pub fn scale_channels(&self, scale: &Tensor) -> Result<Tensor> {
        expect_rank("scale_channels", "input", self, 4)?;
        expect_rank("scale_channels", "scale", scale, 1)?;
        self.same_gpu("scale_channels", scale)?;
        let (n, c, h, w) = nchw(self);
        if scale.numel() != c {
            return Err(Error::shape(
                "scale_channels",
                format!("scale has {} entries for {c} channels", scale.numel()),
            ));
        }
        let params = ElementwiseParams {
            n: self.numel() as u32,
            c: c as u32,
            hw: (h * w) as u32,
            ..Default::default()
        };
        let out = binary("scale_channels", self, scale, params)?;
        let (x, s) = (self.detach(), scale.detach());
        let (need_x, need_s) = (self.requires_grad(), scale.requires_grad());
        Ok(Tensor::from_op(
            out,
            &[self, scale],
            "scale_channels",
            move |g| {
                Ok(vec![
                    if need_x {
                        Some(binary("scale_channels", g, &s, params)?)
                    } else {
                        None
                    },
                    if need_s {
                        Some(channel_reduce(g, Some(&x), n, c, h * w)?)
                    } else {
                        None
                    },
                ])
            },
        ))
    }

    /// `self[n, c, h, w] + bias[c]`: a per-channel bias (a convolution's bias term).
    pub fn add_channels(&self, bias: &Tensor) -> Result<Tensor> {
        expect_rank("add_channels", "input", self, 4)?;
        expect_rank("add_channels", "bias", bias, 1)?;
        self.same_gpu("add_channels", bias)?;
        let (n, c, h, w) = nchw(self);
        if bias.numel() != c {
            return Err(Error::shape(
                "add_channels",
                format!("bias has {} entries for {c} channels", bias.numel()),
            ));
        }
        let params = ElementwiseParams {
            n: self.numel() as u32,
            c: c as u32,
            hw: (h * w) as u32,
            ..Default::default()
        };
        let out = binary("add_channels", self, bias, params)?;
        let need_b = bias.requires_grad();
        Ok(Tensor::from_op(
            out,
            &[self, bias],
            "add_channels",
            move |g| {
                Ok(vec![
                    Some(g.clone()),
                    if need_b {
                        Some(channel_reduce(g, None, n, c, h * w)?)
                    } else {
                        None
                    },
                ])
            },
        ))
    }

    /// `self[n, c, h, w] * gate[n, c]`: a per-sample channel gate (squeeze-excitation).
    pub fn scale_planes(&self, gate: &Tensor) -> Result<Tensor> {
        expect_rank("scale_planes", "input", self, 4)?;
        expect_rank("scale_planes", "gate", gate, 2)?;
        self.same_gpu("scale_planes", gate)?;
        let (n, c, h, w) = nchw(self);
        if gate.shape() != [n, c] {
            return Err(Error::shape(
                "scale_planes",
                format!("gate must be [{n}, {c}], got {:?}", gate.shape()),
            ));
        }
        let params = ElementwiseParams {
            n: self.numel() as u32,
            hw: (h * w) as u32,
            ..Default::default()
        };
        let out = binary("scale_planes", self, gate, params)?;
        let (x, gt) = (self.detach(), gate.detach());
        let (need_x, need_g) = (self.requires_grad(), gate.requires_grad());
        Ok(Tensor::from_op(
            out,
            &[self, gate],
            "scale_planes",
            move |g| {
                Ok(vec![
                    if need_x {
                        Some(binary("scale_planes", g, &gt, params)?)
                    } else {
                        None
                    },
                    if need_g {
                        let prod = mul_raw(g, &x)?;
                        Some(sum_rows(&prod, n * c, h * w, 1.0, &[n, c])?)
                    } else {
                        None
                    },
                ])
            },
        ))
    }
}
