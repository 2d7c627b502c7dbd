//! Post-training INT8 quantization of a trained run: convert it to the deploy form, calibrate
//! activation ranges on a fixed, seeded set of training images, and evaluate the test split
//! in FP32 and with fake quantization for each calibrator.
//!
//! ```no_run
//! use repopt_models::quant::calibrate::Calibrator;
//! use repopt_train::quantize::{quantize_run, QuantizeOptions};
//! let gpu = repopt_tensor::Gpu::from_env()?;
//! let opts = QuantizeOptions { calibrators: Calibrator::all(), ..Default::default() };
//! let report = quantize_run(&gpu, "runs/pipeline/repvgg-seed0".as_ref(), &opts)?;
//! for row in &report.rows {
//!     println!("{}: top-1 {:.2}% (FP32 {:.2}%)", row.calibrator, row.eval.top1, report.fp32.top1);
//! }
//! # Ok::<(), repopt_train::TrainError>(())
//! ```

use std::path::Path;
use std::sync::Arc;

use repopt_models::any::Network;
use repopt_models::quant::calibrate::Calibrator;
use repopt_models::quant::network::{ActQuant, ActScheme, Observed, QuantVgg, layer_names};
use repopt_models::reparam::to_deploy;
use repopt_models::{Mode, RepOptVgg, onnx};
use repopt_tensor::{Gpu, Tensor};
use serde::Serialize;

use crate::config::TrainConfig;
use crate::data::{Loader, LoaderConfig, Preset, Split};
use crate::datasets::{limit, load};
use crate::error::{Result, TrainError};
use crate::evaluate::{EvalResult, evaluate_with};
use crate::run_dir::RunDir;
use crate::trainer::load_model_with_settings;

/// How to quantize.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// The calibrators to compare.
    pub calibrators: Vec<Calibrator>,
    /// Training images in the calibration set (a fixed random subset).
    pub calib_images: usize,
    /// Layers kept in float: names (`stage0`, `linear`), or `first` / `last`.
    pub keep_float: Vec<String>,
    /// Activation quantization.
    pub scheme: ActScheme,
    /// Evaluate on this many test images (None: the run's setting).
    pub test_limit: Option<usize>,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            calibrators: vec![Calibrator::Max],
            calib_images: 512,
            keep_float: Vec::new(),
            scheme: ActScheme::Symmetric,
            test_limit: None,
        }
    }
}

/// One calibrator's result.
#[derive(Clone, Debug, Serialize)]
pub struct QuantRow {
    /// The calibrator's name.
    pub calibrator: String,
    /// Test metrics with INT8 fake quantization.
    pub eval: EvalResult,
    /// Each layer's activation clipping threshold (None: kept float), in the order of
    /// [`QuantReport::layers`].
    pub thresholds: Vec<Option<f32>>,
}

/// FP32 against INT8 per calibrator.
#[derive(Clone, Debug, Serialize)]
pub struct QuantReport {
    /// Model configuration name.
    pub model: String,
    /// The mode it was trained in (converted to deploy before quantizing).
    pub mode: String,
    /// Calibration images used.
    pub calib_images: usize,
    /// The quantized layers, in network order.
    pub layers: Vec<String>,
    /// The largest input magnitude each layer saw in calibration.
    pub observed_max: Vec<f32>,
    /// Layers kept in float.
    pub kept_float: Vec<String>,
    /// Activation scheme.
    pub scheme: ActScheme,
    /// The deploy model in FP32.
    pub fp32: EvalResult,
    /// One row per calibrator.
    pub rows: Vec<QuantRow>,
}

/// Layer indices for `names` (`first`, `last` or layer names), with a clear error for an
/// unknown one.
fn keep_indices(layers: &[String], names: &[String]) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|n| match n.trim() {
            "first" => Ok(0),
            "last" => Ok(layers.len() - 1),
            name => layers.iter().position(|l| l == name).ok_or_else(|| {
                TrainError::Config(format!(
                    "--keep-float: no layer '{name}' (layers: first, last, {})",
                    layers.join(", ")
                ))
            }),
        })
        .collect()
}

