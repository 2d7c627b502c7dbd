//! Hyper-Search: train the Hyper-Search model (the CSLA model with trainable scales) and
//! keep its final scales as the RepOptimizer's hyper-parameters.

use std::io::Write;
use std::path::{Path, PathBuf};

use repopt_models::Mode;
use repopt_models::any::{NetScales, ScaleMeans};
use repopt_tensor::Gpu;

use crate::config::{OptimizerKind, TrainConfig};
use crate::data::Preset;
use crate::error::{Result, TrainError};
use crate::metrics::read_metrics;
use crate::report::{plot_scales, plot_training};
use crate::run_dir::Start;
use crate::trainer::{Observer, RunSummary, files, load_trained_model, open_on_root, train_in};

/// The searched scales (safetensors, reference names).
pub const SCALES_FILE: &str = "scales.safetensors";
/// Mean scales per block as JSON lines.
pub const SCALES_SUMMARY: &str = "scales.jsonl";
/// Mean scales per block, plotted.
pub const SCALES_PLOT: &str = "scales.svg";
/// Training curves.
pub const CURVES_PLOT: &str = "curves.svg";

/// What a search produced.
#[derive(Clone, Debug)]
pub struct SearchOutcome {
    /// The Hyper-Search model's training run.
    pub run: RunSummary,
    /// The scale file for `repopt train --optimizer repopt-sgd --scales`.
    pub scales_path: PathBuf,
    /// Mean scales per block.
    pub summary: Vec<ScaleMeans>,
}

/// `base` set up for Hyper-Search as in the paper: the HS model, plain SGD, crop + flip
/// only, and gradient clipping at 5.
pub fn search_config(base: TrainConfig) -> TrainConfig {
    TrainConfig {
        mode: Mode::Hs,
        optimizer: OptimizerKind::Sgd,
        augment: Preset::Search,
        clip_grad: base.clip_grad.or(Some(5.0)),
        scales: None,
        ..base
    }
}

/// Runs Hyper-Search as `cfg` describes (which must be a Hyper-Search model trained with a
/// plain optimizer), beginning as `start` says, and writes the scales, their summary and
/// plots into the run directory.
///
/// ```no_run
/// use repopt_train::{run_dir::Start, search::{hyper_search, search_config}, trainer::Silent};
/// let gpu = repopt_tensor::Gpu::from_env()?;
/// let cfg = search_config(repopt_train::TrainConfig { epochs: 2, ..Default::default() });
/// let outcome = hyper_search(&gpu, &cfg, &Start::New, &mut Silent)?;
/// println!("{}", outcome.scales_path.display());
/// # Ok::<(), repopt_train::TrainError>(())
/// ```
pub fn hyper_search(
    gpu: &Gpu,
    cfg: &TrainConfig,
    start: &Start,
    observer: &mut dyn Observer,
) -> Result<SearchOutcome> {
    if cfg.mode != Mode::Hs || cfg.optimizer.is_repopt() {
        return Err(TrainError::Config(format!(
            "Hyper-Search trains the hs model with a plain optimizer (got mode {}, optimizer {})",
            cfg.mode, cfg.optimizer
        )));
    }
    cfg.validate()?;
    // Held across training and the files derived from its model, which belong to the run.
    // In a distributed run, rank 0 holds the directory and writes the scales; the other
    // ranks read them from it once written (the run directory is on a shared filesystem).
    let dir = open_on_root(&cfg.out)?;
    let run = train_in(gpu, dir.as_ref(), cfg, start, observer)?;
    let world = crate::dist::world();
    let scales_path = cfg.out.join(SCALES_FILE);
    let written = world.agree(match dir {
        Some(_) => write_scales(gpu, cfg, &scales_path).map(Some),
        None => Ok(None),
    })?;
    let summary = match written {
        Some(summary) => summary,
        None => {
            NetScales::from_model(&load_trained_model(gpu, &cfg.out.join(files::MODEL))?)?.summary()
        }
    };
    Ok(SearchOutcome {
        run,
        scales_path,
        summary,
    })
}

/// Rank 0's part of a search once trained: the scales, their summary and the plots.
fn write_scales(gpu: &Gpu, cfg: &TrainConfig, scales_path: &Path) -> Result<Vec<ScaleMeans>> {
    let model = load_trained_model(gpu, &cfg.out.join(files::MODEL))?;
    let scales = NetScales::from_model(&model)?;
    scales.save(scales_path, &model.config())?;
    let summary = scales.summary();
    let mut text = Vec::new();
    for b in &summary {
        writeln!(text, "{}", serde_json::to_string(b).unwrap_or_default())
            .map_err(|e| TrainError::io(&cfg.out, e))?;
    }
    repopt_models::checkpoint::write_atomic(&cfg.out.join(SCALES_SUMMARY), &text)?;
    plot_scales(
        &summary,
        scales.kinds(),
        &format!("mean searched scales per block ({})", model.name()),
        &cfg.out.join(SCALES_PLOT),
    )?;
    let metrics = read_metrics(&cfg.out.join(files::METRICS))?;
    plot_training(
        &[("hyper-search".into(), metrics)],
        &cfg.out.join(CURVES_PLOT),
    )?;
    Ok(summary)
}
