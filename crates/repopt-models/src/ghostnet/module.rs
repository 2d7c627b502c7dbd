//! The ghost module in every mode, and the other layers of a GhostNet bottleneck.
//!
//! A (Rep)ghost module is a 1x1 convolution with batch norm (`primary_conv`), then a
//! depthwise 3x3 "cheap operation" on its output, with a parallel branch that the mode
//! decides:
//!
//! - `target` (RepOpt-GhostNet): `BN(dwconv(x1))`, trained with a RepOptimizer;
//! - `repvgg` (RepGhostNet, the structural baseline): `BN(dwconv(x1)) + BN(x1)`;
//! - `csla` / `hs`: `BN(t * dwconv(x1) + u * x1)`, the declared block
//!   [`CslaBlock::ghost`] with t constant (`csla`) or trainable (`hs`);
//! - `deploy`: `dwconv(x1) + bias`, what `repvgg` and `target` convert to.
//!
//! then ReLU when the module has one.

use repopt_tensor::ops::{self, Conv2dConfig};
use repopt_tensor::{Gpu, Tensor};

use crate::config::Mode;
use crate::error::Result;
use crate::gr::CslaBlock;
use crate::gr::layer::{Form, GrLayer};
use crate::init::Init;
use crate::layers::{BatchNorm, Named};
use crate::role::{Param, ParamKind, ParamRole, ScaleKind};

/// The cheap operation's window (every published GhostNet uses 3).
pub const CHEAP_KERNEL: usize = 3;

/// What follows the primary convolution, by mode.
#[derive(Clone, Debug)]
pub enum Cheap {
    /// `BN(dwconv(x1))`.
    Target {
        /// `cheap_operation.0.weight` `[c, 1, 3, 3]`.
        kernel: Tensor,
        /// `final_bn`.
        bn: BatchNorm,
    },
    /// `BN(dwconv(x1)) + BN(x1)`.
    Rep {
        /// `cheap_operation.0.weight`.
        kernel: Tensor,
        /// `cheap_operation.1`.
        bn: BatchNorm,
        /// `fusion_bn`.
        fusion: BatchNorm,
    },
    /// `BN(t * dwconv(x1) + u * x1)`.
    Csla {
        /// Branch 0 `cheap`: `cheap_operation.0.weight` and t (`cheap_operation.1.weight`);
        /// branch 1 `fusion`: u (`fusion_scale.weight`).
        layer: GrLayer,
        /// `final_bn`.
        bn: BatchNorm,
    },
    /// `dwconv(x1) + bias`.
    Deploy {
        /// `cheap_operation.0.weight`.
        kernel: Tensor,
        /// `cheap_operation.0.bias`.
        bias: Tensor,
    },
}

/// A ghost module.
#[derive(Clone, Debug)]
pub struct GhostModule {
    /// State-dict prefix (`blocks.0.0.ghost1`).
    pub name: String,
    /// Index among the network's ghost modules (the RepOptimizer's block index).
    pub index: usize,
    /// `primary_conv.0.weight` `[out, in, 1, 1]`.
    pub primary: Tensor,
    /// `primary_conv.1`.
    pub primary_bn: BatchNorm,
    /// The cheap operation and its parallel branch.
    pub cheap: Cheap,
    /// ReLU after the primary convolution and at the end.
    pub relu: bool,
}

/// The Hyper-Search initial t of a module: `sqrt(2 / (n + 1))` for the n-th module of its
/// run of equal-shaped bottlenecks (two modules per bottleneck, counted from 1).
pub fn hs_initial_t(n: usize) -> f32 {
    (2.0 / (n as f64 + 1.0)).sqrt() as f32
}

