//! RepGhostNet / RepOpt-GhostNet: a strided 3x3 stem, ghost bottlenecks, a 1x1
//! convolution, global pooling, a 1x1 head with bias, dropout and a linear classifier, with
//! the reference implementation's state-dict names.

use std::sync::atomic::{AtomicU64, Ordering};

use repopt_tensor::ops::{self, Conv2dConfig};
use repopt_tensor::{Gpu, Tensor};

use super::config::{Bottleneck, GhostConfig, HEAD_CHANNELS};
use super::module::{GhostModule, clone_bn};
use crate::config::Mode;
use crate::error::{ModelError, Result};
use crate::init::Init;
use crate::layers::{BatchNorm, Named};
use crate::role::{Param, ParamKind, ParamRole};

/// A kernel with its batch norm.
#[derive(Clone, Debug)]
pub struct ConvBn {
    /// The kernel (`[co, ci, k, k]`, or `[c, 1, k, k]` when depthwise).
    pub kernel: Tensor,
    /// Its batch norm.
    pub bn: BatchNorm,
    depthwise: bool,
    stride: usize,
}

impl ConvBn {
    fn new(
        gpu: &Gpu,
        ci: usize,
        co: usize,
        k: usize,
        stride: usize,
        init: &mut Init,
    ) -> Result<Self> {
        Ok(ConvBn {
            kernel: Tensor::parameter(gpu, &init.kernel(co, ci, k), &[co, ci, k, k])?,
            bn: BatchNorm::new(gpu, co)?,
            depthwise: false,
            stride,
        })
    }

    fn depthwise(gpu: &Gpu, c: usize, k: usize, stride: usize, init: &mut Init) -> Result<Self> {
        Ok(ConvBn {
            kernel: Tensor::parameter(gpu, &init.kernel(c, 1, k), &[c, 1, k, k])?,
            bn: BatchNorm::new(gpu, c)?,
            depthwise: true,
            stride,
        })
    }

    fn forward(&self, x: &Tensor, training: bool, relu: bool) -> Result<Tensor> {
        let cfg = Conv2dConfig::same(self.kernel.shape()[3], self.stride);
        let y = if self.depthwise {
            ops::depthwise_conv2d(x, &self.kernel, cfg)?
        } else {
            ops::conv2d(x, &self.kernel, cfg)?
        };
        Ok(self.bn.forward(&y, training, relu)?)
    }

    fn params(&self, kernel: &str, bn: &str, out: &mut Vec<Param>) {
        let kind = match (self.depthwise, self.kernel.shape()[3]) {
            (true, _) => ParamKind::Depthwise,
            (false, 1) => ParamKind::Kernel1x1,
            _ => ParamKind::Kernel3x3,
        };
        out.push(loose(kernel, &self.kernel, kind));
        let mut bn_params = Vec::new();
        self.bn.params(bn, 0, &mut bn_params);
        out.extend(
            bn_params
                .into_iter()
                .map(|p| loose(&p.name, &p.tensor, p.role.kind)),
        );
    }

    fn copy(&self) -> Result<Self> {
        Ok(ConvBn {
            kernel: self.kernel.deep_clone()?.into_parameter(),
            bn: clone_bn(&self.bn)?,
            depthwise: self.depthwise,
            stride: self.stride,
        })
    }
}

/// A parameter outside every ghost module (no RepOptimizer block).
fn loose(name: &str, tensor: &Tensor, kind: ParamKind) -> Param {
    Param {
        name: name.into(),
        tensor: tensor.clone(),
        role: ParamRole { block: None, kind },
    }
}

/// Squeeze-excitation with a hard-sigmoid gate and 1x1 convolutions with biases.
#[derive(Clone, Debug)]
pub struct GhostSe {
    reduce: (Tensor, Tensor),
    expand: (Tensor, Tensor),
}

