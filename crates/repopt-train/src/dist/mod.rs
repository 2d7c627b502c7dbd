//! Data-parallel training over several processes (ranks), with the semantics of PyTorch's
//! DistributedDataParallel: rank 0's parameters and buffers broadcast at the start, disjoint
//! data shards, gradients averaged after every backward pass, batch norm statistics per rank,
//! evaluation sharded and summed, and rank 0 alone writing the run directory.
//!
//! The transport is a [`Collective`]: MPI (feature `mpi`, [`mpi::Session`]) in a real run,
//! nothing at all in a single process. The world a process belongs to is installed once, at
//! start, by the program that owns the process (the `repopt` command line), because MPI
//! itself is process-wide; the trainer asks [`world`].
//!
//! ```
//! use repopt_train::dist;
//! // Not started by mpirun: one process, rank 0 of 1, every collective the identity.
//! let world = dist::world();
//! assert_eq!((world.rank(), world.size()), (0, 1));
//! let mut v = [1.5f32, 2.0];
//! world.all_reduce_sum_f32(&mut v);
//! assert_eq!(v, [1.5, 2.0]);
//! ```

use std::sync::OnceLock;

use crate::error::{Result, TrainError};

pub mod ddp;
pub mod measure;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod replicas;

/// The collective operations data-parallel training needs, over every rank of the world.
/// Every rank must call the same operations in the same order (MPI's rule).
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Ranks in the world.
    fn size(&self) -> usize;
    /// Replaces `data` with its element-wise sum over the ranks.
    fn all_reduce_sum_f32(&self, data: &mut [f32]);
    /// Replaces `data` with its element-wise sum over the ranks.
    fn all_reduce_sum_f64(&self, data: &mut [f64]);
    /// Replaces `data` (any length on the other ranks) with rank 0's.
    fn broadcast_bytes(&self, data: &mut Vec<u8>);
    /// Replaces `data` with rank 0's (every rank passes the same length).
    fn broadcast_f32(&self, data: &mut [f32]);
    /// Every rank's `value`, in rank order.
    fn all_gather_u64(&self, value: u64) -> Vec<u64>;
    /// Ends every rank of the world at once, with `code` (the way out of a collective that a
    /// failed rank will never join).
    fn abort(&self, code: i32) -> !;
    /// The transport, for logs (for example the MPI library's version).
    fn describe(&self) -> String;
}

/// The processes a run is spread over. See the [module documentation](self).
pub struct World {
    backend: Option<Box<dyn Collective>>,
}

static WORLD: OnceLock<World> = OnceLock::new();

/// The world this process belongs to: the installed one, else a single process.
pub fn world() -> &'static World {
    WORLD.get_or_init(World::single)
}

/// Makes `world` this process's world, once, before anything asks for it.
pub fn install(world: World) -> Result<()> {
    WORLD.set(world).map_err(|_| {
        TrainError::Config("the process's world was already chosen; install it first".into())
    })
}

impl World {
    /// One process: rank 0 of 1.
    pub fn single() -> World {
        World { backend: None }
    }

    /// A world over `backend`'s ranks.
    pub fn over(backend: Box<dyn Collective>) -> World {
        World {
            backend: Some(backend),
        }
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.backend.as_ref().map_or(0, |b| b.rank())
    }

    /// Ranks in the world.
    pub fn size(&self) -> usize {
        self.backend.as_ref().map_or(1, |b| b.size())
    }

    /// Whether this is rank 0, the rank that writes files and reports.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Whether there is more than one rank.
    pub fn is_distributed(&self) -> bool {
        self.size() > 1
    }

    /// See [`Collective::all_reduce_sum_f32`].
    pub fn all_reduce_sum_f32(&self, data: &mut [f32]) {
        if let Some(b) = self.distributed() {
            b.all_reduce_sum_f32(data)
        }
    }

    /// See [`Collective::all_reduce_sum_f64`].
    pub fn all_reduce_sum_f64(&self, data: &mut [f64]) {
        if let Some(b) = self.distributed() {
            b.all_reduce_sum_f64(data)
        }
    }

    /// See [`Collective::broadcast_bytes`].
    pub fn broadcast_bytes(&self, data: &mut Vec<u8>) {
        if let Some(b) = self.distributed() {
            b.broadcast_bytes(data)
        }
    }

