//! The models crate's error type.

/// What can go wrong building, converting, saving or loading models and scales.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An engine error (device, shapes, memory).
    #[error(transparent)]
    Engine(#[from] repopt_tensor::Error),
    /// An invalid architecture setting.
    #[error("model config: {0}")]
    Config(String),
    /// Scales that do not fit the model.
    #[error("scales from {origin}: {message}")]
    Scales {
        /// File or source of the scales.
        origin: String,
        /// What was wrong, naming the key.
        message: String,
    },
    /// A checkpoint that does not fit the model or is malformed.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A PyTorch checkpoint could not be read.
    #[error(transparent)]
    Pth(#[from] crate::pth::PthError),
    /// An operation that needs a particular mode got another.
    #[error("{op} needs a {expected} model, got a {got} model")]
    WrongMode {
        /// The operation.
        op: &'static str,
        /// The modes it accepts.
        expected: &'static str,
        /// The mode it got.
        got: crate::Mode,
    },
    /// A model that cannot be exported to ONNX as asked.
    #[error("ONNX export: {0}")]
    Export(String),
}

/// Result with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
