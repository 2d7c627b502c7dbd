//! Optimizers whose whole update is one fused kernel per parameter tensor, each accepting an
//! optional per-element gradient multiplier (the RepOptimizer's Grad Mult).
//!
//! [`Sgd`] follows `torch.optim.SGD` (momentum, dampening, nesterov, weight decay added to
//! the gradient) with the multiplier applied before the weight decay, which is the order
//! that keeps a RepOptimizer exactly equivalent to training the multi-branch model.
//! [`AdamW`] follows `torch.optim.AdamW` (decoupled decay). [`UpdateKernels::Unfused`] runs
//! SGD as separate multiply, decay, momentum and update kernels, for benchmarks.

mod adamw;
mod clip;
mod grad_mult;
mod multi;
mod sgd;
mod unfused;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::clip_grad_norm;
pub use grad_mult::GradMult;
pub use sgd::{Sgd, SgdConfig, UpdateKernels};

use crate::error::{Error, Result};
use crate::kernels::Kernel;
use crate::kernels::optim::OptimParams;
use crate::ops::groups;
use crate::tensor::Tensor;
use grad_mult::conv3x3_dims;

/// The optimizer interface the trainer uses.
pub trait Optimizer {
    /// Applies one update with learning rate `lr` to every parameter that has a gradient.
    fn step(&mut self, lr: f32) -> Result<()>;
    /// Clears every parameter's gradient.
    fn zero_grad(&self) {
        for p in self.params() {
            p.tensor.zero_grad();
        }
    }
    /// Parameters in order.
    fn params(&self) -> &[ParamSpec];
    /// Named state tensors (momentum buffers, moments), for checkpoints.
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Steps taken so far.
    fn steps(&self) -> u64;
    /// Restores state saved by [`Optimizer::state`]: tensors by name and the step count.
    fn load_state(&mut self, tensors: &[(String, Vec<f32>)], steps: u64) -> Result<()>;
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

pub(crate) fn check_specs(what: &'static str, params: &[ParamSpec]) -> Result<()> {
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

pub(crate) fn parse_index(name: &str, prefix: &str) -> Result<usize> {
    name.strip_prefix(prefix)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Error::invalid(
                "load_state",
                format!("unexpected state tensor '{name}' (expected {prefix}<index>)"),
            )
        })
}

/// Launches a fused update kernel in the variant the Grad Mult asks for: `conv3x3_kernel`
/// (per-channel factors, one workgroup row per output channel), or `kernel` with a dense
/// multiplier or none. Both take `[weight, grad, multiplier, state...]`.
pub(crate) fn launch_fused_step(
    (kernel, conv3x3_kernel): (&Kernel<OptimParams>, &Kernel<OptimParams>),
    w: &Tensor,
    g: &Tensor,
    grad_mult: Option<&GradMult>,
    params: &mut OptimParams,
    state: &[&wgpu::Buffer],
) -> Result<()> {
    let gpu = w.gpu();
    match grad_mult {
        Some(GradMult::Conv3x3 { factors, identity }) => {
            let (co, row) = (w.shape()[0], w.numel() / w.shape()[0]);
            params.row = row as u32;
            params.rows = co as u32;
            params.identity = *identity as u32;
            let buffers = [&[w.buffer(), g.buffer(), factors.buffer()], state].concat();
            gpu.launch(
                conv3x3_kernel,
                params,
                &buffers,
                gpu.grid(groups(params.n4 as usize, 256)),
            )
        }
        other => {
            let mult = match other {
                Some(GradMult::Dense(m)) => m,
                _ => g,
            };
            params.has_mult = other.is_some() as u32;
            let buffers = [&[w.buffer(), g.buffer(), mult.buffer()], state].concat();
            gpu.launch(
                kernel,
                params,
                &buffers,
                gpu.grid(groups(params.n4 as usize, 256)),
            )
        }
    }
}
