//! The RepOptimizer: what turns searched scales into an optimizer for the plain target
//! model. Two rules, both derived from the imaginary CSLA block
//! `BN(s * conv3x3(x) + t * conv1x1(x) [+ u * x])`:
//!
//! - **Rule of Iteration** (Grad Mult): the gradient of each target 3x3 kernel is
//!   multiplied element-wise by `M[c, d, h, w] = s_c^p` (`+ t_c^p` at the centre, `+ 1` at
//!   the diagonal centre when the block has an identity branch), `p = 2` for SGD and `p = 1`
//!   for AdamW, before weight decay is added.
//! - **Rule of Initialization**: each target 3x3 kernel starts as the CSLA block's
//!   equivalent kernel `s * W3 + t * W1 (at the centre) [+ u0 * I]` built from fresh kernels.
//!
//! With both, training the target model is exactly training the CSLA model (for SGD with
//! momentum and weight decay; for AdamW it is the reference's heuristic).

use repopt_tensor::Tensor;
use repopt_tensor::optim::{GradMult, ParamSpec};
use serde::{Deserialize, Serialize};

use crate::Mode;
use crate::domain::Domain;
use crate::error::{ModelError, Result};
use crate::init::Init;
use crate::network::RepOptVgg;
use crate::role::{ParamKind, ParamRole};
use crate::scales::{BlockScales, Scales};

/// The optimizer a set of Grad Mults is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateRule {
    /// SGD (with momentum, nesterov, weight decay): scales squared, exact equivalence.
    Sgd,
    /// AdamW: scales to the power 1, as the reference implementation (a heuristic).
    AdamW,
}

impl UpdateRule {
    /// The power scales are raised to.
    pub fn power(self) -> i32 {
        match self {
            UpdateRule::Sgd => 2,
            UpdateRule::AdamW => 1,
        }
    }
}

/// What the identity branch contributes to a re-initialised kernel's diagonal centre.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityInit {
    /// 1, as the paper describes.
    One,
    /// The searched u, as the reference implementation does by default ("makes almost no
    /// difference").
    Searched,
}

/// How to apply a RepOptimizer; the switches are the ablations of the paper's Table 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepOptimizerConfig {
    /// Which optimizer the Grad Mults are for.
    pub rule: UpdateRule,
    /// Apply the Rule of Initialization (off: "without re-init").
    pub reinit: bool,
    /// Apply the Rule of Iteration (off: "without Grad Mult").
    pub grad_mult: bool,
    /// Identity term of the re-initialisation.
    pub identity_init: IdentityInit,
}

impl Default for RepOptimizerConfig {
    fn default() -> Self {
        RepOptimizerConfig {
            rule: UpdateRule::Sgd,
            reinit: true,
            grad_mult: true,
            identity_init: IdentityInit::Searched,
        }
    }
}

const CENTRE: usize = 4;

/// The Grad Mult of a `[co, ci, 3, 3]` kernel for one block's scales.
///
/// ```
/// use repopt_models::{repoptimizer::grad_mult, scales::BlockScales};
/// let s = BlockScales { block: "stage1.1".into(), conv: vec![2.0], one: vec![3.0], identity: Some(vec![0.5]) };
/// let m = grad_mult(1, 1, &s, 2);
/// assert_eq!(m[0], 4.0);         // s^2 off the centre
/// assert_eq!(m[4], 4.0 + 9.0 + 1.0); // + t^2 + 1 at the (diagonal) centre
/// ```
pub fn grad_mult(co: usize, ci: usize, scales: &BlockScales, power: i32) -> Vec<f32> {
    let mut m = vec![0.0f32; co * ci * 9];
    for c in 0..co {
        let s = scales.conv[c].powi(power);
        let t = scales.one[c].powi(power);
        for d in 0..ci {
            let base = (c * ci + d) * 9;
            m[base..base + 9].fill(s);
            m[base + CENTRE] += t;
            if scales.identity.is_some() && c == d {
                m[base + CENTRE] += 1.0;
            }
        }
    }
    m
}

/// The CSLA block's equivalent 3x3 kernel: `s * w3 + t * w1 (centre) [+ identity (diagonal centre)]`.
pub fn equivalent_kernel(
    co: usize,
    ci: usize,
    w3: &[f32],
    w1: &[f32],
    scales: &BlockScales,
    identity: Option<&[f32]>,
) -> Vec<f32> {
    let mut k = vec![0.0f32; co * ci * 9];
    for c in 0..co {
        for d in 0..ci {
            let base = (c * ci + d) * 9;
            for j in 0..9 {
                k[base + j] = scales.conv[c] * w3[base + j];
            }
            k[base + CENTRE] += scales.one[c] * w1[c * ci + d];
            if let (Some(u), true) = (identity, c == d) {
                k[base + CENTRE] += u[c];
            }
        }
    }
    k
}

/// The largest Grad Mult factor a RepOptimizer accepts: every s, t and u must satisfy
/// `|v|^p <= MAX_GRAD_MULT`, so `|v| <= 100` for SGD (`p = 2`) and `|v| <= 10^4` for AdamW.
/// Searched scales are of order 1 (the largest of the authors' files is about 3); a factor
/// of 10^4 already runs a kernel at ten thousand times the learning rate, and larger ones
/// reach infinity in f32 (1e30 squared) or re-initialise kernels to absurd values.
pub const MAX_GRAD_MULT: f32 = 1e4;

