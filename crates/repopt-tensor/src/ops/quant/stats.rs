//! What calibration reads from tensors, computed on the device so that only the result comes
//! back: histograms ([`histogram`], [`histogram_into`]), extremes ([`min_max`], [`abs_max`],
//! [`min_max_into`]) and per-channel magnitudes ([`abs_max_per_channel`]).
//!
//! None of these record gradients. NaN is ignored by all of them; infinities count as values.

use super::super::{as_u32, groups};
use crate::error::{Error, Result};
use crate::kernels::quant::{self as k, QuantParams};
use crate::tensor::{DType, Tensor};

/// Items one invocation reduces before the reduction takes another pass (as `reduce.rs`).
const RUN: usize = 1024;

/// Bin indices go through f32 in the kernel, exact up to 2^24.
const MAX_BINS: usize = 1 << 24;

/// The kernel parameters of `bins` bins over `[lo, hi]`.
fn bin_params(
    op: &'static str,
    (lo, hi): (f32, f32),
    bins: usize,
    abs: bool,
    n: usize,
) -> Result<QuantParams> {
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(Error::invalid(
            op,
            format!("the range must be finite with lo < hi, got [{lo}, {hi}]"),
        ));
    }
    if !(1..=MAX_BINS).contains(&bins) {
        return Err(Error::invalid(
            op,
            format!("bins must be in 1..=2^24, got {bins}"),
        ));
    }
    let inv_width = (bins as f64 / (f64::from(hi) - f64::from(lo))) as f32;
    if !(inv_width.is_finite() && inv_width >= f32::MIN_POSITIVE) {
        return Err(Error::invalid(
            op,
            format!("[{lo}, {hi}] is too narrow or too wide for {bins} bins of f32 width"),
        ));
    }
    Ok(QuantParams {
        n: as_u32(op, "elements", n)?,
        bins: bins as u32,
        lo,
        inv_width,
        abs: abs as u32,
        ..Default::default()
    })
}

/// Adds the histogram of `x` to `counts` (checked by the callers).
fn count(x: &Tensor, counts: &Tensor, p: QuantParams) -> Result<()> {
    let gpu = x.gpu();
    gpu.launch(
        &k::HISTOGRAM,
        &p,
        &[x.buffer(), counts.buffer()],
        gpu.grid(groups(x.numel(), 256)),
    )
}

/// Counts of the values of `x` (any shape; their magnitudes with `abs`) in `bins` equal bins
/// over `[lo, hi]`, counted on the device: a `u32` tensor `[bins]`, read with
/// [`Tensor::to_vec_u32`].
///
/// Bin `i` holds the values in `[lo + i w, lo + (i + 1) w)`, `w = (hi - lo) / bins`; values
/// below `lo` count in the first bin and values at or above `hi` (infinities included) in
/// the last, so every value is counted once except NaN, which is not counted. Precisely,
/// `v` goes to bin `floor((v - lo) * (bins / (hi - lo)))` clamped to `0..bins`, in f32 with
/// `bins / (hi - lo)` rounded once to f32: a value within rounding of an edge may fall on
/// either side of it, the same side on every device.
///
/// Refused with [`Error::Invalid`]: `lo` or `hi` not finite, `hi <= lo`, `bins` outside
/// `1..=2^24`, or a range too narrow or too wide for f32 bins.
///
/// ```
/// use repopt_tensor::ops::histogram;
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let x = Tensor::from_slice(&gpu, &[-9.0, -0.5, 0.0, 0.5, 1.0, 3.9, 4.0, f32::NAN], &[8])?;
/// let counts = histogram(&x, 0.0, 4.0, 4, false)?.to_vec_u32()?;
/// // [0, 1): -9, -0.5 (below), 0, 0.5; [1, 2): 1; [3, 4]: 3.9, 4 (at hi); NaN: nowhere.
/// assert_eq!(counts, vec![4, 1, 0, 2]);
/// let counts = histogram(&x, 0.0, 4.0, 4, true)?.to_vec_u32()?;
/// assert_eq!(counts, vec![3, 1, 0, 3]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn histogram(x: &Tensor, lo: f32, hi: f32, bins: usize, abs: bool) -> Result<Tensor> {
    let op = "histogram";
    x.expect_dtype(op, DType::F32)?;
    let p = bin_params(op, (lo, hi), bins, abs, x.numel())?;
    let counts = Tensor::empty(x.gpu(), &[bins], DType::U32)?;
    x.gpu().zero(counts.buffer());
    count(x, &counts, p)?;
    Ok(counts)
}

