//! Quantization-aware training (QAT) of a trained run: its deploy form (the plain
//! conv + bias network every model here converts to) is fine-tuned with INT8 fake
//! quantization in the forward pass, by the ordinary training loop, so a QAT run is a run
//! like any other: checkpoints, resume, metrics, summary.
//!
//! The starting activation ranges come from a calibrator over a fixed set of training
//! images, as post-training quantization chooses them; moving-average observers then follow
//! the activations as the weights change, and may freeze after a fraction of the steps
//! (`repopt_models::quant::qat`). Evaluation during the run is with fake quantization.
//!
//! RepVGG needs nothing special here: its deploy form has the same structure as RepOpt-VGG's
//! and trains the same way. (The RepVGG authors re-insert batch norms into the deploy
//! model before their QAT because PyTorch's eager QAT tooling fuses conv + BN + ReLU
//! modules; the engine fake-quantizes conv + bias directly.)
//!
//! ```no_run
//! use repopt_train::qat::{qat_run, QatOptions};
//! use repopt_train::run_dir::Start;
//! use repopt_train::trainer::Silent;
//! let gpu = repopt_tensor::Gpu::from_env()?;
//! let opts = QatOptions { epochs: 1, ..QatOptions::new("runs/pipeline/repvgg-seed0-qat".into()) };
//! let r = qat_run(&gpu, "runs/pipeline/repvgg-seed0".as_ref(), &opts, &Start::New, &mut Silent)?;
//! println!("PTQ {:.2}% -> QAT {:.2}%", r.ptq.top1, r.qat_int8.top1);
//! # Ok::<(), repopt_train::TrainError>(())
//! ```

use std::path::{Path, PathBuf};

use repopt_models::any::{NetConfig, Network};
use repopt_models::quant::calibrate::Calibrator;
use repopt_models::quant::network::{ActScheme, QuantVgg};
use repopt_models::quant::qat::QatConfig;
use repopt_models::reparam::to_deploy;
use repopt_tensor::Gpu;
use serde::Serialize;

use crate::config::{OptimizerKind, QatSettings, TrainConfig};
use crate::data::Split;
use crate::error::{Result, TrainError};
use crate::evaluate::{EvalResult, evaluate_with};
use crate::quantize::{Calibration, QuantizeOptions, eval_loader, quantize_run};
use crate::run_dir::{Start, files};
use crate::trainer::{Observer, RunSummary, load_model_with_settings, train};

/// File a QAT run writes beside its model: [`QatReport`] as JSON.
pub const REPORT: &str = "qat.json";

/// How to fine-tune.
#[derive(Clone, Debug)]
pub struct QatOptions {
    /// The QAT run's directory.
    pub out: PathBuf,
    /// Epochs of fine-tuning.
    pub epochs: u64,
    /// Learning rate (cosine-annealed to 0, no warm-up, not rescaled by the batch size).
    pub lr: f64,
    /// Training batch size (None: the run's).
    pub batch_size: Option<usize>,
    /// The calibrator of the starting ranges.
    pub calibrator: Calibrator,
    /// Training images that calibrate the starting ranges.
    pub calib_images: usize,
    /// Layers kept in float: names (`stage0`, `linear`), or `first` / `last`.
    pub keep_float: Vec<String>,
    /// Weight of each batch in the moving-average ranges.
    pub averaging: f32,
    /// Freeze the ranges after this fraction of the steps (None: never).
    pub freeze_observers: Option<f64>,
}

impl QatOptions {
    /// The defaults, writing to `out`: one epoch at learning rate 1e-3, ranges calibrated
    /// by `max` over 512 images, moving with weight 0.01, never frozen.
    pub fn new(out: PathBuf) -> Self {
        QatOptions {
            out,
            epochs: 1,
            lr: 1e-3,
            batch_size: None,
            calibrator: Calibrator::Max,
            calib_images: 512,
            keep_float: Vec::new(),
            averaging: QatConfig::default().averaging,
            freeze_observers: None,
        }
    }
}

