//! `repopt bench`: the benchmark suite.

use clap::{Args, Subcommand};
use repopt::bench::kernels::{self, ConvCase};
use repopt::bench::report::{
    self, kernels_table, max_batch_table, memory_table, steps_table, targets_table, updates_table,
};
use repopt::bench::suite::{SuiteSizes, run_suite};
use repopt::bench::timing::TimingBudget;
use repopt::bench::{train, update};
use repopt::models::any::NetConfig;
use repopt::models::ghostnet::GhostConfig;
use repopt::models::{Mode, VggConfig, domain};

use repopt::train::dist;

use super::values::{InRange, NonEmptyName};
use super::{bench_ranks, gpu};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The adapter's arithmetic peak (register-only FMA kernel).
    Peak(Common),
    /// Convolutions, batch norm and matmul at network stage shapes, with the FMA peak.
    Kernels(KernelArgs),
    /// Fused RepOpt-SGD step vs. unfused kernels vs. plain SGD vs. AdamW vs. a copy.
    Update(UpdateArgs),
    /// One full training step per model mode (RepOpt-VGG or GhostNet).
    Train(TrainArgs),
    /// The largest batch whose training step fits a memory limit.
    Maxbatch(MaxBatchArgs),
    /// Peak bytes of a training step per mode at any size (planned, not run).
    Memory(MemoryArgs),
    /// Every benchmark with its defaults, and the targets.
    All(Common),
    /// Gradient averaging over the ranks of this launch (`mpirun -np N repopt bench
    /// allreduce`): MPI all-reduce bandwidth and the whole exchange, at a model's size.
    Allreduce(AllReduceArgs),
}

#[derive(Args, Clone)]
pub struct AllReduceArgs {
    #[command(flatten)]
    common: Common,
    /// Architecture preset whose gradients are averaged (ImageNet's 1000 classes).
    #[arg(long, visible_alias = "model", default_value = "B1", value_parser = NonEmptyName)]
    config: String,
}

impl BenchCommand {
    /// Whether the benchmark measures something over several ranks (the others are
    /// one-process benchmarks).
    pub fn spans_ranks(&self) -> bool {
        match self {
            BenchCommand::Allreduce(_) => true,
            BenchCommand::Train(a) => a.ranks,
            _ => false,
        }
    }
}

#[derive(Args, Clone)]
pub struct Common {
    /// JSON lines instead of tables.
    #[arg(long)]
    json: bool,
    /// Fewer and shorter samples (smoke runs).
    #[arg(long)]
    quick: bool,
}

impl Common {
    fn budget(&self) -> TimingBudget {
        if self.quick {
            TimingBudget::quick()
        } else {
            TimingBudget::default()
        }
    }
}

#[derive(Args, Clone)]
pub struct KernelArgs {
    #[command(flatten)]
    common: Common,
    /// RepOpt-VGG presets whose stage shapes are measured: A0, A1, B0, B1, B2, L1, L2.
    #[arg(long, value_delimiter = ',', default_value = "A0,B1", value_parser = NonEmptyName)]
    configs: Vec<String>,
    /// Input resolution the stage shapes are taken at.
    #[arg(long, default_value_t = 64, value_parser = InRange(domain::RESOLUTION))]
    res: usize,
    /// Batch.
    #[arg(long, default_value_t = 32, value_parser = InRange(domain::BATCH))]
    batch: usize,
    /// Side of the square matmul.
    #[arg(long, default_value_t = 1024, value_parser = InRange(domain::MATMUL))]
    matmul: usize,
}

#[derive(Args, Clone)]
pub struct UpdateArgs {
    #[command(flatten)]
    common: Common,
    /// Parameter elements updated.
    #[arg(long, default_value_t = 1 << 23, value_parser = InRange(domain::UPDATE_PARAMS))]
    params: usize,
}

#[derive(Args, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    common: Common,
    /// Architecture preset: A0, A1, B0, B1, B2, L1, L2 (RepOpt-VGG), ghostnet-0.5x,
    /// -0.58x, -0.8x, -1.0x, -1.11x, -1.3x, -1.5x, -2.0x (RepOpt-GhostNet), or quick (the
    /// quick pipeline's model; `--batch 64 --res 28` as it trains).
    #[arg(long, visible_alias = "model", default_value = "A0", value_parser = NonEmptyName)]
    config: String,
    /// Modes (target trains with its RepOptimizer; for GhostNet, repvgg is RepGhostNet).
    #[arg(long, value_delimiter = ',', default_value = "target,repvgg,hs")]
    modes: Vec<Mode>,
    /// Batch.
    #[arg(long, default_value_t = 32, value_parser = InRange(domain::BATCH))]
    batch: usize,
    /// Input resolution.
    #[arg(long, default_value_t = 32, value_parser = InRange(domain::RESOLUTION))]
    res: usize,
    /// Also average each mode's gradients over the ranks of this launch (`mpirun -np N`)
    /// and report the communication share of a step, with a projection to 8 ranks.
    #[arg(long)]
    ranks: bool,
    /// Instead of timing whole steps, time one step kernel by kernel, each launch waited
    /// for on its own: where the time goes (the sum exceeds a step's time by the waits).
    #[arg(long, conflicts_with = "ranks")]
    profile: bool,
}

