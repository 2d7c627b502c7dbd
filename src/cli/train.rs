//! `repopt train`, and the training flags `search` and `pipeline` share.

use std::path::PathBuf;

use clap::Args;
use repopt::models::ghostnet::GhostConfig;
use repopt::models::repoptimizer::IdentityInit;
use repopt::models::{Mode, domain};
use repopt::train::TrainConfig;
use repopt::train::config::{DatasetKind, OptimizerKind, ScalesSource};
use repopt::train::data::Preset;
use repopt::train::progress::ProgressReporter;
use repopt::train::run_dir::{Start, recorded_settings};
use repopt::train::trainer::train;

use super::gpu;
use super::values::{InRange, NonEmptyName, NonEmptyPath};

/// Flags that override a [`TrainConfig`] (all optional, so a config file can set them).
#[derive(Args, Clone, Debug, Default)]
pub struct TrainArgs {
    /// TOML or JSON file with any of the settings below (flags override it).
    #[arg(long, value_name = "FILE", value_parser = NonEmptyPath)]
    pub config_file: Option<PathBuf>,
    /// fashion-mnist, cifar10, cifar100 or folder.
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    /// Dataset directory (default: /usr/share/datasets/fashion-mnist for Fashion-MNIST).
    #[arg(long, value_parser = NonEmptyPath)]
    pub data_dir: Option<PathBuf>,
    /// Resize images to this square resolution.
    #[arg(long, value_parser = InRange(domain::RESOLUTION))]
    pub resolution: Option<usize>,
    /// Train on a fixed random subset of this many images.
    #[arg(long, value_parser = InRange(domain::IMAGE_LIMIT))]
    pub train_limit: Option<usize>,
    /// Evaluate on a fixed random subset of this many images.
    #[arg(long, value_parser = InRange(domain::IMAGE_LIMIT))]
    pub test_limit: Option<usize>,
    /// Augmentation preset: train (crop+flip+RandAugment), search (crop+flip) or eval (none).
    #[arg(long)]
    pub augment: Option<Preset>,
    /// Data loader threads (0: one per core).
    #[arg(long, value_parser = InRange(domain::WORKERS))]
    pub workers: Option<usize>,
    /// Architecture preset: A0, A1, B0, B1, B2, L1, L2 (RepOpt-VGG) or ghostnet-0.5x,
    /// -0.58x, -0.8x, -1.0x, -1.11x, -1.3x, -1.5x, -2.0x (RepOpt-GhostNet; --model too).
    #[arg(long = "config", visible_alias = "model", value_parser = NonEmptyName)]
    pub arch: Option<String>,
    /// Blocks per stage, e.g. 1,2,2,1.
    #[arg(long, value_delimiter = ',', value_parser = InRange(domain::NUM_BLOCKS))]
    pub num_blocks: Option<Vec<usize>>,
    /// Width multipliers per stage, e.g. 0.25,0.25,0.25,0.5.
    #[arg(long, value_delimiter = ',', value_parser = InRange(domain::WIDTH))]
    pub widths: Option<Vec<f32>>,
    /// Strides of stage 0 to 4, e.g. 1,1,2,2,2.
    #[arg(long, value_delimiter = ',', value_parser = InRange(domain::STRIDE))]
    pub strides: Option<Vec<usize>>,
    /// Squeeze-excitation after each ReLU.
    #[arg(long)]
    pub se: bool,
    /// Block mode: target, repvgg, csla or hs (for a GhostNet, repvgg is RepGhostNet).
    #[arg(long)]
    pub mode: Option<Mode>,
    /// sgd, adamw, repopt-sgd or repopt-adamw.
    #[arg(long)]
    pub optimizer: Option<OptimizerKind>,
    /// Scale file for a RepOptimizer (`repopt search` output, or the authors' .pth).
    #[arg(long, value_parser = NonEmptyPath)]
    pub scales: Option<PathBuf>,
    /// Scales from: file, ones, hs-initial or channel-averaged (the paper's ablations).
    #[arg(long)]
    pub scales_source: Option<ScalesSource>,
    /// RepOptimizer ablation: skip the re-initialisation.
    #[arg(long)]
    pub no_reinit: bool,
    /// RepOptimizer ablation: skip the Grad Mults.
    #[arg(long)]
    pub no_grad_mult: bool,
    /// Identity term of the re-initialisation: one or searched.
    #[arg(long, value_parser = parse_identity)]
    pub identity_init: Option<IdentityInit>,
    /// Learning rate for a batch of --lr-batch images (scaled linearly to the batch size).
    #[arg(long, value_parser = InRange(domain::LR))]
    pub lr: Option<f64>,
    /// Batch size the learning rate is given for.
    #[arg(long, value_parser = InRange(domain::LR_BATCH))]
    pub lr_batch: Option<usize>,
    /// Warm-up epochs.
    #[arg(long, value_parser = InRange(domain::WARMUP_EPOCHS))]
    pub warmup_epochs: Option<u64>,
    /// Weight decay.
    #[arg(long, value_parser = InRange(domain::WEIGHT_DECAY))]
    pub weight_decay: Option<f32>,
    /// SGD momentum.
    #[arg(long, value_parser = InRange(domain::MOMENTUM))]
    pub momentum: Option<f32>,
    /// Plain instead of nesterov momentum.
    #[arg(long)]
    pub no_nesterov: bool,
    /// Label smoothing.
    #[arg(long, value_parser = InRange(domain::LABEL_SMOOTHING))]
    pub label_smoothing: Option<f32>,
    /// Clip the gradient norm (refused with a RepOptimizer).
    #[arg(long, value_parser = InRange(domain::CLIP_GRAD))]
    pub clip_grad: Option<f32>,
    /// Epochs.
    #[arg(long, value_parser = InRange(domain::EPOCHS))]
    pub epochs: Option<u64>,
    /// Batch size: the global batch of a step, over every rank of an MPI launch.
    #[arg(long, value_parser = InRange(domain::BATCH))]
    pub batch_size: Option<usize>,
    /// Train each step's batch as N micro-batches, averaging their gradients (batch norm
    /// statistics then cover a micro-batch).
    #[arg(long, value_name = "N", value_parser = InRange(domain::BATCH))]
    pub accumulate: Option<usize>,
    /// Evaluation batch size.
    #[arg(long, value_parser = InRange(domain::BATCH))]
    pub eval_batch_size: Option<usize>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output directory.
    #[arg(long, value_parser = NonEmptyPath)]
    pub out: Option<PathBuf>,
    /// Log the loss every N steps.
    #[arg(long, value_parser = InRange(domain::STEPS))]
    pub log_every: Option<u64>,
    /// Stop after N steps in total (a checkpoint is written; --resume continues).
    #[arg(long, value_parser = InRange(domain::STEPS))]
    pub stop_after_steps: Option<u64>,
}

