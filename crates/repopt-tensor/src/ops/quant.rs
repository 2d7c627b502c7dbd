//! Fake quantization for quantization-aware training, as PyTorch's
//! `fake_quantize_per_tensor_affine` / `fake_quantize_per_channel_affine`: values are snapped
//! to an integer grid and mapped straight back to f32, so training sees the rounding and
//! clipping of INT8 inference while every tensor stays f32.
//!
//! A grid is a step `s`, a zero point `zp` and the index bounds `[qmin, qmax]`: `v` becomes
//! `(clamp(round(v * (1 / s)) + zp, qmin, qmax) - zp) * s`, with `1 / s` rounded to f32 and
//! halves rounded to even (WGSL's `round`, PyTorch's `nearbyint`), so results agree with
//! PyTorch's bit for bit, ties included. (Per channel, `1 / s` is taken on the device:
//! exact wherever its division is, as on lavapipe; WGSL only promises 2.5 ulp.) The
//! gradient is the straight-through estimator: `dy` where the unclamped index
//! `round(v / s) + zp` lies in `[qmin, qmax]` (bounds included), 0 where it was clipped. It
//! is not the derivative of the rounding (0 almost everywhere) but the one
//! quantization-aware training uses.
//!
//! The statistics that choose the grids (histograms, min/max) are in [`stats`].

pub mod stats;

pub use stats::{abs_max, abs_max_per_channel, histogram, histogram_into, min_max, min_max_into};

use super::{as_u32, expect_same_shape, groups};
use crate::error::{Error, Result};
use crate::kernels::Kernel;
use crate::kernels::quant::{self as k, QuantParams};
use crate::tensor::{DType, Tensor};

/// The kernels compute grid indices (and their distance to the zero point) in f32, which
/// holds every integer up to 2^24 exactly.
const INDEX_LIMIT: i32 = 1 << 24;

/// The per-channel grid: symmetric INT8 without -128, so that it is symmetric about 0.
const INT8_MAX: i32 = 127;

/// Whether `s` is a positive, normal, finite f32: the scales whose reciprocal is finite and
/// nonzero (the test the kernels apply to per-channel scales).
fn usable_scale(s: f32) -> bool {
    s.is_finite() && s >= f32::MIN_POSITIVE
}

/// One per-tensor quantization grid (activations, typically), checked when it is made.
///
/// `v` maps to the index `clamp(round(v / scale) + zero_point, qmin, qmax)` and back to
/// `(index - zero_point) * scale`; see [`fake_quant_per_tensor`].
///
/// ```
/// use repopt_tensor::ops::ActQuant;
/// let q = ActQuant::asymmetric_uint8(0.05, 128)?;
/// assert_eq!((q.qmin(), q.qmax(), q.zero_point()), (0, 255, 128));
/// assert_eq!(ActQuant::symmetric_int8(0.05)?.qmin(), -127);
/// assert!(ActQuant::symmetric_int8(0.0).is_err());
/// assert!(ActQuant::new(0.1, 0, 5, 5).is_err());
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    scale: f32,
    zero_point: i32,
    qmin: i32,
    qmax: i32,
}

impl ActQuant {
    /// The grid of step `scale` whose index `zero_point` is 0, over indices `qmin..=qmax`.
    ///
    /// Refused with [`Error::Invalid`]: a `scale` that is not a positive, normal, finite
    /// f32; `qmin >= qmax`; bounds beyond `±2^24` or more than `2^24` apart (the kernels
    /// compute indices in f32, exact for integers up to `2^24`); a `zero_point` outside
    /// `[qmin, qmax]`.
    pub fn new(scale: f32, zero_point: i32, qmin: i32, qmax: i32) -> Result<Self> {
        let op = "ActQuant";
        if !usable_scale(scale) {
            return Err(Error::invalid(
                op,
                format!("scale must be a positive, finite, normal f32, got {scale:e}"),
            ));
        }
        if qmin >= qmax {
            return Err(Error::invalid(
                op,
                format!("qmin must be below qmax, got qmin {qmin}, qmax {qmax}"),
            ));
        }
        if qmin < -INDEX_LIMIT || qmax > INDEX_LIMIT || qmax - qmin > INDEX_LIMIT {
            return Err(Error::invalid(
                op,
                format!(
                    "[qmin, qmax] = [{qmin}, {qmax}] must lie within ±2^24 and span at most \
                     2^24 indices, the integers f32 holds exactly"
                ),
            ));
        }
        if !(qmin..=qmax).contains(&zero_point) {
            return Err(Error::invalid(
                op,
                format!("zero point {zero_point} lies outside [qmin, qmax] = [{qmin}, {qmax}]"),
            ));
        }
        Ok(ActQuant {
            scale,
            zero_point,
            qmin,
            qmax,
        })
    }