/// An evaluation loader (no augmentation) over `n` images of a split (all when None), with
/// the run's preprocessing: what calibration and quantized evaluation read.
pub fn eval_loader(cfg: &TrainConfig, split: Split, n: Option<usize>) -> Result<Loader> {
    let ds = limit(
        load(cfg.dataset, &cfg.data_dir(), split, cfg.resolution)?,
        n,
    );
    let normalize = crate::data::Normalize::for_dataset(&ds.name, ds.channels);
    Ok(Loader::try_new(
        Arc::new(ds),
        LoaderConfig {
            resize: cfg.resolution.map(|r| (r, r)),
            workers: cfg.workers,
            ..LoaderConfig::for_preset(Preset::Eval, cfg.eval_batch_size, normalize)
        },
    )?)
}

/// A trained run in the deploy form.
pub struct Deployed {
    /// The deploy-form model (float).
    pub model: RepOptVgg,
    /// The mode the run trained in.
    pub mode: Mode,
    /// The run's settings.
    pub cfg: TrainConfig,
    /// The activation quantizers a quantization-aware training run learned (None for
    /// other runs).
    pub trained: Option<Vec<Option<ActQuant>>>,
}

/// The model at `run` (a run directory, model file or checkpoint; not a run still
/// training) in the deploy form, with the mode it trained in and its run's settings.
pub fn deployed_run(gpu: &Gpu, run: &Path) -> Result<Deployed> {
    if !run.exists() {
        return Err(TrainError::Config(format!(
            "{}: no such run or model file",
            run.display()
        )));
    }
    if run.is_dir() {
        // A run still training holds its directory's lock; its model is not final.
        RunDir::open(run).map_err(|e| {
            TrainError::Config(format!(
                "{}: cannot quantize a run in use: {e}",
                run.display()
            ))
        })?;
    }
    let (network, cfg) = load_model_with_settings(gpu, run)?;
    let Network::Vgg(model) = network else {
        return Err(TrainError::Config(format!(
            "{}: INT8 quantization covers RepOpt-VGG models; this is a GhostNet",
            run.display()
        )));
    };
    let trained = model.qat().map(|q| q.act_quants()).transpose()?;
    // A QAT model is already in the deploy form; the conversion drops its fake
    // quantization, leaving the float model.
    Ok(Deployed {
        model: to_deploy(&model)?,
        mode: match &cfg.qat {
            Some(_) => Mode::Deploy,
            None => model.mode(),
        },
        cfg,
        trained,
    })
}

/// A run converted to the deploy form and calibrated: what quantizing or exporting it
/// starts from.
pub struct Calibration {
    /// The deploy-form model.
    pub deploy: RepOptVgg,
    /// The mode the run trained in.
    pub mode: Mode,
    /// The run's settings (dataset, resolution, preprocessing).
    pub cfg: TrainConfig,
    /// What the calibration images showed at each layer.
    pub observed: Observed,
    /// Indices of the layers kept in float.
    pub keep: Vec<usize>,
    /// Calibration images used.
    pub images: usize,
    /// The activation quantizers of a quantization-aware training run (None otherwise).
    pub trained: Option<Vec<Option<ActQuant>>>,
}

impl Calibration {
    /// Loads the model at `run` (a run directory, model file or checkpoint; not a run still
    /// training), converts it and observes `calib_images` training images.
    pub fn of_run(
        gpu: &Gpu,
        run: &Path,
        calib_images: usize,
        keep_float: &[String],
    ) -> Result<Self> {
        if calib_images == 0 {
            return Err(TrainError::Config(
                "--calib-images must be at least 1: calibration needs images".into(),
            ));
        }
        let Deployed {
            model: deploy,
            mode,
            cfg,
            trained,
        } = deployed_run(gpu, run)?;
        let keep = keep_indices(&layer_names(&deploy), keep_float)?;
        let calib = eval_loader(&cfg, Split::Train, Some(calib_images))?;
        let mut batches = Vec::new();
        for b in calib.epoch(0) {
            batches.push(Tensor::from_slice(gpu, &b.images, &b.shape)?);
        }
        let observed = Observed::gather(&deploy, &batches)?;
        Ok(Calibration {
            deploy,
            mode,
            cfg,
            observed,
            keep,
            images: calib.dataset().len(),
            trained,
        })
    }

    /// Activation quantizers by `calibrator` (None for the layers kept in float).
    pub fn activations(
        &self,
        calibrator: Calibrator,
        scheme: ActScheme,
    ) -> Result<Vec<Option<ActQuant>>> {
        Ok(self.observed.calibrate(calibrator, scheme, &self.keep)?)
    }