    /// See [`Collective::broadcast_f32`].
    pub fn broadcast_f32(&self, data: &mut [f32]) {
        if let Some(b) = self.distributed() {
            b.broadcast_f32(data)
        }
    }

    /// Ends every rank now with `code` where there are several (a single process just exits).
    pub fn abort(&self, code: i32) -> ! {
        match self.distributed() {
            Some(b) => b.abort(code),
            None => std::process::exit(code),
        }
    }

    /// The transport, for logs.
    pub fn describe(&self) -> String {
        match &self.backend {
            Some(b) => format!("{} ranks over {}", b.size(), b.describe()),
            None => "1 process".into(),
        }
    }

    /// The largest `value` (finite, not negative: a time, a count) over the ranks.
    pub fn max_over_ranks(&self, value: f64) -> f64 {
        match self.distributed() {
            // Non-negative floats order as their bit patterns do.
            Some(b) => b
                .all_gather_u64(value.max(0.0).to_bits())
                .into_iter()
                .map(f64::from_bits)
                .fold(0.0, f64::max),
            None => value,
        }
    }

    fn distributed(&self) -> Option<&dyn Collective> {
        self.backend.as_deref().filter(|b| b.size() > 1)
    }

    /// Makes every rank fail when any rank's `result` is an error, so that no rank goes on to
    /// wait in a collective that a failed rank will never join. A rank that did not fail
    /// itself reports which ranks did (their own messages are on their own output).
    pub fn agree<T>(&self, result: Result<T>) -> Result<T> {
        if !self.is_distributed() {
            return result;
        }
        let mut failed = vec![0.0f64; self.size()];
        failed[self.rank()] = result.is_err() as u8 as f64;
        self.all_reduce_sum_f64(&mut failed);
        let ranks: Vec<String> = (0..failed.len())
            .filter(|&r| failed[r] > 0.0)
            .map(|r| r.to_string())
            .collect();
        match result {
            Err(e) => Err(e),
            Ok(_) if !ranks.is_empty() => Err(TrainError::Distributed(format!(
                "rank {} stopped because rank(s) {} failed (their errors are in their output)",
                self.rank(),
                ranks.join(", ")
            ))),
            Ok(v) => Ok(v),
        }
    }

    /// Fails on every rank, naming the ranks that differ, unless every rank passes the same
    /// `bytes` (a serialised configuration, a dataset's size, ...) for `what`.
    pub fn check_same(&self, what: &str, bytes: &[u8]) -> Result<()> {
        if !self.is_distributed() {
            return Ok(());
        }
        let hash = fnv1a(bytes);
        let all = match &self.backend {
            Some(b) => b.all_gather_u64(hash),
            None => vec![hash],
        };
        let differ: Vec<String> = (1..all.len())
            .filter(|&r| all[r] != all[0])
            .map(|r| r.to_string())
            .collect();
        if differ.is_empty() {
            Ok(())
        } else {
            Err(TrainError::Distributed(format!(
                "rank(s) {} were started with other {what} than rank 0: every rank of a run must \
                 be given the same command line and data",
                differ.join(", ")
            )))
        }
    }
}

/// 64-bit FNV-1a: enough to tell configurations apart, with no dependency.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The rank of this process among those on its machine, from the variables that MPI
/// launchers and Slurm set (`None` outside such a launch): the adapter a rank picks.
pub fn local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "MV2_COMM_WORLD_LOCAL_RANK",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Whether an MPI launcher (mpirun, mpiexec, srun) started this process: only then is MPI
/// initialised, so that a plain run never pays for it nor depends on its runtime.
pub fn launched_by_mpi() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "MV2_COMM_WORLD_SIZE",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_process_agrees_with_itself() {
        let w = World::single();
        assert!(w.is_root() && !w.is_distributed());
        assert_eq!(w.agree(Ok(3)).unwrap(), 3);
        assert!(w.check_same("settings", b"x").is_ok());
        let mut b = vec![1u8, 2];
        w.broadcast_bytes(&mut b);
        assert_eq!(b, [1, 2]);
    }

    #[test]
    fn the_hash_tells_settings_apart() {
        assert_ne!(fnv1a(b"seed=0"), fnv1a(b"seed=1"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
