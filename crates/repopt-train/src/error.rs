//! The trainer's error type.

use std::path::Path;

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The engine failed (device, memory, shapes).
    #[error(transparent)]
    Engine(#[from] repopt_tensor::Error),
    /// Building, loading or saving a model or scales failed.
    #[error(transparent)]
    Model(#[from] repopt_models::ModelError),
    /// Reading a dataset failed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// An invalid setting (flag, config file, or combination of them).
    #[error("{0}")]
    Config(String),
    /// The loss, or the weights, became NaN or infinite; the last good checkpoint is left
    /// in place.
    #[error(
        "the {quantity} became {value} at step {step} (epoch {epoch}); training stopped. The last good checkpoint ({checkpoint}) is intact: check the data and resume from it with --resume, or start again with a lower learning rate (--overwrite replaces the run)"
    )]
    Diverged {
        /// Global step.
        step: u64,
        /// Epoch.
        epoch: u64,
        /// What was read: the mean loss, or the sum of squares of the weights.
        quantity: &'static str,
        /// The value read.
        value: f64,
        /// Where the last good checkpoint is.
        checkpoint: String,
    },
    /// Another process uses the run directory.
    #[error(
        "{dir} is in use by {holder} (it holds {lock}): one process per run directory; wait for it to end, or stop it"
    )]
    InUse {
        /// The run directory.
        dir: String,
        /// Who holds it: a process id, when the lock file could be read.
        holder: String,
        /// The lock file.
        lock: String,
    },
    /// A run directory that a run may not start in as asked.
    #[error("{dir}: {message}")]
    RunDir {
        /// The run directory.
        dir: String,
        /// Why, and what to do instead.
        message: String,
    },
    /// A checkpoint that cannot be resumed from.
    /// A failure of the distributed run: another rank failed, or the ranks disagree.
    #[error("{0}")]
    Distributed(String),
    #[error("cannot resume from {path}: {message}")]
    Resume {
        /// The checkpoint.
        path: String,
        /// Why.
        message: String,
    },
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
