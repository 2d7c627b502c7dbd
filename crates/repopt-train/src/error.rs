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
        "the {quantity} became {value} at step {step} (epoch {epoch}); training stopped. The last good checkpoint ({checkpoint}) is intact: lower the learning rate or check the data, then resume from it with --resume"
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
    /// A checkpoint that cannot be resumed from.
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
