//! AdamW as `torch.optim.AdamW`, one fused kernel per parameter tensor.

use super::{Optimizer, ParamSpec, check_specs, launch_fused_step, parse_index};
use crate::error::{Error, Result};
use crate::kernels::optim::{self as k, OptimParams};
use crate::tensor::Tensor;

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
                (&k::ADAMW_STEP, &k::ADAMW_STEP_CONV3X3),
                w,
                &g,
                p.grad_mult.as_ref(),
                &mut params,
                &[m.buffer(), v.buffer()],
            )?;
        }
        Ok(())
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
