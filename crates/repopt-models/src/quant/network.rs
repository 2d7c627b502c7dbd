//! A deploy-form RepOpt-VGG with INT8 fake quantization on every convolution's and the
//! classifier's input and weight, and the observers that calibrate it.
//!
//! Weights are symmetric INT8 per output channel (`[-127, 127]`, scale `max |w_c| / 127`);
//! activations per tensor, symmetric INT8 or asymmetric UINT8, with ranges from a
//! [`Calibrator`]. Squeeze-excitation gates, where a model has them, stay in float.
//!
//! ```no_run
//! use repopt_models::quant::network::{ActScheme, Observed, QuantVgg};
//! use repopt_models::quant::calibrate::Calibrator;
//! use repopt_models::{reparam::to_deploy, Mode, RepOptVgg, VggConfig};
//! use repopt_tensor::{Gpu, Tensor};
//! let gpu = Gpu::from_env()?;
//! let config = VggConfig { num_classes: 10, ..VggConfig::preset("A0")? };
//! let deploy = to_deploy(&RepOptVgg::new(&gpu, config, Mode::Target, 0)?)?;
//! let batches = vec![Tensor::full(&gpu, &[8, 3, 32, 32], 0.5)?];
//! let observed = Observed::gather(&deploy, &batches)?;
//! let acts = observed.calibrate(Calibrator::Entropy, ActScheme::Symmetric, &[])?;
//! let int8 = QuantVgg::new(&deploy, acts)?;
//! let logits = int8.forward(&batches[0])?;
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

use repopt_tensor::ops::{self, Conv2dConfig};
use repopt_tensor::{NoGradGuard, Tensor};
use serde::Serialize;

use super::calibrate::{BINS, Calibrator, Histogram};
use super::weight_scales;
use crate::block::BlockKind;
use crate::error::{ModelError, Result};
use crate::{Mode, RepOptVgg};

/// How activations are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ActScheme {
    /// INT8 in `[-127, 127]`, zero point 0.
    Symmetric,
    /// UINT8 in `[0, 255]` with a zero point (all of it for the non-negative inputs after
    /// ReLU).
    Asymmetric,
}

/// One layer's activation quantizer: `q = clamp(round(x / scale) + zero_point, qmin, qmax)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ActQuant {
    /// Step between levels.
    pub scale: f32,
    /// The level that represents 0.
    pub zero_point: i32,
    /// Lowest level.
    pub qmin: i32,
    /// Highest level.
    pub qmax: i32,
}

impl ActQuant {
    /// Symmetric INT8 clipping at `threshold`.
    pub fn symmetric(threshold: f32) -> Self {
        ActQuant {
            scale: threshold / 127.0,
            zero_point: 0,
            qmin: -127,
            qmax: 127,
        }
    }

    /// UINT8 over `[min(lo, 0), threshold]` (0 must be exact: padding and ReLU produce it).
    pub fn asymmetric(lo: f32, threshold: f32) -> Self {
        let lo = lo.min(0.0).max(-threshold);
        let scale = (threshold - lo) / 255.0;
        ActQuant {
            scale,
            zero_point: (-lo / scale).round() as i32,
            qmin: 0,
            qmax: 255,
        }
    }
}

/// What the calibration set showed at each quantized layer's input, in network order
/// (blocks, then the classifier).
#[derive(Clone, Debug)]
pub struct Observed {
    /// Layer names (`stage0`, ..., `linear`).
    pub layers: Vec<String>,
    /// The smallest value seen per layer.
    pub min: Vec<f32>,
    /// Magnitude histograms per layer over `[0, max |x|]`.
    pub histograms: Vec<Histogram>,
}

fn check_deploy(model: &RepOptVgg) -> Result<()> {
    if model.mode() != Mode::Deploy {
        return Err(ModelError::WrongMode {
            op: "INT8 quantization",
            expected: "deploy",
            got: model.mode(),
        });
    }
    Ok(())
}

