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
//! an oversized allocation.
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

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;
use std::rc::Rc;

use half::{bf16, f16};
use zip::ZipArchive;

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

/// A pickle far above any real state dict's is more likely a decompression bomb than data.
const MAX_PICKLE_BYTES: u64 = 1 << 30;

/// Stride-0 (expanded) tensors may legitimately have more elements than their storage, so
/// their size cannot be bounded by the file; this caps what such a view may expand to.
const MAX_BROADCAST_ELEMENTS: usize = 1 << 26;

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
    let bytes = std::fs::read(path).map_err(|source| PthError::Io {
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
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(|e| PthError::NotZip {
        origin: origin.to_string(),
        detail: e.to_string(),
    })?;
    let mut reader = Reader {
        origin,
        input_len: bytes.len() as u64,
        archive: &mut archive,
        cache: HashMap::new(),
    };
    let prefix = reader.find_prefix()?;
    let big_endian = reader.byte_order(&prefix)?;
    let pickle_name = format!("{prefix}/data.pkl");
    let pickle = reader.read_entry(&pickle_name, MAX_PICKLE_BYTES)?;

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

    let mut out = Vec::new();
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
        if INTEGER_STORAGES.contains(&tensor.storage.storage_type.as_str()) {
            continue;
        }
        out.push(reader.materialize(name, tensor, &prefix, big_endian)?);
    }
    if out.is_empty() && !entries.is_empty() {
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
    Ok(out)
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

/// The archive plus what has been extracted from it so far.
struct Reader<'a, 'b> {
    origin: &'a str,
    input_len: u64,
    archive: &'a mut ZipArchive<Cursor<&'b [u8]>>,
    /// Several tensors may view one storage; each is extracted once.
    cache: HashMap<String, Vec<u8>>,
}

impl Reader<'_, '_> {
    /// The archive's top-level directory, which torch names after the file (or `archive`).
    fn find_prefix(&self) -> Result<String, PthError> {
        let names: Vec<String> = self
            .archive
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .collect();
        let candidates: Vec<&str> = names
            .iter()
            .filter_map(|n| n.strip_suffix("/data.pkl"))
            .filter(|p| !p.is_empty() && !p.contains('/'))
            .collect();
        match candidates.as_slice() {
            [one] => return Ok((*one).to_string()),
            [] => {}
            several => {
                // torch's own reader takes the archive name from the first entry.
                let first_dir = names.first().and_then(|n| n.split('/').next());
                if let Some(p) = several.iter().find(|p| Some(**p) == first_dir) {
                    return Ok((*p).to_string());
                }
            }
        }
        let detail = if names.is_empty() {
            "the archive is empty".to_string()
        } else if candidates.len() > 1 {
            format!(
                "found {} candidates: {}",
                candidates.len(),
                candidates
                    .iter()
                    .take(5)
                    .map(|p| format!("'{p}/data.pkl'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            let shown: Vec<String> = names.iter().take(5).map(|n| format!("'{n}'")).collect();
            format!(
                "the archive's {} entries start with {}",
                names.len(),
                shown.join(", ")
            )
        };
        Err(PthError::NoDataPkl {
            origin: self.origin.to_string(),
            detail,
        })
    }

    /// PyTorch >= 2.1 records the writer's byte order; older files are little-endian.
    fn byte_order(&mut self, prefix: &str) -> Result<bool, PthError> {
        let name = format!("{prefix}/byteorder");
        if self.archive.index_for_name(&name).is_none() {
            return Ok(false);
        }
        let raw = self.read_entry(&name, 16)?;
        match raw.trim_ascii() {
            b"little" => Ok(false),
            b"big" => Ok(true),
            other => Err(PthError::Entry {
                origin: self.origin.to_string(),
                entry: name,
                detail: format!(
                    "byte order '{}', expected 'little' or 'big'",
                    String::from_utf8_lossy(other)
                ),
            }),
        }
    }

    /// A whole entry, refusing ones that claim or produce more than `limit` bytes.
    fn read_entry(&mut self, name: &str, limit: u64) -> Result<Vec<u8>, PthError> {
        let entry_err = |detail: String| PthError::Entry {
            origin: self.origin.to_string(),
            entry: name.to_string(),
            detail,
        };
        let index = self
            .archive
            .index_for_name(name)
            .ok_or_else(|| entry_err("not found".to_string()))?;
        let file = self
            .archive
            .by_index(index)
            .map_err(|e| entry_err(e.to_string()))?;
        let declared = file.size();
        if declared > limit {
            return Err(entry_err(format!(
                "declares {declared} bytes, more than the {limit} this reader accepts"
            )));
        }
        let mut buf = Vec::with_capacity(capacity_hint(declared, self.input_len));
        file.take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| entry_err(e.to_string()))?;
        if buf.len() as u64 > limit {
            return Err(entry_err(format!(
                "holds more than the {limit} bytes this reader accepts"
            )));
        }
        Ok(buf)
    }

    /// The first `expected` bytes of storage entry `entry`, extracted once per entry.
    fn storage_bytes(
        &mut self,
        tensor: &str,
        entry: &str,
        expected: u64,
    ) -> Result<&[u8], PthError> {
        let have = self.cache.get(entry).map(|b| b.len() as u64);
        if have.is_none_or(|len| len < expected) {
            let index =
                self.archive
                    .index_for_name(entry)
                    .ok_or_else(|| PthError::MissingStorage {
                        origin: self.origin.to_string(),
                        tensor: tensor.to_string(),
                        entry: entry.to_string(),
                    })?;
            let file = self.archive.by_index(index).map_err(|e| PthError::Entry {
                origin: self.origin.to_string(),
                entry: entry.to_string(),
                detail: e.to_string(),
            })?;
            let truncated = |found: u64| PthError::TruncatedStorage {
                origin: self.origin.to_string(),
                entry: entry.to_string(),
                expected,
                found,
            };
            // Checking the declared size first keeps a lying pickle from driving allocation.
            let declared = file.size();
            if declared < expected {
                return Err(truncated(declared));
            }
            let mut buf = Vec::with_capacity(capacity_hint(expected, self.input_len));
            file.take(expected)
                .read_to_end(&mut buf)
                .map_err(|e| PthError::Entry {
                    origin: self.origin.to_string(),
                    entry: entry.to_string(),
                    detail: e.to_string(),
                })?;
            if (buf.len() as u64) < expected {
                return Err(truncated(buf.len() as u64));
            }
            self.cache.insert(entry.to_string(), buf);
        }
        Ok(self.cache.get(entry).map(Vec::as_slice).unwrap_or_default())
    }

    fn materialize(
        &mut self,
        name: &str,
        tensor: &TensorRef,
        prefix: &str,
        big_endian: bool,
    ) -> Result<HostTensor, PthError> {
        // A copy, because `raw` below keeps `self` borrowed while errors are built.
        let origin = self.origin;
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
        if numel > storage_numel && numel > MAX_BROADCAST_ELEMENTS {
            return Err(bad(format!(
                "expands {storage_numel} stored elements to {numel}, more than the \
                 {MAX_BROADCAST_ELEMENTS} this reader materialises"
            )));
        }

        let entry = format!("{prefix}/data/{}", storage.key);
        let expected = (storage_numel as u64)
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| bad(format!("storage claims {storage_numel} elements")))?;
        let raw = self.storage_bytes(name, &entry, expected)?;

        let mut data = Vec::with_capacity(numel);
        if numel > 0 {
            let mut index = vec![0usize; tensor.shape.len()];
            let mut pos = tensor.offset;
            for _ in 0..numel {
                let v = dtype.element(raw, pos, big_endian).ok_or_else(|| {
                    PthError::TruncatedStorage {
                        origin: origin.to_string(),
                        entry: entry.clone(),
                        expected,
                        found: raw.len() as u64,
                    }
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
}

/// Initial buffer size: what the header promises, but never more than the input could hold
/// uncompressed, so a forged header cannot reserve memory the data does not back.
fn capacity_hint(declared: u64, input_len: u64) -> usize {
    usize::try_from(declared.min(input_len)).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Pickle interpretation
// ---------------------------------------------------------------------------------------

/// A pickled value. Lists and dicts are shared and mutable because pickle's memo lets later
/// opcodes fill an object that was stored earlier.
#[derive(Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Seq>),
    List(Rc<ListObj>),
    Dict(Rc<DictObj>),
    /// A class or function named by GLOBAL; only its name is kept.
    Global(Rc<GlobalRef>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    /// The result of calling a non-torch class (e.g. `argparse.Namespace`): kept opaque so
    /// that it can be skipped like any other non-tensor entry.
    Object(Rc<str>),
}

impl Value {
    /// A short description for messages; never recurses, so cycles are harmless.
    fn kind(&self) -> String {
        match self {
            Self::None => "None".to_string(),
            Self::Bool(b) => format!("the bool {}", if *b { "True" } else { "False" }),
            Self::Int(i) => format!("the int {i}"),
            Self::Float(f) => format!("the float {f}"),
            Self::Str(_) => "a string".to_string(),
            Self::Bytes(b) => format!("{} bytes", b.len()),
            Self::Tuple(t) => format!("a tuple of {}", t.0.len()),
            Self::List(_) => "a list".to_string(),
            Self::Dict(_) => "a dict".to_string(),
            Self::Global(g) => format!("the class/function '{}.{}'", g.module, g.name),
            Self::Storage(_) => "a storage".to_string(),
            Self::Tensor(_) => "a tensor".to_string(),
            Self::Object(name) => format!("a '{name}' object"),
        }
    }
}

struct Seq(Vec<Value>);

struct ListObj(RefCell<Vec<Value>>);

#[derive(Default)]
struct DictObj(RefCell<DictInner>);

#[derive(Default)]
struct DictInner {
    entries: Vec<(Value, Value)>,
    /// Lets SETITEM replace an existing string key without a linear scan.
    by_str: HashMap<Rc<str>, usize>,
}

impl DictInner {
    fn insert(&mut self, key: Value, value: Value) {
        if let Value::Str(s) = &key {
            if let Some(slot) = self.by_str.get(s).and_then(|&i| self.entries.get_mut(i)) {
                slot.1 = value;
                return;
            }
            self.by_str.insert(s.clone(), self.entries.len());
        }
        self.entries.push((key, value));
    }
}

// A pickle can nest containers a million deep in a million bytes; the default recursive drop
// would overflow the stack, so containers hand their children to an explicit work list.
impl Drop for Seq {
    fn drop(&mut self) {
        release(std::mem::take(&mut self.0));
    }
}

impl Drop for ListObj {
    fn drop(&mut self) {
        release(std::mem::take(self.0.get_mut()));
    }
}

impl Drop for DictObj {
    fn drop(&mut self) {
        let inner = self.0.get_mut();
        let mut pending = Vec::with_capacity(inner.entries.len() * 2);
        for (k, v) in inner.entries.drain(..) {
            pending.push(k);
            pending.push(v);
        }
        release(pending);
    }
}

fn release(mut pending: Vec<Value>) {
    while let Some(value) = pending.pop() {
        match value {
            Value::Tuple(rc) => {
                if let Ok(mut seq) = Rc::try_unwrap(rc) {
                    pending.append(&mut seq.0);
                }
            }
            Value::List(rc) => {
                if let Ok(mut list) = Rc::try_unwrap(rc) {
                    pending.append(list.0.get_mut());
                }
            }
            Value::Dict(rc) => {
                if let Ok(mut dict) = Rc::try_unwrap(rc) {
                    for (k, v) in dict.0.get_mut().entries.drain(..) {
                        pending.push(k);
                        pending.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

struct GlobalRef {
    module: String,
    name: String,
}

/// A persistent id `('storage', storage_type, key, location, numel)`.
struct StorageRef {
    storage_type: String,
    key: String,
    numel: u64,
}

/// A strided view of a storage, not yet read from the archive.
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

struct VmError {
    offset: usize,
    detail: String,
}

/// Python's unpickler reduced to what `torch.save` emits; it builds data, never calls code.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stacks saved by MARK, as in CPython; keeps a stray POP from corrupting marks.
    metastack: Vec<Vec<Value>>,
    /// Keyed rather than indexed so a huge memo index cannot force a huge allocation.
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            metastack: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn run(mut self) -> Result<Value, VmError> {
        loop {
            let at = self.pos;
            let Some(&op) = self.data.get(at) else {
                return Err(VmError {
                    offset: at,
                    detail: format!(
                        "pickle ends at offset {at} without a STOP opcode (truncated data.pkl?)"
                    ),
                });
            };
            self.pos = at + 1;
            match self.step(op) {
                Ok(Some(result)) => return Ok(result),
                Ok(None) => {}
                Err(what) => {
                    let hint = if what.starts_with("unsupported pickle opcode") {
                        "; expected one of the protocol-2 opcodes that torch.save writes"
                    } else {
                        ""
                    };
                    return Err(VmError {
                        offset: at,
                        detail: format!("{what} at offset {at}{hint}"),
                    });
                }
            }
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "truncated pickle: operand of {n} bytes runs past the end ({} bytes left)",
                    self.data.len().saturating_sub(self.pos)
                )
            })?;
        let slice = self.data.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let b = self.bytes(N)?;
        <[u8; N]>::try_from(b).map_err(|_| "internal operand size mismatch".to_string())
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32_le(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn len_u32(&mut self) -> Result<usize, String> {
        usize::try_from(self.u32_le()?).map_err(|_| "length does not fit in memory".to_string())
    }

    fn len_u64(&mut self) -> Result<usize, String> {
        usize::try_from(u64::from_le_bytes(self.array()?))
            .map_err(|_| "length does not fit in memory".to_string())
    }

    fn line(&mut self) -> Result<&'a str, String> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| "GLOBAL operand has no terminating newline".to_string())?;
        let text = self.bytes(n)?;
        self.pos += 1;
        std::str::from_utf8(text).map_err(|_| "GLOBAL operand is not UTF-8".to_string())
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow (an opcode needs more operands)".to_string())
    }

    fn top(&self) -> Result<&Value, String> {
        self.stack
            .last()
            .ok_or_else(|| "stack underflow (an opcode needs an object)".to_string())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let saved = self
            .metastack
            .pop()
            .ok_or_else(|| "no MARK before an opcode that needs one".to_string())?;
        Ok(std::mem::replace(&mut self.stack, saved))
    }

    fn str_value(bytes: &[u8]) -> Result<Value, String> {
        std::str::from_utf8(bytes)
            .map(|s| Value::Str(Rc::from(s)))
            .map_err(|_| "string is not valid UTF-8".to_string())
    }

    /// Python 2 `str` pickles: usually ASCII names; Latin-1 keeps any byte decodable.
    fn legacy_str_value(bytes: &[u8]) -> Value {
        match std::str::from_utf8(bytes) {
            Ok(s) => Value::Str(Rc::from(s)),
            Err(_) => Value::Str(
                bytes
                    .iter()
                    .map(|&b| char::from(b))
                    .collect::<String>()
                    .into(),
            ),
        }
    }

    fn long(bytes: &[u8]) -> Result<Value, String> {
        // Two's complement, little-endian; values beyond i64 cannot be sizes or offsets.
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let fill = if negative { 0xff } else { 0 };
        if bytes.len() > 8
            && bytes
                .get(8..)
                .is_some_and(|hi| hi.iter().any(|&b| b != fill))
        {
            return Err(format!(
                "integer of {} bytes does not fit in 64 bits",
                bytes.len()
            ));
        }
        let mut buf = [fill; 8];
        for (dst, &src) in buf.iter_mut().zip(bytes) {
            *dst = src;
        }
        let v = i64::from_le_bytes(buf);
        if (v < 0) != negative {
            return Err(format!(
                "integer of {} bytes does not fit in 64 bits",
                bytes.len()
            ));
        }
        Ok(Value::Int(v))
    }

    fn step(&mut self, op: u8) -> Result<Option<Value>, String> {
        match op {
            // PROTO
            0x80 => {
                let proto = self.u8()?;
                if proto > 5 {
                    return Err(format!("pickle protocol {proto} is newer than 5"));
                }
            }
            // FRAME: framing only matters to streaming readers.
            0x95 => {
                self.bytes(8)?;
            }
            // STOP
            b'.' => return self.pop().map(Some),
            // MARK
            b'(' => {
                let current = std::mem::take(&mut self.stack);
                self.metastack.push(current);
            }
            // POP
            b'0' => {
                if self.stack.pop().is_none() {
                    self.pop_mark()?;
                }
            }
            // POP_MARK
            b'1' => {
                self.pop_mark()?;
            }
            // DUP
            b'2' => {
                let v = self.top()?.clone();
                self.push(v);
            }
            // EMPTY_DICT
            b'}' => self.push(Value::Dict(Rc::default())),
            // EMPTY_LIST
            b']' => self.push(Value::List(Rc::new(ListObj(RefCell::new(Vec::new()))))),
            // EMPTY_TUPLE
            b')' => self.push(Value::Tuple(Rc::new(Seq(Vec::new())))),
            // TUPLE
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(Rc::new(Seq(items))));
            }
            // TUPLE1, TUPLE2, TUPLE3
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let split = self
                    .stack
                    .len()
                    .checked_sub(n)
                    .ok_or_else(|| format!("TUPLE{n} needs {n} items on the stack"))?;
                let items = self.stack.split_off(split);
                self.push(Value::Tuple(Rc::new(Seq(items))));
            }
            // BINUNICODE
            b'X' => {
                let n = self.len_u32()?;
                let v = Self::str_value(self.bytes(n)?)?;
                self.push(v);
            }
            // SHORT_BINUNICODE
            0x8c => {
                let n = usize::from(self.u8()?);
                let v = Self::str_value(self.bytes(n)?)?;
                self.push(v);
            }
            // BINUNICODE8
            0x8d => {
                let n = self.len_u64()?;
                let v = Self::str_value(self.bytes(n)?)?;
                self.push(v);
            }
            // BINSTRING
            b'T' => {
                let n = i32::from_le_bytes(self.array()?);
                let n = usize::try_from(n).map_err(|_| format!("negative string length {n}"))?;
                let v = Self::legacy_str_value(self.bytes(n)?);
                self.push(v);
            }
            // SHORT_BINSTRING
            b'U' => {
                let n = usize::from(self.u8()?);
                let v = Self::legacy_str_value(self.bytes(n)?);
                self.push(v);
            }
            // BINBYTES
            b'B' => {
                let n = self.len_u32()?;
                let v = Value::Bytes(Rc::from(self.bytes(n)?));
                self.push(v);
            }
            // SHORT_BINBYTES
            b'C' => {
                let n = usize::from(self.u8()?);
                let v = Value::Bytes(Rc::from(self.bytes(n)?));
                self.push(v);
            }
            // BINBYTES8
            0x8e => {
                let n = self.len_u64()?;
                let v = Value::Bytes(Rc::from(self.bytes(n)?));
                self.push(v);
            }
            // BININT
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Value::Int(i64::from(v)));
            }
            // BININT1
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(i64::from(v)));
            }
            // BININT2
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Value::Int(i64::from(v)));
            }
            // LONG1
            0x8a => {
                let n = usize::from(self.u8()?);
                let v = Self::long(self.bytes(n)?)?;
                self.push(v);
            }
            // LONG4
            0x8b => {
                let n = i32::from_le_bytes(self.array()?);
                let n = usize::try_from(n).map_err(|_| format!("negative integer length {n}"))?;
                let v = Self::long(self.bytes(n)?)?;
                self.push(v);
            }
            // NONE
            b'N' => self.push(Value::None),
            // NEWTRUE, NEWFALSE
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            // BINFLOAT
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Value::Float(v));
            }
            // GLOBAL
            b'c' => {
                let module = self.line()?.to_string();
                let name = self.line()?.to_string();
                self.push(Value::Global(Rc::new(GlobalRef { module, name })));
            }
            // STACK_GLOBAL
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                    return Err(format!(
                        "STACK_GLOBAL needs two strings, found {} and {}",
                        module.kind(),
                        name.kind()
                    ));
                };
                self.push(Value::Global(Rc::new(GlobalRef {
                    module: module.to_string(),
                    name: name.to_string(),
                })));
            }
            // BINPERSID
            b'Q' => {
                let pid = self.pop()?;
                let v = persistent_load(&pid)?;
                self.push(v);
            }
            // REDUCE, NEWOBJ: both build an object from a callable and an argument tuple.
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = call(&callable, &args)?;
                self.push(v);
            }
            // BUILD
            b'b' => {
                let _state = self.pop()?;
                match self.top()? {
                    // OrderedDict `_metadata`, parameter state, plain object attributes: none
                    // of them changes tensor values.
                    Value::Dict(_) | Value::Tensor(_) | Value::Object(_) => {}
                    other => return Err(format!("BUILD on {}, expected an object", other.kind())),
                }
            }
            // SETITEM
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.dict_on_top()?.0.borrow_mut().insert(key, value);
            }
            // SETITEMS
            b'u' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(format!(
                        "SETITEMS with an odd number of items ({})",
                        items.len()
                    ));
                }
                let dict = self.dict_on_top()?;
                let mut inner = dict.0.borrow_mut();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    inner.insert(k, v);
                }
            }
            // APPEND
            b'a' => {
                let value = self.pop()?;
                self.list_on_top()?.0.borrow_mut().push(value);
            }
            // APPENDS
            b'e' => {
                let mut items = self.pop_mark()?;
                self.list_on_top()?.0.borrow_mut().append(&mut items);
            }
            // BINPUT
            b'q' => {
                let key = u32::from(self.u8()?);
                self.memoize(key)?;
            }
            // LONG_BINPUT
            b'r' => {
                let key = self.u32_le()?;
                self.memoize(key)?;
            }
            // MEMOIZE
            0x94 => {
                let key = u32::try_from(self.memo.len())
                    .map_err(|_| "memo has more than 2^32 entries".to_string())?;
                self.memoize(key)?;
            }
            // BINGET
            b'h' => {
                let key = u32::from(self.u8()?);
                self.recall(key)?;
            }
            // LONG_BINGET
            b'j' => {
                let key = self.u32_le()?;
                self.recall(key)?;
            }
            _ => {
                return Err(format!("unsupported pickle opcode 0x{op:02x}"));
            }
        }
        Ok(None)
    }

    fn memoize(&mut self, key: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn recall(&mut self, key: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("memo key {key} read before it was stored"))?;
        self.push(v);
        Ok(())
    }

    fn dict_on_top(&self) -> Result<Rc<DictObj>, String> {
        match self.top()? {
            Value::Dict(d) => Ok(d.clone()),
            other => Err(format!("SETITEM(S) on {}, expected a dict", other.kind())),
        }
    }

    fn list_on_top(&self) -> Result<Rc<ListObj>, String> {
        match self.top()? {
            Value::List(l) => Ok(l.clone()),
            other => Err(format!("APPEND(S) on {}, expected a list", other.kind())),
        }
    }
}

