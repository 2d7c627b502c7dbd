//! `repopt scales inspect|convert`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use repopt::models::any::{NetConfig, NetScales};
use repopt::models::scales::read_named;

use super::values::{NonEmptyName, NonEmptyPath};

#[derive(Subcommand)]
pub enum ScalesCommand {
    /// Mean scales of every block or ghost module (the data of the paper's Fig. 7).
    Inspect(InspectArgs),
    /// Convert a scale file (the authors' .pth or ours) to safetensors.
    Convert(ConvertArgs),
}

#[derive(Args)]
pub struct InspectArgs {
    /// A .pth file of the authors or a .safetensors file written by `repopt search`.
    #[arg(value_parser = NonEmptyPath)]
    file: PathBuf,
    /// The configuration the scales are for: a RepOpt-VGG preset or ghostnet-0.5x ...
    /// (inferred from the file when omitted).
    #[arg(long, visible_alias = "model", value_parser = NonEmptyName)]
    config: Option<String>,
    /// JSON lines {"block", "s", "t", "u"} (GhostNet: "t", "u") instead of a table.
    #[arg(long)]
    json: bool,
    /// List every tensor of the file (name, length, mean, min, max) without matching it to
    /// a configuration.
    #[arg(long, conflicts_with = "config")]
    tensors: bool,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// Input scale file.
    #[arg(value_parser = NonEmptyPath)]
    input: PathBuf,
    /// Output safetensors file.
    #[arg(short, long, value_parser = NonEmptyPath)]
    output: PathBuf,
    /// The configuration the scales are for (inferred from the file when omitted).
    #[arg(long, visible_alias = "model", value_parser = NonEmptyName)]
    config: Option<String>,
}

/// Reads scales, with the configuration named or else the preset (or saved config) they fit.
fn load(file: &Path, config: Option<&str>) -> anyhow::Result<(NetScales, NetConfig)> {
    let named = read_named(file)?;
    let origin = file.display().to_string();
    if let Some(name) = config {
        let cfg = NetConfig::preset(name)?;
        return Ok((NetScales::from_named(&named, &cfg, &origin)?, cfg));
    }
    if let Ok(meta) = repopt::models::checkpoint::load_tensors(file)
        && let Some(json) = meta.metadata.get("config")
    {
        let cfg: NetConfig =
            serde_json::from_str(json).with_context(|| format!("{origin}: metadata 'config'"))?;
        return Ok((NetScales::from_named(&named, &cfg, &origin)?, cfg));
    }
    for name in NetConfig::preset_names() {
        let cfg = NetConfig::preset(&name)?;
        if let Ok(s) = NetScales::from_named(&named, &cfg, &origin) {
            return Ok((s, cfg));
        }
    }
    anyhow::bail!(
        "{origin}: the scales fit none of the presets {}; name the configuration with --config, or list the file's tensors with --tensors",
        NetConfig::preset_names().join(", ")
    )
}

pub fn run(cmd: &ScalesCommand) -> anyhow::Result<()> {
    match cmd {
        ScalesCommand::Inspect(a) if a.tensors => list_tensors(&a.file, a.json),
        ScalesCommand::Inspect(a) => {
            let (scales, cfg) = load(&a.file, a.config.as_deref())?;
            let summary = scales.summary();
            if a.json {
                for b in &summary {
                    println!("{}", serde_json::to_string(b)?);
                }
                return Ok(());
            }
            let kinds = scales.kinds();
            println!(
                "{}: {} blocks of {} scales",
                a.file.display(),
                summary.len(),
                cfg.name()
            );
            let mut head = format!("{:18}", "block");
            for (k, _) in kinds {
                head += &format!(" {:>10}", format!("mean {k}"));
            }
            println!("{head}");
            for b in &summary {
                let mut line = format!("{:18}", b.block);
                for (k, _) in kinds {
                    line += &match b.means.get(k) {
                        Some(v) => format!(" {v:10.4}"),
                        None => format!(" {:>10}", "-"),
                    };
                }
                println!("{line}");
            }
            Ok(())
        }
        ScalesCommand::Convert(a) => {
            let (scales, cfg) = load(&a.input, a.config.as_deref())?;
            scales.save(&a.output, &cfg)?;
            println!(
                "wrote {} blocks of {} scales to {}",
                scales.summary().len(),
                cfg.name(),
                a.output.display()
            );
            Ok(())
        }
    }
}

/// One tensor of a scale file, summarised.
#[derive(serde::Serialize)]
struct TensorSummary {
    name: String,
    len: usize,
    mean: f64,
    min: f32,
    max: f32,
}

fn list_tensors(file: &Path, json: bool) -> anyhow::Result<()> {
    let mut named = read_named(file)?;
    named.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<TensorSummary> = named
        .into_iter()
        .map(|t| {
            let v = &t.data;
            TensorSummary {
                len: v.len(),
                mean: v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64,
                min: v.iter().copied().fold(f32::INFINITY, f32::min),
                max: v.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                name: t.name,
            }
        })
        .collect();
    if json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!("{}: {} tensors", file.display(), rows.len());
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4);
    println!(
        "{:width$} {:>6} {:>10} {:>10} {:>10}",
        "name", "len", "mean", "min", "max"
    );
    for r in &rows {
        println!(
            "{:width$} {:>6} {:10.4} {:10.4} {:10.4}",
            r.name, r.len, r.mean, r.min, r.max
        );
    }
    Ok(())
}
