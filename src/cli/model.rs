//! `repopt model info`.

use clap::{Args, Subcommand};
use repopt::models::ghostnet::{GhostConfig, RepOptGhostNet};
use repopt::models::info::model_info;
use repopt::models::{Mode, VggConfig, domain};

use super::values::{InRange, NonEmptyName};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Parameters, multiply-accumulates and per-stage output shapes of a configuration.
    Info(InfoArgs),
}

/// Architecture selection shared by several commands.
#[derive(Args, Clone, Debug)]
pub struct ArchArgs {
    /// A0, A1, B0, B1, B2, L1 or L2 (RepOpt-VGG), or ghostnet-0.5x ... ghostnet-2.0x.
    #[arg(long, visible_alias = "model", default_value = "A0", value_parser = NonEmptyName)]
    pub config: String,
    /// Blocks per stage, e.g. 1,2,2,1 (overrides the preset).
    #[arg(long, value_delimiter = ',', value_parser = InRange(domain::NUM_BLOCKS))]
    pub num_blocks: Option<Vec<usize>>,
    /// Width multipliers per stage, e.g. 0.25,0.25,0.25,0.5 (overrides the preset).
    #[arg(long, value_delimiter = ',', value_parser = InRange(domain::WIDTH))]
    pub widths: Option<Vec<f32>>,
    /// Strides of stage 0 to 4, e.g. 1,1,2,2,2.
    #[arg(long, value_delimiter = ',', value_parser = InRange(domain::STRIDE))]
    pub strides: Option<Vec<usize>>,
    /// Add a squeeze-excitation block after each ReLU.
    #[arg(long)]
    pub se: bool,
}

impl ArchArgs {
    /// The configuration these flags describe for `in_channels` and `classes`.
    pub fn config(&self, in_channels: usize, classes: usize) -> anyhow::Result<VggConfig> {
        let mut c = VggConfig::preset(&self.config)?;
        let custom =
            self.num_blocks.is_some() || self.widths.is_some() || self.strides.is_some() || self.se;
        check_len("--num-blocks", self.num_blocks.as_deref(), 4)?;
        check_len("--widths", self.widths.as_deref(), 4)?;
        check_len("--strides", self.strides.as_deref(), 5)?;
        if let Some(b) = &self.num_blocks {
            c.num_blocks = [b[0], b[1], b[2], b[3]];
        }
        if let Some(w) = &self.widths {
            c.width_multipliers = [w[0], w[1], w[2], w[3]];
        }
        if let Some(s) = &self.strides {
            c.strides = [s[0], s[1], s[2], s[3], s[4]];
        }
        if custom {
            c.name = format!("{}-custom", c.name);
        }
        c.use_se = self.se;
        c.in_channels = in_channels;
        c.num_classes = classes;
        c.validate()?;
        Ok(c)
    }
}

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    arch: ArchArgs,
    /// target, repvgg, csla, hs or deploy.
    #[arg(long, default_value = "target")]
    mode: Mode,
    /// Classes of the classifier.
    #[arg(long, default_value_t = 1000, value_parser = InRange(domain::CLASSES))]
    classes: usize,
    /// Input channels.
    #[arg(long, default_value_t = 3, value_parser = InRange(domain::IN_CHANNELS))]
    in_channels: usize,
    /// Square input resolution.
    #[arg(long, default_value_t = 224, value_parser = InRange(domain::RESOLUTION))]
    resolution: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: &ModelCommand, adapter: &str) -> anyhow::Result<()> {
    let ModelCommand::Info(a) = cmd;
    if GhostConfig::is_ghostnet(&a.arch.config) {
        return ghost_info(a, adapter);
    }
    let config = a.arch.config(a.in_channels, a.classes)?;
    let info = model_info(&config, a.mode, a.resolution)?;
    if a.json {
        println!("{}", serde_json::to_string(&info)?);
        return Ok(());
    }
    println!(
        "{} ({}), {}x{} input, {} classes",
        info.config, info.mode, a.resolution, a.resolution, a.classes
    );
    println!(
        "  parameters: {} ({:.1} M)",
        info.params,
        info.params as f64 / 1e6
    );
    println!(
        "  multiply-accumulates: {} ({:.2} G)",
        info.flops,
        info.flops as f64 / 1e9
    );
    for s in &info.stages {
        println!(
            "  {:7} -> {} x {} x {}",
            s.stage, s.channels, s.height, s.width
        );
    }
    Ok(())
}

/// A GhostNet's size, counted on a built model, and its bottlenecks.
fn ghost_info(a: &InfoArgs, adapter: &str) -> anyhow::Result<()> {
    if a.arch.num_blocks.is_some()
        || a.arch.widths.is_some()
        || a.arch.strides.is_some()
        || a.arch.se
    {
        anyhow::bail!(
            "--num-blocks, --widths, --strides and --se apply to RepOpt-VGG presets, not to {}",
            a.arch.config
        );
    }
    let config = GhostConfig {
        in_channels: a.in_channels,
        num_classes: a.classes,
        ..GhostConfig::preset(&a.arch.config)?
    };
    let gpu = super::gpu(adapter)?;
    let model = RepOptGhostNet::new(&gpu, config.clone(), a.mode, 0)?;
    let params = model.parameter_count();
    if a.json {
        let rows: Vec<_> = config
            .bottlenecks()
            .iter()
            .map(|b| serde_json::json!({"name": b.name, "in": b.input, "mid": b.mid, "out": b.out, "kernel": b.kernel, "stride": b.stride, "se_hidden": b.se_hidden}))
            .collect();
        let info = serde_json::json!({"config": config.name, "mode": a.mode.name(), "params": params, "bottlenecks": rows});
        println!("{info}");
        return Ok(());
    }
    println!("{} ({}), {} classes", config.name, a.mode, a.classes);
    println!("  parameters: {params} ({:.1} M)", params as f64 / 1e6);
    for b in config.bottlenecks() {
        println!(
            "  {:10} {:4} -> {:4} -> {:4}  k{} s{}{}",
            b.name,
            b.input,
            b.mid,
            b.out,
            b.kernel,
            b.stride,
            b.se_hidden.map(|h| format!("  SE {h}")).unwrap_or_default()
        );
    }
    Ok(())
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