    /// Symmetric INT8: zero point 0, indices `-127..=127` (a grid symmetric about 0).
    pub fn symmetric_int8(scale: f32) -> Result<Self> {
        ActQuant::new(scale, 0, -INT8_MAX, INT8_MAX)
    }

    /// Asymmetric UINT8: indices `0..=255` with 0 at `zero_point` (in `0..=255`).
    pub fn asymmetric_uint8(scale: f32, zero_point: i32) -> Result<Self> {
        ActQuant::new(scale, zero_point, 0, 255)
    }

    /// The grid step.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The index of 0.
    pub fn zero_point(&self) -> i32 {
        self.zero_point
    }

    /// The lowest index.
    pub fn qmin(&self) -> i32 {
        self.qmin
    }

    /// The highest index.
    pub fn qmax(&self) -> i32 {
        self.qmax
    }

    /// [`fake_quant_per_tensor`] of `x` on this grid.
    pub fn fake_quant(&self, x: &Tensor) -> Result<Tensor> {
        fake_quant_with(x, *self)
    }

    fn params(&self, n: u32) -> QuantParams {
        QuantParams {
            n,
            scale: self.scale,
            // As PyTorch: the reciprocal rounded to f32, then a product per element.
            inv_scale: 1.0 / self.scale,
            zero_point: self.zero_point as f32,
            qmin: self.qmin as f32,
            qmax: self.qmax as f32,
            ..Default::default()
        }
    }
}

fn launch(
    kernel: &Kernel<QuantParams>,
    params: QuantParams,
    tensors: &[&Tensor],
    elements: usize,
) -> Result<()> {
    let gpu = tensors[0].gpu();
    let buffers: Vec<&wgpu::Buffer> = tensors.iter().map(|t| t.buffer()).collect();
    gpu.launch(kernel, &params, &buffers, gpu.grid(groups(elements, 256)))
}

/// The per-tensor kernel alone (no autograd): `x` snapped to the grid `q`.
pub fn fake_quant_per_tensor_forward(x: &Tensor, q: ActQuant) -> Result<Tensor> {
    let op = "fake_quant_per_tensor_forward";
    x.expect_dtype(op, DType::F32)?;
    let y = Tensor::empty(x.gpu(), x.shape(), DType::F32)?;
    let n4 = as_u32(op, "elements", x.numel())?.div_ceil(4);
    launch(&k::FAKE_QUANT_FORWARD, q.params(n4), &[x, &y], n4 as usize)?;
    Ok(y)
}

/// Gradient of [`fake_quant_per_tensor_forward`] at `x`: `dy` where `x`'s unclamped grid
/// index lies in `[qmin, qmax]`, 0 elsewhere (and where `x` is NaN).
pub fn fake_quant_per_tensor_backward(dy: &Tensor, x: &Tensor, q: ActQuant) -> Result<Tensor> {
    let op = "fake_quant_per_tensor_backward";
    x.expect_dtype(op, DType::F32)?;
    dy.expect_dtype(op, DType::F32)?;
    expect_same_shape(op, dy, x)?;
    let dx = Tensor::empty(x.gpu(), x.shape(), DType::F32)?;
    let n4 = as_u32(op, "elements", x.numel())?.div_ceil(4);
    launch(
        &k::FAKE_QUANT_BACKWARD,
        q.params(n4),
        &[x, dy, &dx],
        n4 as usize,
    )?;
    Ok(dx)
}

fn fake_quant_with(x: &Tensor, q: ActQuant) -> Result<Tensor> {
    let y = fake_quant_per_tensor_forward(x, q)?;
    let xs = x.detach();
    Ok(Tensor::from_op(
        y,
        &[x],
        "fake_quant_per_tensor",
        move |g| Ok(vec![Some(fake_quant_per_tensor_backward(g, &xs, q)?)]),
    ))
}

