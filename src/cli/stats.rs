//! `repopt stats`: weight statistics of a run's 3x3 kernels (the paper's Table 11) and the
//! histograms of one layer (Figs. 3 and 5).

use std::path::{Path, PathBuf};

use clap::Args;
use repopt::models::any::Network;
use repopt::models::quant::stats::{KernelStats, StagedKernel, kernel_stats, staged_kernels};
use repopt::models::reparam::to_deploy;
use repopt::train::report::plot_histograms;
use repopt::train::trainer::load_trained_model;

use super::gpu;
use super::values::{NonEmptyName, NonEmptyPath};

#[derive(Args)]
#[command(after_help = "Examples:
  repopt stats runs/pipeline/repvgg-seed0
  repopt stats runs/pipeline/repopt-seed0 --compare runs/pipeline/repvgg-seed0 --svg kernels.svg")]
pub struct StatsCmd {
    /// A RepOpt-VGG run directory, model file or checkpoint (any mode).
    #[arg(value_parser = NonEmptyPath)]
    run: PathBuf,
    /// A second run whose kernels are compared (and drawn) beside the first.
    #[arg(long, value_parser = NonEmptyPath)]
    compare: Option<PathBuf>,
    /// The block drawn by --svg (default: the last with as many output as input channels).
    #[arg(long, value_parser = NonEmptyName)]
    layer: Option<String>,
    /// Write the histograms of the chosen layer's deploy kernels to this SVG file.
    #[arg(long, value_parser = NonEmptyPath)]
    svg: Option<PathBuf>,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

struct RunKernels {
    label: String,
    kernels: Vec<StagedKernel>,
}

fn kernels_of(gpu: &repopt::tensor::Gpu, path: &Path) -> anyhow::Result<RunKernels> {
    let Network::Vgg(model) = load_trained_model(gpu, path)? else {
        anyhow::bail!(
            "{}: kernel statistics cover RepOpt-VGG's 3x3 kernels; this is a GhostNet",
            path.display()
        );
    };
    let deploy = to_deploy(&model)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok(RunKernels {
        label: format!("{name} ({})", model.mode()),
        kernels: staged_kernels(&model, &deploy)?,
    })
}

pub fn run(cmd: &StatsCmd, adapter: &str) -> anyhow::Result<()> {
    let gpu = gpu(adapter)?;
    let mut runs = vec![kernels_of(&gpu, &cmd.run)?];
    if let Some(other) = &cmd.compare {
        runs.push(kernels_of(&gpu, other)?);
    }
    if !cmd.json {
        println!(
            "{:24} {:10} {:16} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
            "run", "block", "stage", "std", "centre", "around", "max/std", "kurtosis", "SQNR dB"
        );
    }
    for r in &runs {
        for k in &r.kernels {
            let s: KernelStats = kernel_stats(&k.block, &k.values, k.shape)?;
            if cmd.json {
                let line = serde_json::json!({"run": r.label, "stage": k.stage, "stats": s});
                println!("{line}");
            } else {
                println!(
                    "{:24} {:10} {:16} {:8.4} {:8.4} {:8.4} {:8.2} {:9.2} {:8.2}",
                    r.label,
                    k.block,
                    k.stage,
                    s.std,
                    s.std_centre,
                    s.std_surround,
                    s.max_over_std,
                    s.kurtosis,
                    s.sqnr_db
                );
            }
        }
    }
    if let Some(svg) = &cmd.svg {
        let first = &runs[0].kernels;
        let layer = match &cmd.layer {
            Some(l) => l.clone(),
            None => first
                .iter()
                .rfind(|k| k.stage == "deploy" && k.shape[0] == k.shape[1])
                .or_else(|| first.last())
                .map(|k| k.block.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!("{}: the model has no 3x3 kernels", cmd.run.display())
                })?,
        };
        let mut drawn = Vec::new();
        for r in &runs {
            let k = r
                .kernels
                .iter()
                .find(|k| k.block == layer && k.stage == "deploy")
                .ok_or_else(|| {
                    let names: Vec<&str> = r.kernels.iter().map(|k| k.block.as_str()).collect();
                    anyhow::anyhow!(
                        "{}: no block '{layer}' (blocks: {})",
                        r.label,
                        names.join(", ")
                    )
                })?;
            drawn.push((format!("{} after conversion", r.label), k.values.clone()));
        }
        plot_histograms(&drawn, &format!("3x3 kernel values of {layer}"), svg)?;
        if !cmd.json {
            println!("histograms of {layer}: {}", svg.display());
        }
    }
    Ok(())
}
