//! CIFAR-10 and CIFAR-100 in their "binary version" layout.
//!
//! Records are fixed-size (label byte(s) followed by a 3 x 32 x 32 CHW
//! image), which is exactly the in-memory layout of [`Dataset`], so loading
//! is a strided copy. File sizes come from the file system, never from the
//! content, so there is nothing to trust before reading; only regular files
//! are read, so a FIFO or device cannot stall or flood the reader.

use std::path::{Path, PathBuf};

use repopt_models::regular_file;

use super::{DataError, Dataset, Split};

/// CIFAR-10's class names, by label (as in `batches.meta.txt`).
///
/// # Example
///
/// ```
/// assert_eq!(repopt_train::data::CIFAR10_CLASSES[0], "airplane");
/// ```
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-100's fine class names, by fine label (as in
/// `fine_label_names.txt`).
///
/// # Example
///
/// ```
/// assert_eq!(repopt_train::data::CIFAR100_CLASSES[99], "worm");
/// ```
pub const CIFAR100_CLASSES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

const IMAGE_BYTES: usize = 3 * 32 * 32;
/// The class-name files hold 10 or 100 short lines; anything far larger is not one.
const MAX_NAMES_BYTES: u64 = 1 << 20;
const COARSE_CLASSES: u8 = 20;

/// Loads CIFAR-10 (3 x 32 x 32, 10 classes) from the binary version:
/// `data_batch_1.bin` .. `data_batch_5.bin` for [`Split::Train`] (50 000
/// images) or `test_batch.bin` for [`Split::Test`] (10 000), each a sequence
/// of records of 1 label byte + 3072 CHW pixel bytes. Class names come from
/// `batches.meta.txt` when present.
///
/// `dir` may be the `cifar-10-batches-bin` folder itself or any folder that
/// contains it (or another folder holding the batches) one level down.
///
/// # Errors
///
/// [`DataError::NotFound`] when no folder holds the batches or one batch is
/// missing, [`DataError::Truncated`] when a file's length is not a whole
/// number of records, [`DataError::BadField`] for an empty batch file,
/// [`DataError::LabelOutOfRange`], [`DataError::Io`] (also for a batch path
/// that is not a regular file).
///
/// # Example
///
/// ```no_run
/// use repopt_train::data::{Split, load_cifar10};
///
/// let train = load_cifar10("data".as_ref(), Split::Train)?; // finds data/cifar-10-batches-bin
/// assert_eq!((train.len(), train.classes), (50_000, 10));
/// # Ok::<(), repopt_train::data::DataError>(())
/// ```
pub fn load_cifar10(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    };
    let root = locate(dir, "cifar-10-batches-bin", &files, "CIFAR-10 batches")?;
    let class_names = read_names(&root.join("batches.meta.txt"), &CIFAR10_CLASSES)?;
    load_records(&root, &files, false, "cifar10", "CIFAR-10", class_names)
}

/// Loads CIFAR-100 (3 x 32 x 32) from the binary version: `train.bin`
/// (50 000 images) or `test.bin` (10 000), records of 1 coarse label byte,
/// 1 fine label byte and 3072 CHW pixel bytes. The fine label (100 classes)
/// is used; names come from `fine_label_names.txt` when present.
///
/// `dir` may be the `cifar-100-binary` folder or a folder containing it.
///
/// # Errors
///
/// As [`load_cifar10`]; the coarse label is range-checked too (< 20).
///
/// # Example
///
/// ```no_run
/// use repopt_train::data::{Split, load_cifar100};
///
/// let test = load_cifar100("data/cifar-100-binary".as_ref(), Split::Test)?;
/// assert_eq!(test.classes, 100);
/// # Ok::<(), repopt_train::data::DataError>(())
/// ```
pub fn load_cifar100(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let files = vec![
        match split {
            Split::Train => "train.bin",
            Split::Test => "test.bin",
        }
        .to_string(),
    ];
    let root = locate(dir, "cifar-100-binary", &files, "CIFAR-100 binary files")?;
    let class_names = read_names(&root.join("fine_label_names.txt"), &CIFAR100_CLASSES)?;
    load_records(&root, &files, true, "cifar100", "CIFAR-100", class_names)
}