impl GhostModule {
    /// A fresh module of `input -> out` channels; `n` is its position for the Hyper-Search
    /// initialisation (see [`hs_initial_t`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        name: String,
        index: usize,
        input: usize,
        out: usize,
        relu: bool,
        n: usize,
        mode: Mode,
        init: &mut Init,
    ) -> Result<Self> {
        let primary = Tensor::parameter(gpu, &init.kernel(out, input, 1), &[out, input, 1, 1])?;
        let primary_bn = BatchNorm::new(gpu, out)?;
        let k = CHEAP_KERNEL;
        let dw = init.kernel(out, 1, k);
        let dw_tensor = |gpu: &Gpu| Tensor::parameter(gpu, &dw, &[out, 1, k, k]);
        let cheap = match mode {
            Mode::Target => Cheap::Target {
                kernel: dw_tensor(gpu)?,
                bn: BatchNorm::new(gpu, out)?,
            },
            Mode::Repvgg => Cheap::Rep {
                kernel: dw_tensor(gpu)?,
                bn: BatchNorm::new(gpu, out)?,
                fusion: BatchNorm::new(gpu, out)?,
            },
            Mode::Csla | Mode::Hs => {
                let t = if mode == Mode::Hs {
                    vec![hs_initial_t(n); out]
                } else {
                    // Constants that a scale file replaces; 1 keeps a fresh model usable.
                    vec![1.0; out]
                };
                let block = CslaBlock::ghost(out, k, t);
                let form = if mode == Mode::Hs {
                    Form::HyperSearch
                } else {
                    Form::Csla
                };
                Cheap::Csla {
                    layer: GrLayer::from_branches(
                        gpu,
                        &block,
                        form,
                        &[dw.clone(), vec![1.0; out]],
                    )?,
                    bn: BatchNorm::new(gpu, out)?,
                }
            }
            Mode::Deploy => Cheap::Deploy {
                kernel: dw_tensor(gpu)?,
                bias: Tensor::parameter(gpu, &vec![0.0; out], &[out])?,
            },
        };
        Ok(GhostModule {
            name,
            index,
            primary,
            primary_bn,
            cheap,
            relu,
        })
    }

    /// Output channels.
    pub fn channels(&self) -> usize {
        self.primary.shape()[0]
    }

    /// The module's output.
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let x1 = ops::conv2d(x, &self.primary, Conv2dConfig::same(1, 1))?;
        let x1 = self.primary_bn.forward(&x1, training, self.relu)?;
        let dw = |k: &Tensor| ops::depthwise_conv2d(&x1, k, Conv2dConfig::same(CHEAP_KERNEL, 1));
        let relu = self.relu;
        match &self.cheap {
            Cheap::Target { kernel, bn } => Ok(bn.forward(&dw(kernel)?, training, relu)?),
            Cheap::Csla { layer, bn } => Ok(bn.forward(&layer.forward(&x1)?, training, relu)?),
            Cheap::Rep { kernel, bn, fusion } if relu => {
                let cheap = dw(kernel)?;
                let branches = [bn.branch(&cheap), fusion.branch(&x1)];
                Ok(ops::batch_norm2d_sum_relu(&branches, training)?)
            }
            Cheap::Rep { kernel, bn, fusion } => Ok(bn
                .forward(&dw(kernel)?, training, false)?
                .add(&fusion.forward(&x1, training, false)?)?),
            Cheap::Deploy { kernel, bias } => {
                let y = dw(kernel)?.add_channels(bias)?;
                Ok(if relu { y.relu()? } else { y })
            }
        }
    }

    /// Trainable tensors with names and roles.
    pub fn param_roles(&self, out: &mut Vec<Param>) {
        let block = self.index;
        let p = |name: &str, tensor: &Tensor, kind: ParamKind| Param {
            name: format!("{}.{name}", self.name),
            tensor: tensor.clone(),
            role: ParamRole::in_block(block, kind),
        };
        out.push(p(
            "primary_conv.0.weight",
            &self.primary,
            ParamKind::Kernel1x1,
        ));
        self.primary_bn
            .params(&format!("{}.primary_conv.1", self.name), block, out);
        match &self.cheap {
            Cheap::Target { kernel, bn } => {
                out.push(p(
                    "cheap_operation.0.weight",
                    kernel,
                    ParamKind::TargetKernel,
                ));
                bn.params(&format!("{}.final_bn", self.name), block, out);
            }
            Cheap::Rep { kernel, bn, fusion } => {
                out.push(p("cheap_operation.0.weight", kernel, ParamKind::Depthwise));
                bn.params(&format!("{}.cheap_operation.1", self.name), block, out);
                fusion.params(&format!("{}.fusion_bn", self.name), block, out);
            }
            Cheap::Csla { layer, bn } => {
                let (cheap, fusion) = (&layer.branches[0], &layer.branches[1]);
                out.push(p(
                    "cheap_operation.0.weight",
                    &cheap.kernel,
                    ParamKind::Depthwise,
                ));
                if cheap.scale.is_parameter() {
                    out.push(p(
                        "cheap_operation.1.weight",
                        &cheap.scale,
                        ParamKind::Scale(ScaleKind::Conv),
                    ));
                }
                out.push(p(
                    "fusion_scale.weight",
                    &fusion.kernel,
                    ParamKind::Scale(ScaleKind::Identity),
                ));
                bn.params(&format!("{}.final_bn", self.name), block, out);
            }
            Cheap::Deploy { kernel, bias } => {
                out.push(p("cheap_operation.0.weight", kernel, ParamKind::Depthwise));
                out.push(p("cheap_operation.0.bias", bias, ParamKind::ConvBias));
            }
        }
    }

    /// Running statistics and constant scales.
    pub fn buffers(&self, out: &mut Vec<Named>) {
        self.primary_bn
            .buffers(&format!("{}.primary_conv.1", self.name), out);
        match &self.cheap {
            Cheap::Target { bn, .. } => bn.buffers(&format!("{}.final_bn", self.name), out),
            Cheap::Rep { bn, fusion, .. } => {
                bn.buffers(&format!("{}.cheap_operation.1", self.name), out);
                fusion.buffers(&format!("{}.fusion_bn", self.name), out);
            }
            Cheap::Csla { layer, bn } => {
                let t = &layer.branches[0].scale;
                if !t.is_parameter() {
                    out.push((format!("{}.cheap_operation.1.weight", self.name), t.clone()));
                }
                bn.buffers(&format!("{}.final_bn", self.name), out);
            }
            Cheap::Deploy { .. } => {}
        }
    }

    /// The deploy form of a `repvgg` or `target` module: batch norms of the cheap
    /// operation and its parallel branch folded into one depthwise kernel with a bias.
    pub fn to_deploy(&self) -> Result<Option<GhostModule>> {
        let gpu = self.primary.gpu();
        let c = self.channels();
        let k = CHEAP_KERNEL;
        let centre = (k * k) / 2;
        let (kernel, bias) = match &self.cheap {
            Cheap::Target { kernel, bn } => {
                let (scale, shift) = f32s(bn.fold()?);
                let mut w = kernel.to_vec()?;
                for (i, v) in w.iter_mut().enumerate() {
                    *v *= scale[i / (k * k)];
                }
                (w, shift)
            }
            Cheap::Rep { kernel, bn, fusion } => {
                let (scale, shift) = f32s(bn.fold()?);
                let (fscale, fshift) = f32s(fusion.fold()?);
                let mut w = kernel.to_vec()?;
                for (i, v) in w.iter_mut().enumerate() {
                    *v *= scale[i / (k * k)];
                }
                for ch in 0..c {
                    w[ch * k * k + centre] += fscale[ch];
                }
                let b = shift.iter().zip(&fshift).map(|(a, b)| a + b).collect();
                (w, b)
            }
            Cheap::Csla { .. } | Cheap::Deploy { .. } => return Ok(None),
        };
        Ok(Some(GhostModule {
            name: self.name.clone(),
            index: self.index,
            primary: self.primary.deep_clone()?.into_parameter(),
            primary_bn: self.primary_bn.deep_clone()?,
            cheap: Cheap::Deploy {
                kernel: Tensor::parameter(gpu, &kernel, &[c, 1, k, k])?,
                bias: Tensor::parameter(gpu, &bias, &[c])?,
            },
            relu: self.relu,
        }))
    }
}

fn f32s((scale, shift): (Vec<f64>, Vec<f64>)) -> (Vec<f32>, Vec<f32>) {
    let down = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (down(scale), down(shift))
}