impl GhostSe {
    fn new(gpu: &Gpu, c: usize, hidden: usize, init: &mut Init) -> Result<Self> {
        let p = |v: Vec<f32>, s: &[usize]| Tensor::parameter(gpu, &v, s);
        Ok(GhostSe {
            reduce: (
                p(init.kernel(hidden, c, 1), &[hidden, c, 1, 1])?,
                p(init.bias(hidden, c), &[hidden])?,
            ),
            expand: (
                p(init.kernel(c, hidden, 1), &[c, hidden, 1, 1])?,
                p(init.bias(c, hidden), &[c])?,
            ),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (hidden, c) = (self.reduce.0.shape()[0], self.reduce.0.shape()[1]);
        // On a pooled 1x1 map a 1x1 convolution with bias is a linear layer.
        let pooled = ops::global_avg_pool(x)?;
        let h = ops::linear(
            &pooled,
            &self.reduce.0.reshape(&[hidden, c])?,
            &self.reduce.1,
        )?
        .relu()?;
        let gate = ops::linear(&h, &self.expand.0.reshape(&[c, hidden])?, &self.expand.1)?;
        Ok(x.scale_planes(&ops::hard_sigmoid(&gate)?)?)
    }

    fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        for (name, t, kind) in [
            ("conv_reduce.weight", &self.reduce.0, ParamKind::SeWeight),
            ("conv_reduce.bias", &self.reduce.1, ParamKind::SeBias),
            ("conv_expand.weight", &self.expand.0, ParamKind::SeWeight),
            ("conv_expand.bias", &self.expand.1, ParamKind::SeBias),
        ] {
            out.push(loose(&format!("{prefix}.{name}"), t, kind));
        }
    }
}

/// A ghost bottleneck: ghost module, optional strided depthwise convolution, optional
/// squeeze-excitation, ghost module without ReLU, plus a shortcut.
#[derive(Clone, Debug)]
pub struct GhostBottleneck {
    /// Its configuration.
    pub spec: Bottleneck,
    /// The expanding module.
    pub ghost1: GhostModule,
    /// `conv_dw` / `bn_dw` when strided.
    pub conv_dw: Option<ConvBn>,
    se: Option<GhostSe>,
    /// The projecting module.
    pub ghost2: GhostModule,
    /// Depthwise + BN, 1x1 + BN, unless the shortcut is the identity.
    shortcut: Option<(ConvBn, ConvBn)>,
}

impl GhostBottleneck {
    fn new(
        gpu: &Gpu,
        spec: &Bottleneck,
        first_module: usize,
        mode: Mode,
        init: &mut Init,
    ) -> Result<Self> {
        let n = spec.index_in_stage;
        let ghost1 = GhostModule::new(
            gpu,
            format!("{}.ghost1", spec.name),
            first_module,
            spec.input,
            spec.mid,
            true,
            2 * n - 1,
            mode,
            init,
        )?;
        let conv_dw = (spec.stride > 1)
            .then(|| ConvBn::depthwise(gpu, spec.mid, spec.kernel, spec.stride, init))
            .transpose()?;
        let se = spec
            .se_hidden
            .map(|h| GhostSe::new(gpu, spec.mid, h, init))
            .transpose()?;
        let ghost2 = GhostModule::new(
            gpu,
            format!("{}.ghost2", spec.name),
            first_module + 1,
            spec.mid,
            spec.out,
            false,
            2 * n,
            mode,
            init,
        )?;
        let shortcut = if spec.identity_shortcut() {
            None
        } else {
            Some((
                ConvBn::depthwise(gpu, spec.input, spec.kernel, spec.stride, init)?,
                ConvBn::new(gpu, spec.input, spec.out, 1, 1, init)?,
            ))
        };
        Ok(GhostBottleneck {
            spec: spec.clone(),
            ghost1,
            conv_dw,
            se,
            ghost2,
            shortcut,
        })
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let mut h = self.ghost1.forward(x, training)?;
        if let Some(dw) = &self.conv_dw {
            h = dw.forward(&h, training, false)?;
        }
        if let Some(se) = &self.se {
            h = se.forward(&h)?;
        }
        let h = self.ghost2.forward(&h, training)?;
        let residual = match &self.shortcut {
            None => x.clone(),
            Some((dw, pw)) => pw.forward(&dw.forward(x, training, false)?, training, false)?,
        };
        Ok(h.add(&residual)?)
    }

    fn param_roles(&self, out: &mut Vec<Param>) {
        let name = &self.spec.name;
        self.ghost1.param_roles(out);
        if let Some(dw) = &self.conv_dw {
            dw.params(
                &format!("{name}.conv_dw.weight"),
                &format!("{name}.bn_dw"),
                out,
            );
        }
        if let Some(se) = &self.se {
            se.params(&format!("{name}.se"), out);
        }
        self.ghost2.param_roles(out);
        if let Some((dw, pw)) = &self.shortcut {
            dw.params(
                &format!("{name}.shortcut.0.weight"),
                &format!("{name}.shortcut.1"),
                out,
            );
            pw.params(
                &format!("{name}.shortcut.2.weight"),
                &format!("{name}.shortcut.3"),
                out,
            );
        }
    }

