//! INT8 quantization of deploy models: calibrators for activation ranges, and the weight
//! statistics behind the paper's quantization claim (Section 4.4, Appendix C).

pub mod calibrate;
pub mod network;
pub mod qat;
pub mod stats;

/// Per-output-channel symmetric weight scales: `max |w_c| / 127` over each of the
/// `out_channels` equal slices of `weight` (outermost dimension first, as `[co, ...]`
/// kernels and `[classes, features]` matrices are stored). An all-zero channel gets scale
/// 1: its weights quantize to 0 with any scale, and runtimes refuse a scale of 0.
///
/// Quantizing `w` with its channel's scale `s` is `clamp(round_half_even(w / s), -127, 127)`
/// (`onnx::quantize_weight`); the exported graph holds those int8 values and `s`, and the
/// engine's fake quantization uses the same scales.
///
/// ```
/// use repopt_models::quant::weight_scales;
/// let w = [0.5, -1.27, 0.0, 0.0];
/// assert_eq!(weight_scales(&w, 2), vec![1.27 / 127.0, 1.0]);
/// ```
pub fn weight_scales(weight: &[f32], out_channels: usize) -> Vec<f32> {
    if out_channels == 0 {
        return Vec::new();
    }
    weight
        .chunks(weight.len().div_ceil(out_channels).max(1))
        .map(|c| {
            let max = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if max == 0.0 { 1.0 } else { max / 127.0 }
        })
        .collect()
}
