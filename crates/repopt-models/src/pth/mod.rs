//! Reading PyTorch checkpoint files (`torch.save` zip format).
//!
//! The RepOptimizers authors publish their Hyper-Search scales as `.pth` files, and users
//! want to train from those files directly, without a Python or libtorch install. A
//! `torch.save` checkpoint (PyTorch >= 1.6) is a zip archive holding `<prefix>/data.pkl`, a
//! pickle that describes the object graph, plus one raw storage per tensor under
//! `<prefix>/data/<key>`.
//!
//! Pickles are programs, so this module never runs them: it interprets only the opcodes that
//! `torch.save` emits and models the handful of constructors a state dict needs
//! (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, parameters) as data.
//! Anything else that looks like a tensor constructor is refused rather than silently
//! dropped, and every size read from the file is checked against the bytes actually present
//! before memory is reserved, so a hostile or damaged file yields an error, never a panic or
//! an oversized allocation: the tensors read hold at most the elements the file stores plus
//! 2^26 for expanded or repeated views. Every zip entry that contributes to the result
//! (`data.pkl`, the byte-order record, each storage) is read to its end and must match the
//! CRC-32 the archive records for it, so flipped bytes are reported instead of returned as
//! plausible values.
//!
//! ```no_run
//! use repopt_models::pth::read_pth;
//!
//! let scales = read_pth(std::path::Path::new("RepOpt-VGG-B1-scales.pth"))?;
//! for t in &scales {
//!     println!("{} {:?}", t.name, t.shape);
//! }
//! # Ok::<(), repopt_models::pth::PthError>(())
//! ```

mod archive;
mod error;
mod machine;
mod opcodes;
mod storage;
mod torch;
mod value;

use std::path::Path;

pub use error::PthError;

use crate::HostTensor;
use archive::Archive;
use machine::Machine;
use value::Value;

/// A pickle far above any real state dict's is more likely a decompression bomb than data.
const MAX_PICKLE_BYTES: u64 = 1 << 30;

/// Reads every tensor of a state-dict-like checkpoint, in the file's (OrderedDict) order.
///
/// Entries whose value is not a tensor (an epoch counter, say) are skipped. Tensors stored
/// as f16, bf16 or f64 are converted to f32. Each comes out in C order with its shape,
/// whatever the strides and storage offset were in the file.
///
/// ```no_run
/// use repopt_models::pth::read_pth;
///
/// let tensors = read_pth(std::path::Path::new("RepOpt-VGG-B1-scales.pth"))?;
/// assert_eq!(tensors.len(), 79);
/// let s = tensors
///     .iter()
///     .find(|t| t.name == "stage0.scale_conv.weight")
///     .expect("B1 has a stage0 conv scale");
/// assert_eq!(s.shape, vec![64]);
/// assert_eq!(s.data.len(), 64);
/// # Ok::<(), repopt_models::pth::PthError>(())
/// ```
pub fn read_pth(path: &Path) -> Result<Vec<HostTensor>, PthError> {
    let origin = path.display().to_string();
    let bytes = crate::regular_file::read(path, u64::MAX).map_err(|source| PthError::Io {
        origin: origin.clone(),
        source,
    })?;
    read_pth_bytes(&bytes, &origin)
}

/// Same from bytes already in memory; `origin` names the source in errors.
///
/// ```
/// use repopt_models::pth::read_pth_bytes;
///
/// let err = read_pth_bytes(&[], "download buffer").unwrap_err();
/// assert!(err.to_string().starts_with("download buffer: not a zip archive"));
/// ```
pub fn read_pth_bytes(bytes: &[u8], origin: &str) -> Result<Vec<HostTensor>, PthError> {
    let mut archive = Archive::open(bytes, origin)?;
    let prefix = archive.find_prefix()?;
    let big_endian = archive.byte_order(&prefix)?;
    let pickle_name = format!("{prefix}/data.pkl");
    let pickle = archive.read_entry(&pickle_name, MAX_PICKLE_BYTES)?;
    let root = Machine::new(&pickle).run().map_err(|e| PthError::Pickle {
        origin: origin.to_string(),
        offset: e.offset,
        detail: e.detail,
    })?;
    let Value::Dict(dict) = root else {
        return Err(PthError::NotADict {
            origin: origin.to_string(),
            found: root.kind(),
        });
    };
    // Cloning out the entries keeps the RefCell borrow short; values are Rc handles.
    let entries: Vec<(Value, Value)> = dict.0.borrow().entries.clone();

    // Every view is checked and its storage verified before any is materialised, so a bad
    // file is refused before memory is committed to its tensors.
    let mut views = Vec::new();
    for (index, (key, value)) in entries.iter().enumerate() {
        let Value::Tensor(tensor) = value else {
            continue;
        };
        let Value::Str(name) = key else {
            return Err(PthError::BadTensor {
                origin: origin.to_string(),
                tensor: format!("#{index}"),
                detail: format!("its key is {}; expected a string name", key.kind()),
            });
        };
        // Integer tensors (BatchNorm's `num_batches_tracked`, step counters) carry no
        // weights; skipping them lets ordinary state dicts load.
        if storage::is_integer(&tensor.storage.storage_type) {
            continue;
        }
        views.push(storage::check(&mut archive, name, tensor, &prefix)?);
    }
    storage::check_total(&views, origin)?;
    if views.is_empty() && !entries.is_empty() {
        let keys: Vec<String> = entries
            .iter()
            .take(5)
            .map(|(k, v)| match k {
                Value::Str(s) => format!("'{s}' ({})", v.kind()),
                other => format!("{} ({})", other.kind(), v.kind()),
            })
            .collect();
        return Err(PthError::NoTensors {
            origin: origin.to_string(),
            count: entries.len(),
            keys: keys.join(", "),
        });
    }
    views
        .iter()
        .map(|view| storage::materialize(&mut archive, view, big_endian))
        .collect()
}
