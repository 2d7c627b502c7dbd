//! Fake quantization and the statistics that calibrate it.

/// Whether `s` (an f32 value) has a grid: a positive, normal, finite f32.
fn usable_scale(s: f64) -> bool {
    let s = s as f32;
    s.is_finite() && s >= f32::MIN_POSITIVE
}

/// PyTorch's `fake_quantize_per_tensor_affine` of `x` (f32 values) with its straight-through
/// mask: `(clamp(q, qmin, qmax) - zero_point) * scale` for the index `q = nearbyint(x *
/// inv) + zero_point`, where `inv = 1 / scale` and the product are rounded to f32 as
/// PyTorch's kernels round them (which decides the ties), and the mask is `qmin <= q <=
/// qmax`. NaN stays NaN, with mask false.
pub fn fake_quant(
    x: &[f64],
    scale: f64,
    zero_point: i32,
    qmin: i32,
    qmax: i32,
) -> (Vec<f64>, Vec<bool>) {
    let inv = 1.0 / scale as f32;
    let (zp, lo, hi) = (f64::from(zero_point), f64::from(qmin), f64::from(qmax));
    x.iter()
        .map(|&v| {
            if v.is_nan() {
                return (v, false);
            }
            let q = f64::from(v as f32 * inv).round_ties_even() + zp;
            ((q.clamp(lo, hi) - zp) * scale, (lo..=hi).contains(&q))
        })
        .unzip()
}

/// Symmetric INT8 fake quantization of `w` per channel (its first dimension, `scales.len()`
/// channels): [`fake_quant`] with zero point 0 and indices `-127..=127` on each channel, and
/// for a channel whose scale is not a positive normal finite f32, zeros with a mask of
/// `true` (the op's definition for channels without a grid).
pub fn fake_quant_per_channel(w: &[f64], scales: &[f64]) -> (Vec<f64>, Vec<bool>) {
    if w.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let inner = w.len() / scales.len();
    let (mut y, mut mask) = (Vec::with_capacity(w.len()), Vec::with_capacity(w.len()));
    for (channel, &s) in w.chunks(inner).zip(scales) {
        if usable_scale(s) {
            let (q, m) = fake_quant(channel, s, 0, -127, 127);
            y.extend(q);
            mask.extend(m);
        } else {
            y.extend(std::iter::repeat_n(0.0, inner));
            mask.extend(std::iter::repeat_n(true, inner));
        }
    }
    (y, mask)
}

/// Counts of `x` (f32 values; magnitudes with `abs`) in `bins` bins over `[lo, hi]` as
/// `ops::histogram` defines them: `v` goes to bin `floor((v - lo) * inv)` clamped to
/// `0..bins`, computed in f32 with `inv = bins / (hi - lo)` rounded once to f32 (so the
/// edges fall exactly where the op puts them); NaN is not counted.
pub fn histogram(x: &[f64], lo: f64, hi: f64, bins: usize, abs: bool) -> Vec<u64> {
    let inv = (bins as f64 / (hi - lo)) as f32;
    let mut counts = vec![0; bins];
    for &v in x.iter().filter(|v| !v.is_nan()) {
        let v = if abs { v.abs() } else { v } as f32;
        let t = ((v - lo as f32) * inv).floor();
        counts[t.clamp(0.0, (bins - 1) as f32) as usize] += 1;
    }
    counts
}

/// The smallest and largest values of `x` other than NaN, or `None` when there are none.
pub fn min_max(x: &[f64]) -> Option<(f64, f64)> {
    x.iter()
        .filter(|v| !v.is_nan())
        .fold(None, |acc, &v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// `max |w|` over each of `channels` equal runs of `w`, NaN ignored, `-inf` for a run with
/// no other values.
pub fn abs_max_per_channel(w: &[f64], channels: usize) -> Vec<f64> {
    let inner = w.len().checked_div(channels).unwrap_or(0);
    (0..channels)
        .map(|c| {
            w[c * inner..(c + 1) * inner]
                .iter()
                .filter(|v| !v.is_nan())
                .fold(f64::NEG_INFINITY, |m, v| m.max(v.abs()))
        })
        .collect()
}
