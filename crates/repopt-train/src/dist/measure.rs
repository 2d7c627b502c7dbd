//! What averaging gradients costs over the ranks of this world, measured: the MPI all-reduce
//! alone (its bandwidth, as NCCL's tests report it) and the whole exchange a training step
//! pays (gather into buckets, read back, all-reduce, upload, scatter).
//!
//! Every rank calls [`all_reduce`] together; each sample is the slowest rank's time, and the
//! median sample is reported.
//!
//! ```
//! use repopt_tensor::Gpu;
//! use repopt_train::dist::{self, measure};
//! let gpu = Gpu::from_env()?;
//! let r = measure::all_reduce(dist::world(), &gpu, &[1000, 24], 1 << 20, 3)?;
//! assert_eq!((r.ranks, r.elements, r.bytes), (1, 1024, 4096));
//! assert!(r.busbw_gb_s.is_none()); // one rank: nothing crosses between processes
//! # Ok::<(), repopt_train::TrainError>(())
//! ```

use std::time::Instant;

use repopt_tensor::optim::ParamSpec;
use repopt_tensor::{Gpu, Tensor};
use serde::Serialize;

use super::World;
use super::ddp::GradAverager;
use crate::error::{Result, TrainError};

/// One all-reduce measurement. Bandwidths are in GB/s (10^9 bytes).
#[derive(Clone, Debug, Serialize)]
pub struct AllReduceResult {
    /// Ranks in the world.
    pub ranks: usize,
    /// Gradient elements (f32) averaged.
    pub elements: usize,
    /// Bytes one rank contributes.
    pub bytes: u64,
    /// Buckets the gradients were packed into.
    pub buckets: usize,
    /// Median milliseconds of the MPI all-reduces alone (0 on one rank).
    pub mpi_ms: f64,
    /// Median milliseconds of the whole exchange (device copies, read-back, all-reduce, upload).
    pub exchange_ms: f64,
    /// Algorithm bandwidth: bytes / all-reduce time (None on one rank).
    pub algbw_gb_s: Option<f64>,
    /// Bus bandwidth: algorithm bandwidth x 2(n-1)/n, what each link carries in a ring
    /// all-reduce, comparable across rank counts (None on one rank).
    pub busbw_gb_s: Option<f64>,
    /// Bytes / whole exchange time.
    pub exchange_gb_s: f64,
}

/// Measures averaging gradients of the given tensor sizes (elements each) over `world`, in
/// buckets of `bucket_bytes`, `samples` times after one warm-up.
pub fn all_reduce(
    world: &World,
    gpu: &Gpu,
    sizes: &[usize],
    bucket_bytes: usize,
    samples: usize,
) -> Result<AllReduceResult> {
    let elements: usize = sizes.iter().sum();
    if elements == 0 || samples == 0 {
        return Err(TrainError::Config(
            "the all-reduce benchmark needs at least one element and one sample".into(),
        ));
    }
    world.check_same(
        "all-reduce benchmark sizes",
        format!("{sizes:?} {bucket_bytes} {samples}").as_bytes(),
    )?;
    let params = sizes
        .iter()
        .map(|&n| {
            let p = Tensor::parameter(gpu, &vec![0.0; n], &[n])?;
            p.set_grad(Some(Tensor::full(gpu, &[n], 1.0)?))?;
            Ok(ParamSpec::new(p, 0.0))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut averager = GradAverager::new(&params, bucket_bytes)?;
    // The host side alone: the same buckets as plain vectors.
    let mut host: Vec<Vec<f32>> = Vec::new();
    let mut left = elements;
    let per_bucket = (bucket_bytes / 4).max(1);
    while left > 0 {
        let n = left.min(per_bucket);
        host.push(vec![1.0; n]);
        left -= n;
    }
    let mut mpi = Vec::with_capacity(samples);
    let mut exchange = Vec::with_capacity(samples);
    for s in 0..=samples {
        barrier(world);
        let clock = Instant::now();
        for bucket in &mut host {
            world.all_reduce_sum_f32(bucket);
        }
        let t_mpi = world.max_over_ranks(clock.elapsed().as_secs_f64());
        barrier(world);
        let clock = Instant::now();
        averager.exchange(world, &params)?;
        gpu.synchronize()?;
        let t_exchange = world.max_over_ranks(clock.elapsed().as_secs_f64());
        if s > 0 {
            mpi.push(t_mpi);
            exchange.push(t_exchange);
        }
    }
    let (mpi_s, exchange_s) = (median(&mut mpi), median(&mut exchange));
    let n = world.size();
    let bytes = (elements * 4) as u64;
    let algbw = (n > 1 && mpi_s > 0.0).then(|| bytes as f64 / mpi_s / 1e9);
    Ok(AllReduceResult {
        ranks: n,
        elements,
        bytes,
        buckets: averager.buckets(),
        mpi_ms: if n > 1 { mpi_s * 1e3 } else { 0.0 },
        exchange_ms: exchange_s * 1e3,
        algbw_gb_s: algbw,
        busbw_gb_s: algbw.map(|a| a * 2.0 * (n - 1) as f64 / n as f64),
        exchange_gb_s: bytes as f64 / exchange_s.max(1e-12) / 1e9,
    })
}

/// Milliseconds a ring all-reduce of `bytes` takes over `ranks` at bus bandwidth
/// `busbw_gb_s`: each rank sends and receives 2(n-1)/n of the data.
pub fn ring_all_reduce_ms(bytes: u64, ranks: usize, busbw_gb_s: f64) -> f64 {
    if ranks < 2 {
        return 0.0;
    }
    bytes as f64 * 2.0 * (ranks - 1) as f64 / ranks as f64 / (busbw_gb_s * 1e9) * 1e3
}

/// Every rank waits here for the others (a one-element all-reduce).
fn barrier(world: &World) {
    let mut x = [0.0f64];
    world.all_reduce_sum_f64(&mut x);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_moves_twice_the_data_less_one_share() {
        // 8 ranks, 1 GB at 100 GB/s: 2 * 7/8 GB / 100 GB/s = 17.5 ms.
        assert!((ring_all_reduce_ms(1_000_000_000, 8, 100.0) - 17.5).abs() < 1e-9);
        assert_eq!(ring_all_reduce_ms(1_000_000_000, 1, 100.0), 0.0);
    }
}
