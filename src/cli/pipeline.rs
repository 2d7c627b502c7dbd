//! `repopt pipeline`: the main job.

use std::path::PathBuf;

use clap::Args;
use repopt::models::domain;
use repopt::train::pipeline::{PRESETS, Reporter, preset, results_markdown, run_pipeline};
use repopt::train::progress::{ProgressGroup, ProgressReporter};
use repopt::train::trainer::{Observer, RunSummary, Silent};

use super::gpu;
use super::train::TrainArgs;
use super::values::{InRange, NonEmptyName, NonEmptyPath};

#[derive(Args)]
#[command(after_help = "Examples:
  repopt pipeline                      # the quick default on Fashion-MNIST
  repopt pipeline --seeds 0            # one seed instead of three
  repopt pipeline --preset a0          # RepOpt-VGG-A0, 30 epochs (use a GPU)
  repopt pipeline --model ghostnet-0.5x --out runs/pipeline-ghost   # RepOpt-GhostNet vs RepGhostNet
  repopt pipeline --preset b1 --data-dir /data/imagenet --search-data-dir /data/cifar-100-binary")]
pub struct PipelineCmd {
    /// Starting point: quick (default), a0 or b1.
    #[arg(long, default_value = "quick", value_parser = NonEmptyName)]
    preset: String,
    /// Training flags applied to every run of the comparison (and the search).
    #[command(flatten)]
    args: TrainArgs,
    /// Epochs of the Hyper-Search run.
    #[arg(long, value_parser = InRange(domain::EPOCHS))]
    search_epochs: Option<u64>,
    /// Training images of the Hyper-Search run.
    #[arg(long, value_parser = InRange(domain::IMAGE_LIMIT))]
    search_train_limit: Option<usize>,
    /// Directory of the search dataset (when the preset searches on another dataset).
    #[arg(long, value_parser = NonEmptyPath)]
    search_data_dir: Option<PathBuf>,
    /// Seeds, e.g. 0,1,2.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Skip the INT8 post-training quantization of each RepOpt-VGG run.
    #[arg(long)]
    no_ptq: bool,
    /// Quantization-aware training of each RepOpt-VGG run after training (one epoch unless
    /// --qat-epochs says otherwise), reported beside PTQ.
    #[arg(long)]
    qat: bool,
    /// Epochs of quantization-aware training (implies --qat).
    #[arg(long, value_parser = InRange(domain::EPOCHS))]
    qat_epochs: Option<u64>,
    /// How many of a model's seeds train at once, each on its own device of the adapter
    /// (default: all of them on a CPU adapter, whose cores one small run leaves idle; one
    /// elsewhere). Results are the same either way.
    #[arg(long, value_parser = InRange(domain::JOBS))]
    jobs: Option<usize>,
    /// Replace the runs in --out whose settings changed (finished runs whose settings did
    /// not are reused, interrupted ones continued, either way).
    #[arg(long)]
    overwrite: bool,
}

/// Bars of the runs that go on at once share the terminal, one line each.
#[derive(Default)]
struct Progress(ProgressGroup);

impl Reporter for Progress {
    fn observer(&mut self, label: &str) -> Box<dyn Observer + Send> {
        if repopt::train::dist::world().is_root() {
            Box::new(ProgressReporter::among(label, &self.0))
        } else {
            Box::new(Silent)
        }
    }

    fn done(&mut self, label: &str, s: &RunSummary, reused: bool) {
        if !repopt::train::dist::world().is_root() {
            return;
        }
        let top1 = s
            .final_eval
            .map(|e| format!("{:.2}%", e.top1))
            .unwrap_or_else(|| "-".into());
        eprintln!(
            "{label}: top-1 {top1}, {:.0} images/s{}",
            s.images_per_s,
            if reused {
                " (finished earlier, reused)"
            } else {
                ""
            }
        );
    }
}

pub fn run(cmd: &PipelineCmd, adapter: &str) -> anyhow::Result<()> {
    let mut cfg = preset(&cmd.preset).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{}",
            PRESETS
                .iter()
                .map(|(n, d)| format!("  {n}: {d}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let out = cmd.args.out.clone().unwrap_or(cfg.out.clone());
    cfg.train = cmd.args.resolve(cfg.train)?;
    cfg.out = out;
    if let Some(e) = cmd.search_epochs {
        cfg.search_epochs = e;
    }
    if let Some(l) = cmd.search_train_limit {
        cfg.search_train_limit = Some(l);
    }
    if let Some(d) = &cmd.search_data_dir {
        cfg.search_data_dir = Some(d.clone());
    }
    if let Some(s) = &cmd.seeds {
        cfg.seeds = s.clone();
    }
    if cmd.no_ptq {
        cfg.ptq = false;
    }
    if cmd.jobs.is_some() {
        cfg.jobs = cmd.jobs;
    }
    if cmd.qat || cmd.qat_epochs.is_some() {
        cfg.qat_epochs = Some(cmd.qat_epochs.unwrap_or(1));
    }
    let gpu = gpu(adapter)?;
    eprintln!(
        "pipeline '{}' on {} -> {}",
        cmd.preset,
        gpu.adapter().name,
        cfg.out.display()
    );
    let report = run_pipeline(&gpu, &cfg, cmd.overwrite, &mut Progress::default())?;
    if !repopt::train::dist::world().is_root() {
        return Ok(());
    }
    println!("{}", results_markdown(&report));
    println!(
        "{} runs in {:.0} s; table: {}, curves: {}, scales: {}",
        1 + report.rows.len() * cfg.seeds.len(),
        report.seconds,
        cfg.out.join("results.md").display(),
        cfg.out.join("curves.svg").display(),
        cfg.out.join("search/scales.svg").display()
    );
    Ok(())
}