/// Adds the [`histogram`] of `x` over `[lo, hi]` to `counts`, a `u32` tensor `[bins]`, on
/// the device: calibration over many batches reads the counts back once, at the end.
///
/// Each count is a `u32` and wraps past `2^32 - 1`: read back and restart before a bin
/// can receive that many values.
///
/// ```
/// use repopt_tensor::ops::{histogram, histogram_into};
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let first = Tensor::from_slice(&gpu, &[0.1, 0.2, 0.9], &[3])?;
/// let second = Tensor::from_slice(&gpu, &[-0.7, 0.6], &[2])?;
/// // The first batch makes the counts (or start from `Tensor::from_u32` zeros).
/// let counts = histogram(&first, 0.0, 1.0, 2, true)?;
/// histogram_into(&second, 0.0, 1.0, true, &counts)?;
/// assert_eq!(counts.to_vec_u32()?, vec![2, 3]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn histogram_into(x: &Tensor, lo: f32, hi: f32, abs: bool, counts: &Tensor) -> Result<()> {
    let op = "histogram_into";
    x.expect_dtype(op, DType::F32)?;
    counts.expect_dtype(op, DType::U32)?;
    x.same_gpu(op, counts)?;
    if counts.shape().len() != 1 {
        return Err(Error::shape(
            op,
            format!("counts must be [bins], got shape {:?}", counts.shape()),
        ));
    }
    let p = bin_params(op, (lo, hi), counts.numel(), abs, x.numel())?;
    count(x, counts, p)
}

/// How the last pass of a min/max reduction writes its output.
#[derive(Clone, Copy)]
enum Output {
    /// `(min, max)` per row, replacing the output (`false`) or folded into it (`true`).
    Pairs { accumulate: bool },
    /// The max alone per row.
    MaxOnly,
}

/// Reduces `x` viewed as `[rows, cols]` (magnitudes with `abs`) to each row's extremes in
/// `out`, in passes of runs of [`RUN`] items until one run covers each row.
fn extremes(
    x: &Tensor,
    rows: usize,
    cols: usize,
    abs: bool,
    out: &Tensor,
    last: Output,
) -> Result<()> {
    let op = "min_max";
    let gpu = x.gpu();
    let (mut src, mut cols, mut pairs) = (x.clone(), cols, false);
    loop {
        let chunks = cols.div_ceil(RUN).max(1);
        let mut p = QuantParams {
            rows: as_u32(op, "rows", rows)?,
            cols: as_u32(op, "items per row", cols)?,
            chunk: RUN as u32,
            pairs: pairs as u32,
            abs: (abs && !pairs) as u32,
            inf: f32::INFINITY,
            ..Default::default()
        };
        let grid = gpu.grid(groups(rows * chunks, 64));
        if chunks == 1 {
            match last {
                Output::Pairs { accumulate } => p.accumulate = accumulate as u32,
                Output::MaxOnly => p.max_only = 1,
            }
            return gpu.launch(&k::MIN_MAX_RUNS, &p, &[src.buffer(), out.buffer()], grid);
        }
        let partial = Tensor::empty(gpu, &[rows * chunks * 2], DType::F32)?;
        gpu.launch(
            &k::MIN_MAX_RUNS,
            &p,
            &[src.buffer(), partial.buffer()],
            grid,
        )?;
        (src, cols, pairs) = (partial, chunks, true);
    }
}

