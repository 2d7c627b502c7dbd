//! The training loop: data -> model -> loss -> backward -> optimizer, with the learning
//! rate schedule, evaluation each epoch, metrics, checkpoints and bit-identical resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use repopt_models::checkpoint::{self, HostTensor};
use repopt_models::repoptimizer::{RepOptimizerConfig, UpdateRule, prepare};
use repopt_models::{RepOptVgg, Scales, VggConfig};
use repopt_tensor::optim::{AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig, clip_grad_norm};
use repopt_tensor::{Gpu, Tensor, ops};
use serde::{Deserialize, Serialize};

use crate::config::{OptimizerKind, ScalesSource, TrainConfig};
use crate::data::{Loader, LoaderConfig, Preset};
use crate::datasets::{DataSplits, load_split};
use crate::error::{Result, TrainError};
use crate::evaluate::{EvalResult, evaluate};
use crate::guard;
use crate::metrics::{Metric, MetricsLog};
use crate::schedule::LrSchedule;

/// File names inside a run directory.
pub mod files {
    /// Full training state (model, optimizer, position) for `--resume`.
    pub const CHECKPOINT: &str = "checkpoint.safetensors";
    /// The model alone, for `repopt eval` and `repopt convert`.
    pub const MODEL: &str = "model.safetensors";
    /// The resolved configuration of the run.
    pub const CONFIG: &str = "config.json";
    /// Per-step and per-epoch metrics.
    pub const METRICS: &str = "metrics.jsonl";
    /// The run's outcome.
    pub const SUMMARY: &str = "summary.json";
}

const OPTIMIZER_PREFIX: &str = "optimizer/";

/// Where a run stands; saved in checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Epoch being trained (0-based).
    pub epoch: u64,
    /// Batches of that epoch already trained.
    pub batch: u64,
    /// Optimizer steps taken in total.
    pub step: u64,
}

/// Progress callbacks (the CLI draws a progress bar; tests stay silent).
pub trait Observer {
    /// Before the first step.
    fn start(&mut self, _name: &str, _total_steps: u64, _first_step: u64) {}
    /// After a logged step: mean loss since the last log, learning rate, throughput.
    fn step(&mut self, _step: u64, _epoch: u64, _loss: f64, _lr: f64, _images_per_s: f64) {}
    /// After every optimizer step (cheap; for progress counters).
    fn tick(&mut self, _step: u64) {}
    /// After each evaluation.
    fn eval(&mut self, _epoch: u64, _result: &EvalResult) {}
    /// When the run ends.
    fn finish(&mut self) {}
}

/// An observer that reports nothing.
pub struct Silent;

impl Observer for Silent {}

/// What a run produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// Model configuration.
    pub model: VggConfig,
    /// Block mode.
    pub mode: String,
    /// Optimizer.
    pub optimizer: String,
    /// Trainable parameters.
    pub params: usize,
    /// Epochs completed.
    pub epochs: u64,
    /// Optimizer steps taken.
    pub steps: u64,
    /// The last evaluation.
    pub final_eval: Option<EvalResult>,
    /// Best top-1 over evaluations.
    pub best_top1: f64,
    /// Seconds spent training (evaluation excluded) in this process.
    pub train_seconds: f64,
    /// Training images per second in this process.
    pub images_per_s: f64,
    /// Whether `stop_after_steps` ended the run before its last epoch.
    pub stopped_early: bool,
    /// Run directory.
    pub out: PathBuf,
}