#[derive(Args, Clone)]
pub struct MaxBatchArgs {
    #[command(flatten)]
    common: Common,
    /// Architecture preset: A0, A1, B0, B1, B2, L1, L2 (RepOpt-VGG) or ghostnet-0.5x,
    /// -0.58x, -0.8x, -1.0x, -1.11x, -1.3x, -1.5x, -2.0x (RepOpt-GhostNet).
    #[arg(long, visible_alias = "model", default_value = "B1", value_parser = NonEmptyName)]
    config: String,
    /// Modes.
    #[arg(long, value_delimiter = ',', default_value = "target,repvgg")]
    modes: Vec<Mode>,
    /// Input resolution.
    #[arg(long, default_value_t = 32, value_parser = InRange(domain::RESOLUTION))]
    res: usize,
    /// The engine's memory limit in bytes.
    #[arg(long, default_value_t = 1 << 30, value_parser = InRange(domain::MEMORY_LIMIT))]
    memory_limit: u64,
    /// Largest batch tried.
    #[arg(long, default_value_t = 4096, value_parser = InRange(domain::BATCH))]
    cap: usize,
}

#[derive(Args, Clone)]
pub struct MemoryArgs {
    #[command(flatten)]
    common: Common,
    /// Architecture preset: A0, A1, B0, B1, B2, L1, L2 (RepOpt-VGG) or ghostnet-0.5x,
    /// -0.58x, -0.8x, -1.0x, -1.11x, -1.3x, -1.5x, -2.0x (RepOpt-GhostNet).
    #[arg(long, visible_alias = "model", default_value = "B1", value_parser = NonEmptyName)]
    config: String,
    /// Modes.
    #[arg(long, value_delimiter = ',', default_value = "target,repvgg")]
    modes: Vec<Mode>,
    /// Batch.
    #[arg(long, default_value_t = 32, value_parser = InRange(domain::BATCH))]
    batch: usize,
    /// Input resolution.
    #[arg(long, default_value_t = 224, value_parser = InRange(domain::RESOLUTION))]
    res: usize,
}

fn print_json<T: serde::Serialize>(items: &[T]) -> anyhow::Result<()> {
    for i in items {
        println!("{}", serde_json::to_string(i)?);
    }
    Ok(())
}

fn header(gpu: &repopt::tensor::Gpu) {
    eprintln!(
        "adapter: {} ({}, {}, subgroup kernels: {})",
        gpu.adapter().name,
        gpu.adapter().backend.to_str(),
        gpu.adapter().device_type_name(),
        gpu.uses_subgroup_kernels()
    );
}

/// A preset of either family with ImageNet's 1000 classes, as the paper's benchmarks use, or
/// `quick`: the quick pipeline's model on Fashion-MNIST (1 channel, 10 classes; its images
/// are 28x28 and its batch 64).
fn imagenet_config(name: &str) -> anyhow::Result<NetConfig> {
    if name == "quick" {
        let arch = repopt::train::pipeline::preset("quick")?.train.arch;
        return Ok(arch.build(1, 10)?);
    }
    let preset = NetConfig::preset(name)?;
    let in_channels = preset.in_channels();
    Ok(preset.with_data(in_channels, 1000))
}

/// The targets table. Its goals are RepOpt-VGG's over RepVGG, none are set for GhostNet,
/// whose tables then stand alone rather than above an empty one.
fn print_targets(cfg: &NetConfig, targets: &[report::Target]) {
    if matches!(cfg, NetConfig::Vgg(_)) {
        println!("{}", targets_table(targets));
    }
}

