//! Tensor values out of storages: the element types converted to f32, and the walk of a
//! strided view that yields its elements in C order.

use half::{bf16, f16};

use super::archive::Archive;
use super::error::PthError;
use super::torch::TensorRef;
use crate::HostTensor;

/// Storage classes of integer tensors, which are skipped rather than converted.
const INTEGER_STORAGES: &[&str] = &[
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
];

/// Whether `storage_type` (e.g. `torch.LongStorage`) holds integers.
pub(super) fn is_integer(storage_type: &str) -> bool {
    INTEGER_STORAGES.contains(&storage_type)
}

/// Element types of the storages this reader converts.
#[derive(Clone, Copy, Debug)]
enum DType {
    F32,
    F16,
    Bf16,
    F64,
}

impl DType {
    fn from_storage_type(name: &str) -> Option<Self> {
        // Integer storages never reach here: they are skipped by name.
        match name {
            "torch.FloatStorage" => Some(Self::F32),
            "torch.HalfStorage" => Some(Self::F16),
            "torch.BFloat16Storage" => Some(Self::Bf16),
            "torch.DoubleStorage" => Some(Self::F64),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            Self::F16 | Self::Bf16 => 2,
            Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    /// Element `index` of `raw`, or `None` when it lies outside the bytes.
    fn element(self, raw: &[u8], index: usize, big_endian: bool) -> Option<f32> {
        let size = self.size();
        let start = index.checked_mul(size)?;
        let bytes = raw.get(start..start.checked_add(size)?)?;
        Some(match self {
            Self::F32 => {
                let b = <[u8; 4]>::try_from(bytes).ok()?;
                if big_endian {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                }
            }
            Self::F16 | Self::Bf16 => {
                let b = <[u8; 2]>::try_from(bytes).ok()?;
                let bits = if big_endian {
                    u16::from_be_bytes(b)
                } else {
                    u16::from_le_bytes(b)
                };
                if matches!(self, Self::F16) {
                    f16::from_bits(bits).to_f32()
                } else {
                    bf16::from_bits(bits).to_f32()
                }
            }
            Self::F64 => {
                let b = <[u8; 8]>::try_from(bytes).ok()?;
                let v = if big_endian {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                };
                v as f32
            }
        })
    }
}

/// A view checked against its storage, whose bytes have been extracted and verified.
pub(super) struct Checked<'t> {
    name: &'t str,
    tensor: &'t TensorRef,
    dtype: DType,
    numel: usize,
    /// Per dimension, how far the last index moves from the first along the storage.
    back: Vec<usize>,
    entry: String,
    expected: u64,
}

/// Checks the view `tensor` against its storage in `archive` and extracts that storage,
/// without materialising anything: every size the pickle gives is checked against the bytes
/// present before the caller commits memory to the result.
pub(super) fn check<'t>(
    archive: &mut Archive,
    name: &'t str,
    tensor: &'t TensorRef,
    prefix: &str,
) -> Result<Checked<'t>, PthError> {
    let origin = archive.origin();
    let bad = |detail: String| PthError::BadTensor {
        origin: origin.to_string(),
        tensor: name.to_string(),
        detail,
    };
    let storage = &tensor.storage;
    let dtype = DType::from_storage_type(&storage.storage_type).ok_or_else(|| {
        PthError::UnsupportedStorage {
            origin: origin.to_string(),
            tensor: name.to_string(),
            storage_type: storage.storage_type.clone(),
        }
    })?;
    let numel = tensor
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            bad(format!(
                "shape {:?} overflows the address space",
                tensor.shape
            ))
        })?;
    let storage_numel = usize::try_from(storage.numel)
        .map_err(|_| bad(format!("storage claims {} elements", storage.numel)))?;

    // The furthest element the view touches must lie inside the storage.
    let mut last = tensor.offset;
    let mut back = Vec::with_capacity(tensor.shape.len());
    for (&size, &stride) in tensor.shape.iter().zip(&tensor.stride) {
        let span = size
            .saturating_sub(1)
            .checked_mul(stride)
            .ok_or_else(|| bad("strides overflow the address space".to_string()))?;
        last = last
            .checked_add(span)
            .ok_or_else(|| bad("strides overflow the address space".to_string()))?;
        back.push(span);
    }
    if numel > 0 && last >= storage_numel {
        return Err(bad(format!(
            "view (offset {}, shape {:?}, stride {:?}) reaches element {last}, but storage \
             '{}' has {storage_numel} elements",
            tensor.offset, tensor.shape, tensor.stride, storage.key
        )));
    }

    let entry = format!("{prefix}/data/{}", storage.key);
    let expected = (storage_numel as u64)
        .checked_mul(dtype.size() as u64)
        .ok_or_else(|| bad(format!("storage claims {storage_numel} elements")))?;
    archive.storage_bytes(name, &entry, expected)?;
    Ok(Checked {
        name,
        tensor,
        dtype,
        numel,
        back,
        entry,
        expected,
    })
}