/// Builds the optimizer a config asks for, preparing the model for a RepOptimizer.
fn build_optimizer(
    cfg: &TrainConfig,
    model: &RepOptVgg,
) -> Result<(Box<dyn Optimizer>, Option<Scales>)> {
    let sgd = SgdConfig {
        momentum: cfg.momentum,
        dampening: 0.0,
        nesterov: cfg.nesterov,
    };
    let mconf = model.config();
    let scales = if cfg.optimizer.is_repopt() {
        let from_file = || -> Result<Scales> {
            let path = cfg.scales.as_ref().ok_or_else(|| {
                TrainError::Config(format!("{} needs --scales FILE", cfg.optimizer))
            })?;
            Ok(Scales::load(path, mconf)?)
        };
        Some(match cfg.scales_source {
            ScalesSource::File => from_file()?,
            ScalesSource::ChannelAveraged => from_file()?.channel_averaged(),
            ScalesSource::Ones => Scales::ones(mconf),
            ScalesSource::HsInitial => Scales::hs_initial(mconf),
        })
    } else {
        None
    };
    let specs = match &scales {
        Some(s) => {
            let rule = RepOptimizerConfig {
                rule: if cfg.optimizer == OptimizerKind::RepoptSgd {
                    UpdateRule::Sgd
                } else {
                    UpdateRule::AdamW
                },
                reinit: cfg.reinit,
                grad_mult: cfg.grad_mult,
                identity_init: cfg.identity_init,
            };
            prepare(model, s, &rule, cfg.weight_decay, cfg.seed)?
        }
        None => model.param_specs(cfg.weight_decay),
    };
    let opt: Box<dyn Optimizer> = match cfg.optimizer {
        OptimizerKind::Sgd | OptimizerKind::RepoptSgd => Box::new(Sgd::new(specs, sgd)?),
        OptimizerKind::AdamW | OptimizerKind::RepoptAdamW => {
            Box::new(AdamW::new(specs, AdamWConfig::default())?)
        }
    };
    Ok((opt, scales))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| TrainError::Config(e.to_string()))?;
    checkpoint::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Saves the full training state (and the model alone beside it), atomically.
fn save_checkpoint(
    out: &Path,
    cfg: &TrainConfig,
    model: &RepOptVgg,
    opt: &dyn Optimizer,
    pos: Position,
) -> Result<()> {
    // Before anything is written, so that a good checkpoint is never replaced by a bad one.
    guard::check_weights(model, pos, &out.join(files::CHECKPOINT))?;
    let mut tensors = checkpoint::model_tensors(model)?;
    let mut meta = checkpoint::model_metadata(model);
    checkpoint::save_tensors(&out.join(files::MODEL), &tensors, &meta)?;
    for (name, t) in opt.state() {
        tensors.push(HostTensor {
            name: format!("{OPTIMIZER_PREFIX}{name}"),
            shape: t.shape().to_vec(),
            data: t.to_vec()?,
        });
    }
    meta.insert(
        "position".into(),
        serde_json::to_string(&pos).unwrap_or_default(),
    );
    meta.insert("optimizer_steps".into(), opt.steps().to_string());
    meta.insert(
        "train_config".into(),
        serde_json::to_string(cfg).unwrap_or_default(),
    );
    checkpoint::save_tensors(&out.join(files::CHECKPOINT), &tensors, &meta)?;
    Ok(())
}

/// Settings that must not change between a checkpoint and its resumption (they decide the
/// model, the optimizer, the data order or the schedule).
fn resume_mismatches(saved: &TrainConfig, now: &TrainConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! same {
        ($($f:ident),*) => { $( if saved.$f != now.$f { out.push(stringify!($f)); } )* };
    }
    same!(
        dataset,
        resolution,
        train_limit,
        augment,
        arch,
        mode,
        optimizer,
        scales_source,
        reinit,
        grad_mult,
        identity_init,
        lr,
        lr_batch,
        warmup_epochs,
        weight_decay,
        momentum,
        nesterov,
        label_smoothing,
        clip_grad,
        epochs,
        batch_size,
        seed
    );
    out
}

/// Restores model, optimizer and position from a checkpoint written by this loop.
fn restore(
    path: &Path,
    cfg: &TrainConfig,
    model: &RepOptVgg,
    opt: &mut dyn Optimizer,
) -> Result<Position> {
    let resume_err = |message: String| TrainError::Resume {
        path: path.display().to_string(),
        message,
    };
    let file = checkpoint::load_tensors(path)?;
    let saved: TrainConfig = file
        .metadata
        .get("train_config")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| resume_err("no training configuration in its metadata (is it a model file rather than a checkpoint?)".into()))?;
    let diff = resume_mismatches(&saved, cfg);
    if !diff.is_empty() {
        return Err(resume_err(format!(
            "the run was started with different settings for: {} (resume with the same settings, or start a new run)",
            diff.join(", ")
        )));
    }
    let pos: Position = file
        .metadata
        .get("position")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| resume_err("no position in its metadata".into()))?;
    let steps: u64 = file
        .metadata
        .get("optimizer_steps")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| resume_err("no optimizer step count in its metadata".into()))?;
    let mut model_part = std::collections::HashMap::new();
    let mut opt_part = Vec::new();
    for t in file.tensors {
        match t.name.strip_prefix(OPTIMIZER_PREFIX) {
            Some(name) => opt_part.push((name.to_string(), t.data)),
            None => {
                model_part.insert(t.name, (t.shape, t.data));
            }
        }
    }
    model.load_state(&model_part, &path.display().to_string())?;
    opt.load_state(&opt_part, steps)?;
    Ok(pos)
}

