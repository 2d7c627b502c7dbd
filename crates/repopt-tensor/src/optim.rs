//! Optimizers whose whole update is one fused kernel per parameter tensor, each accepting an
//! optional per-element gradient multiplier (the RepOptimizer's Grad Mult).
//!
//! [`Sgd`] follows `torch.optim.SGD` (momentum, dampening, nesterov, weight decay added to
//! the gradient) with the multiplier applied before the weight decay, which is the order
//! that keeps a RepOptimizer exactly equivalent to training the multi-branch model.
//! [`AdamW`] follows `torch.optim.AdamW` (decoupled decay). [`UpdateKernels::Unfused`] runs
//! SGD as separate multiply, decay, momentum and update kernels, for benchmarks.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::launch::shaders::{ELEMENTWISE, OPTIM};
use crate::ops::elementwise::{ElementwiseParams, axpby_inplace, scale_by_device_scalar, sum_rows};
use crate::ops::groups;
use crate::tensor::Tensor;

/// A per-element gradient multiplier.
#[derive(Clone, Debug)]
pub enum GradMult {
    /// Any multiplier, as a tensor of the parameter's shape.
    Dense(Tensor),
    /// The RepOptimizer's multiplier of a `[co, ci, 3, 3]` kernel, computed in the update
    /// kernel from `2 * co` factors instead of stored:
    /// `M[c, d, h, w] = f[c] + (centre ? f[co + c] : 0) + (centre && c == d && identity ? 1 : 0)`.
    Conv3x3 {
        /// `[2 * co]`: the per-channel term, then the centre term.
        factors: Tensor,
        /// Whether the diagonal centre gets the identity branch's 1.
        identity: bool,
    },
}

impl GradMult {
    /// The multiplier as a dense tensor of `shape` (computed on the device for
    /// [`GradMult::Conv3x3`]).
    pub fn to_dense(&self, shape: &[usize]) -> Result<Tensor> {
        match self {
            GradMult::Dense(t) => Ok(t.clone()),
            GradMult::Conv3x3 { factors, identity } => {
                let (co, row) = conv3x3_dims("GradMult::to_dense", shape, factors)?;
                let gpu = factors.gpu();
                let dense = Tensor::empty(gpu, shape, crate::DType::F32)?;
                let params = OptimParams {
                    row: row as u32,
                    rows: co as u32,
                    identity: *identity as u32,
                    ..Default::default()
                };
                gpu.launch(
                    &OPTIM,
                    "expand_conv3x3_mult",
                    bytemuck::bytes_of(&params),
                    &[factors.buffer(), dense.buffer()],
                    [groups(row, 256), co as u32, 1],
                );
                Ok(dense)
            }
        }
    }
}

/// `(co, ci * 9)` of a 3x3 kernel shape whose factors hold `2 * co` values.
fn conv3x3_dims(what: &'static str, shape: &[usize], factors: &Tensor) -> Result<(usize, usize)> {
    if shape.len() != 4 || shape[2] != 3 || shape[3] != 3 || factors.numel() != 2 * shape[0] {
        return Err(Error::shape(
            what,
            format!(
                "a structured Grad Mult needs a [co, ci, 3, 3] parameter and 2 * co factors; got {shape:?} and {} factors",
                factors.numel()
            ),
        ));
    }
    Ok((shape[0], shape[1] * 9))
}

/// One parameter as an optimizer sees it.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    /// The parameter (a leaf tensor).
    pub tensor: Tensor,
    /// Weight decay for this tensor (0 for BN parameters, biases, ...).
    pub weight_decay: f32,
    /// Per-element gradient multiplier.
    pub grad_mult: Option<GradMult>,
}

impl ParamSpec {
    /// A parameter with weight decay and no multiplier.
    pub fn new(tensor: Tensor, weight_decay: f32) -> Self {
        ParamSpec {
            tensor,
            weight_decay,
            grad_mult: None,
        }
    }
}

fn check_specs(what: &'static str, params: &[ParamSpec]) -> Result<()> {
    for (i, p) in params.iter().enumerate() {
        if !p.tensor.is_parameter() {
            return Err(Error::invalid(
                what,
                format!("entry {i} is not a parameter (leaf requiring grad)"),
            ));
        }
        match &p.grad_mult {
            Some(GradMult::Dense(m)) => {
                if m.shape() != p.tensor.shape() {
                    return Err(Error::shape(
                        what,
                        format!(
                            "grad mult of entry {i} has shape {:?}, parameter {:?}",
                            m.shape(),
                            p.tensor.shape()
                        ),
                    ));
                }
                p.tensor.same_gpu(what, m)?;
            }
            Some(GradMult::Conv3x3 { factors, .. }) => {
                conv3x3_dims(what, p.tensor.shape(), factors)?;
                p.tensor.same_gpu(what, factors)?;
            }
            None => {}
        }
    }
    Ok(())
}

