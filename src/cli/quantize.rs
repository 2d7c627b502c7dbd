//! `repopt quantize`: post-training INT8 quantization of a run, FP32 against INT8 per
//! calibrator.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use repopt::models::quant::calibrate::Calibrator;
use repopt::models::quant::network::ActScheme;
use repopt::train::quantize::{QuantizeOptions, quantize_run};

use super::gpu;
use super::values::{InRange, NonEmptyName, NonEmptyPath};
use repopt::models::domain;

/// Activation quantization on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scheme {
    /// INT8 in [-127, 127], zero point 0.
    Symmetric,
    /// UINT8 in [0, 255] with a zero point.
    Asymmetric,
}

#[derive(Args)]
#[command(after_help = "Examples:
  repopt quantize runs/pipeline/repvgg-seed0 --calibrator all
  repopt quantize runs/pipeline/repopt-seed0 --calibrator entropy --keep-float first,last --json")]
pub struct QuantizeCmd {
    /// A run directory, model file or checkpoint of RepOpt-VGG, plain VGG, RepVGG or CSLA
    /// (converted to the deploy form first).
    #[arg(value_parser = NonEmptyPath)]
    run: PathBuf,
    /// max, percentile (99.99), percentile-P, entropy, mse, or all (every one of them, with
    /// percentiles 99.9, 99.99 and 99.999).
    #[arg(long, default_value = "all", value_parser = NonEmptyName)]
    calibrator: String,
    /// Training images in the calibration set (a fixed random subset).
    #[arg(long, default_value_t = 512, value_parser = InRange(domain::IMAGE_LIMIT))]
    calib_images: usize,
    /// Layers kept in float, e.g. first,last or stage0,linear.
    #[arg(long, value_delimiter = ',', value_parser = NonEmptyName)]
    keep_float: Vec<String>,
    /// Activation quantization.
    #[arg(long, value_enum, default_value_t = Scheme::Symmetric)]
    scheme: Scheme,
    /// Evaluate on this many test images (default: the run's setting).
    #[arg(long, value_parser = InRange(domain::IMAGE_LIMIT))]
    test_limit: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl From<Scheme> for ActScheme {
    fn from(s: Scheme) -> Self {
        match s {
            Scheme::Symmetric => ActScheme::Symmetric,
            Scheme::Asymmetric => ActScheme::Asymmetric,
        }
    }
}

pub fn run(cmd: &QuantizeCmd, adapter: &str) -> anyhow::Result<()> {
    let calibrators = if cmd.calibrator.trim().eq_ignore_ascii_case("all") {
        Calibrator::all()
    } else {
        vec![cmd.calibrator.parse::<Calibrator>()?]
    };
    let opts = QuantizeOptions {
        calibrators,
        calib_images: cmd.calib_images,
        keep_float: cmd.keep_float.clone(),
        scheme: cmd.scheme.into(),
        test_limit: cmd.test_limit,
    };
    let gpu = gpu(adapter)?;
    let r = quantize_run(&gpu, &cmd.run, &opts)?;
    if cmd.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{} ({}, converted to deploy), {} calibration images, activations {:?}{}",
        r.model,
        r.mode,
        r.calib_images,
        r.scheme,
        if r.kept_float.is_empty() {
            String::new()
        } else {
            format!(", float: {}", r.kept_float.join(", "))
        }
    );
    println!("{:20} {:>8} {:>8} {:>8}", "", "top-1", "top-5", "loss");
    println!(
        "{:20} {:8.2} {:8.2} {:8.4}",
        "FP32", r.fp32.top1, r.fp32.top5, r.fp32.loss
    );
    for row in &r.rows {
        println!(
            "{:20} {:8.2} {:8.2} {:8.4}",
            format!("INT8 {}", row.calibrator),
            row.eval.top1,
            row.eval.top5,
            row.eval.loss
        );
    }
    Ok(())
}
