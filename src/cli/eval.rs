//! `repopt eval`.

use std::path::PathBuf;

use clap::Args;
use repopt::train::data::{Loader, LoaderConfig, Preset};
use repopt::train::datasets::{limit, load};
use repopt::train::evaluate::evaluate_across;
use repopt::train::trainer::load_model_with_settings;

use super::gpu;
use super::train::TrainArgs;

#[derive(Args)]
#[command(after_help = "Examples:
  repopt eval runs/repopt
  repopt eval runs/repopt/model.safetensors --test-limit 1000")]
pub struct EvalCmd {
    /// A run directory, a model file or a training checkpoint.
    #[arg(value_parser = super::values::NonEmptyPath)]
    checkpoint: PathBuf,
    /// Dataset settings (default: those the run was trained with, when its config.json is found).
    #[command(flatten)]
    args: TrainArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: &EvalCmd, adapter: &str) -> anyhow::Result<()> {
    let gpu = gpu(adapter)?;
    let world = repopt::train::dist::world();
    // The settings the model was trained with (embedded in checkpoints and deploy files, or
    // the run's config.json) decide the dataset and preprocessing; flags adjust them.
    let (model, base) = load_model_with_settings(&gpu, &cmd.checkpoint)?;
    let cfg = cmd.args.resolve(base)?;
    let test = limit(
        load(
            cfg.dataset,
            &cfg.data_dir(),
            repopt::train::data::Split::Test,
            cfg.resolution,
        )?,
        cfg.test_limit,
    );
    let normalize = repopt::train::data::Normalize::for_dataset(&test.name, test.channels);
    let loader = Loader::try_new(
        std::sync::Arc::new(test),
        LoaderConfig {
            resize: cfg.resolution.map(|r| (r, r)),
            workers: cfg.workers,
            shard: repopt::train::data::Shard {
                index: world.rank(),
                count: world.size(),
            },
            ..LoaderConfig::for_preset(Preset::Eval, cfg.eval_batch_size, normalize)
        },
    )?;
    // Over several ranks each evaluates its shard and the counts are summed.
    let r = evaluate_across(world, &model, &loader)?;
    if !world.is_root() {
        return Ok(());
    }
    if cmd.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} ({} {}): top-1 {:.2}% top-5 {:.2}% loss {:.4} on {} images",
            cmd.checkpoint.display(),
            model.name(),
            model.mode(),
            r.top1,
            r.top5,
            r.loss,
            r.images
        );
    }
    Ok(())
}
