//! The main job: Hyper-Search, then RepOpt-VGG (or RepOpt-GhostNet) trained with the
//! searched scales beside the baselines it is meant to match (the plain model with SGD, and
//! RepVGG or RepGhostNet), over several seeds, summarised in a table.

use std::path::PathBuf;

use repopt_models::Mode;
use repopt_tensor::Gpu;
use serde::{Deserialize, Serialize};

use crate::config::{OptimizerKind, ScalesSource, TrainConfig};
use crate::error::{Result, TrainError};
use crate::metrics::read_metrics;
use crate::qat::{QatOptions, qat_config, qat_run_config};
use crate::quantize::QuantizeOptions;
use crate::report::plot_training;
use crate::run_dir::{self, Start};
use crate::search::{hyper_search, search_config};
use crate::trainer::{Observer, RunSummary, files, open_on_root};
use repopt_models::quant::calibrate::Calibrator;

mod seeds;
mod table;

use seeds::{Devices, SeedRun, Work, run_seeds};
pub use table::{PtqResult, Report, Row, results_markdown};
use table::{mean_std, write_report};

/// The pipeline's settings, in its directory.
pub const PIPELINE_FILE: &str = "pipeline.json";

/// Settings of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Dataset, architecture and optimisation shared by every training run.
    pub train: TrainConfig,
    /// Epochs of the Hyper-Search run.
    pub search_epochs: u64,
    /// Training images of the Hyper-Search run (None: the training runs' setting).
    pub search_train_limit: Option<usize>,
    /// One training run per model per seed (the search uses the first).
    pub seeds: Vec<u64>,
    /// Search on another dataset than the training runs (the paper searches on CIFAR-100).
    pub search_dataset: Option<crate::config::DatasetKind>,
    /// Directory of the search dataset.
    pub search_data_dir: Option<PathBuf>,
    /// Resolution of the search images (None: the training runs').
    pub search_resolution: Option<usize>,
    /// Output directory.
    pub out: PathBuf,
    /// Post-training INT8 quantization of every RepOpt-VGG run (max and the other
    /// calibrators), reported beside FP32.
    pub ptq: bool,
    /// Quantization-aware training of every RepOpt-VGG run for this many epochs, reported
    /// beside PTQ (None: none).
    pub qat_epochs: Option<u64>,
    /// How many of a model's seeds train at once, each on its own device of the adapter
    /// (None: all of them on a CPU adapter, whose cores one small run leaves idle; one on
    /// any other). Results do not depend on it; each run's images/s does, as the runs
    /// share the adapter. A distributed run trains one at a time.
    pub jobs: Option<usize>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            train: TrainConfig::default(),
            search_epochs: 2,
            search_train_limit: None,
            seeds: vec![0, 1, 2],
            search_dataset: None,
            search_data_dir: None,
            search_resolution: None,
            out: PathBuf::from("runs/pipeline"),
            ptq: true,
            qat_epochs: None,
            jobs: None,
        }
    }
}

/// Named starting points for `repopt pipeline --preset`.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "quick",
        "the default: a small RepOpt-VGG on Fashion-MNIST sized to finish within 20 minutes on a 2-core CPU",
    ),
    (
        "a0",
        "RepOpt-VGG-A0 on Fashion-MNIST at 32x32, 30 epochs (for a GPU)",
    ),
    (
        "b1",
        "the paper's recipe: B1, search on CIFAR-100 (240 epochs), train on an ImageNet-style folder at 224x224 (120 epochs)",
    ),
];

/// The pipeline settings of a preset.
pub fn preset(name: &str) -> Result<PipelineConfig> {
    let quick_arch = crate::config::ArchConfig {
        preset: "A0".into(),
        num_blocks: Some([1, 2, 2, 1]),
        widths: Some([0.25, 0.25, 0.25, 0.25]),
        strides: Some([1, 2, 2, 2, 2]),
        se: false,
    };
    Ok(match name {
        "quick" => PipelineConfig {
            train: TrainConfig {
                arch: quick_arch,
                train_limit: Some(10_000),
                test_limit: Some(2_000),
                epochs: 3,
                warmup_epochs: 1,
                batch_size: 64,
                lr: 0.2,
                weight_decay: 1e-4,
                augment: crate::data::Preset::Search,
                out: PathBuf::from("runs/pipeline"),
                ..TrainConfig::default()
            },
            search_epochs: 3,
            search_train_limit: None,
            seeds: vec![0, 1, 2],
            out: PathBuf::from("runs/pipeline"),
            ..PipelineConfig::default()
        },
        "a0" => PipelineConfig {
            train: TrainConfig {
                arch: crate::config::ArchConfig::default(),
                resolution: Some(32),
                epochs: 30,
                warmup_epochs: 2,
                batch_size: 128,
                augment: crate::data::Preset::Search,
                ..TrainConfig::default()
            },
            search_epochs: 30,
            out: PathBuf::from("runs/pipeline-a0"),
            ..PipelineConfig::default()
        },
        "b1" => PipelineConfig {
            train: TrainConfig {
                dataset: crate::config::DatasetKind::Folder,
                data_dir: Some(PathBuf::from("data/imagenet")),
                resolution: Some(224),
                arch: crate::config::ArchConfig {
                    preset: "B1".into(),
                    ..Default::default()
                },
                epochs: 120,
                batch_size: 256,
                ..TrainConfig::default()
            },
            search_epochs: 240,
            search_dataset: Some(crate::config::DatasetKind::Cifar100),
            search_data_dir: Some(PathBuf::from("data/cifar-100-binary")),
            search_resolution: Some(32),
            seeds: vec![0],
            out: PathBuf::from("runs/pipeline-b1"),
            ..PipelineConfig::default()
        },
        other => {
            return Err(TrainError::Config(format!(
                "unknown pipeline preset '{other}' (expected one of: {})",
                PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
            )));
        }
    })
}