/// Which kernels perform an SGD step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpdateKernels {
    /// One kernel per parameter tensor: read w, g, M, buf once; write w, buf once.
    #[default]
    Fused,
    /// Separate multiply, decay, momentum, nesterov and update kernels (what an
    /// op-by-op framework runs); kept as the benchmark baseline.
    Unfused,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct OptimParams {
    n4: u32,
    has_mult: u32,
    first: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    dampening: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bias_correction1: f32,
    bias_correction2: f32,
    row: u32,
    rows: u32,
    identity: u32,
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

/// The optimizer interface the trainer uses.
pub trait Optimizer {
    /// Applies one update with learning rate `lr` to every parameter that has a gradient.
    fn step(&mut self, lr: f32) -> Result<()>;
    /// Clears every parameter's gradient.
    fn zero_grad(&self);
    /// Parameters in order.
    fn params(&self) -> &[ParamSpec];
    /// Named state tensors (momentum buffers, moments), for checkpoints.
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Steps taken so far.
    fn steps(&self) -> u64;
    /// Restores state saved by [`Optimizer::state`]: tensors by name and the step count.
    fn load_state(&mut self, tensors: &[(String, Vec<f32>)], steps: u64) -> Result<()>;
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

    fn step_fused(&self, p: &ParamSpec, g: &Tensor, buf: &Tensor, first: bool, lr: f32) {
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
            ("sgd_step", "sgd_step_conv3x3"),
            w,
            g,
            p.grad_mult.as_ref(),
            &mut params,
            &[buf.buffer()],
        );
    }

    fn step_unfused(
        &self,
        p: &ParamSpec,
        g: &Tensor,
        buf: &Tensor,
        first: bool,
        lr: f32,
    ) -> Result<()> {
        let w = &p.tensor;
        let c = &self.config;
        let d = match &p.grad_mult {
            Some(m) => g.detach().mul(&m.to_dense(w.shape())?)?,
            None => g.deep_clone()?,
        };
        axpby_inplace(&d, 1.0, &w.detach(), p.weight_decay)?;
        if first {
            buf.copy_from(&d)?;
        } else {
            axpby_inplace(buf, c.momentum, &d, 1.0 - c.dampening)?;
        }
        if c.nesterov {
            axpby_inplace(&d, 1.0, buf, c.momentum)?;
            axpby_inplace(&w.detach(), 1.0, &d, -lr)
        } else {
            axpby_inplace(&w.detach(), 1.0, buf, -lr)
        }
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
                UpdateKernels::Fused => self.step_fused(p, &g, &b, first, lr),
                UpdateKernels::Unfused => self.step_unfused(p, &g, &b, first, lr)?,
            }
        }
        self.steps += 1;
        Ok(())
    }

    fn zero_grad(&self) {
        for p in &self.params {
            p.tensor.zero_grad();
        }
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

fn parse_index(name: &str, prefix: &str) -> Result<usize> {
    name.strip_prefix(prefix)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Error::invalid(
                "load_state",
                format!("unexpected state tensor '{name}' (expected {prefix}<index>)"),
            )
        })
}

/// AdamW hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// AdamW (decoupled weight decay) with Grad Mults, one fused kernel per parameter.
///
/// ```no_run
/// use repopt_tensor::{optim::{AdamW, AdamWConfig, Optimizer, ParamSpec}, Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let w = Tensor::parameter(&gpu, &[1.0, 2.0], &[2])?;
/// let mut opt = AdamW::new(vec![ParamSpec::new(w.clone(), 0.05)], AdamWConfig::default())?;
/// w.mul(&w)?.sum()?.backward()?;
/// opt.step(1e-3)?;
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub struct AdamW {
    params: Vec<ParamSpec>,
    moments: Vec<Option<(Tensor, Tensor)>>,
    config: AdamWConfig,
    steps: u64,
}

impl AdamW {
    /// An AdamW optimizer over `params`.
    pub fn new(params: Vec<ParamSpec>, config: AdamWConfig) -> Result<Self> {
        check_specs("AdamW::new", &params)?;
        let moments = vec![None; params.len()];
        Ok(AdamW {
            params,
            moments,
            config,
            steps: 0,
        })
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, lr: f32) -> Result<()> {
        let _guard = crate::NoGradGuard::new();
        self.steps += 1;
        let t = self.steps as i32;
        let c = self.config;
        for (p, moments) in self.params.iter().zip(self.moments.iter_mut()) {
            let Some(g) = p.tensor.grad() else { continue };
            let (m, v) = match moments {
                Some(mv) => mv.clone(),
                None => {
                    let gpu = p.tensor.gpu();
                    let mv = (
                        Tensor::zeros(gpu, p.tensor.shape())?,
                        Tensor::zeros(gpu, p.tensor.shape())?,
                    );
                    *moments = Some(mv.clone());
                    mv
                }
            };
            let w = &p.tensor;
            let n4 = w.numel().div_ceil(4);
            let mut params = OptimParams {
                n4: n4 as u32,
                lr,
                weight_decay: p.weight_decay,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                bias_correction1: 1.0 - c.beta1.powi(t),
                bias_correction2: 1.0 - c.beta2.powi(t),
                ..Default::default()
            };
            launch_fused_step(
                ("adamw_step", "adamw_step_conv3x3"),
                w,
                &g,
                p.grad_mult.as_ref(),
                &mut params,
                &[m.buffer(), v.buffer()],
            );
        }
        Ok(())
    }

