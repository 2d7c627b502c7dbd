//! `repopt export`: a run's deploy model as ONNX, FP32 or INT8 (QDQ).

use std::path::PathBuf;

use clap::Args;
use repopt::models::checkpoint::write_atomic;
use repopt::models::domain;
use repopt::models::onnx;
use repopt::models::quant::calibrate::Calibrator;
use repopt::train::quantize::{Calibration, deployed_run};

use super::gpu;
use super::quantize::Scheme;
use super::values::{InRange, NonEmptyName, NonEmptyPath};

#[derive(Args)]
#[command(after_help = "Examples:
  repopt export runs/pipeline/repopt-seed0 -o repopt.onnx
  repopt export runs/pipeline/repopt-seed0 -o repopt-int8.onnx --int8 --calibrator mse")]
pub struct ExportCmd {
    /// A RepOpt-VGG run directory, model file or checkpoint (any mode; converted to the
    /// deploy form).
    #[arg(value_parser = NonEmptyPath)]
    run: PathBuf,
    /// The ONNX file to write.
    #[arg(short, long, value_parser = NonEmptyPath)]
    output: PathBuf,
    /// Write an INT8 QDQ graph (QuantizeLinear / DequantizeLinear with calibrated
    /// activation scales, per-channel int8 weights) instead of FP32.
    #[arg(long)]
    int8: bool,
    /// With --int8: max, percentile, percentile-P, entropy or mse (default: the ranges a
    /// `repopt qat` run learned, max for other runs).
    #[arg(long, value_parser = NonEmptyName, requires = "int8")]
    calibrator: Option<String>,
    /// With --int8: activation quantization.
    #[arg(long, value_enum, default_value_t = Scheme::Symmetric, requires = "int8")]
    scheme: Scheme,
    /// With --int8: training images in the calibration set.
    #[arg(long, default_value_t = 512, value_parser = InRange(domain::IMAGE_LIMIT), requires = "int8")]
    calib_images: usize,
    /// With --int8: layers kept in float, e.g. first,last.
    #[arg(long, value_delimiter = ',', value_parser = NonEmptyName, requires = "int8")]
    keep_float: Vec<String>,
}

pub fn run(cmd: &ExportCmd, adapter: &str) -> anyhow::Result<()> {
    let calibrator = cmd
        .calibrator
        .as_deref()
        .map(str::parse::<Calibrator>)
        .transpose()?;
    let gpu = gpu(adapter)?;
    // Only INT8 needs calibration images; FP32 is the converted model alone.
    let (name, mode, how, bytes) = if cmd.int8 {
        let c = Calibration::of_run(&gpu, &cmd.run, cmd.calib_images, &cmd.keep_float)?;
        let (how, bytes) = match (calibrator, &c.trained) {
            (None, Some(acts)) => (
                "INT8 QDQ (activation ranges from quantization-aware training)".to_string(),
                c.export_int8_with(acts)?,
            ),
            (cal, _) => {
                let cal = cal.unwrap_or(Calibrator::Max);
                (
                    format!("INT8 QDQ ({cal} calibration on {} images)", c.images),
                    c.export_int8(cal, cmd.scheme.into())?,
                )
            }
        };
        (c.deploy.config().name.clone(), c.mode, how, bytes)
    } else {
        let d = deployed_run(&gpu, &cmd.run)?;
        let bytes = onnx::export_fp32(&d.model)?;
        (
            d.model.config().name.clone(),
            d.mode,
            "FP32".to_string(),
            bytes,
        )
    };
    write_atomic(&cmd.output, &bytes)?;
    println!(
        "{} ({} -> deploy) as {} ONNX, {} bytes: {}",
        name,
        mode,
        how,
        bytes.len(),
        cmd.output.display()
    );
    Ok(())
}
