//! `repopt tune`: measures the kernel variants a model's training step can use on this
//! adapter and caches the fastest, so that training does not pay for it on first use.

use clap::Args;
use repopt::bench::train;
use repopt::models::any::NetConfig;
use repopt::models::{Mode, domain};
use repopt::tensor::tuning::Tuning;

use super::values::{InRange, NonEmptyName};

#[derive(Args)]
pub struct TuneCmd {
    /// Architecture preset: A0, A1, B0, B1, B2, L1, L2 (RepOpt-VGG) or ghostnet-0.5x ...
    /// ghostnet-2.0x (RepOpt-GhostNet).
    #[arg(long, visible_alias = "model", default_value = "A0", value_parser = NonEmptyName)]
    config: String,
    /// Modes whose steps are tuned.
    #[arg(long, value_delimiter = ',', default_value = "target,repvgg")]
    modes: Vec<Mode>,
    /// Batch the steps run at (choices are per shape, batch included).
    #[arg(long, default_value_t = 32, value_parser = InRange(domain::BATCH))]
    batch_size: usize,
    /// Input resolution.
    #[arg(long, default_value_t = 32, value_parser = InRange(domain::RESOLUTION))]
    res: usize,
    /// Input channels and classes of the data the model will train on (as `train`).
    #[arg(long, num_args = 2, value_names = ["CHANNELS", "CLASSES"], default_values_t = [3, 1000])]
    data: Vec<usize>,
}

pub fn run(a: &TuneCmd, adapter: &str) -> anyhow::Result<()> {
    let gpu = super::gpu(adapter)?;
    let Tuning::Measure { .. } = gpu.tuning() else {
        anyhow::bail!(
            "REPOPT_TUNE={} turns measuring off; unset it (or set it to on) to tune",
            std::env::var(repopt::tensor::tuning::TUNE_ENV).unwrap_or_default()
        );
    };
    let cfg = NetConfig::preset(&a.config)?.with_data(a.data[0], a.data[1]);
    let known = gpu.tuned_choices().len();
    train::tune_steps(&gpu, &cfg, &a.modes, a.batch_size, a.res)?;
    let choices = gpu.tuned_choices();
    println!(
        "adapter: {}; {} shapes measured now, {} known before",
        gpu.adapter().name,
        choices.len() - known,
        known
    );
    match gpu.tuning_file() {
        Some(f) => println!("cache: {}", f.display()),
        None => println!("cache: none (no cache directory: set REPOPT_CACHE_DIR)"),
    }
    for (key, algorithm) in choices {
        println!("{key:<60} {}", algorithm.name());
    }
    Ok(())
}