    fn buffers(&self, out: &mut Vec<Named>) {
        let name = &self.spec.name;
        self.ghost1.buffers(out);
        if let Some(dw) = &self.conv_dw {
            dw.bn.buffers(&format!("{name}.bn_dw"), out);
        }
        self.ghost2.buffers(out);
        if let Some((dw, pw)) = &self.shortcut {
            dw.bn.buffers(&format!("{name}.shortcut.1"), out);
            pw.bn.buffers(&format!("{name}.shortcut.3"), out);
        }
    }
}

/// A GhostNet in any [`Mode`] (`repvgg` is RepGhostNet, `target` RepOpt-GhostNet).
///
/// ```no_run
/// use repopt_models::ghostnet::{GhostConfig, RepOptGhostNet};
/// use repopt_models::Mode;
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let config = GhostConfig { num_classes: 10, ..GhostConfig::preset("ghostnet-0.5x")? };
/// let model = RepOptGhostNet::new(&gpu, config, Mode::Target, 0)?;
/// let logits = model.forward(&Tensor::zeros(&gpu, &[2, 3, 32, 32])?, false)?;
/// assert_eq!(logits.shape(), &[2, 10]);
/// # Ok::<(), repopt_models::ModelError>(())
/// ```
#[derive(Debug)]
pub struct RepOptGhostNet {
    config: GhostConfig,
    mode: Mode,
    seed: u64,
    stem: ConvBn,
    /// The bottlenecks in order.
    pub bottlenecks: Vec<GhostBottleneck>,
    last: ConvBn,
    head: (Tensor, Tensor),
    classifier: (Tensor, Tensor),
    forwards: AtomicU64,
}

impl RepOptGhostNet {
    /// A freshly initialised network; `seed` fixes every initial weight and the dropout
    /// masks.
    pub fn new(gpu: &Gpu, config: GhostConfig, mode: Mode, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut init = Init::new(seed);
        let stem_c = config.stem_channels();
        let stem = ConvBn::new(gpu, config.in_channels, stem_c, 3, 2, &mut init)?;
        let mut bottlenecks = Vec::new();
        for (i, spec) in config.bottlenecks().iter().enumerate() {
            bottlenecks.push(GhostBottleneck::new(gpu, spec, 2 * i, mode, &mut init)?);
        }
        let input = bottlenecks.last().map_or(stem_c, |b| b.spec.out);
        let last_c = config.last_channels();
        let last = ConvBn::new(gpu, input, last_c, 1, 1, &mut init)?;
        let p = |v: Vec<f32>, s: &[usize]| Tensor::parameter(gpu, &v, s);
        let head = (
            p(
                init.kernel(HEAD_CHANNELS, last_c, 1),
                &[HEAD_CHANNELS, last_c, 1, 1],
            )?,
            p(init.bias(HEAD_CHANNELS, last_c), &[HEAD_CHANNELS])?,
        );
        let classes = config.num_classes;
        let classifier = (
            p(
                init.kernel(classes, HEAD_CHANNELS, 1),
                &[classes, HEAD_CHANNELS],
            )?,
            p(init.bias(classes, HEAD_CHANNELS), &[classes])?,
        );
        Ok(RepOptGhostNet {
            config,
            mode,
            seed,
            stem,
            bottlenecks,
            last,
            head,
            classifier,
            forwards: AtomicU64::new(0),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &GhostConfig {
        &self.config
    }

    /// How the ghost modules are built.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Every ghost module in order (the RepOptimizer's blocks).
    pub fn modules(&self) -> Vec<&GhostModule> {
        self.bottlenecks
            .iter()
            .flat_map(|b| [&b.ghost1, &b.ghost2])
            .collect()
    }

    /// Logits `[N, classes]`. Each training forward draws a new dropout mask from the
    /// model's seed and a count of training forwards; [`RepOptGhostNet::forward_at`] names
    /// the step instead (what a resumable trainer needs).
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let step = if training {
            self.forwards.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        self.forward_at(x, training, step)
    }

    /// Logits with the dropout mask of training step `step`.
    pub fn forward_at(&self, x: &Tensor, training: bool, step: u64) -> Result<Tensor> {
        let want = self.config.in_channels;
        if x.shape().len() != 4 || x.shape()[1] != want {
            return Err(ModelError::Config(format!(
                "the model takes [N, {want}, H, W] images, got {:?}",
                x.shape()
            )));
        }
        let mut h = self.stem.forward(x, training, true)?;
        for b in &self.bottlenecks {
            h = b.forward(&h, training)?;
        }
        let h = self.last.forward(&h, training, true)?;
        let pooled = ops::global_avg_pool(&h)?;
        let c = pooled.shape()[1];
        let h = ops::linear(
            &pooled,
            &self.head.0.reshape(&[HEAD_CHANNELS, c])?,
            &self.head.1,
        )?
        .relu()?;
        let seed = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step;
        let h = ops::dropout(&h, self.config.dropout, seed, training)?;
        Ok(ops::linear(&h, &self.classifier.0, &self.classifier.1)?)
    }

    /// Trainable tensors with names and roles; a ghost module's tensors have its index as
    /// their block.
    pub fn param_roles(&self) -> Vec<Param> {
        let mut out = Vec::new();
        self.stem.params("conv_stem.weight", "bn1", &mut out);
        for b in &self.bottlenecks {
            b.param_roles(&mut out);
        }
        let last = self.config.last_block_index();
        self.last.params(
            &format!("blocks.{last}.0.conv.weight"),
            &format!("blocks.{last}.0.bn1"),
            &mut out,
        );
        out.push(loose(
            "conv_head.weight",
            &self.head.0,
            ParamKind::Kernel1x1,
        ));
        out.push(loose("conv_head.bias", &self.head.1, ParamKind::ConvBias));
        out.push(loose(
            "classifier.weight",
            &self.classifier.0,
            ParamKind::LinearWeight,
        ));
        out.push(loose(
            "classifier.bias",
            &self.classifier.1,
            ParamKind::LinearBias,
        ));
        out
    }

    /// Trainable tensors with their state-dict names.
    pub fn parameters(&self) -> Vec<Named> {
        self.param_roles()
            .into_iter()
            .map(Param::into_named)
            .collect()
    }

    /// Parameters and buffers: the full state.
    pub fn state(&self) -> Vec<Named> {
        let mut out = self.parameters();
        self.stem.bn.buffers("bn1", &mut out);
        for b in &self.bottlenecks {
            b.buffers(&mut out);
        }
        let last = self.config.last_block_index();
        self.last
            .bn
            .buffers(&format!("blocks.{last}.0.bn1"), &mut out);
        out
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.parameters().iter().map(|(_, t)| t.numel()).sum()
    }

    /// The deploy form of a `repvgg` (RepGhostNet) or `target` model: every ghost module's
    /// cheap operation and parallel branch folded into one depthwise kernel with a bias;
    /// the same outputs in eval mode.
    pub fn to_deploy(&self) -> Result<RepOptGhostNet> {
        if !matches!(self.mode, Mode::Repvgg | Mode::Target) {
            return Err(ModelError::WrongMode {
                op: "GhostNet deploy conversion",
                expected: "repvgg or target",
                got: self.mode,
            });
        }
        let mut bottlenecks = Vec::new();
        for b in &self.bottlenecks {
            let deploy = |m: &GhostModule| -> Result<GhostModule> {
                Ok(m.to_deploy()?.expect("repvgg and target modules convert"))
            };
            bottlenecks.push(GhostBottleneck {
                spec: b.spec.clone(),
                ghost1: deploy(&b.ghost1)?,
                conv_dw: b.conv_dw.as_ref().map(ConvBn::copy).transpose()?,
                se: match &b.se {
                    None => None,
                    Some(se) => Some(GhostSe {
                        reduce: (copy(&se.reduce.0)?, copy(&se.reduce.1)?),
                        expand: (copy(&se.expand.0)?, copy(&se.expand.1)?),
                    }),
                },
                ghost2: deploy(&b.ghost2)?,
                shortcut: match &b.shortcut {
                    None => None,
                    Some((dw, pw)) => Some((dw.copy()?, pw.copy()?)),
                },
            });
        }
        Ok(RepOptGhostNet {
            config: self.config.clone(),
            mode: Mode::Deploy,
            seed: self.seed,
            stem: self.stem.copy()?,
            bottlenecks,
            last: self.last.copy()?,
            head: (copy(&self.head.0)?, copy(&self.head.1)?),
            classifier: (copy(&self.classifier.0)?, copy(&self.classifier.1)?),
            forwards: AtomicU64::new(0),
        })
    }
}

fn copy(t: &Tensor) -> Result<Tensor> {
    Ok(t.deep_clone()?.into_parameter())
}
