//! One block of a RepVGG-style network in each of its forms.

use repopt_tensor::ops::{self, Conv2dConfig};
use repopt_tensor::{Gpu, Tensor};

use crate::config::{BlockSpec, Mode};
use crate::error::Result;
use crate::init::Init;
use crate::layers::{BatchNorm, Named, SqueezeExcite};
use crate::role::{Param, ParamKind, ParamRole, ScaleKind};

/// The branches of a block, by mode.
#[derive(Clone, Debug)]
pub enum BlockKind {
    /// `ReLU(BN(conv3x3(x)))`.
    Target {
        /// `[co, ci, 3, 3]`.
        conv: Tensor,
        /// After the convolution.
        bn: BatchNorm,
    },
    /// `ReLU(BN(conv3x3 x) + BN(conv1x1 x) [+ BN(x)])`.
    Repvgg {
        /// 3x3 kernel of the dense branch.
        dense: Tensor,
        /// Its batch norm.
        dense_bn: BatchNorm,
        /// 1x1 kernel.
        one: Tensor,
        /// Its batch norm.
        one_bn: BatchNorm,
        /// The identity branch's batch norm, when shapes match.
        identity: Option<BatchNorm>,
    },
    /// `ReLU(BN(s*conv3x3 x + t*conv1x1 x [+ u*x]))` for CSLA (s, t constant) and Hyper-Search
    /// (all trainable).
    Csla {
        /// 3x3 kernel.
        conv: Tensor,
        /// s, per output channel.
        scale_conv: Tensor,
        /// 1x1 kernel.
        conv_1x1: Tensor,
        /// t, per output channel.
        scale_1x1: Tensor,
        /// u, per channel, when shapes match.
        scale_identity: Option<Tensor>,
        /// After the sum.
        bn: BatchNorm,
    },
    /// `ReLU(conv3x3(x) + bias)`: what every form converts to.
    Deploy {
        /// `[co, ci, 3, 3]`.
        weight: Tensor,
        /// `[co]`.
        bias: Tensor,
    },
}

/// A block: its place in the network, its branches and an optional SE gate.
#[derive(Clone, Debug)]
pub struct Block {
    /// Name, channels, stride.
    pub spec: BlockSpec,
    /// Branches.
    pub kind: BlockKind,
    /// Squeeze-excitation after the ReLU.
    pub se: Option<SqueezeExcite>,
}

fn param(gpu: &Gpu, data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::parameter(gpu, &data, shape)?)
}

impl Block {
    /// A freshly initialised block.
    pub fn new(
        gpu: &Gpu,
        spec: &BlockSpec,
        mode: Mode,
        use_se: bool,
        init: &mut Init,
    ) -> Result<Self> {
        let (ci, co) = (spec.in_channels, spec.out_channels);
        let kind = match mode {
            Mode::Target => BlockKind::Target {
                conv: param(gpu, init.kernel(co, ci, 3), &[co, ci, 3, 3])?,
                bn: BatchNorm::new(gpu, co)?,
            },
            Mode::Repvgg => BlockKind::Repvgg {
                dense: param(gpu, init.kernel(co, ci, 3), &[co, ci, 3, 3])?,
                dense_bn: BatchNorm::new(gpu, co)?,
                one: param(gpu, init.kernel(co, ci, 1), &[co, ci, 1, 1])?,
                one_bn: BatchNorm::new(gpu, co)?,
                identity: spec
                    .has_identity()
                    .then(|| BatchNorm::new(gpu, co))
                    .transpose()?,
            },
            Mode::Csla | Mode::Hs => {
                let s0 = if mode == Mode::Hs {
                    spec.hs_initial_scale()
                } else {
                    1.0
                };
                let scale = |v: f32| -> Result<Tensor> {
                    let t = Tensor::full(gpu, &[co], v)?;
                    Ok(if mode == Mode::Hs {
                        t.into_parameter()
                    } else {
                        t
                    })
                };
                BlockKind::Csla {
                    conv: param(gpu, init.kernel(co, ci, 3), &[co, ci, 3, 3])?,
                    scale_conv: scale(s0)?,
                    conv_1x1: param(gpu, init.kernel(co, ci, 1), &[co, ci, 1, 1])?,
                    scale_1x1: scale(s0)?,
                    scale_identity: spec
                        .has_identity()
                        .then(|| {
                            Ok::<_, crate::ModelError>(
                                Tensor::full(gpu, &[co], 1.0)?.into_parameter(),
                            )
                        })
                        .transpose()?,
                    bn: BatchNorm::new(gpu, co)?,
                }
            }
            Mode::Deploy => BlockKind::Deploy {
                weight: param(gpu, init.kernel(co, ci, 3), &[co, ci, 3, 3])?,
                bias: param(gpu, init.bias(co, ci * 9), &[co])?,
            },
        };
        let se = use_se
            .then(|| SqueezeExcite::new(gpu, co, init))
            .transpose()?;
        Ok(Block {
            spec: spec.clone(),
            kind,
            se,
        })
    }

