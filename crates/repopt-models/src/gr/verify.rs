//! The automatic equivalence check of a declared block: train its CSLA form with plain
//! SGD and its target form with the derived RepOptimizer, side by side on the same random
//! data, and measure how far the target kernel ends from the CSLA form's equivalent kernel.
//!
//! Both forms feed the same head (ReLU, global average pool, a fixed random classifier,
//! cross-entropy), so the loss depends non-linearly on the kernel and a wrong Grad Mult
//! changes the trajectory, not only the scale of a step.
//!
//! ```no_run
//! use repopt_models::gr::{CslaBlock, verify::{verify, VerifyConfig}};
//! let gpu = repopt_tensor::Gpu::from_env()?;
//! let block = CslaBlock::acnet(8, 8, 1, vec![1.5; 8], vec![0.7; 8], vec![0.3; 8]);
//! let report = verify(&gpu, &block, &VerifyConfig::default())?;
//! println!("max relative gap after {} steps: {:e}", report.steps, report.gap);
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use repopt_tensor::optim::{GradMult, Optimizer, ParamSpec, Sgd, SgdConfig};
use repopt_tensor::{Gpu, Tensor, ops};
use serde::Serialize;

use super::CslaBlock;
use super::layer::{Form, GrLayer, fresh_branches};
use crate::error::Result;
use crate::init::Init;
use crate::repoptimizer::UpdateRule;

/// How to run the check; the switches turn either rule off, to show the check can fail.
#[derive(Clone, Debug)]
pub struct VerifyConfig {
    /// SGD steps.
    pub steps: usize,
    /// Images per step.
    pub batch: usize,
    /// Square input size.
    pub resolution: usize,
    /// Learning rate.
    pub lr: f32,
    /// Weight decay (on every kernel and identity value, as the RepOptimizer applies it).
    pub weight_decay: f32,
    /// Momentum and nesterov.
    pub sgd: SgdConfig,
    /// Seed of the kernels, data and classifier.
    pub seed: u64,
    /// Apply the derived Grad Mult to the target form.
    pub grad_mult: bool,
    /// Start the target form from the equivalent kernel (off: a fresh kernel).
    pub reinit: bool,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            steps: 100,
            batch: 4,
            resolution: 8,
            lr: 0.05,
            weight_decay: 1e-4,
            sgd: SgdConfig::default(),
            seed: 0,
            grad_mult: true,
            reinit: true,
        }
    }
}

/// What the check measured.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// Steps run.
    pub steps: usize,
    /// `max |W_target - W_csla| / max |W_csla|` after the last step.
    pub gap: f64,
    /// The largest such gap after any step.
    pub max_gap: f64,
    /// The largest difference of the two forms' losses over the steps.
    pub loss_gap: f64,
    /// The CSLA form's first and last loss.
    pub loss: (f32, f32),
    /// How far the kernel moved: `max |W_last - W_first| / max |W_first|` (a gap is only
    /// meaningful if this is not tiny).
    pub moved: f64,
}

fn rel_gap(a: &[f32], b: &[f32]) -> f64 {
    let scale = b
        .iter()
        .fold(0.0f64, |m, &v| m.max(v.abs() as f64))
        .max(1e-30);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()))
        / scale
}

/// Trains the CSLA and target forms of `block` for `config.steps` steps and reports the
/// gap between them.
pub fn verify(gpu: &Gpu, block: &CslaBlock, config: &VerifyConfig) -> Result<VerifyReport> {
    block.validate_for(UpdateRule::Sgd)?;
    let mut init = Init::new(config.seed);
    let kernels = fresh_branches(block, &mut init);
    let csla = GrLayer::from_branches(gpu, block, Form::Csla, &kernels)?;
    let target = if config.reinit {
        GrLayer::from_branches(gpu, block, Form::Target, &kernels)?
    } else {
        let shape = block.kernel_shape();
        let fan_in = (shape[1] * shape[2] * shape[3]) as f32;
        let w = init.uniform(shape.iter().product(), 1.0 / fan_in.sqrt());
        let layer = GrLayer::from_branches(gpu, block, Form::Target, &kernels)?;
        layer.target.as_ref().expect("target form").write(&w)?;
        layer
    };
    let wt = target.target.clone().expect("target form");
    let mut csla_opt = Sgd::new(
        csla.parameters()
            .into_iter()
            .map(|(_, t)| ParamSpec::new(t, config.weight_decay))
            .collect(),
        config.sgd,
    )?;
    let mut spec = ParamSpec::new(wt.clone(), config.weight_decay);
    if config.grad_mult {
        let m = block.grad_mult(UpdateRule::Sgd);
        spec.grad_mult = Some(GradMult::Dense(Tensor::from_slice(
            gpu,
            &m,
            &block.kernel_shape(),
        )?));
    }
    let mut target_opt = Sgd::new(vec![spec], config.sgd)?;

    let co = block.target.out_channels();
    let classes = co.clamp(2, 10);
    let classifier = Tensor::from_slice(gpu, &init.uniform(classes * co, 1.0), &[classes, co])?;
    let bias = Tensor::zeros(gpu, &[classes])?;
    let head = |z: &Tensor, labels: &Tensor| -> Result<Tensor> {
        let pooled = ops::global_avg_pool(&z.relu()?)?;
        Ok(ops::cross_entropy(
            &ops::linear(&pooled, &classifier, &bias)?,
            labels,
            0.0,
        )?)
    };

    let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed ^ 0xDA7A);
    let (n, r, ci) = (config.batch, config.resolution, block.target.in_channels());
    let first = csla.equivalent_kernel()?;
    let mut report = VerifyReport {
        steps: config.steps,
        gap: rel_gap(&wt.to_vec()?, &first),
        max_gap: 0.0,
        loss_gap: 0.0,
        loss: (f32::NAN, f32::NAN),
        moved: 0.0,
    };
    report.max_gap = report.gap;
    for step in 0..config.steps {
        let xs: Vec<f32> = (0..n * ci * r * r)
            .map(|_| rng.random_range(-1.0..=1.0))
            .collect();
        let ys: Vec<u32> = (0..n)
            .map(|_| rng.random_range(0..classes as u32))
            .collect();
        let x = Tensor::from_slice(gpu, &xs, &[n, ci, r, r])?;
        let y = Tensor::from_u32(gpu, &ys, &[n])?;
        let mut losses = [0.0f32; 2];
        for (i, (layer, opt)) in [
            (&csla, &mut csla_opt as &mut dyn Optimizer),
            (&target, &mut target_opt as &mut dyn Optimizer),
        ]
        .into_iter()
        .enumerate()
        {
            opt.zero_grad();
            let loss = head(&layer.forward(&x)?, &y)?;
            loss.backward()?;
            opt.step(config.lr)?;
            losses[i] = loss.item()?;
        }
        if step == 0 {
            report.loss.0 = losses[0];
        }
        report.loss.1 = losses[0];
        report.loss_gap = report
            .loss_gap
            .max((losses[0] as f64 - losses[1] as f64).abs());
        let equivalent = csla.equivalent_kernel()?;
        report.gap = rel_gap(&wt.to_vec()?, &equivalent);
        report.max_gap = report.max_gap.max(report.gap);
        if step + 1 == config.steps {
            report.moved = rel_gap(&equivalent, &first);
        }
    }
    Ok(report)
}