/// The extremes of the whole of `x` read back, refused when there are none.
fn read_extremes(op: &'static str, x: &Tensor, abs: bool) -> Result<(f32, f32)> {
    x.expect_dtype(op, DType::F32)?;
    let out = Tensor::empty(x.gpu(), &[2], DType::F32)?;
    extremes(
        x,
        1,
        x.numel(),
        abs,
        &out,
        Output::Pairs { accumulate: false },
    )?;
    let v = out.to_vec()?;
    if v[0] > v[1] {
        return Err(Error::invalid(
            op,
            format!(
                "no values: the tensor of shape {:?} is empty or all NaN",
                x.shape()
            ),
        ));
    }
    Ok((v[0], v[1]))
}

/// The smallest and largest values of `x` (any shape), reduced on the device; NaN is
/// ignored, infinities count. An empty or all-NaN tensor is an [`Error::Invalid`].
///
/// ```
/// use repopt_tensor::ops::{abs_max, min_max};
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let x = Tensor::from_slice(&gpu, &[0.5, f32::NAN, -3.0, 2.0], &[2, 2])?;
/// assert_eq!(min_max(&x)?, (-3.0, 2.0));
/// assert_eq!(abs_max(&x)?, 3.0);
/// let nan = Tensor::from_slice(&gpu, &[f32::NAN], &[1])?;
/// assert!(min_max(&nan).is_err());
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn min_max(x: &Tensor) -> Result<(f32, f32)> {
    read_extremes("min_max", x, false)
}

/// The largest magnitude `max |x|` of `x`, reduced on the device; as [`min_max`].
pub fn abs_max(x: &Tensor) -> Result<f32> {
    Ok(read_extremes("abs_max", x, true)?.1)
}

/// Folds the extremes of `x` into `acc`, an f32 tensor `[2]` holding `(min, max)`, on the
/// device: `acc = (min(acc[0], min x), max(acc[1], max x))`, NaN ignored on both sides. Start
/// `acc` at `(+inf, -inf)`; it stays there while only empty or all-NaN tensors are folded.
///
/// ```
/// use repopt_tensor::ops::min_max_into;
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let acc = Tensor::from_slice(&gpu, &[f32::INFINITY, f32::NEG_INFINITY], &[2])?;
/// for batch in [[0.5, -1.0], [4.0, 0.0]] {
///     min_max_into(&Tensor::from_slice(&gpu, &batch, &[2])?, &acc)?;
/// }
/// assert_eq!(acc.to_vec()?, vec![-1.0, 4.0]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn min_max_into(x: &Tensor, acc: &Tensor) -> Result<()> {
    let op = "min_max_into";
    x.expect_dtype(op, DType::F32)?;
    acc.expect_dtype(op, DType::F32)?;
    x.same_gpu(op, acc)?;
    if acc.shape() != [2] {
        return Err(Error::shape(
            op,
            format!("acc must be [2] (min, max), got shape {:?}", acc.shape()),
        ));
    }
    extremes(
        x,
        1,
        x.numel(),
        false,
        acc,
        Output::Pairs { accumulate: true },
    )
}

/// `max |w|` of each output channel (the first dimension) of `w` (any rank from 1), as a
/// device tensor `[w.shape()[0]]`: the per-channel weight ranges, for
/// [`fake_quant_per_channel`](super::fake_quant_per_channel) scales that never leave the
/// device. NaN is ignored; a channel with no other values gets `-inf`.
///
/// ```
/// use repopt_tensor::ops::abs_max_per_channel;
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let w = Tensor::from_slice(&gpu, &[1.0, -4.0, 0.5, 0.0, 0.0, 0.0], &[3, 2])?;
/// assert_eq!(abs_max_per_channel(&w)?.to_vec()?, vec![4.0, 0.5, 0.0]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn abs_max_per_channel(w: &Tensor) -> Result<Tensor> {
    let op = "abs_max_per_channel";
    w.expect_dtype(op, DType::F32)?;
    let Some(&c) = w.shape().first() else {
        return Err(Error::shape(
            op,
            "w needs a first dimension (its output channels), got a scalar",
        ));
    };
    as_u32(op, "elements", w.numel())?;
    let out = Tensor::empty(w.gpu(), &[c], DType::F32)?;
    let inner = w.numel().checked_div(c).unwrap_or(0);
    extremes(w, c, inner, true, &out, Output::MaxOnly)?;
    Ok(out)
}
