//! Quantization-aware training of a deploy model: the forward pass sees INT8 rounding and
//! clipping of every quantized layer's input and weight, and the straight-through
//! estimator carries gradients past them.
//!
//! Weights are quantized per output channel with scales recomputed from the current
//! weights at every forward (`max |w_c| / 127`, on the device), so they follow the
//! weights as they train. Activations are quantized per tensor, symmetric INT8, with the
//! range a moving-average observer keeps on the device: at each training forward
//! `range = (1 - a) * range + a * max |x|` (PyTorch's moving-average observer, `a` = 0.01 by
//! default), starting from a calibrated range rather than from the first batch, so the
//! first steps already train against sensible grids. Observers can be frozen from a given
//! step (the authors' RepVGG recipe freezes them after 3/8 of the epochs); the step comes
//! from the training loop, so a resumed run freezes at the same step.
//!
//! The ranges are buffers of the model: checkpoints carry them (`quant.<layer>.act_max`)
//! and deployment ([`QuantVgg`](super::network::QuantVgg), ONNX export) uses them as a
//! calibrator would.
//!
//! ```no_run
//! use repopt_models::quant::qat::QatConfig;
//! use repopt_models::{reparam::to_deploy, Mode, RepOptVgg, VggConfig};
//! use repopt_tensor::{Gpu, Tensor};
//! let gpu = Gpu::from_env()?;
//! let config = VggConfig { num_classes: 10, ..VggConfig::preset("A0")? };
//! let mut model = to_deploy(&RepOptVgg::new(&gpu, config, Mode::Target, 0)?)?;
//! let layers = model.blocks().len() + 1;
//! model.attach_qat(QatConfig::default(), &vec![Some(4.0); layers])?;
//! let x = Tensor::full(&gpu, &[8, 3, 32, 32], 0.5)?;
//! model.forward_at(&x, true, 0)?.sum()?.backward()?;
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

use repopt_tensor::ops::{self, Conv2dConfig};
use repopt_tensor::{NoGradGuard, Tensor};
use serde::{Deserialize, Serialize};

use super::network::{ActQuant, layer_names};
use crate::block::BlockKind;
use crate::error::{ModelError, Result};
use crate::layers::Named;
use crate::{Mode, RepOptVgg};

/// How quantization-aware training observes activations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QatConfig {
    /// Weight of the newest batch's `max |x|` in each moving-average range.
    pub averaging: f32,
    /// The training step from which the ranges stay fixed (None: they move to the end).
    pub freeze_at_step: Option<u64>,
}

impl Default for QatConfig {
    fn default() -> Self {
        QatConfig {
            averaging: 0.01,
            freeze_at_step: None,
        }
    }
}

/// A deploy model's fake-quantization state: one device range per quantized layer.
#[derive(Clone, Debug)]
pub struct QatState {
    config: QatConfig,
    /// Per layer of [`layer_names`]: the observed `max |x|` `[1]`, or None for a float layer.
    ranges: Vec<Option<Tensor>>,
}

impl QatState {
    /// The observer settings.
    pub fn config(&self) -> &QatConfig {
        &self.config
    }

    /// The ranges as buffers named `quant.<layer>.act_max`.
    pub(crate) fn buffers(&self, names: &[String]) -> Vec<Named> {
        self.ranges
            .iter()
            .zip(names)
            .filter_map(|(r, n)| {
                r.as_ref()
                    .map(|r| (format!("quant.{n}.act_max"), r.clone()))
            })
            .collect()
    }

    /// Which layers are quantized (the others stay float), in [`layer_names`] order.
    pub fn quantized(&self) -> Vec<bool> {
        self.ranges.iter().map(Option::is_some).collect()
    }

    /// The current ranges, read back (None: float layer).
    pub fn ranges(&self) -> Result<Vec<Option<f32>>> {
        self.ranges
            .iter()
            .map(|r| r.as_ref().map(|r| Ok(r.to_vec()?[0])).transpose())
            .collect()
    }

    /// Symmetric INT8 activation quantizers from the current ranges, as deployment uses
    /// them.
    pub fn act_quants(&self) -> Result<Vec<Option<ActQuant>>> {
        Ok(self
            .ranges()?
            .into_iter()
            .map(|r| r.map(ActQuant::symmetric))
            .collect())
    }
}