fn parse_identity(s: &str) -> Result<IdentityInit, String> {
    match s.to_ascii_lowercase().as_str() {
        "one" | "1" => Ok(IdentityInit::One),
        "searched" => Ok(IdentityInit::Searched),
        _ => Err(format!("'{s}': expected one or searched")),
    }
}

impl TrainArgs {
    /// `base` (or the config file, when given), overridden by the flags that were set.
    pub fn resolve(&self, base: TrainConfig) -> anyhow::Result<TrainConfig> {
        let c = match &self.config_file {
            Some(f) => TrainConfig::from_file(f)?,
            None => base,
        };
        self.apply(c)
    }

    /// `base` with what was passed on top: the keys the config file sets and the flags
    /// given. A resume starts from the run's own settings this way.
    pub fn overlay(&self, base: TrainConfig) -> anyhow::Result<TrainConfig> {
        let c = match &self.config_file {
            Some(f) => TrainConfig::from_file_over(f, &base)?,
            None => base,
        };
        self.apply(c)
    }

    fn apply(&self, mut c: TrainConfig) -> anyhow::Result<TrainConfig> {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { c.$field = v.clone().into(); } )* };
        }
        set!(
            dataset,
            resolution,
            train_limit,
            test_limit,
            augment,
            workers,
            mode,
            optimizer,
            scales_source,
            identity_init
        );
        set!(
            lr,
            lr_batch,
            warmup_epochs,
            weight_decay,
            momentum,
            label_smoothing,
            epochs,
            batch_size,
            accumulate,
            eval_batch_size,
            seed,
            log_every
        );
        if let Some(v) = &self.data_dir {
            c.data_dir = Some(v.clone());
        }
        if let Some(v) = &self.scales {
            c.scales = Some(v.clone());
        }
        if let Some(v) = self.clip_grad {
            c.clip_grad = Some(v);
        }
        if let Some(v) = self.stop_after_steps {
            c.stop_after_steps = Some(v);
        }
        if let Some(v) = &self.out {
            c.out = v.clone();
        }
        if let Some(v) = &self.arch {
            c.arch.preset = v.clone();
            if GhostConfig::is_ghostnet(v) {
                // A preset's RepOpt-VGG shape (the quick pipeline's) does not carry over to a
                // GhostNet; the same flags given here still do, and are refused.
                c.arch.num_blocks = None;
                c.arch.widths = None;
                c.arch.strides = None;
                c.arch.se = false;
            }
        }
        check_len("--num-blocks", self.num_blocks.as_deref(), 4)?;
        check_len("--widths", self.widths.as_deref(), 4)?;
        check_len("--strides", self.strides.as_deref(), 5)?;
        if let Some(b) = &self.num_blocks {
            c.arch.num_blocks = Some([b[0], b[1], b[2], b[3]]);
        }
        if let Some(w) = &self.widths {
            c.arch.widths = Some([w[0], w[1], w[2], w[3]]);
        }
        if let Some(s) = &self.strides {
            c.arch.strides = Some([s[0], s[1], s[2], s[3], s[4]]);
        }
        if self.se {
            c.arch.se = true;
        }
        if self.no_reinit {
            c.reinit = false;
        }
        if self.no_grad_mult {
            c.grad_mult = false;
        }
        if self.no_nesterov {
            c.nesterov = false;
        }
        Ok(c)
    }
}