/// One model of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contender {
    /// Row label for RepOpt-VGG.
    pub label: &'static str,
    /// Row label for GhostNet.
    pub ghost_label: &'static str,
    /// Directory name prefix.
    pub key: &'static str,
    /// Block mode.
    pub mode: Mode,
    /// Optimizer.
    pub optimizer: OptimizerKind,
}

/// RepOpt-VGG and its two baselines.
pub const CONTENDERS: [Contender; 3] = [
    Contender {
        label: "RepOpt-VGG (RepOptimizer-SGD, searched scales)",
        ghost_label: "RepOpt-GhostNet (RepOptimizer-SGD, searched scales)",
        key: "repopt",
        mode: Mode::Target,
        optimizer: OptimizerKind::RepoptSgd,
    },
    Contender {
        label: "plain VGG (SGD)",
        ghost_label: "plain GhostNet (SGD)",
        key: "target",
        mode: Mode::Target,
        optimizer: OptimizerKind::Sgd,
    },
    Contender {
        label: "RepVGG (SGD)",
        ghost_label: "RepGhostNet (SGD)",
        key: "repvgg",
        mode: Mode::Repvgg,
        optimizer: OptimizerKind::Sgd,
    },
];

/// The settings recorded in the run directory of `cfg`, if it holds a run.
fn recorded(cfg: &TrainConfig) -> Option<TrainConfig> {
    TrainConfig::from_file(&cfg.out.join(files::CONFIG)).ok()
}

