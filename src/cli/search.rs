//! `repopt search`: Hyper-Search.

use clap::Args;
use repopt::train::TrainConfig;
use repopt::train::search::{SCALES_PLOT, hyper_search, search_config};

use super::gpu;
use super::train::{Begin, TrainArgs};

#[derive(Args)]
#[command(after_help = "Examples:
  repopt search --epochs 5 --out runs/search
  repopt search --config B1 --dataset cifar100 --data-dir data/cifar-100-binary --epochs 240
  repopt search --out runs/search --resume
Then: repopt train --optimizer repopt-sgd --scales runs/search/scales.safetensors")]
pub struct SearchCmd {
    #[command(flatten)]
    args: TrainArgs,
    #[command(flatten)]
    begin: Begin,
}

pub fn run(cmd: &SearchCmd, adapter: &str) -> anyhow::Result<()> {
    let base = search_config(TrainConfig {
        out: "runs/search".into(),
        ..TrainConfig::default()
    });
    let (cfg, start) = cmd.begin.settings(&cmd.args, base)?;
    let gpu = gpu(adapter)?;
    eprintln!(
        "Hyper-Search on {} -> {}",
        gpu.adapter().name,
        cfg.out.display()
    );
    let outcome = hyper_search(&gpu, &cfg, &start, &mut *super::train::observer("search"))?;
    if !repopt::train::dist::world().is_root() {
        return Ok(());
    }
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
