//! `repopt qat`: quantization-aware training of a run's deploy form, then FP32, PTQ and
//! QAT INT8 side by side.

use std::path::PathBuf;

use clap::Args;
use repopt::models::domain::{self, Domain};
use repopt::models::quant::calibrate::Calibrator;
use repopt::train::progress::ProgressReporter;
use repopt::train::qat::{QatOptions, qat_run};

use super::gpu;
use super::train::Begin;
use super::values::{InRange, NonEmptyName, NonEmptyPath};

/// A moving average's weight of the newest value.
const AVERAGING: Domain<f32> = Domain::open_closed(0.0, 1.0);
/// A fraction of a run.
const FRACTION: Domain<f64> = Domain::closed(0.0, 1.0);

#[derive(Args)]
#[command(after_help = "Examples:
  repopt qat runs/pipeline/repopt-seed0 --epochs 1
  repopt qat runs/pipeline/repvgg-seed0 --epochs 2 --lr 5e-4 --freeze-observers 0.375
  repopt qat runs/pipeline/repvgg-seed0 --out runs/pipeline/repvgg-seed0-qat --resume

The run's deploy form (conv + bias; RepVGG and CSLA runs are converted first) is fine-tuned
with INT8 fake quantization of every convolution's and the classifier's input (per tensor,
symmetric) and weight (per output channel), with the run's data and augmentation, plain
SGD (AdamW for AdamW runs) and a cosine schedule. The QAT run directory holds checkpoints,
metrics, the model with its activation ranges, and qat.json; `repopt export --int8` and
`repopt quantize` read those ranges.")]
pub struct QatCmd {
    /// A run directory, model file or checkpoint of RepOpt-VGG, plain VGG, RepVGG or CSLA.
    #[arg(value_parser = NonEmptyPath)]
    run: PathBuf,
    /// The QAT run's directory (default: the run's path with -qat appended).
    #[arg(long, value_parser = NonEmptyPath)]
    out: Option<PathBuf>,
    /// Epochs of fine-tuning.
    #[arg(long, default_value_t = 1, value_parser = InRange(domain::EPOCHS))]
    epochs: u64,
    /// Learning rate (cosine-annealed to 0, no warm-up).
    #[arg(long, default_value_t = 1e-3, value_parser = InRange(domain::LR))]
    lr: f64,
    /// Training batch size (default: the run's).
    #[arg(long, value_parser = InRange(domain::BATCH))]
    batch_size: Option<usize>,
    /// The calibrator of the starting activation ranges: max, percentile-P, entropy, mse.
    #[arg(long, default_value = "max", value_parser = NonEmptyName)]
    calibrator: String,
    /// Training images that calibrate the starting ranges.
    #[arg(long, default_value_t = 512, value_parser = InRange(domain::IMAGE_LIMIT))]
    calib_images: usize,
    /// Layers kept in float, e.g. first,last or stage0,linear.
    #[arg(long, value_delimiter = ',', value_parser = NonEmptyName)]
    keep_float: Vec<String>,
    /// Weight of each batch in the moving-average activation ranges.
    #[arg(long, default_value_t = 0.01, value_parser = InRange(AVERAGING))]
    averaging: f32,
    /// Freeze the activation ranges after this fraction of the steps (0 to 1).
    #[arg(long, value_parser = InRange(FRACTION))]
    freeze_observers: Option<f64>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    begin: Begin,
}

pub fn run(cmd: &QatCmd, adapter: &str) -> anyhow::Result<()> {
    let calibrator: Calibrator = cmd.calibrator.parse()?;
    let out = cmd.out.clone().unwrap_or_else(|| {
        let mut name = cmd.run.as_os_str().to_owned();
        name.push("-qat");
        PathBuf::from(name)
    });
    let opts = QatOptions {
        out,
        epochs: cmd.epochs,
        lr: cmd.lr,
        batch_size: cmd.batch_size,
        calibrator,
        calib_images: cmd.calib_images,
        keep_float: cmd.keep_float.clone(),
        averaging: cmd.averaging,
        freeze_observers: cmd.freeze_observers,
    };
    let start = cmd.begin.start();
    let gpu = gpu(adapter)?;
    eprintln!(
        "quantization-aware training on {} -> {}",
        gpu.adapter().name,
        opts.out.display()
    );
    let r = qat_run(
        &gpu,
        &cmd.run,
        &opts,
        &start,
        &mut ProgressReporter::new("qat"),
    )?;
    if cmd.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{} ({}, deploy form), ranges from {}, {} epoch(s) of QAT in {}",
        r.run.model.name(),
        r.source_mode,
        r.calibrator,
        r.run.epochs,
        r.run.out.display()
    );
    println!("{:22} {:>8} {:>8} {:>8}", "", "top-1", "top-5", "loss");
    for (label, e) in [
        ("FP32", &r.fp32),
        ("INT8 PTQ", &r.ptq),
        ("FP32 after QAT", &r.qat_fp32),
        ("INT8 QAT", &r.qat_int8),
    ] {
        println!("{:22} {:8.2} {:8.2} {:8.4}", label, e.top1, e.top5, e.loss);
    }
    Ok(())
}
