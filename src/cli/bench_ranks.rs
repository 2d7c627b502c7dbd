//! The benchmarks of data-parallel training, run under `mpirun -np N repopt bench ...`:
//! gradient averaging at a model's size, and its share of a training step, with a stated
//! projection to 8 ranks. Rank 0 prints.

use repopt::bench::train::StepResult;
use repopt::models::Mode;
use repopt::models::any::{NetConfig, Network};
use repopt::tensor::Gpu;
use repopt::train::dist::{self, ddp::BUCKET_BYTES, measure};

/// Ranks the projection is made for: the paper's 8 GPUs.
const PROJECTED_RANKS: usize = 8;

/// Element counts of the trainable tensors of `config` in `mode` (its gradients).
pub fn gradient_sizes(g: &Gpu, config: &NetConfig, mode: Mode) -> anyhow::Result<Vec<usize>> {
    let model = Network::new(g, config, mode, 0)?;
    Ok(model
        .param_specs(0.0)
        .iter()
        .map(|p| p.tensor.numel())
        .collect())
}

/// `bench allreduce`: the all-reduce and the whole exchange for `config`'s gradients.
pub fn allreduce(
    g: &Gpu,
    config: &NetConfig,
    name: &str,
    json: bool,
    quick: bool,
) -> anyhow::Result<()> {
    let world = dist::world();
    let sizes = gradient_sizes(g, config, Mode::Target)?;
    let r = measure::all_reduce(world, g, &sizes, BUCKET_BYTES, if quick { 3 } else { 7 })?;
    if !world.is_root() {
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{name} gradients: {} elements, {:.1} MB in {} bucket(s), over {} (median of the slowest rank)",
        r.elements,
        r.bytes as f64 / 1e6,
        r.buckets,
        world.describe()
    );
    match (r.algbw_gb_s, r.busbw_gb_s) {
        (Some(alg), Some(bus)) => println!(
            "MPI all-reduce: {:.1} ms, {alg:.2} GB/s algorithm bandwidth, {bus:.2} GB/s bus bandwidth",
            r.mpi_ms
        ),
        _ => println!("MPI all-reduce: none on one rank (run under mpirun -np 2 or more)"),
    }
    println!(
        "whole exchange (gather, read back, all-reduce, upload, scatter): {:.1} ms, {:.2} GB/s",
        r.exchange_ms, r.exchange_gb_s
    );
    Ok(())
}

/// One row of `bench train --ranks`.
#[derive(serde::Serialize)]
struct CommShare {
    mode: String,
    ranks: usize,
    gradient_bytes: u64,
    step_ms: f64,
    exchange_ms: f64,
    mpi_ms: f64,
    comm_share: f64,
    busbw_gb_s: Option<f64>,
    /// Projection, not a measurement: see [`project`].
    projected_8_rank_efficiency: Option<f64>,
}

/// The scaling efficiency of 8 ranks with this step's compute: step / (step + the exchange's
/// device-host copies as measured + a ring all-reduce over 8 at the measured bus bandwidth).
fn project(step_ms: f64, r: &measure::AllReduceResult) -> Option<f64> {
    let bus = r.busbw_gb_s?;
    let staging = (r.exchange_ms - r.mpi_ms).max(0.0);
    let ring = measure::ring_all_reduce_ms(r.bytes, PROJECTED_RANKS, bus);
    Some(step_ms / (step_ms + staging + ring))
}

/// `bench train --ranks`: every mode's measured step against the measured exchange of its
/// gradients over this launch's ranks.
pub fn communication_share(
    g: &Gpu,
    config: &NetConfig,
    modes: &[Mode],
    steps: &[StepResult],
    json: bool,
    quick: bool,
) -> anyhow::Result<()> {
    let world = dist::world();
    let mut rows = Vec::new();
    for (&mode, s) in modes.iter().zip(steps) {
        let sizes = gradient_sizes(g, config, mode)?;
        let r = measure::all_reduce(world, g, &sizes, BUCKET_BYTES, if quick { 3 } else { 5 })?;
        // The slowest rank's step sets the pace.
        let step_ms = world.max_over_ranks(s.ms_per_step);
        rows.push(CommShare {
            mode: s.mode.clone(),
            ranks: r.ranks,
            gradient_bytes: r.bytes,
            step_ms,
            exchange_ms: r.exchange_ms,
            mpi_ms: r.mpi_ms,
            comm_share: r.exchange_ms / (step_ms + r.exchange_ms),
            busbw_gb_s: r.busbw_gb_s,
            projected_8_rank_efficiency: project(step_ms, &r),
        });
    }
    if !world.is_root() {
        return Ok(());
    }
    if json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "\ncommunication per step over {} (measured; the ranks share this machine's cores)",
        world.describe()
    );
    println!(
        "| mode | grad MB | step ms | exchange ms | of which MPI ms | comm share | bus GB/s | 8-rank efficiency (projected) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let fmt = |v: Option<f64>, p: &str| v.map_or("-".to_string(), |v| format!("{v:.2}{p}"));
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}% | {} | {} |",
            r.mode,
            r.gradient_bytes as f64 / 1e6,
            r.step_ms,
            r.exchange_ms,
            r.mpi_ms,
            r.comm_share * 100.0,
            fmt(r.busbw_gb_s, ""),
            fmt(r.projected_8_rank_efficiency.map(|e| e * 100.0), "%"),
        );
    }
    println!(
        "projection: step / (step + measured device-host copies + ring all-reduce over {PROJECTED_RANKS} \
         ranks at the measured bus bandwidth), with this adapter's step time"
    );
    Ok(())
}
