//! MPI as the transport of a distributed run (feature `mpi`, through the `mpi` crate): the
//! standard every cluster launcher (`mpirun`, `mpiexec`, Slurm's `srun`) and every GPU vendor
//! supports.
//!
//! ```no_run
//! // In a program started by `mpirun -np 2 ...`:
//! let session = repopt_train::dist::mpi::Session::start()?;
//! let world = repopt_train::dist::world();
//! println!("rank {} of {}", world.rank(), world.size());
//! drop(session); // MPI_Finalize, after the last collective
//! # Ok::<(), repopt_train::TrainError>(())
//! ```

use std::sync::Mutex;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use super::{Collective, World};
use crate::error::{Result, TrainError};

/// MPI for the life of the process: initialised by [`Session::start`], finalised when the
/// session is dropped (every rank must drop it, after its last collective).
pub struct Session {
    _universe: Universe,
}

impl Session {
    /// Initialises MPI and installs `MPI_COMM_WORLD` as the process's [`World`].
    pub fn start() -> Result<Session> {
        let (universe, _level) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or_else(|| {
                TrainError::Distributed("MPI was already initialised in this process".into())
            })?;
        let comm = universe.world();
        let backend = Mpi {
            rank: comm.rank() as usize,
            size: comm.size() as usize,
            comm: Mutex::new(Comm(comm)),
        };
        super::install(World::over(Box::new(backend)))?;
        Ok(Session {
            _universe: universe,
        })
    }
}

struct Comm(SimpleCommunicator);

// SAFETY: MPI is initialised with `Threading::Serialized` (any thread may call MPI, one at a
// time), and every use of the communicator goes through the mutex in `Mpi`.
unsafe impl Send for Comm {}
// SAFETY: as above; `&Comm` is only reachable through the mutex.
unsafe impl Sync for Comm {}

struct Mpi {
    rank: usize,
    size: usize,
    comm: Mutex<Comm>,
}

impl Mpi {
    fn with<R>(&self, f: impl FnOnce(&SimpleCommunicator) -> R) -> R {
        // A poisoned lock means a thread panicked mid-call: the communicator is still valid.
        let guard = self.comm.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard.0)
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum_f32(&self, data: &mut [f32]) {
        let send = data.to_vec();
        self.with(|c| c.all_reduce_into(&send[..], data, SystemOperation::sum()));
    }

    fn all_reduce_sum_f64(&self, data: &mut [f64]) {
        let send = data.to_vec();
        self.with(|c| c.all_reduce_into(&send[..], data, SystemOperation::sum()));
    }

    fn broadcast_bytes(&self, data: &mut Vec<u8>) {
        self.with(|c| {
            let root = c.process_at_rank(0);
            let mut len = data.len() as u64;
            root.broadcast_into(&mut len);
            data.resize(len as usize, 0);
            root.broadcast_into(&mut data[..]);
        })
    }

    fn broadcast_f32(&self, data: &mut [f32]) {
        self.with(|c| c.process_at_rank(0).broadcast_into(data))
    }

    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.size];
        self.with(|c| c.all_gather_into(&value, &mut all[..]));
        all
    }

    fn abort(&self, code: i32) -> ! {
        self.with(|c| c.abort(code))
    }

    fn describe(&self) -> String {
        let version = mpi::environment::library_version().unwrap_or_default();
        // "Open MPI v4.1.4, package: ..., ident: ...": the name and version are enough.
        let first = version.split([',', '\n']).next().unwrap_or("").trim();
        if first.is_empty() {
            "MPI".into()
        } else {
            first.to_string()
        }
    }
}