/// Fake quantization of `x` (any shape) on one affine grid, with the straight-through
/// gradient; [`ActQuant`] builds the usual grids without raw integers.
///
/// Each value becomes `(clamp(round(x * (1 / scale)) + zero_point, qmin, qmax) - zero_point)
/// * scale`, with `1 / scale` rounded to f32 and halves rounded to even, exactly as
/// PyTorch's `fake_quantize_per_tensor_affine`. NaN stays NaN; infinities clip to the end
/// of the grid. The gradient is `dy` where `qmin <= round(x / scale) + zero_point <= qmax`
/// and 0 where the value was clipped (or is NaN). The arguments are checked as
/// [`ActQuant::new`] checks them.
///
/// ```
/// use repopt_tensor::ops::{ActQuant, fake_quant_per_tensor};
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let x = Tensor::parameter(&gpu, &[-40.0, -0.3, 0.25, 0.75, 1.3, 40.0], &[6])?;
/// // UINT8 with step 0.5 and 0 at index 10 covers [-5, 122.5].
/// let y = fake_quant_per_tensor(&x, 0.5, 10, 0, 255)?;
/// // 0.25 and 0.75 are ties (0.5 and 1.5 steps): they round to the even index.
/// assert_eq!(y.to_vec()?, vec![-5.0, -0.5, 0.0, 1.0, 1.5, 40.0]);
/// y.sum()?.backward()?;
/// assert_eq!(x.grad().unwrap().to_vec()?, vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
/// // The same grid, named.
/// let q = ActQuant::asymmetric_uint8(0.5, 10)?;
/// assert_eq!(q.fake_quant(&x)?.to_vec()?, y.to_vec()?);
/// assert!(fake_quant_per_tensor(&x, -0.5, 0, -127, 127).is_err());
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn fake_quant_per_tensor(
    x: &Tensor,
    scale: f32,
    zero_point: i32,
    qmin: i32,
    qmax: i32,
) -> Result<Tensor> {
    fake_quant_with(x, ActQuant::new(scale, zero_point, qmin, qmax)?)
}

/// Checks `w` against `scales` and returns the elements per channel.
fn channel_size(op: &'static str, w: &Tensor, scales: &Tensor) -> Result<usize> {
    w.expect_dtype(op, DType::F32)?;
    scales.expect_dtype(op, DType::F32)?;
    w.same_gpu(op, scales)?;
    let Some(&c) = w.shape().first() else {
        return Err(Error::shape(
            op,
            "w needs a first dimension (its output channels), got a scalar",
        ));
    };
    if scales.shape() != [c] {
        return Err(Error::shape(
            op,
            format!(
                "scales must have shape [{c}], one per output channel of w {:?}, got {:?}",
                w.shape(),
                scales.shape()
            ),
        ));
    }
    as_u32(op, "elements", w.numel())?;
    Ok(w.numel().checked_div(c).unwrap_or(0))
}

fn channel_params(w: &Tensor, inner: usize) -> QuantParams {
    QuantParams {
        n: w.numel() as u32,
        inner: inner as u32,
        qmin: -INT8_MAX as f32,
        qmax: INT8_MAX as f32,
        ..Default::default()
    }
}

/// The per-channel kernel alone (no autograd): see [`fake_quant_per_channel`].
pub fn fake_quant_per_channel_forward(w: &Tensor, scales: &Tensor) -> Result<Tensor> {
    let inner = channel_size("fake_quant_per_channel_forward", w, scales)?;
    let y = Tensor::empty(w.gpu(), w.shape(), DType::F32)?;
    let p = channel_params(w, inner);
    launch(
        &k::FAKE_QUANT_CHANNELS_FORWARD,
        p,
        &[w, scales, &y],
        w.numel(),
    )?;
    Ok(y)
}

/// Gradient of [`fake_quant_per_channel_forward`] at `w`: `dy` where `w`'s unclamped
/// index lies in `[-127, 127]` or its channel's scale is unusable, 0 elsewhere.
pub fn fake_quant_per_channel_backward(dy: &Tensor, w: &Tensor, scales: &Tensor) -> Result<Tensor> {
    let op = "fake_quant_per_channel_backward";
    let inner = channel_size(op, w, scales)?;
    dy.expect_dtype(op, DType::F32)?;
    expect_same_shape(op, dy, w)?;
    let dx = Tensor::empty(w.gpu(), w.shape(), DType::F32)?;
    let p = channel_params(w, inner);
    launch(
        &k::FAKE_QUANT_CHANNELS_BACKWARD,
        p,
        &[w, scales, dy, &dx],
        w.numel(),
    )?;
    Ok(dx)
}

