//! The one error type of the data layer.
//!
//! Every variant carries the path of the offending file (or folder) so that a
//! user staring at a failed run knows which file to re-download, and the
//! field and expectation so that they know why it was rejected. Record
//! numbers are 0-based, like the indices of the resulting [`Dataset`].
//!
//! [`Dataset`]: super::Dataset

use std::path::{Path, PathBuf};

use super::Split;

/// Why a dataset could not be loaded or a loader could not be configured.
///
/// # Example
///
/// ```
/// use repopt_train::data::{DataError, Split, load_cifar10};
///
/// let err = load_cifar10(std::path::Path::new("/nonexistent"), Split::Train).unwrap_err();
/// assert!(matches!(err, DataError::NotFound { .. }));
/// assert!(err.to_string().contains("/nonexistent"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file or folder exists but could not be read.
    #[error("cannot read '{}': {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// None of the expected files or folders exist.
    #[error("{what} not found in '{}' (looked for {looked_for})", dir.display())]
    NotFound {
        /// The folder that was searched.
        dir: PathBuf,
        /// What was missing, e.g. "Fashion-MNIST train images".
        what: String,
        /// The names that were tried.
        looked_for: String,
    },

    /// A file's magic number does not identify the expected format.
    #[error("'{}': bad magic 0x{found:08x} in {field}, expected 0x{expected:08x}", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Which header, e.g. "IDX images header".
        field: String,
        /// The magic number that was expected.
        expected: u32,
        /// The magic number that was read.
        found: u32,
    },

    /// A header field or file size has a value that the format does not allow.
    #[error("'{}': {field} is {found}, expected {expected}", path.display())]
    BadField {
        /// The file.
        path: PathBuf,
        /// The field, e.g. "image rows" or "file length".
        field: String,
        /// What the format requires.
        expected: String,
        /// What the file contains.
        found: String,
    },

    /// The images file and the labels file disagree about the sample count.
    #[error(
        "image count {images} in images file '{}' but {labels} labels in labels file '{}'",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// Its sample count.
        images: usize,
        /// The labels file.
        labels_path: PathBuf,
        /// Its sample count.
        labels: usize,
    },

    /// A label is not smaller than the number of classes.
    #[error(
        "'{}': label {label} out of range for {classes} classes at record {record}",
        path.display()
    )]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// The label that was read.
        label: u32,
        /// The number of classes of the dataset.
        classes: usize,
        /// The 0-based record number.
        record: usize,
    },

    /// The file ends in the middle of a record.
    #[error(
        "truncated record {record} of '{}': it has {found} of the {expected} bytes a record needs",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The 0-based number of the incomplete record.
        record: usize,
        /// The size of a full record in bytes.
        expected: usize,
        /// The bytes left for it.
        found: usize,
    },

    /// An image file could not be decoded.
    #[error("unreadable image '{}': {reason}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's explanation.
        reason: String,
    },

    /// A class folder of an image-folder dataset holds no JPEG or PNG file.
    #[error(
        "class folder '{}' has no images (expected .jpg, .jpeg or .png files)",
        path.display()
    )]
    EmptyClass {
        /// The class folder.
        path: PathBuf,
    },

    /// An image-folder dataset has no class folders at all.
    #[error("'{}' has no class folders (expected one sub-folder per class)", dir.display())]
    NoClasses {
        /// The dataset root that was searched.
        dir: PathBuf,
    },

    /// A test-split class folder names a class the training split does not have.
    #[error(
        "class folder '{class}' in '{}' is not one of the {known} training classes in '{}'; \
         every test class must also be a training class, since class indices come from the \
         training split",
        dir.display(),
        train_dir.display()
    )]
    UnknownClass {
        /// The class folder's name.
        class: String,
        /// The test split folder that holds it.
        dir: PathBuf,
        /// The training split folder whose classes define the indices.
        train_dir: PathBuf,
        /// How many training classes there are.
        known: usize,
    },

    /// The training and test splits of one dataset disagree.
    #[error(
        "'{}': the test split's {what} is {test} but the training split's is {train}; both \
         splits must agree",
        dir.display()
    )]
    SplitMismatch {
        /// The dataset folder.
        dir: PathBuf,
        /// What differs, e.g. "image size (C x H x W)".
        what: String,
        /// The training split's value.
        train: String,
        /// The test split's value.
        test: String,
    },

    /// A split has no images to train or evaluate on.
    #[error("the {split} split in '{}' has no images{detail}", dir.display())]
    EmptySplit {
        /// The dataset folder.
        dir: PathBuf,
        /// Which split.
        split: Split,
        /// Why, when something other than the files left it empty (e.g. a limit of 0).
        detail: String,
    },

    /// An augmentation preset name was not recognised.
    #[error(
        "unknown augmentation preset '{name}': expected one of search (crop+flip), \
         train (crop+flip+RandAugment), eval (no augmentation)"
    )]
    UnknownPreset {
        /// The name that was given.
        name: String,
    },

    /// A split name was not recognised.
    #[error("unknown split '{name}': expected train or test (val)")]
    UnknownSplit {
        /// The name that was given.
        name: String,
    },

    /// The loader configuration does not fit the dataset.
    #[error("invalid loader configuration: {field} is {found}, expected {expected}")]
    Config {
        /// The configuration field.
        field: String,
        /// What is needed.
        expected: String,
        /// What was given.
        found: String,
    },

    /// An array (a batch, the decoded images of a folder) larger than it may be, found
    /// before it is allocated.
    #[error("{message}")]
    TooLarge {
        /// The array's size, the limit, and what to lower.
        message: String,
    },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn bad_field(
        path: &Path,
        field: impl Into<String>,
        expected: impl ToString,
        found: impl ToString,
    ) -> Self {
        DataError::BadField {
            path: path.to_path_buf(),
            field: field.into(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }
}
