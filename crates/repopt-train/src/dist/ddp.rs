//! What DDP does to tensors: gradients averaged over the ranks in a few flat buckets, and
//! tensors (parameters, buffers, optimizer state) made equal to rank 0's.
//!
//! A bucket crosses between device and host as one copy each way: its gradients are gathered
//! into one flat device tensor ([`repopt_tensor::flat`]), read back once, summed over the ranks
//! by one all-reduce, written back once and scattered into the gradients. Never one transfer
//! or one MPI call per tensor.
//!
//! ```
//! use repopt_tensor::{Gpu, Tensor, optim::ParamSpec};
//! use repopt_train::dist::{self, ddp::GradAverager};
//! let gpu = Gpu::from_env()?;
//! let w = Tensor::parameter(&gpu, &[1.0, 2.0], &[2])?;
//! w.scale(3.0)?.sum()?.backward()?;
//! let params = [ParamSpec::new(w.clone(), 0.0)];
//! let mut avg = GradAverager::new(&params, 25 << 20)?;
//! avg.average(dist::world(), &params)?; // one process: the mean is the gradient itself
//! assert_eq!(w.grad().unwrap().to_vec()?, vec![3.0, 3.0]);
//! # Ok::<(), repopt_train::TrainError>(())
//! ```

use std::time::Instant;

use repopt_tensor::optim::ParamSpec;
use repopt_tensor::{Tensor, flat};

use super::World;
use crate::error::{Result, TrainError};

/// DDP's default bucket size: large enough that per-call latency is amortised, small enough
/// that host copies stay modest.
pub const BUCKET_BYTES: usize = 25 << 20;

struct Bucket {
    /// Indices into the parameter list.
    params: Vec<usize>,
    flat: Tensor,
}

/// Averages the gradients of a fixed parameter list over the ranks, bucket by bucket.
pub struct GradAverager {
    buckets: Vec<Bucket>,
    count: usize,
    /// Seconds spent in transfers and all-reduces, for the benchmark's communication share.
    pub seconds: f64,
    /// Bytes all-reduced so far (this rank's contribution).
    pub bytes: u64,
}

impl GradAverager {
    /// Buckets for `params`, in order, each of at most `bucket_bytes` (or one parameter when
    /// a single one is larger).
    pub fn new(params: &[ParamSpec], bucket_bytes: usize) -> Result<GradAverager> {
        let mut buckets = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut bytes = 0usize;
        let close = |current: &mut Vec<usize>, buckets: &mut Vec<Bucket>| -> Result<()> {
            if current.is_empty() {
                return Ok(());
            }
            let parts: Vec<Tensor> = current.iter().map(|&i| params[i].tensor.clone()).collect();
            let n = flat::numel(&parts);
            let flat = Tensor::zeros(parts[0].gpu(), &[n])?;
            buckets.push(Bucket {
                params: std::mem::take(current),
                flat,
            });
            Ok(())
        };
        for (i, p) in params.iter().enumerate() {
            let b = p.tensor.numel() * 4;
            if !current.is_empty() && bytes + b > bucket_bytes {
                close(&mut current, &mut buckets)?;
                bytes = 0;
            }
            current.push(i);
            bytes += b;
        }
        close(&mut current, &mut buckets)?;
        Ok(GradAverager {
            buckets,
            count: params.len(),
            seconds: 0.0,
            bytes: 0,
        })
    }

    /// Buckets made.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Replaces every gradient of `params` (the list the averager was made for) with its mean
    /// over the ranks. A parameter without a gradient on this rank counts as zero, as in DDP.
    pub fn average(&mut self, world: &World, params: &[ParamSpec]) -> Result<()> {
        if params.len() != self.count {
            return Err(TrainError::Config(format!(
                "the gradient averager was made for {} parameters, not {}",
                self.count,
                params.len()
            )));
        }
        if !world.is_distributed() {
            return Ok(());
        }
        self.exchange(world, params)
    }

    /// The bucket-by-bucket exchange itself, whatever the world's size (over one rank it is
    /// the device-host copies alone, which the all-reduce benchmark measures).
    pub(crate) fn exchange(&mut self, world: &World, params: &[ParamSpec]) -> Result<()> {
        let clock = Instant::now();
        let scale = 1.0 / world.size() as f32;
        for bucket in &self.buckets {
            let grads = bucket
                .params
                .iter()
                .map(|&i| {
                    let p = &params[i].tensor;
                    match p.grad() {
                        Some(g) => Ok(g),
                        None => {
                            let g = Tensor::zeros(p.gpu(), p.shape())?;
                            p.set_grad(Some(g.clone()))?;
                            Ok(g)
                        }
                    }
                })
                .collect::<Result<Vec<Tensor>>>()?;
            flat::gather_into(&grads, &bucket.flat)?;
            let mut host = bucket.flat.to_vec()?;
            world.all_reduce_sum_f32(&mut host);
            for v in &mut host {
                *v *= scale;
            }
            bucket.flat.write(&host)?;
            flat::scatter(&bucket.flat, &grads)?;
            self.bytes += (host.len() * 4) as u64;
        }
        self.seconds += clock.elapsed().as_secs_f64();
        Ok(())
    }
}

/// Makes `tensors` equal to rank 0's on every rank (one read-back, one broadcast and one
/// upload in all). Every rank passes tensors of the same shapes in the same order.
pub fn broadcast_tensors(world: &World, tensors: &[Tensor]) -> Result<()> {
    if !world.is_distributed() || tensors.is_empty() {
        return Ok(());
    }
    let shapes: Vec<&[usize]> = tensors.iter().map(Tensor::shape).collect();
    world.check_same("model shapes", format!("{shapes:?}").as_bytes())?;
    let all = flat::gather(tensors)?;
    let mut host = if world.is_root() {
        all.to_vec()?
    } else {
        vec![0.0; all.numel()]
    };
    world.broadcast_f32(&mut host);
    if !world.is_root() {
        all.write(&host)?;
        flat::scatter(&all, tensors)?;
    }
    Ok(())
}
