//! The command line in a distributed launch (`mpirun -np N repopt ...`, `srun repopt ...`):
//! MPI for the life of the process, the adapter each rank takes, and which commands may run
//! over several ranks.

use repopt::train::dist;

use super::Command;

/// MPI, when an MPI launcher started this process; finalised when dropped.
pub struct Ranks {
    #[cfg(feature = "mpi")]
    _session: Option<dist::mpi::Session>,
}

/// Starts MPI when a launcher started the process (a plain run never touches it).
pub fn start() -> anyhow::Result<Ranks> {
    if !dist::launched_by_mpi() {
        return Ok(Ranks {
            #[cfg(feature = "mpi")]
            _session: None,
        });
    }
    #[cfg(feature = "mpi")]
    {
        Ok(Ranks {
            _session: Some(dist::mpi::Session::start()?),
        })
    }
    #[cfg(not(feature = "mpi"))]
    {
        let size = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"]
            .iter()
            .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
            .unwrap_or(1);
        if size > 1 {
            anyhow::bail!(
                "started by an MPI launcher over {size} ranks, but this repopt was built without \
                 MPI: build it with `cargo build --release --features mpi` (see the README's \
                 \"Training on several GPUs or machines\")"
            );
        }
        Ok(Ranks {})
    }
}

/// Refuses, over several ranks, a command that does not split its work between them (each
/// rank would do all of it and write the same files).
pub fn check_command(command: &Command) -> anyhow::Result<()> {
    let world = dist::world();
    let shared = match command {
        Command::Train(_) | Command::Search(_) | Command::Pipeline(_) | Command::Eval(_) => true,
        Command::Bench(b) => b.spans_ranks(),
        _ => false,
    };
    if world.is_distributed() && !shared {
        anyhow::bail!(
            "only train, search, pipeline, eval, bench allreduce and bench train --ranks run \
             over several ranks; run this command as one process (without mpirun)"
        );
    }
    Ok(())
}

/// The adapter a rank takes when none is named: with several hardware adapters on the
/// machine, the one at the rank's local index modulo their number (one process per GPU, as
/// DDP); otherwise the usual choice (ranks may then share one adapter).
pub fn adapter_for_rank(selector: &str) -> String {
    if selector != "auto" || !dist::world().is_distributed() {
        return selector.to_string();
    }
    let Some(local) = dist::local_rank() else {
        return selector.to_string();
    };
    let hardware: Vec<usize> = repopt::tensor::list_adapters()
        .into_iter()
        .filter(|a| {
            matches!(
                a.device_type,
                repopt::tensor::wgpu::DeviceType::DiscreteGpu
                    | repopt::tensor::wgpu::DeviceType::IntegratedGpu
            )
        })
        .map(|a| a.index)
        .collect();
    if hardware.is_empty() {
        return selector.to_string();
    }
    hardware[local % hardware.len()].to_string()
}