    fn zero_grad(&self) {
        for p in &self.params {
            p.tensor.zero_grad();
        }
    }

    fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, mv) in self.moments.iter().enumerate() {
            if let Some((m, v)) = mv {
                out.push((format!("exp_avg.{i}"), m.clone()));
                out.push((format!("exp_avg_sq.{i}"), v.clone()));
            }
        }
        out
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn load_state(&mut self, tensors: &[(String, Vec<f32>)], steps: u64) -> Result<()> {
        let mut first: Vec<Option<Tensor>> = vec![None; self.params.len()];
        let mut second: Vec<Option<Tensor>> = vec![None; self.params.len()];
        for (name, data) in tensors {
            let (slot, i) = if name.starts_with("exp_avg_sq.") {
                (&mut second, parse_index(name, "exp_avg_sq.")?)
            } else {
                (&mut first, parse_index(name, "exp_avg.")?)
            };
            let p = self.params.get(i).ok_or_else(|| {
                Error::invalid(
                    "AdamW::load_state",
                    format!("{name}: only {} parameters", self.params.len()),
                )
            })?;
            slot[i] = Some(Tensor::from_slice(p.tensor.gpu(), data, p.tensor.shape())?);
        }
        for i in 0..self.params.len() {
            self.moments[i] = match (first[i].take(), second[i].take()) {
                (Some(m), Some(v)) => Some((m, v)),
                (None, None) => None,
                _ => {
                    return Err(Error::invalid(
                        "AdamW::load_state",
                        format!("parameter {i} has only one of exp_avg / exp_avg_sq"),
                    ));
                }
            };
        }
        self.steps = steps;
        Ok(())
    }
}

/// Launches a fused update kernel in the variant the Grad Mult asks for: `conv3x3_kernel`
/// (per-channel factors, one workgroup row per output channel), or `kernel` with a dense
/// multiplier or none. Both take `[weight, grad, multiplier, state...]`.
fn launch_fused_step(
    (kernel, conv3x3_kernel): (&'static str, &'static str),
    w: &Tensor,
    g: &Tensor,
    grad_mult: Option<&GradMult>,
    params: &mut OptimParams,
    state: &[&wgpu::Buffer],
) {
    let gpu = w.gpu();
    match grad_mult {
        Some(GradMult::Conv3x3 { factors, identity }) => {
            let (co, row) = (w.shape()[0], w.numel() / w.shape()[0]);
            params.row = row as u32;
            params.rows = co as u32;
            params.identity = *identity as u32;
            let buffers = [&[w.buffer(), g.buffer(), factors.buffer()], state].concat();
            gpu.launch(
                &OPTIM,
                conv3x3_kernel,
                bytemuck::bytes_of(params),
                &buffers,
                [groups(row, 256), co as u32, 1],
            );
        }
        other => {
            let mult = match other {
                Some(GradMult::Dense(m)) => m,
                _ => g,
            };
            params.has_mult = other.is_some() as u32;
            let buffers = [&[w.buffer(), g.buffer(), mult.buffer()], state].concat();
            gpu.launch(
                &OPTIM,
                kernel,
                bytemuck::bytes_of(params),
                &buffers,
                gpu.grid(groups(params.n4 as usize, 256)),
            );
        }
    }
}

/// Scales the gradients of `params` so that their joint L2 norm is at most `max_norm`
/// (as `torch.nn.utils.clip_grad_norm_`), entirely on the device. Returns the norm before
/// clipping as a one-element device tensor, so callers read it only when they log.
pub fn clip_grad_norm(params: &[ParamSpec], max_norm: f32) -> Result<Option<Tensor>> {
    let _guard = crate::NoGradGuard::new();
    let grads: Vec<(usize, Tensor)> = params
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.tensor.grad().map(|g| (i, g)))
        .collect();
    let Some((_, first)) = grads.first() else {
        return Ok(None);
    };
    let gpu = first.gpu().clone();
    let mut total: Option<Tensor> = None;
    for (_, g) in &grads {
        let sq = sum_rows(&g.mul(g)?, 1, g.numel(), 1.0, &[1])?;
        total = Some(match total {
            None => sq,
            Some(t) => t.add(&sq)?,
        });
    }
    let total = total.expect("at least one gradient");
    let norm = Tensor::empty(&gpu, &[1], crate::DType::F32)?;
    let coef = Tensor::empty(&gpu, &[1], crate::DType::F32)?;
    let p = ElementwiseParams {
        n: 1,
        alpha: max_norm,
        ..Default::default()
    };
    gpu.launch(
        &ELEMENTWISE,
        "clip_coefficient",
        bytemuck::bytes_of(&p),
        &[total.buffer(), norm.buffer(), coef.buffer()],
        [1, 1, 1],
    );
    for (i, g) in grads {
        params[i]
            .tensor
            .set_grad(Some(scale_by_device_scalar(&g, &coef)?))?;
    }
    Ok(Some(norm))
}