#[derive(Args)]
#[command(after_help = "Examples:
  repopt train --mode target --optimizer sgd --epochs 5 --out runs/target
  repopt train --optimizer repopt-sgd --scales runs/search/scales.safetensors --out runs/repopt
  repopt train --mode repvgg --config B1 --dataset cifar100 --data-dir data/cifar-100-binary
  repopt train --out runs/repopt --resume
  repopt train --out runs/repopt --resume --stop-after-steps 5000 --workers 8

A run directory holds one run: a new run needs an empty --out (or --overwrite to replace
the run there). --resume continues the run with its own settings; flags given with it may
change only --workers, --eval-batch-size, --log-every and --stop-after-steps.")]
pub struct TrainCmd {
    #[command(flatten)]
    pub args: TrainArgs,
    #[command(flatten)]
    pub begin: Begin,
}

/// How a run begins in its directory, as `train` and `search` take it.
#[derive(Args, Clone, Debug, Default)]
pub struct Begin {
    /// Continue the run in --out from its checkpoint (or from the checkpoint given), with its
    /// own settings.
    #[arg(long, num_args = 0..=1, value_name = "CHECKPOINT", value_parser = NonEmptyPath)]
    pub resume: Option<Option<PathBuf>>,
    /// Replace the run in --out (its files are removed once the new run's data has loaded).
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
}

impl Begin {
    /// How a run with settings of its own making begins (`--resume` reads the run's).
    pub fn start(&self) -> Start {
        match (&self.resume, self.overwrite) {
            (Some(checkpoint), _) => Start::Resume(checkpoint.clone()),
            (None, true) => Start::Overwrite,
            (None, false) => Start::New,
        }
    }

    /// The settings of the run and how it begins: for a resume, the run's own settings with
    /// what was passed on top (a time box is not carried over); otherwise `base` with the
    /// flags.
    pub fn settings(
        &self,
        args: &TrainArgs,
        base: TrainConfig,
    ) -> anyhow::Result<(TrainConfig, Start)> {
        let given = args.resolve(base)?;
        let Some(checkpoint) = &self.resume else {
            let start = if self.overwrite {
                Start::Overwrite
            } else {
                Start::New
            };
            return Ok((given, start));
        };
        let run = recorded_settings(&given.out, checkpoint.as_deref())?;
        let cfg = args.overlay(TrainConfig {
            stop_after_steps: None,
            out: given.out,
            ..run
        })?;
        Ok((cfg, Start::Resume(checkpoint.clone())))
    }
}

/// Defaults of `repopt train` when no flags are given: a short run of the default model.
pub fn train_defaults() -> TrainConfig {
    TrainConfig {
        out: PathBuf::from("runs/train"),
        ..TrainConfig::default()
    }
}

pub fn run(cmd: &TrainCmd, adapter: &str) -> anyhow::Result<()> {
    let (cfg, start) = cmd.begin.settings(&cmd.args, train_defaults())?;
    let gpu = gpu(adapter)?;
    let world = repopt::train::dist::world();
    eprintln!(
        "training on {}{} -> {}",
        gpu.adapter().name,
        if world.is_distributed() {
            format!(" (rank {} of {})", world.rank(), world.size())
        } else {
            String::new()
        },
        cfg.out.display()
    );
    let summary = train(&gpu, &cfg, &start, &mut *observer("train"))?;
    if world.is_root() {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// The progress bar, drawn by rank 0 alone in a distributed launch.
pub fn observer(label: &str) -> Box<dyn repopt::train::trainer::Observer + Send> {
    if repopt::train::dist::world().is_root() {
        Box::new(ProgressReporter::new(label))
    } else {
        Box::new(repopt::train::trainer::Silent)
    }
}

/// Checks a comma-separated list flag has exactly `n` values.
pub fn check_len<T>(flag: &str, v: Option<&[T]>, n: usize) -> anyhow::Result<()> {
    match v {
        Some(v) if v.len() != n => {
            anyhow::bail!("{flag} takes {n} comma-separated values, got {}", v.len())
        }
        _ => Ok(()),
    }
}
