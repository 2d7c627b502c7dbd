//! RepOpt-VGG-B1 trained with RepOptimizer-SGD built from the authors' released B1 scales:
//! the plain target model, its kernels re-initialised by the Rule of Initialization and
//! their gradients multiplied by the Grad Mults (Rule of Iteration) inside the fused update.
//!
//! ```text
//! cargo run --release --example repoptimizer_step -- [SCALES.pth] [RESOLUTION]
//! ```
//!
//! The scales default to `$REPOPT_SHARED_DATA/official-scales/RepOpt-VGG-B1-scales.pth`
//! (`REPOPT_SHARED_DATA` defaults to `../shared/data`); the resolution to 32 so that the
//! step runs in seconds on a software adapter.

use std::path::PathBuf;

use anyhow::Context;
use repopt::models::repoptimizer::{RepOptimizerConfig, prepare};
use repopt::models::{Mode, RepOptVgg, Scales, VggConfig};
use repopt::tensor::ops::cross_entropy;
use repopt::tensor::optim::{Optimizer, Sgd, SgdConfig};
use repopt::tensor::{Gpu, Tensor, no_grad};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let scales_path = match args.next() {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(
            std::env::var("REPOPT_SHARED_DATA").unwrap_or_else(|_| "../shared/data".into()),
        )
        .join("official-scales/RepOpt-VGG-B1-scales.pth"),
    };
    let res: usize = match args.next() {
        Some(r) => r.parse().context("RESOLUTION must be a positive integer")?,
        None => 32,
    };

    let gpu = Gpu::from_env()?;
    println!("adapter: {}", gpu.adapter().name);

    // The plain (target) B1: one 3x3 conv + ReLU per block, nothing else to train.
    let config = VggConfig {
        num_classes: 1000,
        ..VggConfig::preset("B1")?
    };
    let scales = Scales::load(&scales_path, &config)
        .with_context(|| format!("loading scales from {}", scales_path.display()))?;
    let model = RepOptVgg::new(&gpu, config, Mode::Target, 0)?;

    // Re-initialises the kernels from the scales and attaches their Grad Mults (p = 2 for SGD).
    let weight_decay = 1e-4;
    let specs = prepare(
        &model,
        &scales,
        &RepOptimizerConfig::default(),
        weight_decay,
        0,
    )?;
    let mut optimizer = Sgd::new(specs, SgdConfig::default())?;

    let batch = 4;
    let pixels: Vec<f32> = (0..batch * 3 * res * res)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5)
        .collect();
    let images = Tensor::from_slice(&gpu, &pixels, &[batch, 3, res, res])?;
    let labels = Tensor::from_u32(&gpu, &[1, 7, 42, 999], &[batch])?;

    let loss = cross_entropy(&model.forward(&images, true)?, &labels, 0.1)?;
    optimizer.zero_grad();
    loss.backward()?;
    optimizer.step(0.1)?;
    let before = loss.item()?;
    let after = no_grad(|| -> anyhow::Result<f32> {
        Ok(cross_entropy(&model.forward(&images, true)?, &labels, 0.1)?.item()?)
    })?;
    println!(
        "B1 at {res}x{res}, batch {batch}: {} parameters, {} Grad Mult kernels",
        model.parameter_count(),
        scales.blocks.len()
    );
    println!("loss before the step {before:.4}, after {after:.4}");
    Ok(())
}
