//! Command-line interface: argument parsing and one module per command family.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_ranks;
mod convert;
mod devices;
mod eval;
mod export;
mod gr;
mod model;
mod pipeline;
mod qat;
mod quantize;
mod ranks;
mod scales;
mod search;
mod stats;
mod train;
mod tune;
mod values;

/// RepOptimizers and RepOpt-VGG on any Vulkan, Metal or DX12 GPU (or the CPU via lavapipe).
#[derive(Parser)]
#[command(name = "repopt", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    /// Adapter to run on: auto, an index from `repopt devices`, vulkan/metal/dx12, software,
    /// or part of the adapter's name (also REPOPT_ADAPTER).
    #[arg(
        long,
        global = true,
        env = "REPOPT_ADAPTER",
        default_value = "auto",
        value_parser = values::NonEmptyName
    )]
    pub adapter: String,
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  repopt pipeline                 # search, train RepOpt-VGG and baselines, compare (Fashion-MNIST)
  repopt devices
  repopt model info --config B1 --mode target
  repopt scales inspect RepOpt-VGG-B1-scales.pth --config B1";

#[derive(Subcommand)]
pub enum Command {
    /// List the adapters wgpu can see.
    Devices(devices::DevicesArgs),
    /// Describe model architectures.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Inspect and convert RepOptimizer scale files.
    #[command(subcommand)]
    Scales(scales::ScalesCommand),
    /// The main job: Hyper-Search, then RepOpt-VGG vs. plain SGD vs. RepVGG over seeds.
    Pipeline(pipeline::PipelineCmd),
    /// Hyper-Search: train the HS model and save its scales for a RepOptimizer.
    Search(search::SearchCmd),
    /// Train a model (target, repvgg, csla or hs) with SGD, AdamW or a RepOptimizer.
    Train(train::TrainCmd),
    /// Evaluate a trained model on the test split.
    Eval(eval::EvalCmd),
    /// Convert a trained model to the plain deploy form, checking its outputs.
    Convert(convert::ConvertCmd),
    /// Post-training INT8 quantization of a run: FP32 against INT8 per calibrator.
    Quantize(quantize::QuantizeCmd),
    /// Quantization-aware training of a run's deploy form: FP32, PTQ and QAT INT8 compared.
    Qat(qat::QatCmd),
    /// Export a run's deploy model as ONNX (FP32, or INT8 as a QDQ graph).
    Export(export::ExportCmd),
    /// Weight statistics of a run's 3x3 kernels (the paper's Table 11) and their histograms.
    Stats(stats::StatsCmd),
    /// Gradient Re-parameterization of declared blocks.
    #[command(subcommand)]
    Gr(gr::GrCommand),
    /// Measure which kernel variants (direct or Winograd convolution) are fastest for a
    /// model's training step on this adapter, and cache the choices.
    Tune(tune::TuneCmd),
    /// Benchmarks: peak, kernels, update, train, maxbatch (or all).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Opens the adapter the global --adapter flag selects. Kernel variants are measured on
/// first use and cached unless `REPOPT_TUNE` says otherwise.
pub fn gpu(selector: &str) -> anyhow::Result<repopt::tensor::Gpu> {
    use repopt::tensor::tuning::Tuning;
    Ok(repopt::tensor::Gpu::new(repopt::tensor::GpuOptions {
        adapter: ranks::adapter_for_rank(selector)
            .parse()
            .unwrap_or_default(),
        tuning: Tuning::from_env(Tuning::Measure { cache: None })?,
        ..Default::default()
    })?)
}

pub fn main() -> ExitCode {
    // Piped into `head`, a command line tool should stop quietly when the reader goes away;
    // Rust ignores SIGPIPE by default, which turns that into a panic on the next print.
    #[cfg(unix)]
    // SAFETY: restoring the default action of a signal, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // MPI, when started, is finalised when this goes out of scope at the end of main.
    let _ranks = match ranks::start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = ranks::check_command(&cli.command).and_then(|()| run(&cli));
    let world = repopt::train::dist::world();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors that embed their source's text would otherwise print it twice.
            let mut message = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    message = format!("{message}: {cause}");
                }
            }
            if world.is_distributed() {
                // The other ranks may be waiting in a collective this rank will never join:
                // end them all rather than let them hang.
                eprintln!("error (rank {}): {message}", world.rank());
                world.abort(1);
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Devices(a) => devices::run(a),
        Command::Model(c) => model::run(c, &cli.adapter),
        Command::Scales(c) => scales::run(c),
        Command::Pipeline(c) => pipeline::run(c, &cli.adapter),
        Command::Search(c) => search::run(c, &cli.adapter),
        Command::Train(c) => train::run(c, &cli.adapter),
        Command::Eval(c) => eval::run(c, &cli.adapter),
        Command::Convert(c) => convert::run(c, &cli.adapter),
        Command::Bench(c) => bench::run(c, &cli.adapter),
        Command::Tune(c) => tune::run(c, &cli.adapter),
        Command::Gr(c) => gr::run(c, &cli.adapter),
        Command::Stats(c) => stats::run(c, &cli.adapter),
        Command::Quantize(c) => quantize::run(c, &cli.adapter),
        Command::Export(c) => export::run(c, &cli.adapter),
        Command::Qat(c) => qat::run(c, &cli.adapter),
    }
}
