//! The engine's error type.

use std::fmt;

/// Everything the engine can refuse or fail at, each with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter could be found at all.
    #[error(
        "no GPU adapter found (Vulkan, Metal or DX12). On Linux without a GPU install Mesa's \
         software Vulkan driver: `apt-get install mesa-vulkan-drivers libvulkan1` (or run \
         .ci/setup); elsewhere install your GPU's Vulkan/Metal/DX12 driver"
    )]
    NoAdapter,
    /// The adapter selector matched nothing; lists what exists.
    #[error("no adapter matches '{selector}'; available adapters:\n{available}")]
    AdapterNotFound {
        /// What the user asked for (`--adapter` or `REPOPT_ADAPTER`).
        selector: String,
        /// One line per adapter that exists.
        available: String,
    },
    /// The adapter refused to create a device.
    #[error("could not open adapter '{adapter}': {message}")]
    DeviceRequest {
        /// Adapter name.
        adapter: String,
        /// The driver's reason.
        message: String,
    },
    /// A tensor is larger than the device lets one storage binding be.
    #[error(
        "tensor of shape {shape:?} needs {bytes} bytes but the adapter allows at most {limit} bytes \
         per storage buffer binding; use a smaller batch or resolution"
    )]
    TensorTooLarge {
        /// Shape asked for.
        shape: Vec<usize>,
        /// Bytes it needs.
        bytes: u64,
        /// The adapter's `max_storage_buffer_binding_size`.
        limit: u64,
    },
    /// An allocation would exceed the memory limit set with `Gpu::set_memory_limit`.
    #[error(
        "out of device memory: {requested} more bytes with {live} live exceeds the limit of {limit} bytes"
    )]
    OutOfMemory {
        /// Bytes asked for.
        requested: u64,
        /// Bytes already live.
        live: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Shapes of an op's operands do not fit together.
    #[error("{op}: {message}")]
    Shape {
        /// The op that refused.
        op: &'static str,
        /// What was expected and what was given.
        message: String,
    },
    /// The length of host data does not match the shape it is meant to fill.
    #[error("{what}: expected {expected} values for shape {shape:?}, got {got}")]
    DataLength {
        /// What was being created.
        what: &'static str,
        /// Shape.
        shape: Vec<usize>,
        /// Number of elements the shape holds.
        expected: usize,
        /// Number of values given.
        got: usize,
    },
    /// Autograd misuse (backward on a non-scalar, twice over a freed graph, ...).
    #[error("autograd: {0}")]
    Autograd(String),
    /// Tensors from different devices were mixed.
    #[error("{0}: tensors live on different devices")]
    DeviceMismatch(&'static str),
    /// A value read back from the device could not be mapped.
    #[error("reading back from the device failed: {0}")]
    Readback(String),
    /// A kernel launch whose buffers do not fit the kernel's declaration.
    #[error("kernel {kernel}: {message}")]
    Launch {
        /// `file::entry` of the kernel.
        kernel: String,
        /// Which binding is wrong and how.
        message: String,
    },
    /// An invalid argument that is not a shape problem.
    #[error("{op}: {message}")]
    Invalid {
        /// Where.
        op: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn shape(op: &'static str, message: impl fmt::Display) -> Self {
        Error::Shape {
            op,
            message: message.to_string(),
        }
    }

    pub(crate) fn invalid(op: &'static str, message: impl fmt::Display) -> Self {
        Error::Invalid {
            op,
            message: message.to_string(),
        }
    }
}