/// The values each scale may take under `rule`.
///
/// ```
/// use repopt_models::repoptimizer::{scale_domain, UpdateRule};
/// assert_eq!(scale_domain(UpdateRule::Sgd).to_string(), "[-100, 100]");
/// assert!(!scale_domain(UpdateRule::AdamW).contains(1e30));
/// ```
pub fn scale_domain(rule: UpdateRule) -> Domain<f32> {
    let bound = MAX_GRAD_MULT.powf(1.0 / rule.power() as f32).round();
    Domain::closed(-bound, bound)
}

fn check_scales(model: &RepOptVgg, scales: &Scales, rule: UpdateRule) -> Result<()> {
    let err = |message: String| ModelError::Scales {
        origin: "RepOptimizer".into(),
        message,
    };
    if model.blocks().len() != scales.blocks.len() {
        return Err(err(format!(
            "{} blocks of scales for a model of {} blocks",
            scales.blocks.len(),
            model.blocks().len()
        )));
    }
    for (b, s) in model.blocks().iter().zip(&scales.blocks) {
        if b.spec.name != s.block
            || s.conv.len() != b.spec.out_channels
            || s.identity.is_some() != b.spec.has_identity()
        {
            return Err(err(format!(
                "scales of block '{}' do not fit model block '{}' ({} channels, identity: {})",
                s.block,
                b.spec.name,
                b.spec.out_channels,
                b.spec.has_identity()
            )));
        }
        let domain = scale_domain(rule);
        let kinds = [("s", &s.conv), ("t", &s.one)];
        for (kind, values) in kinds.into_iter().chain(s.identity.iter().map(|u| ("u", u))) {
            for (c, &v) in values.iter().enumerate() {
                domain
                    .check(&format!("{kind} of block {} (channel {c})", s.block), v)
                    .map_err(|m| {
                        err(format!(
                            "{m} (scales are held to |v|^{} <= {MAX_GRAD_MULT:e}, the largest Grad Mult accepted)",
                            rule.power()
                        ))
                    })?;
            }
        }
    }
    Ok(())
}

/// Prepares a target-mode model for training with a RepOptimizer: re-initialises its 3x3
/// kernels (unless `config.reinit` is off) from the current kernels as W3 and fresh 1x1
/// kernels drawn from `seed`, and returns the optimizer's parameter groups (weight decay as
/// [`RepOptVgg::param_specs`]) with Grad Mults on the 3x3 kernels (unless
/// `config.grad_mult` is off). Block i's scales go to the parameter whose role is the
/// [target kernel](ParamKind::TargetKernel) of block i.
///
/// ```no_run
/// use repopt_models::{repoptimizer::{prepare, RepOptimizerConfig}, Mode, RepOptVgg, Scales, VggConfig};
/// use repopt_tensor::{optim::{Sgd, SgdConfig}, Gpu};
/// let gpu = Gpu::from_env()?;
/// let config = VggConfig::preset("B1")?;
/// let scales = Scales::load("RepOpt-VGG-B1-scales.pth".as_ref(), &config)?;
/// let model = RepOptVgg::new(&gpu, config, Mode::Target, 0)?;
/// let specs = prepare(&model, &scales, &RepOptimizerConfig::default(), 4e-5, 1)?;
/// let optimizer = Sgd::new(specs, SgdConfig::default())?;
/// # Ok::<(), repopt_models::ModelError>(())
/// ```
pub fn prepare(
    model: &RepOptVgg,
    scales: &Scales,
    config: &RepOptimizerConfig,
    weight_decay: f32,
    seed: u64,
) -> Result<Vec<ParamSpec>> {
    if model.mode() != Mode::Target {
        return Err(ModelError::WrongMode {
            op: "RepOptimizer",
            expected: "target",
            got: model.mode(),
        });
    }
    // Every scale is checked before the first kernel is rewritten, so a refusal leaves the
    // model as it was.
    check_scales(model, scales, config.rule)?;
    let _guard = repopt_tensor::NoGradGuard::new();
    let mut init = Init::new(seed ^ 0x5EED_1D1D);
    let mut specs = Vec::new();
    for param in model.param_roles() {
        let target_block = match param.role {
            ParamRole {
                kind: ParamKind::TargetKernel,
                block: Some(index),
            } => scales.blocks.get(index),
            _ => None,
        };
        let kernel = param.tensor.clone();
        let mut spec = param.spec(weight_decay);
        let Some(s) = target_block else {
            specs.push(spec);
            continue;
        };
        let (co, ci) = (kernel.shape()[0], kernel.shape()[1]);
        if config.reinit {
            let w1 = init.kernel(co, ci, 1);
            let identity = s.identity.as_ref().map(|u| match config.identity_init {
                IdentityInit::Searched => u.clone(),
                IdentityInit::One => vec![1.0; co],
            });
            let k = equivalent_kernel(co, ci, &kernel.to_vec()?, &w1, s, identity.as_deref());
            // Bounded scales give a finite kernel unless the model's own kernel was not.
            if let Some(v) = k.iter().find(|v| !v.is_finite()) {
                return Err(ModelError::Scales {
                    origin: "RepOptimizer".into(),
                    message: format!("the re-initialised kernel of block {} holds {v}", s.block),
                });
            }
            kernel.write(&k)?;
        }
        if config.grad_mult {
            // The update kernel computes M from these 2 * co factors instead of a stored
            // [co, ci, 3, 3] tensor (the values of `grad_mult`, a kernel's worth less memory).
            let p = config.rule.power();
            let factors: Vec<f32> = s.conv.iter().chain(&s.one).map(|v| v.powi(p)).collect();
            spec.grad_mult = Some(GradMult::Conv3x3 {
                factors: Tensor::from_slice(kernel.gpu(), &factors, &[2 * co])?,
                identity: s.identity.is_some(),
            });
        }
        specs.push(spec);
    }
    Ok(specs)
}