/// A finished run of `cfg` in its directory, if there is one (so a pipeline run again
/// reuses what it finished).
/// Quantization-aware training of the run in `run` into `out` (reused when finished with
/// the same settings): its INT8 top-1.
fn fine_tune(
    gpu: &Gpu,
    run: &std::path::Path,
    out: PathBuf,
    epochs: u64,
    overwrite: bool,
    label: &str,
    reporter: &mut dyn Reporter,
) -> Result<f64> {
    let opts = QatOptions {
        epochs,
        ..QatOptions::new(out)
    };
    let qcfg = qat_config(gpu, run, &opts)?;
    let earlier = finished(&qcfg).and_then(|s| {
        let text = std::fs::read_to_string(qcfg.out.join(crate::qat::REPORT)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some((s, v["qat_int8"]["top1"].as_f64()?))
    });
    if let Some((s, top1)) = earlier {
        reporter.done(label, &s, true);
        return Ok(top1);
    }
    let start = start_of(&qcfg, overwrite)?;
    let mut obs = reporter.observer(label);
    let r = qat_run_config(gpu, &qcfg, &start, obs.as_mut())?;
    reporter.done(label, &r.run, false);
    Ok(r.qat_int8.top1)
}

fn finished(cfg: &TrainConfig) -> Option<RunSummary> {
    let saved = recorded(cfg)?;
    if !run_dir::conflicts(&saved, cfg).is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(cfg.out.join(files::SUMMARY)).ok()?;
    let s: RunSummary = serde_json::from_str(&text).ok()?;
    (!s.stopped_early && s.epochs == cfg.epochs).then_some(s)
}

/// How the run of `cfg` begins: an interrupted or time-boxed run of the same settings
/// continues from its checkpoint, one that never reached a checkpoint starts again, and a
/// directory holding anything else is replaced only with `overwrite`.
fn start_of(cfg: &TrainConfig, overwrite: bool) -> Result<Start> {
    let checkpoint = cfg.out.join(files::CHECKPOINT);
    let refuse = |message: String| TrainError::RunDir {
        dir: cfg.out.display().to_string(),
        message,
    };
    match recorded(cfg) {
        Some(saved) => {
            let diff = run_dir::conflicts(&saved, cfg);
            if diff.is_empty() {
                Ok(if checkpoint.is_file() {
                    Start::Resume(None)
                } else {
                    Start::Overwrite
                })
            } else if overwrite {
                Ok(Start::Overwrite)
            } else {
                Err(refuse(format!(
                    "holds a run with other settings: {}. Pass --overwrite to replace the runs whose settings changed (finished runs whose settings did not are still reused), or choose another --out",
                    run_dir::describe(&diff)
                )))
            }
        }
        None if overwrite => Ok(Start::Overwrite),
        None if run_dir::is_vacant(&cfg.out) => Ok(Start::New),
        None => Err(refuse(
            "holds files but no run's config.json: pass --overwrite to replace them, or choose another --out".into(),
        )),
    }
}

/// Progress reporting for the runs of a pipeline, one observer per run.
pub trait Reporter {
    /// The observer for run `label`, which may report from another thread while other runs
    /// go on (see [`PipelineConfig::jobs`]).
    fn observer(&mut self, label: &str) -> Box<dyn Observer + Send>;
    /// A finished (or reused) run.
    fn done(&mut self, label: &str, summary: &RunSummary, reused: bool);
}

/// Runs the pipeline and writes `pipeline.json` (its settings), `results.md`,
/// `results.json` and `curves.svg` into its directory. Runs it finished before are reused
/// and interrupted ones continued; runs whose settings changed are replaced only with
/// `overwrite`.
///
/// ```no_run
/// use repopt_train::pipeline::{Reporter, preset, run_pipeline};
/// use repopt_train::trainer::{Observer, RunSummary, Silent};
/// struct Quiet;
/// impl Reporter for Quiet {
///     fn observer(&mut self, _label: &str) -> Box<dyn Observer + Send> { Box::new(Silent) }
///     fn done(&mut self, label: &str, s: &RunSummary, _reused: bool) {
///         println!("{label}: {:.2}%", s.best_top1);
///     }
/// }
/// let gpu = repopt_tensor::Gpu::from_env()?;
/// let report = run_pipeline(&gpu, &preset("quick")?, false, &mut Quiet)?;
/// println!("{} rows", report.rows.len());
/// # Ok::<(), repopt_train::TrainError>(())
/// ```
pub fn run_pipeline(
    gpu: &Gpu,
    cfg: &PipelineConfig,
    overwrite: bool,
    reporter: &mut dyn Reporter,
) -> Result<Report> {
    let start = std::time::Instant::now();
    let first_seed = *cfg
        .seeds
        .first()
        .ok_or_else(|| TrainError::Config("the pipeline needs at least one seed".into()))?;
    // In a distributed run every rank trains each run together; rank 0 alone holds the
    // directory, quantizes and writes the report.
    let world = crate::dist::world();
    if world.is_distributed() && cfg.qat_epochs.is_some() {
        return Err(TrainError::Config(
            "--qat runs as one process: run the pipeline over several ranks without it, then `repopt qat` on its runs".into(),
        ));
    }
    let root = open_on_root(&cfg.out)?;
    world.agree(
        root.as_ref()
            .map_or(Ok(()), |r| r.write_json(PIPELINE_FILE, cfg)),
    )?;
    let mut search_cfg = TrainConfig {
        epochs: cfg.search_epochs,
        train_limit: cfg.search_train_limit.or(cfg.train.train_limit),
        seed: first_seed,
        out: cfg.out.join("search"),
        ..search_config(cfg.train.clone())
    };
    if let Some(d) = cfg.search_dataset {
        search_cfg.dataset = d;
        search_cfg.data_dir = cfg.search_data_dir.clone();
        search_cfg.test_limit = None;
    }
    if cfg.search_resolution.is_some() {
        search_cfg.resolution = cfg.search_resolution;
    }
    let scales = search_cfg.out.join(crate::search::SCALES_FILE);
    match finished(&search_cfg).filter(|_| scales.is_file()) {
        Some(s) => reporter.done("hyper-search", &s, true),
        None => {
            let start = start_of(&search_cfg, overwrite)?;
            let mut obs = reporter.observer("hyper-search");
            let outcome = hyper_search(gpu, &search_cfg, &start, obs.as_mut())?;
            reporter.done("hyper-search", &outcome.run, false);
        }
    }
    let mut rows = Vec::new();
    let mut architecture: Option<repopt_models::any::NetConfig> = None;
    let mut curves = Vec::new();
    let ghost = repopt_models::ghostnet::GhostConfig::is_ghostnet(&cfg.train.arch.preset);
    let jobs = if world.is_distributed() {
        1
    } else {
        cfg.jobs.unwrap_or(if gpu.adapter().is_software() {
            cfg.seeds.len()
        } else {
            1
        })
    }
    .clamp(1, cfg.seeds.len());
    let quantize = (cfg.ptq && !ghost && world.is_root()).then(|| QuantizeOptions {
        calibrators: Calibrator::all(),
        ..Default::default()
    });
    let mut devices = Devices::new(gpu);
    for c in CONTENDERS {
        let mut runs = Vec::new();
        let mut ptq = PtqResult {
            max_top1: Vec::new(),
            best_top1: Vec::new(),
            best_calibrator: Vec::new(),
            max_mean: 0.0,
            best_mean: 0.0,
            qat_top1: Vec::new(),
            qat_mean: None,
        };
        let mut planned = Vec::new();
        for &seed in &cfg.seeds {
            let run_cfg = TrainConfig {
                mode: c.mode,
                optimizer: c.optimizer,
                scales: c.optimizer.is_repopt().then(|| scales.clone()),
                scales_source: ScalesSource::File,
                seed,
                out: cfg.out.join(format!("{}-seed{seed}", c.key)),
                ..cfg.train.clone()
            };
            let label = format!("{} seed {seed}", c.key);
            let work = match finished(&run_cfg) {
                Some(s) => {
                    reporter.done(&label, &s, true);
                    Work::Done(Box::new(s))
                }
                None => Work::Train(start_of(&run_cfg, overwrite)?, reporter.observer(&label)),
            };
            planned.push(SeedRun {
                cfg: run_cfg,
                label,
                work,
            });
        }
        let outs: Vec<PathBuf> = planned.iter().map(|r| r.cfg.out.clone()).collect();
        let outcomes = run_seeds(
            &mut devices,
            planned,
            jobs,
            quantize.as_ref(),
            &mut |label, s| reporter.done(label, s, false),
        )?;
        for ((&seed, out), outcome) in cfg.seeds.iter().zip(outs).zip(outcomes) {
            let summary = outcome.summary;
            architecture.get_or_insert_with(|| summary.model.clone());
            if seed == first_seed {
                curves.push((c.key.to_string(), read_metrics(&out.join(files::METRICS))?));
            }
            if let Some(q) = outcome.quantized {
                let best = q
                    .rows
                    .iter()
                    .max_by(|a, b| a.eval.top1.total_cmp(&b.eval.top1))
                    .expect("six calibrators");
                let max = q
                    .rows
                    .iter()
                    .find(|r| r.calibrator == "max")
                    .expect("max is one");
                ptq.max_top1.push(max.eval.top1);
                ptq.best_top1.push(best.eval.top1);
                ptq.best_calibrator.push(best.calibrator.clone());
            }
            if let Some(epochs) = cfg.qat_epochs.filter(|_| !ghost) {
                let qat_out = cfg.out.join(format!("{}-seed{seed}-qat", c.key));
                let label = format!("{} seed {seed} QAT", c.key);
                ptq.qat_top1.push(fine_tune(
                    gpu, &out, qat_out, epochs, overwrite, &label, reporter,
                )?);
            }
            runs.push(summary);
        }
        let top1: Vec<f64> = runs
            .iter()
            .map(|r| r.final_eval.map_or(0.0, |e| e.top1))
            .collect();
        let (top1_mean, top1_std) = mean_std(&top1);
        let n = runs.len().max(1) as f64;
        rows.push(Row {
            model: if ghost { c.ghost_label } else { c.label }.into(),
            mode: c.mode.name().into(),
            optimizer: c.optimizer.name().into(),
            seeds: cfg.seeds.clone(),
            top1,
            top1_mean,
            top1_std,
            top5_mean: runs
                .iter()
                .map(|r| r.final_eval.map_or(0.0, |e| e.top5))
                .sum::<f64>()
                / n,
            images_per_s: runs.iter().map(|r| r.images_per_s).sum::<f64>() / n,
            train_seconds: runs.iter().map(|r| r.train_seconds).sum::<f64>() / n,
            params: runs.first().map_or(0, |r| r.params),
            ptq: (!ptq.max_top1.is_empty() || !ptq.qat_top1.is_empty()).then(|| PtqResult {
                max_mean: mean_std(&ptq.max_top1).0,
                best_mean: mean_std(&ptq.best_top1).0,
                qat_mean: (!ptq.qat_top1.is_empty()).then(|| mean_std(&ptq.qat_top1).0),
                ..ptq
            }),
        });
    }
    if root.is_some() {
        plot_training(&curves, &cfg.out.join("curves.svg"))?;
    }
    let report = Report {
        dataset: cfg.train.dataset.name().into(),
        model: architecture
            .as_ref()
            .map_or_else(|| cfg.train.arch.preset.clone(), |a| a.name().to_string()),
        architecture,
        rows,
        scales,
        seconds: start.elapsed().as_secs_f64(),
        jobs,
    };
    if let Some(root) = &root {
        write_report(root, &report)?;
    }
    Ok(report)
}