impl RepOptVgg {
    /// Makes this deploy model train with INT8 fake quantization: `ranges` has one entry
    /// per layer of [`layer_names`] (each block, then the classifier), the starting range
    /// `max |x|` of its input, or None to keep that layer (input and weight) in float.
    pub fn attach_qat(&mut self, config: QatConfig, ranges: &[Option<f32>]) -> Result<()> {
        if self.mode() != Mode::Deploy {
            return Err(ModelError::WrongMode {
                op: "quantization-aware training",
                expected: "deploy",
                got: self.mode(),
            });
        }
        let names = layer_names(self);
        if ranges.len() != names.len() {
            return Err(ModelError::Config(format!(
                "{} starting ranges for {} layers ({})",
                ranges.len(),
                names.len(),
                names.join(", ")
            )));
        }
        if !(config.averaging > 0.0 && config.averaging <= 1.0) {
            return Err(ModelError::Config(format!(
                "the observers' averaging constant must be in (0, 1], got {}",
                config.averaging
            )));
        }
        let gpu = self.linear().0.gpu().clone();
        let mut tensors = Vec::with_capacity(ranges.len());
        for (r, name) in ranges.iter().zip(&names) {
            tensors.push(match r {
                None => None,
                Some(r) if r.is_finite() && *r > 0.0 => {
                    Some(Tensor::from_slice(&gpu, &[*r], &[1])?)
                }
                Some(r) => {
                    return Err(ModelError::Config(format!(
                        "layer {name}: starting range {r} must be positive and finite (keep an \
                         all-zero layer in float)"
                    )));
                }
            });
        }
        self.set_qat(Some(QatState {
            config,
            ranges: tensors,
        }));
        Ok(())
    }
}

/// `x` snapped to the symmetric INT8 grid of `range` (a `[1]` device tensor), with the
/// straight-through gradient: per-channel fake quantization of `x` seen as one channel, so
/// the scale never leaves the device.
fn fake_quant_act(x: &Tensor, range: &Tensor) -> Result<Tensor> {
    let scale = {
        let _g = NoGradGuard::new();
        range.scale(1.0 / 127.0)?
    };
    let flat = x.reshape(&[1, x.numel()])?;
    Ok(ops::fake_quant_per_channel(&flat, &scale)?.reshape(x.shape())?)
}

/// `w` on its per-channel INT8 grids, with scales from its current values.
fn fake_quant_weight(w: &Tensor) -> Result<Tensor> {
    let scales = {
        let _g = NoGradGuard::new();
        ops::abs_max_per_channel(w)?.scale(1.0 / 127.0)?
    };
    Ok(ops::fake_quant_per_channel(w, &scales)?)
}

/// Moves `range` towards the batch's `max |x|` (no gradient).
fn observe(range: &Tensor, x: &Tensor, averaging: f32) -> Result<()> {
    let _g = NoGradGuard::new();
    let seen = ops::abs_max_per_channel(&x.reshape(&[1, x.numel()])?)?;
    ops::elementwise::axpby_inplace(range, 1.0 - averaging, &seen, averaging)?;
    Ok(())
}

/// The forward pass of a deploy model with fake quantization; observers move in training
/// mode before `state.config.freeze_at_step`.
pub(crate) fn forward(
    model: &RepOptVgg,
    state: &QatState,
    x: &Tensor,
    training: bool,
    step: u64,
) -> Result<Tensor> {
    let moving = training && state.config.freeze_at_step.is_none_or(|f| step < f);
    let quantize = |i: usize, h: &Tensor, w: &Tensor| -> Result<(Tensor, Tensor)> {
        match &state.ranges[i] {
            None => Ok((h.clone(), w.clone())),
            Some(range) => {
                if moving {
                    observe(range, h, state.config.averaging)?;
                }
                Ok((fake_quant_act(h, range)?, fake_quant_weight(w)?))
            }
        }
    };
    let mut h = x.clone();
    for (i, b) in model.blocks().iter().enumerate() {
        let BlockKind::Deploy { weight, bias } = &b.kind else {
            unreachable!("fake quantization attaches to deploy models only");
        };
        let (hq, wq) = quantize(i, &h, weight)?;
        let cfg = Conv2dConfig {
            stride: b.spec.stride,
            padding: 1,
        };
        h = ops::conv2d(&hq, &wq, cfg)?.add_channels(bias)?.relu()?;
        if let Some(se) = &b.se {
            h = se.forward(&h)?;
        }
    }
    let pooled = ops::global_avg_pool(&h)?;
    let (lw, lb) = model.linear();
    let (pq, wq) = quantize(model.blocks().len(), &pooled, lw)?;
    Ok(ops::linear(&pq, &wq, lb)?)
}
