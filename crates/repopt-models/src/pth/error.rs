//! Why a checkpoint could not be read: one error type whose messages name the file.

/// Why a checkpoint could not be read.
///
/// Every variant names the file (`origin`) and says what was expected, so the message can be
/// shown to a user as is.
///
/// ```
/// use repopt_models::pth::{PthError, read_pth_bytes};
///
/// let err = read_pth_bytes(b"plain text", "notes.txt").unwrap_err();
/// assert!(matches!(err, PthError::NotZip { .. }));
/// assert!(err.to_string().contains("notes.txt"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    /// The file could not be read from disk.
    #[error("{origin}: cannot read the file: {source}")]
    Io {
        /// The file.
        origin: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a readable zip archive.
    #[error(
        "{origin}: not a zip archive ({detail}); expected a checkpoint written by torch.save \
         with PyTorch >= 1.6 (zip format)"
    )]
    NotZip {
        /// The file.
        origin: String,
        /// The zip reader's reason.
        detail: String,
    },
    /// A zip entry exists but its contents could not be extracted.
    #[error("{origin}: zip entry '{entry}' cannot be read: {detail}")]
    Entry {
        /// The file.
        origin: String,
        /// The entry's name inside the archive.
        entry: String,
        /// What went wrong.
        detail: String,
    },
    /// A zip entry's bytes do not match the CRC-32 the archive records for them: the file
    /// was damaged after it was written.
    #[error(
        "{origin}: zip entry '{entry}' is damaged: its bytes have CRC-32 {found:#010x} but the \
         archive records {recorded:#010x}; the file was corrupted after it was written \
         (download or copy it again)"
    )]
    Checksum {
        /// The file.
        origin: String,
        /// The entry's name inside the archive.
        entry: String,
        /// The CRC-32 the archive's directory records.
        recorded: u32,
        /// The CRC-32 of the bytes present.
        found: u32,
    },
    /// The archive has no `<prefix>/data.pkl`, or several with no way to choose.
    #[error(
        "{origin}: no usable data.pkl ({detail}); expected exactly one '<prefix>/data.pkl' \
         entry as written by torch.save"
    )]
    NoDataPkl {
        /// The file.
        origin: String,
        /// What the archive holds instead.
        detail: String,
    },
    /// The pickle uses something this reader does not understand, or is malformed.
    #[error("{origin}: data.pkl: {detail}")]
    Pickle {
        /// The file.
        origin: String,
        /// Byte offset of the offending opcode within data.pkl.
        offset: usize,
        /// What was wrong, where, and what was expected.
        detail: String,
    },
    /// The pickled object is not a dict.
    #[error("{origin}: the checkpoint holds {found}; expected a dict mapping names to tensors")]
    NotADict {
        /// The file.
        origin: String,
        /// The kind of object found instead.
        found: String,
    },
    /// The dict has entries but none of them is a tensor.
    #[error(
        "{origin}: none of the {count} top-level entries is a tensor (first keys: {keys}); \
         expected a state dict mapping names to tensors, not a wrapper such as \
         {{'model': state_dict}}"
    )]
    NoTensors {
        /// The file.
        origin: String,
        /// Number of top-level entries.
        count: usize,
        /// The first few keys with the kind of their value.
        keys: String,
    },
    /// A tensor's storage has an element type this reader does not convert.
    #[error(
        "{origin}: tensor '{tensor}' has unsupported storage type '{storage_type}'; expected \
         one of {SUPPORTED_STORAGES}"
    )]
    UnsupportedStorage {
        /// The file.
        origin: String,
        /// The tensor's name.
        tensor: String,
        /// The storage class, e.g. `torch.LongStorage`.
        storage_type: String,
    },
    /// A tensor refers to a storage entry that is not in the archive.
    #[error("{origin}: storage '{entry}' of tensor '{tensor}' is missing from the archive")]
    MissingStorage {
        /// The file.
        origin: String,
        /// The tensor's name.
        tensor: String,
        /// The zip entry that should hold its bytes.
        entry: String,
    },
    /// A storage entry holds fewer bytes than the pickle says it has.
    #[error("{origin}: truncated storage '{entry}' (expected {expected} bytes, found {found})")]
    TruncatedStorage {
        /// The file.
        origin: String,
        /// The zip entry.
        entry: String,
        /// Bytes the pickle's element count and type call for.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// A tensor's shape, strides or key do not fit its storage or this reader.
    #[error("{origin}: tensor '{tensor}': {detail}")]
    BadTensor {
        /// The file.
        origin: String,
        /// The tensor's name (or a placeholder when the key itself is bad).
        tensor: String,
        /// What was wrong and what was expected.
        detail: String,
    },
}

const SUPPORTED_STORAGES: &str =
    "torch.FloatStorage, torch.HalfStorage, torch.BFloat16Storage, torch.DoubleStorage";