fn kernel_suite(
    g: &repopt::tensor::Gpu,
    a: &KernelArgs,
) -> anyhow::Result<(kernels::PeakResult, Vec<kernels::KernelResult>)> {
    let b = a.common.budget();
    let peak = kernels::peak(g, b)?;
    let mut cases: Vec<ConvCase> = Vec::new();
    for name in &a.configs {
        if GhostConfig::is_ghostnet(name) {
            anyhow::bail!(
                "bench kernels measures RepOpt-VGG stage shapes, which {name} has not; \
                 bench train, memory and maxbatch take GhostNet presets"
            );
        }
        let cfg = VggConfig::preset(name)?;
        cases.extend(kernels::stage_cases(&cfg, a.res, a.batch));
    }
    let mut results = kernels::conv(g, &cases, b)?;
    if let Some(c) = cases.first() {
        results.extend(kernels::batch_norm(g, a.batch, c.co, c.hw, b)?);
    }
    results.push(kernels::matmul(g, a.matmul, b)?);
    Ok((peak, results))
}

pub fn run(cmd: &BenchCommand, adapter: &str) -> anyhow::Result<()> {
    let g = gpu(adapter)?;
    if dist::world().is_root() {
        header(&g);
    }
    match cmd {
        BenchCommand::Peak(c) => {
            let p = kernels::peak(&g, c.budget())?;
            if c.json {
                print_json(&[p])?;
            } else {
                println!("FMA peak: {:.1} GFLOP/s on {}", p.gflops, p.adapter);
            }
        }
        BenchCommand::Kernels(a) => {
            let (peak, results) = kernel_suite(&g, a)?;
            if a.common.json {
                print_json(&[&peak])?;
                print_json(&results)?;
            } else {
                println!("FMA peak: {:.1} GFLOP/s\n", peak.gflops);
                println!("{}", kernels_table(&results));
                println!(
                    "{}",
                    targets_table(&report::targets(Some(&peak), &results, &[], &[], &[]))
                );
            }
        }
        BenchCommand::Update(a) => {
            let r = update::update(&g, a.params, a.common.budget())?;
            if a.common.json {
                print_json(&r)?;
            } else {
                println!("{} parameters\n{}", a.params, updates_table(&r));
                println!(
                    "{}",
                    targets_table(&report::targets(None, &[], &r, &[], &[]))
                );
            }
        }
        BenchCommand::Train(a) if a.profile => {
            let cfg = imagenet_config(&a.config)?;
            for &mode in &a.modes {
                let times = train::profile_step(&g, &cfg, mode, a.batch, a.res)?;
                println!("{}", report::profile_table(mode.name(), &times));
            }
        }
        BenchCommand::Train(a) => {
            let cfg = imagenet_config(&a.config)?;
            let r = train::train_steps(&g, &cfg, &a.modes, a.batch, a.res, a.common.budget())?;
            let root = dist::world().is_root();
            if root && a.common.json {
                print_json(&r)?;
            } else if root {
                println!("{}", steps_table(&r));
                print_targets(&cfg, &report::targets(None, &[], &[], &r, &[]));
            }
            if a.ranks {
                bench_ranks::communication_share(
                    &g,
                    &cfg,
                    &a.modes,
                    &r,
                    a.common.json,
                    a.common.quick,
                )?;
            }
        }
        BenchCommand::Allreduce(a) => {
            let cfg = imagenet_config(&a.config)?;
            bench_ranks::allreduce(&g, &cfg, &a.config, a.common.json, a.common.quick)?;
        }
        BenchCommand::Maxbatch(a) => {
            let cfg = imagenet_config(&a.config)?;
            let selector = adapter.parse().unwrap_or_default();
            let r: Vec<_> = a
                .modes
                .iter()
                .map(|&m| train::max_batch(&selector, &cfg, m, a.res, a.memory_limit, a.cap))
                .collect::<Result<_, _>>()?;
            if a.common.json {
                print_json(&r)?;
            } else {
                println!("{}", max_batch_table(&r));
                print_targets(&cfg, &report::targets(None, &[], &[], &[], &r));
            }
        }
        BenchCommand::Memory(a) => {
            let cfg = imagenet_config(&a.config)?;
            let r = train::planned_peak(
                &adapter.parse().unwrap_or_default(),
                &cfg,
                &a.modes,
                a.batch,
                a.res,
            )?;
            if a.common.json {
                print_json(&r)?;
            } else {
                println!("{}", memory_table(&r));
                print_targets(&cfg, &report::memory_targets(&r));
            }
        }
        BenchCommand::All(c) => run_all(&g, adapter, c)?,
    }
    Ok(())
}

fn run_all(g: &repopt::tensor::Gpu, adapter: &str, c: &Common) -> anyhow::Result<()> {
    let selector = adapter.parse().unwrap_or_default();
    let results = run_suite(g, &selector, &SuiteSizes::default(), c.budget())?;
    if c.json {
        println!("{}", results.json_lines());
    } else {
        println!("{}", results.tables());
    }
    Ok(())
}
