//! The network: blocks, global pooling and a linear classifier, in any [`Mode`].

use std::collections::HashMap;

use repopt_tensor::ops;
use repopt_tensor::optim::ParamSpec;
use repopt_tensor::{Gpu, Tensor};

use crate::HostTensor;
use crate::block::Block;
use crate::config::{Mode, VggConfig};
use crate::error::{ModelError, Result};
use crate::init::Init;
use crate::layers::Named;
use crate::quant::qat::QatState;
use crate::role::{Param, ParamKind, ParamRole};

/// A RepVGG-style network (RepOpt-VGG in target mode).
///
/// ```no_run
/// use repopt_models::{Mode, RepOptVgg, VggConfig};
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let config = VggConfig { num_blocks: [1, 1, 1, 1], width_multipliers: [0.25; 4], num_classes: 10, ..VggConfig::preset("A0")? };
/// let model = RepOptVgg::new(&gpu, config, Mode::Target, 0)?;
/// let x = Tensor::zeros(&gpu, &[2, 3, 32, 32])?;
/// assert_eq!(model.forward(&x, true)?.shape(), &[2, 10]);
/// # Ok::<(), repopt_models::ModelError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RepOptVgg {
    config: VggConfig,
    mode: Mode,
    blocks: Vec<Block>,
    linear_weight: Tensor,
    linear_bias: Tensor,
    /// Fake quantization for quantization-aware training (deploy models only).
    qat: Option<QatState>,
}

impl RepOptVgg {
    /// A freshly initialised network; `seed` fixes every initial weight.
    pub fn new(gpu: &Gpu, config: VggConfig, mode: Mode, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut init = Init::new(seed);
        let blocks = config
            .blocks()
            .iter()
            .map(|spec| Block::new(gpu, spec, mode, config.use_se, &mut init))
            .collect::<Result<Vec<_>>>()?;
        let features = config.stage_channels()[4];
        let classes = config.num_classes;
        let linear_weight = Tensor::parameter(
            gpu,
            &init.kernel(classes, features, 1),
            &[classes, features],
        )?;
        let linear_bias = Tensor::parameter(gpu, &init.bias(classes, features), &[classes])?;
        Ok(RepOptVgg {
            config,
            mode,
            blocks,
            linear_weight,
            linear_bias,
            qat: None,
        })
    }

    /// Assembles a network from parts (structural conversion builds deploy models this way).
    pub(crate) fn from_parts(
        config: VggConfig,
        mode: Mode,
        blocks: Vec<Block>,
        linear: (Tensor, Tensor),
    ) -> Self {
        RepOptVgg {
            config,
            mode,
            blocks,
            linear_weight: linear.0,
            linear_bias: linear.1,
            qat: None,
        }
    }

    /// The architecture.
    pub fn config(&self) -> &VggConfig {
        &self.config
    }

    /// How the blocks are built.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The blocks in order.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The classifier's weight `[classes, features]` and bias.
    pub fn linear(&self) -> (&Tensor, &Tensor) {
        (&self.linear_weight, &self.linear_bias)
    }

