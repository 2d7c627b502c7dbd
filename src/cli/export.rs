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
    /// With --int8: max, percentile, percentile-P, entropy or mse.
    #[arg(long, default_value = "max", value_parser = NonEmptyName, requires = "int8")]
    calibrator: String,
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
    let calibrator = cmd.calibrator.parse::<Calibrator>()?;
    let gpu = gpu(adapter)?;
    let int8 = cmd.int8.then_some((calibrator, cmd.scheme.into()));
    // Only INT8 needs calibration images; FP32 is the converted model alone.
    let (name, mode, images, bytes) = match int8 {
        Some((cal, scheme)) => {
            let c = Calibration::of_run(&gpu, &cmd.run, cmd.calib_images, &cmd.keep_float)?;
            let bytes = c.export_int8(cal, scheme)?;
            (c.deploy.config().name.clone(), c.mode, c.images, bytes)
        }
        None => {
            let (deploy, mode, _) = deployed_run(&gpu, &cmd.run)?;
            let bytes = onnx::export_fp32(&deploy)?;
            (deploy.config().name.clone(), mode, 0, bytes)
        }
    };
    write_atomic(&cmd.output, &bytes)?;
    println!(
        "{} ({} -> deploy) as {} ONNX, {} bytes: {}",
        name,
        mode,
        match int8 {
            Some((cal, _)) => format!("INT8 QDQ ({cal} calibration on {images} images)"),
            None => "FP32".into(),
        },
        bytes.len(),
        cmd.output.display()
    );
    Ok(())
}