/// torch.save's persistent id for a storage: `('storage', type, key, location, numel)`.
fn persistent_load(pid: &Value) -> Result<Value, String> {
    let expected = "expected ('storage', storage_type, key, location, numel)";
    let Value::Tuple(t) = pid else {
        return Err(format!("persistent id is {}; {expected}", pid.kind()));
    };
    let [tag, storage_type, key, _location, numel] = t.0.as_slice() else {
        return Err(format!("persistent id is {}; {expected}", pid.kind()));
    };
    if !matches!(tag, Value::Str(s) if &**s == "storage") {
        return Err(format!("persistent id tag is {}; {expected}", tag.kind()));
    }
    let storage_type = match storage_type {
        Value::Global(g) => format!("{}.{}", g.module, g.name),
        other => return Err(format!("storage type is {}; {expected}", other.kind())),
    };
    let key = match key {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("storage key is {}; {expected}", other.kind())),
    };
    if key.is_empty() || key.contains('/') || key.contains("..") {
        return Err(format!("storage key '{key}' is not a plain entry name"));
    }
    let numel = match numel {
        Value::Int(n) => {
            u64::try_from(*n).map_err(|_| format!("storage element count {n} is negative"))?
        }
        other => {
            return Err(format!(
                "storage element count is {}; {expected}",
                other.kind()
            ));
        }
    };
    Ok(Value::Storage(Rc::new(StorageRef {
        storage_type,
        key,
        numel,
    })))
}

