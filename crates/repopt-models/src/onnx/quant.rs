//! The quantization rules of the INT8 export: per-tensor activation quantizers given by the
//! caller, per-output-channel symmetric weight scales computed here.

use crate::error::{ModelError, Result};

/// How the input of one Conv or Gemm is quantized: `q = saturate(round(x / scale) +
/// zero_point)`, rounding half to even, then `x' = (q - zero_point) * scale`.
///
/// Symmetric INT8 (`unsigned: false`, `zero_point: 0`) is what TensorRT requires. Its values
/// are meant to span `[-127, 127]`, but ONNX `QuantizeLinear` saturates int8 to
/// `[-128, 127]`: an input below `-127.5 * scale` becomes `-128 * scale` in the exported
/// graph where a `[-127, 127]` fake quantizer gives `-127 * scale`. With max calibration no
/// calibration value gets there, and inputs that follow a ReLU (every Conv/Gemm input but
/// the network's first) are never negative, so only out-of-range negative pixels can differ,
/// by one step. Asymmetric quantization uses uint8 (`unsigned: true`) with a zero point in
/// `[0, 255]`.
///
/// ```
/// use repopt_models::onnx::ActivationQuant;
/// let sym = ActivationQuant::symmetric(2.54);
/// assert_eq!((sym.zero_point, sym.unsigned), (0, false));
/// assert!((sym.scale - 0.02).abs() < 1e-7);
/// let asym = ActivationQuant::asymmetric(-1.0, 3.0);
/// assert!(asym.unsigned && asym.zero_point == 64);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationQuant {
    /// Step between quantized values; finite and positive.
    pub scale: f32,
    /// The quantized value of 0: in `[-128, 127]` for int8, `[0, 255]` for uint8.
    pub zero_point: i32,
    /// uint8 (asymmetric) rather than int8.
    pub unsigned: bool,
}

impl ActivationQuant {
    /// Symmetric int8 covering `[-max_abs, max_abs]` with `[-127, 127]`. A `max_abs` of 0
    /// (an input that is always 0) gets scale 1, since any positive scale represents it.
    pub fn symmetric(max_abs: f32) -> Self {
        let scale = if max_abs == 0.0 { 1.0 } else { max_abs / 127.0 };
        ActivationQuant {
            scale,
            zero_point: 0,
            unsigned: false,
        }
    }

    /// Asymmetric uint8 covering `[min, max]` widened to include 0, so that 0 (padding, a
    /// ReLU's output) is exact.
    pub fn asymmetric(min: f32, max: f32) -> Self {
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let scale = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
        let zero_point = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i32;
        ActivationQuant {
            scale,
            zero_point,
            unsigned: true,
        }
    }

    /// Checks the scale and the zero point's range; `what` names the quantizer in errors.
    pub(crate) fn check(&self, what: &str) -> Result<()> {
        if !self.scale.is_finite() || self.scale < f32::MIN_POSITIVE {
            return Err(ModelError::Export(format!(
                "the activation scale of {what} must be finite and positive (at least {:e}), got {}",
                f32::MIN_POSITIVE,
                self.scale
            )));
        }
        let (lo, hi, ty) = if self.unsigned {
            (0, 255, "uint8")
        } else {
            (-128, 127, "int8")
        };
        if !(lo..=hi).contains(&self.zero_point) {
            return Err(ModelError::Export(format!(
                "the activation zero point of {what} must be in [{lo}, {hi}] for {ty}, got {}",
                self.zero_point
            )));
        }
        Ok(())
    }
}

pub use crate::quant::weight_scales;

/// One weight's int8 value for channel scale `scale`: `clamp(round_half_even(w / scale),
/// -127, 127)`; the clamp only catches rounding of the channel's largest weight.
///
/// ```
/// use repopt_models::onnx::quantize_weight;
/// assert_eq!(quantize_weight(-1.27, 0.01), -127);
/// assert_eq!(quantize_weight(0.025, 0.01), 2);
/// ```
pub fn quantize_weight(w: f32, scale: f32) -> i8 {
    (w / scale).round_ties_even().clamp(-127.0, 127.0) as i8
}

/// `weight` quantized channel by channel with `scales` (one per equal slice).
pub(crate) fn quantize_weights(weight: &[f32], scales: &[f32]) -> Vec<i8> {
    let per = weight.len() / scales.len().max(1);
    weight
        .iter()
        .enumerate()
        .map(|(i, &w)| quantize_weight(w, scales[i / per.max(1)]))
        .collect()
}