/// Trains a model as `cfg` describes, resuming from `resume` when given.
///
/// ```no_run
/// use repopt_train::{config::TrainConfig, trainer::{train, Silent}};
/// let gpu = repopt_tensor::Gpu::from_env()?;
/// let cfg = TrainConfig { epochs: 1, train_limit: Some(1000), ..Default::default() };
/// let summary = train(&gpu, &cfg, None, &mut Silent)?;
/// println!("top-1 {:.2}%", summary.best_top1);
/// # Ok::<(), repopt_train::TrainError>(())
/// ```
pub fn train(
    gpu: &Gpu,
    cfg: &TrainConfig,
    resume: Option<&Path>,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| TrainError::io(&cfg.out, e))?;
    write_json(&cfg.out.join(files::CONFIG), cfg)?;
    let DataSplits {
        train,
        test,
        normalize,
    } = load_split(cfg)?;
    let mconf = cfg.arch.build(train.channels, train.classes)?;
    let model = RepOptVgg::new(gpu, mconf.clone(), cfg.mode, cfg.seed)?;
    let (mut opt, _scales) = build_optimizer(cfg, &model)?;
    let resize = cfg.resolution.map(|r| (r, r));
    let pad = cfg.resolution.unwrap_or(train.height) / 8;
    let train_loader = Loader::try_new(
        train.clone(),
        LoaderConfig {
            seed: cfg.seed,
            workers: cfg.workers,
            resize,
            pad,
            ..LoaderConfig::for_preset(cfg.augment, cfg.batch_size, normalize.clone())
        },
    )?;
    let test_loader = Loader::try_new(
        test.clone(),
        LoaderConfig {
            workers: cfg.workers,
            resize,
            ..LoaderConfig::for_preset(Preset::Eval, cfg.eval_batch_size, normalize)
        },
    )?;
    let per_epoch = train_loader.batches_per_epoch() as u64;
    if per_epoch == 0 {
        return Err(TrainError::Config(format!(
            "{} training images make no full batch of {}",
            train.len(),
            cfg.batch_size
        )));
    }
    let schedule = LrSchedule::new(
        cfg.lr,
        cfg.lr_batch,
        cfg.batch_size,
        per_epoch,
        cfg.warmup_epochs,
        cfg.epochs,
    );
    let mut pos = match resume {
        Some(path) => restore(path, cfg, &model, opt.as_mut())?,
        None => Position::default(),
    };
    let mut log = match resume {
        Some(_) => MetricsLog::resume(&cfg.out, pos.step)?,
        None => MetricsLog::create(&cfg.out)?,
    };
    let checkpoint_path = cfg.out.join(files::CHECKPOINT);
    let total = per_epoch * cfg.epochs;
    observer.start(&cfg.out.display().to_string(), total, pos.step);
    let mut best_top1 = 0.0f64;
    let mut final_eval = None;
    let mut train_seconds = 0.0;
    let mut images = 0u64;
    let mut stopped_early = false;
    'epochs: while pos.epoch < cfg.epochs {
        let epoch = pos.epoch;
        let mut running: Option<Tensor> = None;
        let mut since_log = 0u64;
        let mut log_clock = Instant::now();
        let epoch_clock = Instant::now();
        let mut epoch_images = 0u64;
        for batch in train_loader.epoch_from(epoch, pos.batch as usize) {
            let lr = schedule.lr_at(pos.step);
            let n = batch.len();
            let x = Tensor::from_slice(gpu, &batch.images, &batch.shape)?;
            let y = Tensor::from_u32(gpu, &batch.labels, &[n])?;
            let loss = ops::cross_entropy(&model.forward(&x, true)?, &y, cfg.label_smoothing)?;
            loss.backward()?;
            if let Some(max) = cfg.clip_grad {
                clip_grad_norm(opt.params(), max)?;
            }
            opt.step(lr as f32)?;
            opt.zero_grad();
            let loss = loss.detach();
            running = Some(match running {
                None => loss,
                Some(r) => r.add(&loss)?,
            });
            since_log += 1;
            pos.batch += 1;
            pos.step += 1;
            epoch_images += n as u64;
            observer.tick(pos.step);
            let last_of_epoch = pos.batch == per_epoch;
            let stop_now = cfg.stop_after_steps.is_some_and(|s| pos.step >= s);
            if pos.step % cfg.log_every == 0 || last_of_epoch || stop_now {
                // The one host read of the step: the mean loss since the last log.
                let mean = running.take().map(|r| r.item()).transpose()?.unwrap_or(0.0) as f64
                    / since_log.max(1) as f64;
                if !mean.is_finite() {
                    observer.finish();
                    return Err(TrainError::Diverged {
                        step: pos.step,
                        epoch,
                        quantity: "loss",
                        value: mean,
                        checkpoint: guard::last_good(&checkpoint_path),
                    });
                }
                let elapsed = log_clock.elapsed().as_secs_f64();
                let ips = (since_log * cfg.batch_size as u64) as f64 / elapsed.max(1e-9);
                log.write(&Metric::Train {
                    epoch,
                    step: pos.step,
                    loss: mean,
                    lr,
                    images_per_s: ips,
                })?;
                observer.step(pos.step, epoch, mean, lr, ips);
                since_log = 0;
                log_clock = Instant::now();
            }
            if stop_now {
                stopped_early = pos.step < total;
                train_seconds += epoch_clock.elapsed().as_secs_f64();
                images += epoch_images;
                if pos.batch == per_epoch {
                    pos.epoch += 1;
                    pos.batch = 0;
                }
                save_checkpoint(&cfg.out, cfg, &model, opt.as_ref(), pos)?;
                break 'epochs;
            }
        }
        train_seconds += epoch_clock.elapsed().as_secs_f64();
        images += epoch_images;
        let result = evaluate(&model, &test_loader)?;
        log.write(&Metric::Eval {
            epoch,
            step: pos.step,
            loss: result.loss,
            top1: result.top1,
            top5: result.top5,
        })?;
        observer.eval(epoch, &result);
        best_top1 = best_top1.max(result.top1);
        final_eval = Some(result);
        pos.epoch += 1;
        pos.batch = 0;
        save_checkpoint(&cfg.out, cfg, &model, opt.as_ref(), pos)?;
    }
    observer.finish();
    let summary = RunSummary {
        model: mconf,
        mode: cfg.mode.name().into(),
        optimizer: cfg.optimizer.name().into(),
        params: model.parameter_count(),
        epochs: pos.epoch,
        steps: pos.step,
        final_eval,
        best_top1,
        train_seconds,
        images_per_s: images as f64 / train_seconds.max(1e-9),
        stopped_early,
        out: cfg.out.clone(),
    };
    write_json(&cfg.out.join(files::SUMMARY), &summary)?;
    Ok(summary)
}

/// Loads a model from a run directory, a model file or a training checkpoint.
pub fn load_trained_model(gpu: &Gpu, path: &Path) -> Result<RepOptVgg> {
    let file_path = if path.is_dir() {
        path.join(files::MODEL)
    } else {
        path.to_path_buf()
    };
    let mut file = checkpoint::load_tensors(&file_path)?;
    file.tensors
        .retain(|t| !t.name.starts_with(OPTIMIZER_PREFIX));
    let (config, mode) = checkpoint::model_description(&file, &file_path)?;
    let model = RepOptVgg::new(gpu, config, mode, 0)?;
    model.load_state(&file.by_name(), &file_path.display().to_string())?;
    Ok(model)
}

/// Metadata helper for files written beside a run.
pub fn run_metadata(cfg: &TrainConfig) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "train_config".into(),
        serde_json::to_string(cfg).unwrap_or_default(),
    );
    m
}

/// The training and test datasets of a config, shared with the evaluation command.
pub fn datasets(
    cfg: &TrainConfig,
) -> Result<(Arc<crate::data::Dataset>, Arc<crate::data::Dataset>)> {
    let s = load_split(cfg)?;
    Ok((s.train, s.test))
}