/// REDUCE / NEWOBJ: the constructors a state dict needs, evaluated as data.
fn call(callable: &Value, args: &Value) -> Result<Value, String> {
    let (mut callable, mut args) = (callable.clone(), args.clone());
    // A loop, not recursion: a pickle can nest subclass wrappers arbitrarily deep.
    loop {
        let Value::Global(g) = &callable else {
            return Err(format!("cannot call {}", callable.kind()));
        };
        let Value::Tuple(tuple) = &args else {
            return Err(format!(
                "arguments to {}.{} are {}, expected a tuple",
                g.module,
                g.name,
                args.kind()
            ));
        };
        let items = tuple.0.as_slice();
        let inner = match (g.module.as_str(), g.name.as_str()) {
            ("collections", "OrderedDict") | ("builtins", "dict") => return ordered_dict(items),
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                return rebuild_tensor(items);
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => {
                return match items.first() {
                    Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                    Some(other) => Err(format!(
                        "{}: parameter data is {}, expected a tensor",
                        g.name,
                        other.kind()
                    )),
                    None => Err(format!("{} called without arguments", g.name)),
                };
            }
            // Tensor subclasses: (func, new_type, args, state); the subclass does not matter.
            ("torch._tensor", "_rebuild_from_type_v2") => match items {
                [func, _new_type, inner_args, ..] => (func.clone(), inner_args.clone()),
                _ => {
                    return Err("_rebuild_from_type_v2 needs (func, type, args, state)".to_string());
                }
            },
            (module, name) if module == "torch" || module.starts_with("torch.") => {
                return Err(format!(
                    "unsupported torch constructor '{module}.{name}'; expected dense tensors \
                     rebuilt by torch._utils._rebuild_tensor_v2 (quantized, sparse and meta \
                     tensors are not read)"
                ));
            }
            (module, name) => {
                return Ok(Value::Object(Rc::from(format!("{module}.{name}").as_str())));
            }
        };
        (callable, args) = inner;
    }
}

