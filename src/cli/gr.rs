//! `repopt gr verify`: the equivalence check of a declared CSLA block.

use clap::{Args, Subcommand, ValueEnum};
use repopt::models::gr::verify::{VerifyConfig, VerifyReport, verify};
use repopt::models::gr::{Branch, CslaBlock};

use super::values::InRange;
use repopt::models::domain::Domain;

#[derive(Subcommand)]
pub enum GrCommand {
    /// Train a declared block's CSLA form (plain SGD) and its target form (the derived
    /// RepOptimizer) side by side and print how far apart they end, with each rule switched
    /// off as the control.
    Verify(VerifyArgs),
}

/// The declared blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BlockKind {
    /// RepOpt-VGG: 3x3 + 1x1 + identity.
    Vgg,
    /// RepOpt-GhostNet's ghost module: depthwise 3x3 + identity.
    Ghost,
    /// ACNet-style: 3x3 + 1x3 + 3x1.
    Acnet,
    /// 5x5 + 3x3 + identity.
    Wide,
}

#[derive(Args)]
#[command(after_help = "Example:
  repopt gr verify --block acnet --steps 100")]
pub struct VerifyArgs {
    /// Which declaration (all when omitted).
    #[arg(long)]
    block: Option<BlockKind>,
    /// SGD steps (momentum 0.9, nesterov, weight decay 1e-4).
    #[arg(long, default_value_t = 100, value_parser = InRange(Domain::<usize>::closed(1, 100_000)))]
    steps: usize,
    /// Channels in and out.
    #[arg(long, default_value_t = 8, value_parser = InRange(Domain::<usize>::closed(1, 512)))]
    channels: usize,
    /// Seed of the kernels, scales and data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// Scales spread over [lo, hi], different per channel and per seed.
fn spread(n: usize, lo: f32, hi: f32, salt: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
            lo + (hi - lo) * ((h >> 40) % 1000) as f32 / 999.0
        })
        .collect()
}

fn declaration(kind: BlockKind, c: usize, seed: u64) -> CslaBlock {
    let s = |i: u64, lo, hi| spread(c, lo, hi, seed * 8 + i);
    match kind {
        BlockKind::Vgg => CslaBlock::repopt_vgg(c, c, 1, s(1, 0.5, 1.5), s(2, 0.2, 1.0), true),
        BlockKind::Ghost => CslaBlock::ghost(c, 3, s(3, 0.3, 2.0)),
        BlockKind::Acnet => {
            CslaBlock::acnet(c, c, 1, s(4, 0.5, 1.5), s(5, 0.2, 1.2), s(6, 0.2, 1.2))
        }
        BlockKind::Wide => CslaBlock::dense(
            c,
            c,
            5,
            1,
            vec![
                Branch::conv("5x5", 5, 5, s(7, 0.5, 1.0)),
                Branch::conv("3x3", 3, 3, s(8, 0.5, 1.5)),
                Branch::identity("identity", vec![1.0; c]),
            ],
        ),
    }
}

pub fn run(cmd: &GrCommand, adapter: &str) -> anyhow::Result<()> {
    let GrCommand::Verify(a) = cmd;
    let gpu = super::gpu(adapter)?;
    let kinds = match a.block {
        Some(k) => vec![k],
        None => BlockKind::value_variants().to_vec(),
    };
    if !a.json {
        println!(
            "{:6} {:>8} {:>12} {:>12} {:>18} {:>16}",
            "block", "steps", "gap", "max gap", "without Grad Mult", "without re-init"
        );
    }
    let mut failed = Vec::new();
    for kind in kinds {
        let block = declaration(kind, a.channels, a.seed);
        let base = VerifyConfig {
            steps: a.steps,
            seed: a.seed,
            ..Default::default()
        };
        let run = |grad_mult, reinit| -> anyhow::Result<VerifyReport> {
            Ok(verify(
                &gpu,
                &block,
                &VerifyConfig {
                    grad_mult,
                    reinit,
                    ..base.clone()
                },
            )?)
        };
        let (on, no_mult, no_init) = (run(true, true)?, run(false, true)?, run(true, false)?);
        let name = format!("{kind:?}").to_lowercase();
        // fp32 rounding grows with the steps; the controls show what a wrong rule gives.
        let equal = on.max_gap < 1e-4 * (a.steps as f64 / 100.0).max(1.0);
        if !equal {
            failed.push(name.clone());
        }
        if a.json {
            let line = serde_json::json!({
                "block": name, "steps": a.steps, "gap": on.gap, "max_gap": on.max_gap,
                "loss_gap": on.loss_gap, "moved": on.moved,
                "gap_without_grad_mult": no_mult.gap, "gap_without_reinit": no_init.gap,
                "equivalent": equal,
            });
            println!("{line}");
        } else {
            println!(
                "{name:6} {:>8} {:>12.2e} {:>12.2e} {:>18.2e} {:>16.2e}",
                a.steps, on.gap, on.max_gap, no_mult.gap, no_init.gap
            );
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "CSLA and GR differ beyond fp32 tolerance for: {}",
            failed.join(", ")
        );
    }
    Ok(())
}