    /// The block's mode.
    pub fn mode(&self) -> Mode {
        match &self.kind {
            BlockKind::Target { .. } => Mode::Target,
            BlockKind::Repvgg { .. } => Mode::Repvgg,
            BlockKind::Csla { scale_conv, .. } => {
                if scale_conv.is_parameter() {
                    Mode::Hs
                } else {
                    Mode::Csla
                }
            }
            BlockKind::Deploy { .. } => Mode::Deploy,
        }
    }

    /// Runs the block (batch statistics and running-stat updates when `training`).
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let s = self.spec.stride;
        let c3 = Conv2dConfig {
            stride: s,
            padding: 1,
        };
        let c1 = Conv2dConfig {
            stride: s,
            padding: 0,
        };
        let y = match &self.kind {
            BlockKind::Target { conv, bn } => {
                bn.forward(&ops::conv2d(x, conv, c3)?, training, true)?
            }
            BlockKind::Repvgg {
                dense,
                dense_bn,
                one,
                one_bn,
                identity,
            } => {
                let (y3, y1) = (ops::conv2d(x, dense, c3)?, ops::conv2d(x, one, c1)?);
                let mut branches = vec![dense_bn.branch(&y3), one_bn.branch(&y1)];
                if let Some(id) = identity {
                    branches.push(id.branch(x));
                }
                ops::batch_norm2d_sum_relu(&branches, training)?
            }
            BlockKind::Csla {
                conv,
                scale_conv,
                conv_1x1,
                scale_1x1,
                scale_identity,
                bn,
            } => {
                let (y3, y1) = (ops::conv2d(x, conv, c3)?, ops::conv2d(x, conv_1x1, c1)?);
                let mut branches = vec![(&y3, scale_conv), (&y1, scale_1x1)];
                if let Some(u) = scale_identity {
                    branches.push((x, u));
                }
                bn.forward(&Tensor::scaled_sum(&branches)?, training, true)?
            }
            BlockKind::Deploy { weight, bias } => {
                ops::conv2d(x, weight, c3)?.add_channels(bias)?.relu()?
            }
        };
        match &self.se {
            Some(se) => Ok(se.forward(&y)?),
            None => Ok(y),
        }
    }

    /// Trainable tensors, named as in the reference implementation's state dict.
    pub fn parameters(&self) -> Vec<Named> {
        self.param_roles()
            .into_iter()
            .map(Param::into_named)
            .collect()
    }

    /// Trainable tensors with names and roles, in the order of [`Block::parameters`].
    pub fn param_roles(&self) -> Vec<Param> {
        let n = &self.spec.name;
        let index = self.spec.index;
        let mut out = Vec::new();
        let push = |out: &mut Vec<Param>, name: String, tensor: &Tensor, kind: ParamKind| {
            out.push(Param {
                name,
                tensor: tensor.clone(),
                role: ParamRole::in_block(index, kind),
            })
        };
        match &self.kind {
            BlockKind::Target { conv, bn } => {
                push(
                    &mut out,
                    format!("{n}.conv.weight"),
                    conv,
                    ParamKind::TargetKernel,
                );
                bn.params(&format!("{n}.bn"), index, &mut out);
            }
            BlockKind::Repvgg {
                dense,
                dense_bn,
                one,
                one_bn,
                identity,
            } => {
                push(
                    &mut out,
                    format!("{n}.rbr_dense.conv.weight"),
                    dense,
                    ParamKind::Kernel3x3,
                );
                dense_bn.params(&format!("{n}.rbr_dense.bn"), index, &mut out);
                push(
                    &mut out,
                    format!("{n}.rbr_1x1.conv.weight"),
                    one,
                    ParamKind::Kernel1x1,
                );
                one_bn.params(&format!("{n}.rbr_1x1.bn"), index, &mut out);
                if let Some(id) = identity {
                    id.params(&format!("{n}.rbr_identity"), index, &mut out);
                }
            }
            BlockKind::Csla {
                conv,
                scale_conv,
                conv_1x1,
                scale_1x1,
                scale_identity,
                bn,
            } => {
                push(
                    &mut out,
                    format!("{n}.conv.weight"),
                    conv,
                    ParamKind::Kernel3x3,
                );
                if scale_conv.is_parameter() {
                    push(
                        &mut out,
                        format!("{n}.scale_conv.weight"),
                        scale_conv,
                        ParamKind::Scale(ScaleKind::Conv),
                    );
                }
                push(
                    &mut out,
                    format!("{n}.conv_1x1.weight"),
                    conv_1x1,
                    ParamKind::Kernel1x1,
                );
                if scale_1x1.is_parameter() {
                    push(
                        &mut out,
                        format!("{n}.scale_1x1.weight"),
                        scale_1x1,
                        ParamKind::Scale(ScaleKind::OneByOne),
                    );
                }
                if let Some(u) = scale_identity {
                    push(
                        &mut out,
                        format!("{n}.scale_identity.weight"),
                        u,
                        ParamKind::Scale(ScaleKind::Identity),
                    );
                }
                bn.params(&format!("{n}.bn"), index, &mut out);
            }
            BlockKind::Deploy { weight, bias } => {
                push(
                    &mut out,
                    format!("{n}.rbr_reparam.weight"),
                    weight,
                    ParamKind::Kernel3x3,
                );
                push(
                    &mut out,
                    format!("{n}.rbr_reparam.bias"),
                    bias,
                    ParamKind::ConvBias,
                );
            }
        }
        if let Some(se) = &self.se {
            se.params(&format!("{n}.post_se"), index, &mut out);
        }
        out
    }

    /// Non-trainable state: running statistics and CSLA's constant scales.
    pub fn buffers(&self) -> Vec<Named> {
        let n = &self.spec.name;
        let mut out = Vec::new();
        match &self.kind {
            BlockKind::Target { bn, .. } => bn.buffers(&format!("{n}.bn"), &mut out),
            BlockKind::Repvgg {
                dense_bn,
                one_bn,
                identity,
                ..
            } => {
                dense_bn.buffers(&format!("{n}.rbr_dense.bn"), &mut out);
                one_bn.buffers(&format!("{n}.rbr_1x1.bn"), &mut out);
                if let Some(id) = identity {
                    id.buffers(&format!("{n}.rbr_identity"), &mut out);
                }
            }
            BlockKind::Csla {
                scale_conv,
                scale_1x1,
                bn,
                ..
            } => {
                if !scale_conv.is_parameter() {
                    out.push((format!("{n}.scale_conv.weight"), scale_conv.clone()));
                    out.push((format!("{n}.scale_1x1.weight"), scale_1x1.clone()));
                }
                bn.buffers(&format!("{n}.bn"), &mut out);
            }
            BlockKind::Deploy { .. } => {}
        }
        out
    }

    /// The 3x3 kernel a RepOptimizer's Grad Mult applies to (target blocks only).
    pub fn target_kernel(&self) -> Option<&Tensor> {
        match &self.kind {
            BlockKind::Target { conv, .. } => Some(conv),
            _ => None,
        }
    }
}