/// Views may hold more elements than the file stores (a stride-0 view expands a storage,
/// several views may repeat one), so what they materialise cannot be bounded by the file's
/// size; this caps the excess over the elements the file's storages hold, per file.
const MAX_UNBACKED_ELEMENTS: usize = 1 << 26;

/// Refuses a set of views that would materialise more than [`MAX_UNBACKED_ELEMENTS`]
/// elements beyond those their storages hold, naming the view that crosses the limit.
pub(super) fn check_total(views: &[Checked], origin: &str) -> Result<(), PthError> {
    let mut seen = std::collections::HashMap::new();
    let (mut stored, mut total) = (0usize, 0usize);
    for view in views {
        let elements = usize::try_from(view.tensor.storage.numel).unwrap_or(usize::MAX);
        if seen.insert(view.entry.as_str(), ()).is_none() {
            stored = stored.saturating_add(elements);
        }
        total = total.saturating_add(view.numel);
        if total > stored.saturating_add(MAX_UNBACKED_ELEMENTS) {
            return Err(PthError::BadTensor {
                origin: origin.to_string(),
                tensor: view.name.to_string(),
                detail: format!(
                    "with the tensors before it, the views hold {total} elements but their \
                     storages only {stored}; expanded or repeated views may add at most \
                     {MAX_UNBACKED_ELEMENTS} elements per file"
                ),
            });
        }
    }
    Ok(())
}

/// Reads a checked view out of its storage as a C-order f32 tensor.
pub(super) fn materialize(
    archive: &mut Archive,
    view: &Checked,
    big_endian: bool,
) -> Result<HostTensor, PthError> {
    let origin = archive.origin();
    let Checked {
        name,
        tensor,
        dtype,
        numel,
        ref back,
        ref entry,
        expected,
    } = *view;
    let raw = archive.storage_bytes(name, entry, expected)?;

    let mut data = Vec::with_capacity(numel);
    if numel > 0 {
        let mut index = vec![0usize; tensor.shape.len()];
        let mut pos = tensor.offset;
        for _ in 0..numel {
            let v =
                dtype
                    .element(raw, pos, big_endian)
                    .ok_or_else(|| PthError::TruncatedStorage {
                        origin: origin.to_string(),
                        entry: entry.clone(),
                        expected,
                        found: raw.len() as u64,
                    })?;
            data.push(v);
            // Odometer over the C-order index; `pos` never leaves [offset, last].
            for d in (0..index.len()).rev() {
                let (Some(i), Some(&size), Some(&stride), Some(&span)) = (
                    index.get_mut(d),
                    tensor.shape.get(d),
                    tensor.stride.get(d),
                    back.get(d),
                ) else {
                    break;
                };
                if *i + 1 < size {
                    *i += 1;
                    pos = pos.saturating_add(stride);
                    break;
                }
                *i = 0;
                pos = pos.saturating_sub(span);
            }
        }
    }
    Ok(HostTensor {
        name: name.to_string(),
        shape: tensor.shape.clone(),
        data,
    })
}
