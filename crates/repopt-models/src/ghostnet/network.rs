//! RepGhostNet / RepOpt-GhostNet: a strided 3x3 stem, ghost bottlenecks, a 1x1
//! convolution, global pooling, a 1x1 head with bias, dropout and a linear classifier, with
//! the reference implementation's state-dict names.

use std::sync::atomic::{AtomicU64, Ordering};

use repopt_tensor::ops;
use repopt_tensor::{Gpu, Tensor};

use super::bottleneck::{ConvBn, GhostBottleneck, GhostSe, loose};
use super::config::{GhostConfig, HEAD_CHANNELS};
use super::module::GhostModule;
use crate::config::Mode;
use crate::error::{ModelError, Result};
use crate::init::Init;
use crate::layers::Named;
use crate::role::{Param, ParamKind};

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

    /// The device the network lives on.
    pub fn gpu(&self) -> &Gpu {
        self.classifier.0.gpu()
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