/// The training configuration of QAT of `run`: the run's data, preprocessing and
/// regularisation, the deploy form, plain SGD and the options' schedule.
pub fn qat_config(gpu: &Gpu, run: &Path, opts: &QatOptions) -> Result<TrainConfig> {
    let (model, source) = load_model_with_settings(gpu, run)?;
    if !matches!(model, Network::Vgg(_)) {
        return Err(TrainError::Config(format!(
            "{}: quantization-aware training covers RepOpt-VGG models; this is a GhostNet",
            run.display()
        )));
    }
    let batch_size = opts.batch_size.unwrap_or(source.batch_size);
    let from = std::fs::canonicalize(run).unwrap_or_else(|_| run.to_path_buf());
    let cfg = TrainConfig {
        mode: repopt_models::Mode::Deploy,
        optimizer: match source.optimizer {
            OptimizerKind::AdamW | OptimizerKind::RepoptAdamW => OptimizerKind::AdamW,
            _ => OptimizerKind::Sgd,
        },
        scales: None,
        scales_source: TrainConfig::default().scales_source,
        lr: opts.lr,
        lr_batch: batch_size,
        batch_size,
        warmup_epochs: 0,
        epochs: opts.epochs,
        clip_grad: None,
        out: opts.out.clone(),
        stop_after_steps: None,
        qat: Some(QatSettings {
            from,
            calibrator: opts.calibrator.to_string(),
            calib_images: opts.calib_images,
            keep_float: opts.keep_float.clone(),
            averaging: opts.averaging,
            freeze_observers: opts.freeze_observers,
        }),
        ..source
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The model a QAT run trains: the source run's deploy form with fake quantization
/// attached, its ranges calibrated as `q` says. `train_images` sets the step at which the
/// observers freeze.
pub(crate) fn starting_model(
    gpu: &Gpu,
    q: &QatSettings,
    expected: &NetConfig,
    cfg: &TrainConfig,
    train_images: usize,
) -> Result<Network> {
    let calibrator: Calibrator = q.calibrator.parse()?;
    let c = Calibration::of_run(gpu, &q.from, q.calib_images, &q.keep_float)?;
    let found = NetConfig::Vgg(c.deploy.config().clone());
    if &found != expected {
        return Err(TrainError::Config(format!(
            "{}: the model ({}) is not the one the QAT run's settings build ({})",
            q.from.display(),
            found.name(),
            expected.name()
        )));
    }
    let ranges = c.observed.thresholds(calibrator, &c.keep)?;
    let steps = (train_images / cfg.batch_size.max(1)) as u64 * cfg.epochs;
    let config = QatConfig {
        averaging: q.averaging,
        freeze_at_step: q.freeze_observers.map(|f| (f * steps as f64).ceil() as u64),
    };
    let mut deploy = c.deploy;
    deploy.attach_qat(config, &ranges)?;
    Ok(Network::Vgg(deploy))
}

/// What QAT achieved against the run it started from, on the same test images.
#[derive(Clone, Debug, Serialize)]
pub struct QatReport {
    /// The run fine-tuned.
    pub source: PathBuf,
    /// The mode it trained in.
    pub source_mode: String,
    /// The calibrator of the starting ranges (and of the PTQ comparison).
    pub calibrator: String,
    /// The source's deploy form in FP32.
    pub fp32: EvalResult,
    /// The source quantized after training with the same calibrator (PTQ).
    pub ptq: EvalResult,
    /// The fine-tuned weights in FP32.
    pub qat_fp32: EvalResult,
    /// The fine-tuned model in INT8 with its trained ranges: what deployment runs.
    pub qat_int8: EvalResult,
    /// Each layer's final activation range (None: float).
    pub ranges: Vec<Option<f32>>,
    /// The QAT run.
    pub run: RunSummary,
}

/// Fine-tunes `run` as `opts` says (beginning as `start` says: a new run, an overwrite or
/// a resume of `opts.out`), then evaluates the result in FP32 and INT8 against the
/// source's FP32 and PTQ, writing [`REPORT`] beside the QAT run's model.
pub fn qat_run(
    gpu: &Gpu,
    run: &Path,
    opts: &QatOptions,
    start: &Start,
    observer: &mut dyn Observer,
) -> Result<QatReport> {
    let cfg = match start {
        // A resume continues with the settings the run was started with.
        Start::Resume(c) => crate::run_dir::recorded_settings(&opts.out, c.as_deref())?,
        _ => qat_config(gpu, run, opts)?,
    };
    qat_run_config(gpu, &cfg, start, observer)
}

/// [`qat_run`] with the QAT run's configuration made already ([`qat_config`]).
pub fn qat_run_config(
    gpu: &Gpu,
    cfg: &TrainConfig,
    start: &Start,
    observer: &mut dyn Observer,
) -> Result<QatReport> {
    let q = cfg.qat.clone().ok_or_else(|| {
        TrainError::Config(format!(
            "{}: not a quantization-aware training run",
            cfg.out.display()
        ))
    })?;
    let summary = train(gpu, cfg, start, observer)?;
    let calibrator: Calibrator = q.calibrator.parse()?;
    let base = quantize_run(
        gpu,
        &q.from,
        &QuantizeOptions {
            calibrators: vec![calibrator],
            calib_images: q.calib_images,
            keep_float: q.keep_float.clone(),
            scheme: ActScheme::Symmetric,
            test_limit: cfg.test_limit,
        },
    )?;
    let (tuned, _) = load_model_with_settings(gpu, &cfg.out.join(files::MODEL))?;
    let Network::Vgg(tuned) = tuned else {
        unreachable!("QAT trains VGG models only");
    };
    let state = tuned.qat().ok_or_else(|| {
        TrainError::Config(format!(
            "{}: the model holds no quantization ranges",
            cfg.out.display()
        ))
    })?;
    let ranges = state.ranges()?;
    let int8 = QuantVgg::new(&tuned, state.act_quants()?)?;
    let float = to_deploy(&tuned)?;
    let test = eval_loader(cfg, Split::Test, cfg.test_limit)?;
    let classes = tuned.config().num_classes;
    let qat_fp32 = evaluate_with(gpu, classes, &test, &|x| Ok(float.forward(x, false)?))?;
    let qat_int8 = evaluate_with(gpu, classes, &test, &|x| Ok(int8.forward(x)?))?;
    let report = QatReport {
        source: q.from.clone(),
        source_mode: base.mode.clone(),
        calibrator: calibrator.to_string(),
        fp32: base.fp32,
        ptq: base.rows[0].eval,
        qat_fp32,
        qat_int8,
        ranges,
        run: summary,
    };
    let dir = crate::run_dir::RunDir::open(&cfg.out)?;
    dir.write_json(REPORT, &report)?;
    Ok(report)
}
