//! The training loop: data -> model -> loss -> backward -> optimizer, with the learning
//! rate schedule, evaluation each epoch, metrics, checkpoints and bit-identical resume.
//! Where a run may start and what it leaves behind is [`crate::run_dir`]'s rule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use repopt_models::any::{NetConfig, Network};
use repopt_models::checkpoint;
use repopt_tensor::optim::{Optimizer, clip_grad_norm};
use repopt_tensor::{Gpu, Tensor, ops};
use serde::{Deserialize, Serialize};

use crate::build::build_optimizer;
use crate::config::TrainConfig;
use crate::data::{Batch, Loader, LoaderConfig, Preset, Shard};
use crate::datasets::{DataSplits, load_split};
use crate::dist::{
    self,
    ddp::{self, GradAverager},
    replicas::{self, per_rank_batch},
};
use crate::error::{Result, TrainError};
use crate::evaluate::{EvalResult, evaluate_across};
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

/// Trains a model as `cfg` describes, in `cfg.out`, beginning as `start` says (see
/// [`crate::run_dir`] for when a directory accepts a run).
///
/// In a distributed run ([`crate::dist`]) every rank calls this with the same settings; rank
/// 0 holds and writes the run directory, and `cfg.batch_size` is the global batch.
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
    let dir = open_on_root(&cfg.out)?;
    train_in(gpu, dir.as_ref(), cfg, start, observer)
}

/// The run directory, held by rank 0 alone (every rank fails if it cannot be held).
pub(crate) fn open_on_root(path: &Path) -> Result<Option<RunDir>> {
    let world = dist::world();
    world.agree(if world.is_root() {
        RunDir::open(path).map(Some)
    } else {
        Ok(None)
    })
}