/// The names of the layers a deploy model quantizes.
pub fn layer_names(model: &RepOptVgg) -> Vec<String> {
    let mut names: Vec<String> = model.blocks().iter().map(|b| b.spec.name.clone()).collect();
    names.push("linear".into());
    names
}

/// The float forward pass, calling `seen(layer, input)` with each quantized layer's input.
fn forward_observed(
    model: &RepOptVgg,
    x: &Tensor,
    seen: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
) -> Result<()> {
    let mut h = x.clone();
    for (i, b) in model.blocks().iter().enumerate() {
        seen(i, &h)?;
        h = b.forward(&h, false)?;
    }
    seen(model.blocks().len(), &ops::global_avg_pool(&h)?)
}

impl Observed {
    /// Runs the float deploy model over the calibration batches twice: once for each
    /// layer's range, once for its magnitude histogram (on the device; only the counts come
    /// back).
    pub fn gather(model: &RepOptVgg, batches: &[Tensor]) -> Result<Self> {
        check_deploy(model)?;
        if batches.is_empty() {
            return Err(ModelError::Config(
                "calibration needs at least one batch of images".into(),
            ));
        }
        let _g = NoGradGuard::new();
        let layers = layer_names(model);
        let n = layers.len();
        let gpu = model.linear().0.gpu();
        // Each layer's range is folded on the device over every batch: one read-back per
        // layer at the end, none per batch.
        let ranges: Vec<Tensor> = (0..n)
            .map(|_| Tensor::from_slice(gpu, &[f32::INFINITY, f32::NEG_INFINITY], &[2]))
            .collect::<repopt_tensor::Result<_>>()?;
        for x in batches {
            forward_observed(model, x, &mut |i, t| Ok(ops::min_max_into(t, &ranges[i])?))?;
        }
        let (mut lo, mut hi) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for r in &ranges {
            let v = r.to_vec()?;
            lo.push(v[0]);
            hi.push(v[0].abs().max(v[1].abs()));
        }
        for (i, (a, b)) in lo.iter().zip(&hi).enumerate() {
            if !(a.is_finite() && b.is_finite()) {
                return Err(ModelError::Config(format!(
                    "calibration: the input of layer {} holds non-finite values",
                    layers[i]
                )));
            }
        }
        let counts: Vec<Tensor> = (0..n)
            .map(|_| Tensor::from_u32(gpu, &[0; BINS], &[BINS]))
            .collect::<repopt_tensor::Result<_>>()?;
        for x in batches {
            forward_observed(model, x, &mut |i, t| {
                // An all-zero input has no range; its histogram is all in the first bin.
                let top = if hi[i] > 0.0 { hi[i] } else { 1.0 };
                ops::histogram_into(t, 0.0, top, true, &counts[i])?;
                Ok(())
            })?;
        }
        let mut histograms = Vec::with_capacity(n);
        for (i, c) in counts.iter().enumerate() {
            histograms.push(Histogram {
                max: hi[i],
                counts: c.to_vec_u32()?.into_iter().map(u64::from).collect(),
            });
        }
        Ok(Observed {
            layers,
            min: lo,
            histograms,
        })
    }

    /// Activation quantizers for every layer by `calibrator`, `None` for the layers kept in
    /// float (indices into [`Observed::layers`]).
    pub fn calibrate(
        &self,
        calibrator: Calibrator,
        scheme: ActScheme,
        keep_float: &[usize],
    ) -> Result<Vec<Option<ActQuant>>> {
        Ok(self
            .thresholds(calibrator, keep_float)?
            .into_iter()
            .zip(&self.min)
            .map(|(t, &lo)| {
                t.map(|t| match scheme {
                    ActScheme::Symmetric => ActQuant::symmetric(t),
                    ActScheme::Asymmetric => ActQuant::asymmetric(lo, t),
                })
            })
            .collect())
    }