/// Finds the folder holding the first of `files`: `dir` itself, the
/// conventional extracted folder inside it, or any other sub-folder (sorted,
/// so the choice is reproducible).
fn locate(
    dir: &Path,
    conventional: &str,
    files: &[String],
    what: &str,
) -> Result<PathBuf, DataError> {
    // Any existing entry counts, so that a FIFO or folder by a batch's name is reported as
    // such when it is opened rather than as a missing file.
    let probe = &files[0];
    if dir.join(probe).exists() {
        return Ok(dir.to_path_buf());
    }
    let named = dir.join(conventional);
    if named.join(probe).exists() {
        return Ok(named);
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut subdirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        if let Some(found) = subdirs.into_iter().find(|d| d.join(probe).exists()) {
            return Ok(found);
        }
    }
    Err(DataError::NotFound {
        dir: dir.to_path_buf(),
        what: what.to_string(),
        looked_for: format!(
            "{} in it, in {conventional}/ or in another sub-folder",
            files.join(", ")
        ),
    })
}

/// Reads one class name per non-empty line, falling back to the built-in
/// names when the file does not exist (it is optional in the archives).
fn read_names(path: &Path, defaults: &[&str]) -> Result<Vec<String>, DataError> {
    if !path.exists() {
        return Ok(defaults.iter().map(|s| s.to_string()).collect());
    }
    let bytes = regular_file::read(path, MAX_NAMES_BYTES).map_err(|e| DataError::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != defaults.len() {
        return Err(DataError::bad_field(
            path,
            "class name count (non-empty lines)",
            defaults.len(),
            names.len(),
        ));
    }
    Ok(names)
}

fn load_records(
    root: &Path,
    files: &[String],
    coarse_and_fine: bool,
    name: &str,
    display: &str,
    class_names: Vec<String>,
) -> Result<Dataset, DataError> {
    let label_bytes = if coarse_and_fine { 2 } else { 1 };
    let record = label_bytes + IMAGE_BYTES;
    let classes = class_names.len();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for file in files {
        let path = root.join(file);
        if !path.exists() {
            return Err(DataError::NotFound {
                dir: root.to_path_buf(),
                what: format!("{display} batch file"),
                looked_for: file.clone(),
            });
        }
        let bytes = regular_file::read(&path, u64::MAX).map_err(|e| DataError::io(&path, e))?;
        // A whole number of records, but none: an interrupted download or copy, which
        // would otherwise pass as a split with no images.
        if bytes.is_empty() {
            return Err(DataError::bad_field(
                &path,
                "file length",
                format!("at least one {record}-byte record"),
                "0 bytes",
            ));
        }
        if bytes.len() % record != 0 {
            return Err(DataError::Truncated {
                path,
                record: bytes.len() / record,
                expected: record,
                found: bytes.len() % record,
            });
        }
        let count = bytes.len() / record;
        images.reserve(count * IMAGE_BYTES);
        labels.reserve(count);
        for (i, rec) in bytes.chunks_exact(record).enumerate() {
            if coarse_and_fine && rec[0] >= COARSE_CLASSES {
                return Err(DataError::bad_field(
                    &path,
                    format!("coarse label at record {i}"),
                    format!("< {COARSE_CLASSES}"),
                    rec[0],
                ));
            }
            let label = rec[label_bytes - 1];
            if usize::from(label) >= classes {
                return Err(DataError::LabelOutOfRange {
                    path,
                    label: u32::from(label),
                    classes,
                    record: i,
                });
            }
            labels.push(u32::from(label));
            images.extend_from_slice(&rec[label_bytes..]);
        }
    }
    Ok(Dataset {
        name: name.to_string(),
        images,
        labels,
        channels: 3,
        height: 32,
        width: 32,
        classes,
        class_names,
    })
}