/// [`train`] in a directory the caller already holds (`None` on the ranks other than 0),
/// with a validated `cfg`.
pub(crate) fn train_in(
    gpu: &Gpu,
    dir: Option<&RunDir>,
    cfg: &TrainConfig,
    start: &Start,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    let world = dist::world();
    let settings = serde_json::to_vec(cfg).unwrap_or_default();
    world.check_same("settings", &settings)?;
    let rank_batch = per_rank_batch(cfg, world)?;
    let saved = world.agree(match dir {
        Some(dir) => dir.check_start(cfg, start).and_then(|s| {
            match &s {
                Some(s) if s.world_size != world.size() => Err(TrainError::Resume {
                    path: s.path.display().to_string(),
                    message: format!(
                        "it was written by a run over {} rank(s) and this one has {}: resume with the same number of ranks (batch norm statistics and data shards depend on it)",
                        s.world_size,
                        world.size()
                    ),
                }),
                _ => Ok(s),
            }
        }),
        None => Ok(None),
    })?;
    let DataSplits {
        train,
        test,
        normalize,
    } = world.agree(load_split(cfg))?;
    let sizes = format!("{} {} {}", train.len(), test.len(), train.classes);
    world.check_same("datasets (image counts)", sizes.as_bytes())?;
    let mconf = cfg.arch.build(train.channels, train.classes)?;
    let model = world.agree(match &cfg.qat {
        None => Network::new(gpu, &mconf, cfg.mode, cfg.seed).map_err(TrainError::from),
        Some(q) => crate::qat::starting_model(gpu, q, &mconf, cfg, train.len()),
    })?;
    let (mut opt, _scales) = world.agree(build_optimizer(cfg, &model))?;
    let mut averager = GradAverager::new(opt.params(), ddp::BUCKET_BYTES)?;
    let resize = cfg.resolution.map(|r| (r, r));
    let pad = cfg.resolution.unwrap_or(train.height) / 8;
    let shard = Shard {
        index: world.rank(),
        count: world.size(),
    };
    let mut train_preset = LoaderConfig::for_preset(cfg.augment, rank_batch, normalize.clone());
    // A last, partial batch cannot be split into equal shares between ranks or micro-batches.
    train_preset.drop_last |= world.is_distributed() || cfg.accumulate > 1;
    let train_loader = Loader::try_new(
        train.clone(),
        LoaderConfig {
            seed: cfg.seed,
            workers: cfg.workers,
            resize,
            pad,
            shard,
            ..train_preset
        },
    )?;
    let test_loader = Loader::try_new(
        test.clone(),
        LoaderConfig {
            workers: cfg.workers,
            resize,
            shard,
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
    let restored = match saved {
        Some(saved) => {
            let at = (saved.pos, saved.record);
            Saved::restore(saved, &model, opt.as_mut()).map(|()| at)
        }
        None => Ok(Default::default()),
    };
    // Only rank 0 holds a checkpoint; every rank joins the agreement.
    let (mut pos, mut record) = world.agree(restored)?;
    let mut resumed_flag = vec![resumed as u8];
    world.broadcast_bytes(&mut resumed_flag);
    let resumed = resumed_flag == [1];
    replicas::start_from_root(world, &model, opt.as_mut(), resumed, &mut pos, &mut record)?;
    world.agree(dir.map_or(Ok(()), |d| d.begin(cfg, start)))?;
    let mut log = match dir {
        Some(_) if resumed => Some(MetricsLog::resume(&cfg.out, pos.step)?),
        Some(_) => Some(MetricsLog::create(&cfg.out)?),
        None => None,
    };
    let checkpoint_path = cfg.out.join(files::CHECKPOINT);
    let total = per_epoch * cfg.epochs;
    let stop_at = cfg.stop_after_steps.unwrap_or(u64::MAX);
    let save = |model: &Network, opt: &dyn Optimizer, pos: Position, record: &Record| match dir {
        Some(_) => crate::state::save(&cfg.out, cfg, model, opt, pos, record, world.size()),
        None => Ok(()),
    };
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
            let loss = step_loss(gpu, &model, &batch, cfg, pos.step)?;
            averager.average(world, opt.params())?;
            if let Some(max) = cfg.clip_grad {
                clip_grad_norm(opt.params(), max)?;
            }
            opt.step(lr as f32)?;
            opt.zero_grad();
            running = Some(match running {
                None => loss,
                Some(r) => r.add(&loss)?,
            });
            since_log += 1;
            pos.batch += 1;
            pos.step += 1;
            epoch_images += (batch.len() * world.size()) as u64;
            observer.tick(pos.step);
            let last_of_epoch = pos.batch == per_epoch;
            let stop_now = pos.step >= stop_at;
            if pos.step % cfg.log_every == 0 || last_of_epoch || stop_now {
                // The one host read of the step: the mean loss since the last log (over the
                // ranks, so that every rank takes the same decision below).
                let mine = running.take().map(|r| r.item()).transpose()?.unwrap_or(0.0) as f64
                    / since_log.max(1) as f64;
                let mean = replicas::mean(world, mine);
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
                if let Some(log) = &mut log {
                    log.write(&Metric::Train {
                        epoch,
                        step: pos.step,
                        loss: mean,
                        lr,
                        images_per_s: ips,
                    })?;
                }
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
            save(&model, opt.as_ref(), pos, &record)?;
            break 'epochs;
        }
        // Batch norm running statistics are rank 0's, as DDP broadcasts them.
        let state: Vec<Tensor> = model.state().into_iter().map(|(_, t)| t).collect();
        ddp::broadcast_tensors(world, &state)?;
        let result = evaluate_across(world, &model, &test_loader)?;
        if let Some(log) = &mut log {
            log.write(&Metric::Eval {
                epoch,
                step: pos.step,
                loss: result.loss,
                top1: result.top1,
                top5: result.top5,
            })?;
        }
        observer.eval(epoch, &result);
        record.evaluated(result);
        pos.epoch += 1;
        pos.batch = 0;
        save(&model, opt.as_ref(), pos, &record)?;
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
    // Every rank leaves once rank 0 has written the run, so that what follows on any rank
    // (a pipeline's next step, a search's scales) finds it.
    world.agree(dir.map_or(Ok(()), |d| d.write_json(files::SUMMARY, &summary)))?;
    Ok(summary)
}

/// Forward and backward passes of one step's batch, as `cfg.accumulate` micro-batches whose
/// gradients add up to the mean over the batch; returns the mean loss (on the device).
fn step_loss(
    gpu: &Gpu,
    model: &Network,
    batch: &Batch,
    cfg: &TrainConfig,
    step: u64,
) -> Result<Tensor> {
    let parts = cfg.accumulate.max(1);
    let n = batch.len();
    let [_, c, h, w] = batch.shape;
    let size = c * h * w;
    let m = n / parts;
    let mut total: Option<Tensor> = None;
    for k in 0..parts {
        let (lo, hi) = (k * m, (k + 1) * m);
        let x = Tensor::from_slice(
            gpu,
            &batch.images[lo * size..hi * size],
            &[hi - lo, c, h, w],
        )?;
        let y = Tensor::from_u32(gpu, &batch.labels[lo..hi], &[hi - lo])?;
        let logits = model.forward_at(&x, true, step)?;
        let mut loss = ops::cross_entropy(&logits, &y, cfg.label_smoothing)?;
        if parts > 1 {
            loss = loss.scale(1.0 / parts as f32)?;
        }
        loss.backward()?;
        let loss = loss.detach();
        total = Some(match total {
            None => loss,
            Some(t) => t.add(&loss)?,
        });
    }
    total.ok_or_else(|| TrainError::Config("an empty batch".into()))
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
