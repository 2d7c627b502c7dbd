//! `repopt search`: Hyper-Search.

use clap::Args;
use repopt::train::TrainConfig;
use repopt::train::progress::ProgressReporter;
use repopt::train::search::{SCALES_PLOT, hyper_search, search_config};

use super::gpu;
use super::train::TrainArgs;

#[derive(Args)]
#[command(after_help = "Examples:
  repopt search --epochs 5 --out runs/search
  repopt search --config B1 --dataset cifar100 --data-dir data/cifar-100-binary --epochs 240
Then: repopt train --optimizer repopt-sgd --scales runs/search/scales.safetensors")]
pub struct SearchCmd {
    #[command(flatten)]
    args: TrainArgs,
    /// Continue from the run's checkpoint (or the checkpoint given).
    #[arg(long, num_args = 0..=1, value_name = "CHECKPOINT", value_parser = super::values::NonEmptyPath)]
    resume: Option<Option<std::path::PathBuf>>,
}

pub fn run(cmd: &SearchCmd, adapter: &str) -> anyhow::Result<()> {
    let base = search_config(TrainConfig {
        out: "runs/search".into(),
        ..TrainConfig::default()
    });
    let cfg = cmd.args.resolve(base)?;
    let resume = super::train::resume_path(&cmd.resume, &cfg);
    let gpu = gpu(adapter)?;
    eprintln!(
        "Hyper-Search on {} -> {}",
        gpu.adapter().name,
        cfg.out.display()
    );
    let outcome = hyper_search(
        &gpu,
        &cfg,
        resume.as_deref(),
        &mut ProgressReporter::new("search"),
    )?;
    println!(
        "scales: {} ({} blocks; plot {})",
        outcome.scales_path.display(),
        outcome.summary.len(),
        cfg.out.join(SCALES_PLOT).display()
    );
    if let Some(e) = outcome.run.final_eval {
        println!(
            "Hyper-Search model: top-1 {:.2}% after {} epochs",
            e.top1, outcome.run.epochs
        );
    }
    Ok(())
}