    /// Logits `[N, classes]` for images `[N, C, H, W]`. In training mode batch norms use
    /// batch statistics and update their running statistics.
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        self.forward_at(x, training, 0)
    }

    /// [`RepOptVgg::forward`] at training step `step`, which only quantization-aware
    /// training reads (its observers may freeze at a given step).
    pub fn forward_at(&self, x: &Tensor, training: bool, step: u64) -> Result<Tensor> {
        let want = self.config.in_channels;
        if x.shape().len() != 4 || x.shape()[1] != want {
            return Err(ModelError::Config(format!(
                "the model takes [N, {want}, H, W] images, got {:?}",
                x.shape()
            )));
        }
        if let Some(q) = &self.qat {
            return crate::quant::qat::forward(self, q, x, training, step);
        }
        let mut h = x.clone();
        for block in &self.blocks {
            h = block.forward(&h, training)?;
        }
        let pooled = ops::global_avg_pool(&h)?;
        Ok(ops::linear(
            &pooled,
            &self.linear_weight,
            &self.linear_bias,
        )?)
    }

    /// Trainable tensors with their state-dict names, in a fixed order.
    pub fn parameters(&self) -> Vec<Named> {
        self.param_roles()
            .into_iter()
            .map(Param::into_named)
            .collect()
    }

    /// Trainable tensors with names and roles, in the order of [`RepOptVgg::parameters`].
    ///
    /// ```no_run
    /// use repopt_models::role::ParamKind;
    /// use repopt_models::{Mode, RepOptVgg, VggConfig};
    /// let gpu = repopt_tensor::Gpu::from_env()?;
    /// let model = RepOptVgg::new(&gpu, VggConfig::preset("B1")?, Mode::Target, 0)?;
    /// let kernels = model
    ///     .param_roles()
    ///     .into_iter()
    ///     .filter(|p| p.role.kind == ParamKind::TargetKernel)
    ///     .count();
    /// assert_eq!(kernels, model.blocks().len());
    /// # Ok::<(), repopt_models::ModelError>(())
    /// ```
    pub fn param_roles(&self) -> Vec<Param> {
        let mut out: Vec<Param> = self.blocks.iter().flat_map(Block::param_roles).collect();
        for (name, tensor, kind) in [
            (
                "linear.weight",
                &self.linear_weight,
                ParamKind::LinearWeight,
            ),
            ("linear.bias", &self.linear_bias, ParamKind::LinearBias),
        ] {
            out.push(Param {
                name: name.into(),
                tensor: tensor.clone(),
                role: ParamRole::classifier(kind),
            });
        }
        out
    }

    /// Parameters and buffers (running statistics, constant scales): the full state.
    pub fn state(&self) -> Vec<Named> {
        let mut out = self.parameters();
        out.extend(self.blocks.iter().flat_map(Block::buffers));
        if let Some(q) = &self.qat {
            out.extend(q.buffers(&crate::quant::network::layer_names(self)));
        }
        out
    }

    /// The fake-quantization state, when quantization-aware training is attached
    /// ([`RepOptVgg::attach_qat`]).
    pub fn qat(&self) -> Option<&QatState> {
        self.qat.as_ref()
    }

    pub(crate) fn set_qat(&mut self, qat: Option<QatState>) {
        self.qat = qat;
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.parameters().iter().map(|(_, t)| t.numel()).sum()
    }

    /// Overwrites the state from named host tensors. Every state tensor must be present with
    /// its exact shape; names the model does not have, or given twice, are reported too.
    pub fn load_state(&self, tensors: &[HostTensor], origin: &str) -> Result<()> {
        load_named_state(&self.state(), tensors, origin, self.mode)
    }

    /// Optimizer groups: weight decay on convolution and linear weights and on the identity
    /// scales u; none on batch norms, biases and the scales s and t (as in the reference
    /// implementation, and what CSLA = GR needs), decided by each parameter's role.
    pub fn param_specs(&self, weight_decay: f32) -> Vec<ParamSpec> {
        self.param_roles()
            .into_iter()
            .map(|p| p.spec(weight_decay))
            .collect()
    }

    /// The target-mode 3x3 kernels a RepOptimizer applies Grad Mults to, with block names.
    pub fn target_kernels(&self) -> Result<Vec<(&str, &Tensor)>> {
        self.blocks
            .iter()
            .map(|b| {
                b.target_kernel()
                    .map(|k| (b.spec.name.as_str(), k))
                    .ok_or(ModelError::WrongMode {
                        op: "target_kernels",
                        expected: "target",
                        got: self.mode,
                    })
            })
            .collect()
    }
}

/// Overwrites `state` from named host tensors: every state tensor must be present with its
/// exact shape and finite values; names the state does not have, or given twice, are
/// errors too.
pub(crate) fn load_named_state(
    state: &[Named],
    tensors: &[HostTensor],
    origin: &str,
    mode: Mode,
) -> Result<()> {
    let err = |message: String| ModelError::Checkpoint {
        path: origin.to_string(),
        message,
    };
    let mut by_name: HashMap<&str, &HostTensor> = HashMap::with_capacity(tensors.len());
    for t in tensors {
        if by_name.insert(t.name.as_str(), t).is_some() {
            return Err(err(format!("tensor '{}' is given more than once", t.name)));
        }
    }
    for (name, t) in state {
        let given = by_name.get(name.as_str()).ok_or_else(|| {
            err(format!(
                "missing tensor '{name}' (a {} model needs it)",
                mode
            ))
        })?;
        if given.shape.as_slice() != t.shape() {
            return Err(err(format!(
                "tensor '{name}' has shape {:?}, the model expects {:?}",
                given.shape,
                t.shape()
            )));
        }
        if let Some(i) = given.data.iter().position(|v| !v.is_finite()) {
            return Err(err(format!(
                "tensor '{name}' holds a non-finite value at index {i}"
            )));
        }
        t.write(&given.data)?;
    }
    let known: std::collections::HashSet<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    let mut unknown: Vec<&str> = by_name
        .keys()
        .copied()
        .filter(|k| !known.contains(k))
        .collect();
    unknown.sort();
    if let Some(first) = unknown.first() {
        return Err(err(format!(
            "unexpected tensor '{first}' ({} in all) for a {} model; was it saved from another mode or config?",
            unknown.len(),
            mode
        )));
    }
    Ok(())
}
