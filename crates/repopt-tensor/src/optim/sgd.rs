//! SGD as `torch.optim.SGD`: fused kernels, each updating several parameter tensors.

use super::multi::{self, Batches, Entry};
use super::{GradMult, Optimizer, ParamSpec, check_specs, launch_fused_step, parse_index, unfused};
use crate::error::{Error, Result};
use crate::kernels::optim::{self as k, OptimParams};
use crate::tensor::Tensor;

/// Which kernels perform an SGD step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpdateKernels {
    /// Fused kernels that read w, g, M, buf once and write w, buf once, updating up to
    /// eight tensors per dispatch (seven with the RepOptimizer's structured Grad Mult; a
    /// dense Grad Mult gets a dispatch of its own).
    #[default]
    Fused,
    /// The fused kernel for every tensor on its own (for comparison).
    FusedPerTensor,
    /// Separate multiply, decay, momentum, nesterov and update kernels (what an
    /// op-by-op framework runs); kept as the benchmark baseline.
    Unfused,
}

/// SGD hyper-parameters (the learning rate is given to each `step`, so schedules need no
/// optimizer state).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor (0 disables the buffer).
    pub momentum: f32,
    /// Dampening of the momentum input.
    pub dampening: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl Default for SgdConfig {
    /// Momentum 0.9 with nesterov, as in the paper.
    fn default() -> Self {
        SgdConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
        }
    }
}

/// SGD with momentum, nesterov, per-parameter weight decay and Grad Mults.
///
/// ```no_run
/// use repopt_tensor::{optim::{GradMult, Optimizer, ParamSpec, Sgd, SgdConfig}, Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let w = Tensor::parameter(&gpu, &[1.0, 2.0], &[2])?;
/// let mult = Tensor::from_slice(&gpu, &[2.0, 0.5], &[2])?;
/// let spec = ParamSpec { tensor: w.clone(), weight_decay: 1e-4, grad_mult: Some(GradMult::Dense(mult)) };
/// let mut opt = Sgd::new(vec![spec], SgdConfig::default())?;
/// w.mul(&w)?.sum()?.backward()?;
/// opt.step(0.1)?;
/// opt.zero_grad();
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub struct Sgd {
    params: Vec<ParamSpec>,
    buffers: Vec<Option<Tensor>>,
    config: SgdConfig,
    kernels: UpdateKernels,
    steps: u64,
    batches: Batches,
}

impl Sgd {
    /// An SGD optimizer over `params`.
    pub fn new(params: Vec<ParamSpec>, config: SgdConfig) -> Result<Self> {
        check_specs("Sgd::new", &params)?;
        let buffers = vec![None; params.len()];
        Ok(Sgd {
            params,
            buffers,
            config,
            kernels: UpdateKernels::Fused,
            steps: 0,
            batches: Batches::default(),
        })
    }

    /// Chooses fused (default) or unfused update kernels.
    pub fn with_kernels(mut self, kernels: UpdateKernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// Hyper-parameters.
    pub fn config(&self) -> SgdConfig {
        self.config
    }

    fn step_fused(
        &self,
        p: &ParamSpec,
        g: &Tensor,
        buf: &Tensor,
        first: bool,
        lr: f32,
    ) -> Result<()> {
        let w = &p.tensor;
        let n4 = w.numel().div_ceil(4);
        let mut params = OptimParams {
            n4: n4 as u32,
            first: first as u32,
            nesterov: self.config.nesterov as u32,
            lr,
            momentum: self.config.momentum,
            weight_decay: p.weight_decay,
            dampening: self.config.dampening,
            ..Default::default()
        };
        launch_fused_step(
            (&k::SGD_STEP, &k::SGD_STEP_CONV3X3),
            w,
            g,
            p.grad_mult.as_ref(),
            &mut params,
            &[buf.buffer()],
        )
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, lr: f32) -> Result<()> {
        let _guard = crate::NoGradGuard::new();
        for i in 0..self.params.len() {
            let p = &self.params[i];
            let Some(g) = p.tensor.grad() else { continue };
            let first = self.buffers[i].is_none();
            let b = match &self.buffers[i] {
                Some(b) => b.clone(),
                None => {
                    let b = Tensor::zeros(p.tensor.gpu(), p.tensor.shape())?;
                    self.buffers[i] = Some(b.clone());
                    b
                }
            };
            match self.kernels {
                UpdateKernels::Fused if multi::takes(p) => {
                    let structured = match &p.grad_mult {
                        Some(GradMult::Conv3x3 { factors, identity }) => {
                            Some((factors.clone(), *identity))
                        }
                        _ => None,
                    };
                    let entry = Entry {
                        w: p.tensor.clone(),
                        g,
                        m: b,
                        weight_decay: p.weight_decay,
                        structured,
                    };
                    self.batches.push(entry, first, &self.config, lr)?;
                }
                UpdateKernels::Fused | UpdateKernels::FusedPerTensor => {
                    self.step_fused(p, &g, &b, first, lr)?
                }
                UpdateKernels::Unfused => unfused::sgd_step(&self.config, p, &g, &b, first, lr)?,
            }
        }
        self.batches.finish(&self.config, lr)?;
        self.steps += 1;
        Ok(())
    }

    fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.buffers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                b.as_ref()
                    .map(|b| (format!("momentum_buffer.{i}"), b.clone()))
            })
            .collect()
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn load_state(&mut self, tensors: &[(String, Vec<f32>)], steps: u64) -> Result<()> {
        for (name, data) in tensors {
            let i = parse_index(name, "momentum_buffer.")?;
            let p = self.params.get(i).ok_or_else(|| {
                Error::invalid(
                    "Sgd::load_state",
                    format!("{name}: only {} parameters", self.params.len()),
                )
            })?;
            self.buffers[i] = Some(Tensor::from_slice(p.tensor.gpu(), data, p.tensor.shape())?);
        }
        self.steps = steps;
        Ok(())
    }
}
