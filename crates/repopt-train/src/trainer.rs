//! The training loop: data -> model -> loss -> backward -> optimizer, with the learning
//! rate schedule, evaluation each epoch, metrics, checkpoints and bit-identical resume.
//! Where a run may start and what it leaves behind is [`crate::run_dir`]'s rule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use repopt_models::any::{NetConfig, NetScales, Network, prepare};
use repopt_models::checkpoint;
use repopt_models::repoptimizer::{RepOptimizerConfig, UpdateRule};
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
use crate::run_dir::{RunDir, Start};
use crate::schedule::LrSchedule;
use crate::state::{OPTIMIZER_PREFIX, Saved};

pub use crate::run_dir::files;
pub use crate::state::{Position, Record};

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
    pub model: NetConfig,
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
    /// Seconds spent training (evaluation excluded), over every process of the run.
    pub train_seconds: f64,
    /// Training images per second over the run.
    pub images_per_s: f64,
    /// Whether `stop_after_steps` ended the run before its last epoch.
    pub stopped_early: bool,
    /// Run directory.
    pub out: PathBuf,
}

/// Builds the optimizer a config asks for, preparing the model for a RepOptimizer.
fn build_optimizer(
    cfg: &TrainConfig,
    model: &Network,
) -> Result<(Box<dyn Optimizer>, Option<NetScales>)> {
    let sgd = SgdConfig {
        momentum: cfg.momentum,
        dampening: 0.0,
        nesterov: cfg.nesterov,
    };
    let mconf = &model.config();
    let scales = if cfg.optimizer.is_repopt() {
        let from_file = || -> Result<NetScales> {
            let path = cfg.scales.as_ref().ok_or_else(|| {
                TrainError::Config(format!("{} needs --scales FILE", cfg.optimizer))
            })?;
            Ok(NetScales::load(path, mconf)?)
        };
        Some(match cfg.scales_source {
            ScalesSource::File => from_file()?,
            ScalesSource::ChannelAveraged => from_file()?.channel_averaged(),
            ScalesSource::Ones => NetScales::ones(mconf),
            ScalesSource::HsInitial => NetScales::hs_initial(mconf),
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

/// Trains a model as `cfg` describes, in `cfg.out`, beginning as `start` says (see
/// [`crate::run_dir`] for when a directory accepts a run).
///
/// ```no_run
/// use repopt_train::{config::TrainConfig, run_dir::Start, trainer::{train, Silent}};
/// let gpu = repopt_tensor::Gpu::from_env()?;
/// let cfg = TrainConfig { epochs: 1, train_limit: Some(1000), ..Default::default() };
/// let summary = train(&gpu, &cfg, &Start::New, &mut Silent)?;
/// println!("top-1 {:.2}%", summary.best_top1);
/// # Ok::<(), repopt_train::TrainError>(())
/// ```
pub fn train(
    gpu: &Gpu,
    cfg: &TrainConfig,
    start: &Start,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    cfg.validate()?;
    let dir = RunDir::open(&cfg.out)?;
    train_in(gpu, &dir, cfg, start, observer)
}

/// [`train`] in a directory the caller already holds, with a validated `cfg`.
pub(crate) fn train_in(
    gpu: &Gpu,
    dir: &RunDir,
    cfg: &TrainConfig,
    start: &Start,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    let saved = dir.check_start(cfg, start)?;
    let DataSplits {
        train,
        test,
        normalize,
    } = load_split(cfg)?;
    let mconf = cfg.arch.build(train.channels, train.classes)?;
    let model = match &cfg.qat {
        None => Network::new(gpu, &mconf, cfg.mode, cfg.seed)?,
        Some(q) => crate::qat::starting_model(gpu, q, &mconf, cfg, train.len())?,
    };
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
    let resumed = saved.is_some();
    let (mut pos, mut record) = match saved {
        Some(saved) => {
            let at = (saved.pos, saved.record);
            Saved::restore(saved, &model, opt.as_mut())?;
            at
        }
        None => Default::default(),
    };
    dir.begin(cfg, start)?;
    let mut log = if resumed {
        MetricsLog::resume(&cfg.out, pos.step)?
    } else {
        MetricsLog::create(&cfg.out)?
    };
    let checkpoint_path = cfg.out.join(files::CHECKPOINT);
    let total = per_epoch * cfg.epochs;
    let stop_at = cfg.stop_after_steps.unwrap_or(u64::MAX);
    observer.start(&cfg.out.display().to_string(), total, pos.step);
    'epochs: while pos.epoch < cfg.epochs && pos.step < stop_at {
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
            let logits = model.forward_at(&x, true, pos.step)?;
            let loss = ops::cross_entropy(&logits, &y, cfg.label_smoothing)?;
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
            let stop_now = pos.step >= stop_at;
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
                break;
            }
        }
        record.train_seconds += epoch_clock.elapsed().as_secs_f64();
        record.images += epoch_images;
        if pos.batch < per_epoch {
            // Stopped inside the epoch: keep the position, evaluate when the epoch ends.
            crate::state::save(&cfg.out, cfg, &model, opt.as_ref(), pos, &record)?;
            break 'epochs;
        }
        let result = evaluate(&model, &test_loader)?;
        log.write(&Metric::Eval {
            epoch,
            step: pos.step,
            loss: result.loss,
            top1: result.top1,
            top5: result.top5,
        })?;
        observer.eval(epoch, &result);
        record.evaluated(result);
        pos.epoch += 1;
        pos.batch = 0;
        crate::state::save(&cfg.out, cfg, &model, opt.as_ref(), pos, &record)?;
    }
    observer.finish();
    let summary = RunSummary {
        model: mconf,
        mode: cfg.mode.name().into(),
        optimizer: cfg.optimizer.name().into(),
        params: model.parameter_count(),
        epochs: pos.epoch,
        steps: pos.step,
        final_eval: record.final_eval,
        best_top1: record.best_top1,
        train_seconds: record.train_seconds,
        images_per_s: record.images_per_s(),
        stopped_early: pos.step < total,
        out: cfg.out.clone(),
    };
    dir.write_json(files::SUMMARY, &summary)?;
    Ok(summary)
}

/// Loads a model from a run directory, a model file or a training checkpoint.
pub fn load_trained_model(gpu: &Gpu, path: &Path) -> Result<Network> {
    Ok(load_model_and_metadata(gpu, path)?.0)
}

/// Loads a model as [`load_trained_model`] does, with the settings of the run that trained
/// it: those in the file's metadata (checkpoints and converted models carry them), else the
/// run's `config.json` beside it, else the defaults of `repopt train`.
///
/// ```no_run
/// let gpu = repopt_tensor::Gpu::from_env()?;
/// let (model, cfg) = repopt_train::trainer::load_model_with_settings(&gpu, "deploy.safetensors".as_ref())?;
/// println!("{} trained on {} at {:?}", model.name(), cfg.dataset, cfg.resolution);
/// # Ok::<(), repopt_train::TrainError>(())
/// ```
pub fn load_model_with_settings(gpu: &Gpu, path: &Path) -> Result<(Network, TrainConfig)> {
    let (model, metadata) = load_model_and_metadata(gpu, path)?;
    let cfg = match metadata.get("train_config") {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            TrainError::Config(format!(
                "{}: the training configuration in its metadata is invalid: {e}",
                path.display()
            ))
        })?,
        None => TrainConfig::of_run(path)?.unwrap_or_default(),
    };
    Ok((model, cfg))
}

/// [`load_trained_model`], also returning the file's metadata (a checkpoint's, or a converted
/// model's, includes the run's `train_config`).
pub(crate) fn load_model_and_metadata(
    gpu: &Gpu,
    path: &Path,
) -> Result<(Network, BTreeMap<String, String>)> {
    let file_path = if path.is_dir() {
        path.join(files::MODEL)
    } else {
        path.to_path_buf()
    };
    let mut file = checkpoint::load_tensors(&file_path)?;
    file.tensors
        .retain(|t| !t.name.starts_with(OPTIMIZER_PREFIX));
    let model = checkpoint::model_from_file(gpu, &file, &file_path)?;
    Ok((model, file.metadata))
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