fn ordered_dict(args: &[Value]) -> Result<Value, String> {
    let dict = Rc::new(DictObj::default());
    match args {
        [] => {}
        [Value::List(_) | Value::Tuple(_)] => {
            let pairs = match args.first() {
                Some(Value::List(l)) => l.0.borrow().clone(),
                Some(Value::Tuple(t)) => t.0.clone(),
                _ => Vec::new(),
            };
            let mut inner = dict.0.borrow_mut();
            for pair in pairs {
                match &pair {
                    Value::Tuple(kv) => match kv.0.as_slice() {
                        [k, v] => inner.insert(k.clone(), v.clone()),
                        _ => return Err("OrderedDict item is not a (key, value) pair".to_string()),
                    },
                    other => {
                        return Err(format!(
                            "OrderedDict item is {}, expected a pair",
                            other.kind()
                        ));
                    }
                }
            }
        }
        _ => return Err("OrderedDict called with unexpected arguments".to_string()),
    }
    Ok(Value::Dict(dict))
}

fn int_tuple(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    let items = match v {
        Value::Tuple(t) => t.0.clone(),
        Value::List(l) => l.0.borrow().clone(),
        other => {
            return Err(format!(
                "tensor {what} is {}, expected a tuple of ints",
                other.kind()
            ));
        }
    };
    items
        .iter()
        .map(|item| match item {
            Value::Int(i) => {
                usize::try_from(*i).map_err(|_| format!("tensor {what} has negative entry {i}"))
            }
            other => Err(format!(
                "tensor {what} holds {}, expected ints",
                other.kind()
            )),
        })
        .collect()
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, meta])`.
fn rebuild_tensor(args: &[Value]) -> Result<Value, String> {
    let [storage, offset, size, stride, ..] = args else {
        return Err(format!(
            "_rebuild_tensor_v2 got {} arguments, expected (storage, storage_offset, size, \
             stride, ...)",
            args.len()
        ));
    };
    let Value::Storage(storage) = storage else {
        return Err(format!(
            "_rebuild_tensor_v2 storage argument is {}, expected a storage",
            storage.kind()
        ));
    };
    let offset = match offset {
        Value::Int(i) => {
            usize::try_from(*i).map_err(|_| format!("tensor storage offset {i} is negative"))?
        }
        other => {
            return Err(format!(
                "tensor storage offset is {}, expected an int",
                other.kind()
            ));
        }
    };
    let shape = int_tuple(size, "size")?;
    let stride = int_tuple(stride, "stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "tensor size has {} dimensions but stride has {}",
            shape.len(),
            stride.len()
        ));
    }
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: storage.clone(),
        offset,
        shape,
        stride,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pickle: &[u8]) -> Result<Value, VmError> {
        Machine::new(pickle).run()
    }

    #[test]
    fn deep_nesting_drops_without_overflow() {
        let mut p = vec![0x80, 2, b')'];
        p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        p.push(b'.');
        assert!(matches!(run(&p), Ok(Value::Tuple(_))));
    }

    #[test]
    fn deep_subclass_wrappers_do_not_recurse() {
        // memo 0 = wrapper; args_0 = (); args_{k+1} = (wrapper, None, args_k, None);
        // finally wrapper(*args_n), which unwraps down to wrapper(*()).
        let mut p = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\nq\x000)".to_vec();
        for _ in 0..200_000 {
            p.extend_from_slice(b"q\x010(h\x00Nh\x01Nt");
        }
        p.extend_from_slice(b"q\x010h\x00h\x01R.");
        let err = run(&p).err().map(|e| e.detail).unwrap_or_default();
        assert!(err.contains("needs (func, type, args, state)"), "{err}");
    }

    #[test]
    fn long1_decodes_sign() {
        let Ok(Value::Int(v)) = run(&[0x8a, 2, 0xff, 0x7f, b'.']) else {
            panic!("expected int");
        };
        assert_eq!(v, 0x7fff);
        let Ok(Value::Int(v)) = run(&[0x8a, 1, 0xff, b'.']) else {
            panic!("expected int");
        };
        assert_eq!(v, -1);
        assert!(run(&[0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'.']).is_err());
    }

    #[test]
    fn bad_operands_are_errors() {
        for p in [
            &b"X\xff\xff\xff\xff"[..],
            b"t.",
            b"h\x05.",
            b"q",
            b"\x85.",
            b"cfoo",
            b"}K\x01u.",
        ] {
            assert!(run(p).is_err(), "{p:?}");
        }
    }
}