    /// The deploy model as an ONNX QDQ graph whose activation scales are this
    /// calibration's by `calibrator`, and whose weights are quantized per channel as the
    /// engine's fake quantization does (FP32 needs no calibration: [`deployed_run`] and
    /// `onnx::export_fp32`).
    pub fn export_int8(&self, calibrator: Calibrator, scheme: ActScheme) -> Result<Vec<u8>> {
        self.export_int8_with(&self.activations(calibrator, scheme)?)
    }

    /// The deploy model as an ONNX QDQ graph with the given activation quantizers, one per
    /// layer of `layer_names` (None: float), such as a QAT run's
    /// ([`Calibration::trained`]).
    pub fn export_int8_with(&self, acts: &[Option<ActQuant>]) -> Result<Vec<u8>> {
        // The exporter numbers layers as the engine does when blocks have no squeeze-
        // excitation; the engine keeps SE gates in float, so they stay float here too.
        let layers = onnx::quant_layers(&self.deploy)?;
        let mut quants = Vec::with_capacity(layers.len());
        let mut keep = Vec::new();
        let mut engine = acts.iter();
        for l in &layers {
            let a = match l.kind {
                onnx::LayerKind::SeDown | onnx::LayerKind::SeUp => None,
                _ => *engine
                    .next()
                    .expect("one engine layer per convolution and classifier"),
            };
            match a {
                Some(a) => quants.push(onnx::ActivationQuant {
                    scale: a.scale,
                    zero_point: a.zero_point,
                    unsigned: a.qmin >= 0,
                }),
                None => {
                    keep.push(l.index);
                    // Unused for a float layer; any valid value.
                    quants.push(onnx::ActivationQuant::symmetric(1.0));
                }
            }
        }
        Ok(onnx::export_int8(&self.deploy, &quants, &keep)?)
    }
}

/// Quantizes the model at `run` (a run directory, model file or checkpoint) as `opts` says.
pub fn quantize_run(gpu: &Gpu, run: &Path, opts: &QuantizeOptions) -> Result<QuantReport> {
    if opts.calibrators.is_empty() {
        return Err(TrainError::Config("no calibrator to compare".into()));
    }
    let c = Calibration::of_run(gpu, run, opts.calib_images, &opts.keep_float)?;
    let (deploy, cfg, observed, keep, mode) = (&c.deploy, &c.cfg, &c.observed, &c.keep, c.mode);
    let layers = layer_names(deploy);
    let test = eval_loader(cfg, Split::Test, opts.test_limit.or(cfg.test_limit))?;
    let classes = deploy.config().num_classes;
    let fp32 = evaluate_with(gpu, classes, &test, &|x| Ok(deploy.forward(x, false)?))?;
    let mut rows = Vec::new();
    if let Some(acts) = &c.trained {
        // A QAT run's own ranges come first: they are what it trained for.
        let int8 = QuantVgg::new(deploy, acts.clone())?;
        rows.push(QuantRow {
            calibrator: "qat".into(),
            eval: evaluate_with(gpu, classes, &test, &|x| Ok(int8.forward(x)?))?,
            thresholds: acts
                .iter()
                .map(|a| a.map(|a| a.scale * (a.qmax - a.zero_point) as f32))
                .collect(),
        });
    }
    for &cal in &opts.calibrators {
        let acts = observed.calibrate(cal, opts.scheme, keep)?;
        let thresholds = acts
            .iter()
            .map(|a| a.map(|a| a.scale * (a.qmax - a.zero_point) as f32))
            .collect();
        let int8 = QuantVgg::new(deploy, acts)?;
        let eval = evaluate_with(gpu, classes, &test, &|x| Ok(int8.forward(x)?))?;
        rows.push(QuantRow {
            calibrator: cal.to_string(),
            eval,
            thresholds,
        });
    }
    Ok(QuantReport {
        model: deploy.config().name.clone(),
        mode: mode.name().into(),
        calib_images: c.images,
        kept_float: keep.iter().map(|&i| layers[i].clone()).collect(),
        observed_max: observed.histograms.iter().map(|h| h.max).collect(),
        layers,
        scheme: opts.scheme,
        fp32,
        rows,
    })
}