/// Symmetric INT8 fake quantization of a weight per output channel (its first dimension;
/// `w` of any rank from 1), with the straight-through gradient.
///
/// `scales` is a device tensor `[w.shape()[0]]`, so scales computed on the device (from
/// [`abs_max_per_channel`], say) need no trip to the host. Channel `c` is snapped to the
/// grid `scales[c] * {-127, ..., 127}` as in [`fake_quant_per_tensor`] with zero point 0,
/// and its gradient is `dy` where `-127 <= round(w / scales[c]) <= 127`, else 0.
///
/// A channel whose scale is not a positive, normal, finite number (0, negative, subnormal,
/// infinite, NaN) is all zeros, the limit of the grid as the scale goes to 0 or to
/// infinity, and passes its whole gradient: a scale of 0 is what calibration gives a
/// channel of zeros, and its weights should keep training until it gets a real scale.
/// Such a channel never produces NaN; NaN weights elsewhere stay NaN.
///
/// `scales` gets no gradient, and both operands are read again by the backward pass, so
/// neither may be overwritten in place between the forward and the backward.
///
/// ```
/// use repopt_tensor::ops::{abs_max_per_channel, fake_quant_per_channel};
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let w = Tensor::parameter(&gpu, &[0.3, -1.0, 2.54, -3.0, 0.0, 7.0], &[3, 2])?;
/// let scales = Tensor::from_slice(&gpu, &[0.5, 0.02, 0.0], &[3])?;
/// let y = fake_quant_per_channel(&w, &scales)?;
/// // 0.3 is 0.6 steps of 0.5; 2.54 is 127 steps of 0.02 and -3.0 is clipped to -127 steps;
/// // the last channel has no grid.
/// let step = 0.02f32;
/// assert_eq!(y.to_vec()?, vec![0.5, -1.0, 127.0 * step, -127.0 * step, 0.0, 0.0]);
/// y.sum()?.backward()?;
/// assert_eq!(w.grad().unwrap().to_vec()?, vec![1.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
/// // Scales from the weights themselves, on the device: max |w| per channel / 127.
/// let scales = abs_max_per_channel(&w)?.scale(1.0 / 127.0)?;
/// let y = fake_quant_per_channel(&w, &scales)?.to_vec()?;
/// assert!((y[1] + 1.0).abs() < 1e-6 && (y[3] + 3.0).abs() < 1e-5 && (y[5] - 7.0).abs() < 1e-5);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn fake_quant_per_channel(w: &Tensor, scales: &Tensor) -> Result<Tensor> {
    let y = fake_quant_per_channel_forward(w, scales)?;
    let (ws, ss) = (w.detach(), scales.detach());
    Ok(Tensor::from_op(
        y,
        &[w],
        "fake_quant_per_channel",
        move |g| Ok(vec![Some(fake_quant_per_channel_backward(g, &ws, &ss)?)]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_checked_when_made() {
        for s in [0.0, -0.5, f32::NAN, f32::INFINITY, 1e-40] {
            let err = ActQuant::symmetric_int8(s).unwrap_err().to_string();
            assert!(err.contains("positive, finite, normal"), "{s}: {err}");
        }
        let err = ActQuant::new(0.1, 0, 3, 3).unwrap_err().to_string();
        assert!(err.contains("qmin must be below qmax"), "{err}");
        let err = ActQuant::new(0.1, 0, 0, 1 << 25).unwrap_err().to_string();
        assert!(err.contains("2^24"), "{err}");
        let err = ActQuant::asymmetric_uint8(0.1, 256)
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside [qmin, qmax] = [0, 255]"), "{err}");
        let err = ActQuant::new(0.1, 0, -(1 << 23), (1 << 23) + 1).unwrap_err();
        assert!(err.to_string().contains("2^24"), "{err}");
        let q = ActQuant::new(f32::MIN_POSITIVE, -1, -(1 << 23), 1 << 23).unwrap();
        assert!(q.params(1).inv_scale.is_finite());
    }

    #[test]
    fn the_reciprocal_is_rounded_once_to_f32() {
        let q = ActQuant::symmetric_int8(0.1).unwrap();
        let p = q.params(7);
        assert_eq!(p.inv_scale, 1.0f32 / 0.1f32);
        assert_eq!((p.qmin, p.qmax, p.zero_point, p.n), (-127.0, 127.0, 0.0, 7));
    }
}