    /// Each layer's clipping threshold by `calibrator`, `None` for the layers kept in float
    /// (indices into [`Observed::layers`]).
    pub fn thresholds(
        &self,
        calibrator: Calibrator,
        keep_float: &[usize],
    ) -> Result<Vec<Option<f32>>> {
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, h) in self.histograms.iter().enumerate() {
            if keep_float.contains(&i) {
                out.push(None);
                continue;
            }
            let t = calibrator
                .threshold(h)
                .map_err(|e| ModelError::Config(format!("layer {}: {e}", self.layers[i])))?;
            out.push(Some(t));
        }
        Ok(out)
    }
}

/// A deploy model evaluated with INT8 fake quantization.
pub struct QuantVgg<'a> {
    model: &'a RepOptVgg,
    acts: Vec<Option<ActQuant>>,
    /// Fake-quantized weights per layer (None: float), computed once.
    weights: Vec<Option<Tensor>>,
}

impl<'a> QuantVgg<'a> {
    /// Quantizes `model` (deploy mode) with one activation quantizer per layer of
    /// [`layer_names`] (`None`: that layer, input and weight, stays float).
    pub fn new(model: &'a RepOptVgg, acts: Vec<Option<ActQuant>>) -> Result<Self> {
        check_deploy(model)?;
        let names = layer_names(model);
        if acts.len() != names.len() {
            return Err(ModelError::Config(format!(
                "{} activation quantizers for {} layers ({})",
                acts.len(),
                names.len(),
                names.join(", ")
            )));
        }
        for (a, name) in acts.iter().zip(&names) {
            if let Some(a) = a
                && !(a.scale.is_finite() && a.scale > 0.0)
            {
                return Err(ModelError::Config(format!(
                    "layer {name}: activation scale {} must be positive and finite",
                    a.scale
                )));
            }
        }
        let _g = NoGradGuard::new();
        let mut weights = Vec::with_capacity(acts.len());
        let kernels = model
            .blocks()
            .iter()
            .map(|b| match &b.kind {
                BlockKind::Deploy { weight, .. } => weight.clone(),
                _ => unreachable!("checked deploy mode"),
            })
            .chain(std::iter::once(model.linear().0.clone()));
        for (w, a) in kernels.zip(&acts) {
            weights.push(match a {
                None => None,
                Some(_) => {
                    let co = w.shape()[0];
                    let scales = weight_scales(&w.to_vec()?, co);
                    let s = Tensor::from_slice(w.gpu(), &scales, &[co])?;
                    Some(ops::fake_quant_per_channel(&w, &s)?)
                }
            });
        }
        Ok(QuantVgg {
            model,
            acts,
            weights,
        })
    }

    /// The activation quantizers.
    pub fn activations(&self) -> &[Option<ActQuant>] {
        &self.acts
    }

    /// Logits with fake quantization (evaluation mode).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _g = NoGradGuard::new();
        let fq = |t: &Tensor, a: &Option<ActQuant>| -> Result<Tensor> {
            Ok(match a {
                Some(a) => ops::fake_quant_per_tensor(t, a.scale, a.zero_point, a.qmin, a.qmax)?,
                None => t.clone(),
            })
        };
        let mut h = x.clone();
        for (i, b) in self.model.blocks().iter().enumerate() {
            let BlockKind::Deploy { weight, bias } = &b.kind else {
                unreachable!("checked deploy mode");
            };
            let w = self.weights[i].as_ref().unwrap_or(weight);
            let cfg = Conv2dConfig {
                stride: b.spec.stride,
                padding: 1,
            };
            h = ops::conv2d(&fq(&h, &self.acts[i])?, w, cfg)?
                .add_channels(bias)?
                .relu()?;
            if let Some(se) = &b.se {
                h = se.forward(&h)?;
            }
        }
        let last = self.acts.len() - 1;
        let pooled = fq(&ops::global_avg_pool(&h)?, &self.acts[last])?;
        let (lw, lb) = self.model.linear();
        let w = self.weights[last].as_ref().unwrap_or(lw);
        Ok(ops::linear(&pooled, w, lb)?)
    }
}
