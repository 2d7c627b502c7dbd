//! `repopt convert`: any trained form -> the plain deploy model, checked on a batch.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use repopt::models::any::SavedModel;
use repopt::models::checkpoint::save_model;
use repopt::models::domain;
use repopt::tensor::{Tensor, no_grad};
use repopt::train::TrainConfig;
use repopt::train::trainer::{load_trained_model, run_metadata};

use super::gpu;
use super::values::{InRange, NonEmptyPath};

#[derive(Args)]
#[command(after_help = "Example:
  repopt convert runs/repvgg -o runs/repvgg/deploy.safetensors")]
pub struct ConvertCmd {
    /// A run directory, a model file or a training checkpoint (RepOpt-VGG: repvgg, csla, hs
    /// or target; GhostNet: repvgg or target).
    #[arg(value_parser = NonEmptyPath)]
    checkpoint: PathBuf,
    /// Where to write the deploy model.
    #[arg(short, long, value_parser = NonEmptyPath)]
    output: PathBuf,
    /// Images in the equivalence check batch.
    #[arg(long, default_value_t = 8, value_parser = InRange(domain::CHECK_BATCH))]
    check_batch: usize,
    /// Resolution of the check batch.
    #[arg(long, default_value_t = 32, value_parser = InRange(domain::RESOLUTION))]
    resolution: usize,
}

pub fn run(cmd: &ConvertCmd, adapter: &str) -> anyhow::Result<()> {
    let gpu = gpu(adapter)?;
    let model = load_trained_model(&gpu, &cmd.checkpoint)?;
    if model.qat_config().is_some() {
        anyhow::bail!(
            "{} is a quantization-aware training run, already in the deploy form and trained \
             for INT8: deploy it with `repopt export {} -o model.onnx --int8`, which writes its \
             trained activation ranges",
            cmd.checkpoint.display(),
            cmd.checkpoint.display()
        );
    }
    let deployed = model.to_deploy()?;
    let c = model.in_channels();
    let shape = [cmd.check_batch, c, cmd.resolution, cmd.resolution];
    // The random images are built on the host first: refuse a batch the device could not
    // hold before building it.
    Tensor::check_size(&gpu, &shape).with_context(|| {
        format!(
            "the equivalence check batch (--check-batch {} at --resolution {})",
            cmd.check_batch, cmd.resolution
        )
    })?;
    let n: usize = shape.iter().product();
    let mut s = 0x2545F4914F6CDD1Du64;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let x = Tensor::from_slice(&gpu, &data, &shape)?;
    let (a, b) = no_grad(|| -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            model.forward(&x, false)?.to_vec()?,
            deployed.forward(&x, false)?.to_vec()?,
        ))
    })?;
    let scale = a.iter().map(|v| v.abs()).fold(0.0f32, f32::max).max(1.0);
    let err = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    if err > 1e-3 * scale {
        anyhow::bail!(
            "the converted model's outputs differ by {err} (logits up to {scale}); not written"
        );
    }
    // The run's settings travel with the deploy model, so that it classifies images
    // preprocessed as its run's evaluation did wherever it is copied.
    let settings = TrainConfig::of_run(&cmd.checkpoint)?
        .map(|c| run_metadata(&c))
        .unwrap_or_default();
    save_model(&cmd.output, &deployed, &settings)?;
    println!(
        "{} {} -> deploy: {} -> {} parameters, max output difference {err:.2e} on {} random images; wrote {}",
        model.name(),
        model.mode(),
        model.parameter_count(),
        deployed.parameter_count(),
        cmd.check_batch,
        cmd.output.display()
    );
    Ok(())
}
