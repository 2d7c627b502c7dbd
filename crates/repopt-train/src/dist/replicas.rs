//! How the trainer keeps the ranks' replicas of a run equal: the per-rank share of the
//! batch, the start (rank 0's model, and on a resume its optimizer state and position,
//! copied to every rank) and the mean of a logged quantity.

use repopt_models::any::Network;
use repopt_tensor::Tensor;
use repopt_tensor::optim::Optimizer;
use serde::{Deserialize, Serialize};

use super::World;
use super::ddp::broadcast_tensors;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::state::{Position, Record};

/// Images each rank trains on per step: the global batch over the ranks, which must also
/// split into the run's micro-batches.
///
/// ```
/// use repopt_train::{TrainConfig, dist};
/// let cfg = TrainConfig { batch_size: 64, ..Default::default() };
/// assert_eq!(dist::replicas::per_rank_batch(&cfg, dist::world())?, 64);
/// # Ok::<(), repopt_train::TrainError>(())
/// ```
pub fn per_rank_batch(cfg: &TrainConfig, world: &World) -> Result<usize> {
    let n = world.size();
    let share = cfg.accumulate * n;
    if !cfg.batch_size.is_multiple_of(share) {
        return Err(TrainError::Config(format!(
            "the batch size {} does not split over {n} rank(s){}: give a multiple of {share}",
            cfg.batch_size,
            if cfg.accumulate > 1 {
                format!(" and {} micro-batches each", cfg.accumulate)
            } else {
                String::new()
            }
        )));
    }
    Ok(cfg.batch_size / n)
}

#[derive(Serialize, Deserialize)]
struct Resumed {
    pos: Position,
    record: Record,
    steps: u64,
    optimizer: Vec<(String, Vec<usize>)>,
}

/// Makes every rank start from rank 0's state, as DDP does after model construction (and,
/// here, after the RepOptimizer's re-initialisation): the model's parameters and buffers,
/// and on a resume the optimizer's state and the run's position and record, which only rank
/// 0 has read from the checkpoint.
pub fn start_from_root(
    world: &World,
    model: &Network,
    opt: &mut dyn Optimizer,
    resumed: bool,
    pos: &mut Position,
    record: &mut Record,
) -> Result<()> {
    if !world.is_distributed() {
        return Ok(());
    }
    let state: Vec<Tensor> = model.state().into_iter().map(|(_, t)| t).collect();
    broadcast_tensors(world, &state)?;
    if !resumed {
        return Ok(());
    }
    let opt_state = opt.state();
    let mut header = if world.is_root() {
        serde_json::to_vec(&Resumed {
            pos: *pos,
            record: *record,
            steps: opt.steps(),
            optimizer: opt_state
                .iter()
                .map(|(n, t)| (n.clone(), t.shape().to_vec()))
                .collect(),
        })
        .map_err(|e| TrainError::Distributed(e.to_string()))?
    } else {
        Vec::new()
    };
    world.broadcast_bytes(&mut header);
    let r: Resumed = serde_json::from_slice(&header)
        .map_err(|e| TrainError::Distributed(format!("rank 0's resume state: {e}")))?;
    let total: usize = r
        .optimizer
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let mut flat = vec![0.0f32; total];
    if world.is_root() && total > 0 {
        let parts: Vec<Tensor> = opt_state.iter().map(|(_, t)| t.clone()).collect();
        flat = repopt_tensor::flat::gather(&parts)?.to_vec()?;
    }
    world.broadcast_f32(&mut flat);
    if !world.is_root() {
        let mut at = 0;
        let tensors: Vec<(String, Vec<f32>)> = r
            .optimizer
            .iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                at += n;
                (name.clone(), flat[at - n..at].to_vec())
            })
            .collect();
        opt.load_state(&tensors, r.steps)?;
        *pos = r.pos;
        *record = r.record;
    }
    Ok(())
}

/// The mean of `value` over the ranks (the value itself in one process).
pub fn mean(world: &World, value: f64) -> f64 {
    let mut v = [value];
    world.all_reduce_sum_f64(&mut v);
    v[0] / world.size() as f64
}
