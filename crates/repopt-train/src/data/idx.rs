//! MNIST-style IDX files (Fashion-MNIST, MNIST), raw or gzipped.
//!
//! The header's counts are only trusted after they have been checked against
//! the bytes actually present: payloads are read with a `take` limit and grow
//! with the data, so a corrupt header cannot make us allocate gigabytes.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use repopt_models::regular_file;

use super::{DataError, Dataset, Split};

/// Where Debian's `dataset-fashion-mnist` package installs the gzipped IDX
/// files.
///
/// # Example
///
/// ```no_run
/// use repopt_train::data::{FASHION_MNIST_DIR, Split, load_fashion_mnist};
///
/// let test = load_fashion_mnist(FASHION_MNIST_DIR.as_ref(), Split::Test)?;
/// assert_eq!(test.len(), 10_000);
/// # Ok::<(), repopt_train::data::DataError>(())
/// ```
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, by label.
///
/// # Example
///
/// ```
/// assert_eq!(repopt_train::data::FASHION_MNIST_CLASSES[9], "Ankle boot");
/// ```
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Magic number of an IDX file of unsigned bytes with three dimensions
/// (images), stored big-endian in the first four bytes.
///
/// # Example
///
/// ```
/// assert_eq!(repopt_train::data::IDX_IMAGES_MAGIC.to_be_bytes(), [0, 0, 8, 3]);
/// ```
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension
/// (labels).
///
/// # Example
///
/// ```
/// assert_eq!(repopt_train::data::IDX_LABELS_MAGIC.to_be_bytes(), [0, 0, 8, 1]);
/// ```
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// The decoded contents of an IDX images file.
///
/// # Example
///
/// ```no_run
/// use repopt_train::data::read_idx_images;
///
/// let imgs = read_idx_images("t10k-images-idx3-ubyte.gz".as_ref())?;
/// assert_eq!(imgs.pixels.len(), imgs.count * imgs.rows * imgs.cols);
/// # Ok::<(), repopt_train::data::DataError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count * rows * cols` bytes, row-major per image.
    pub pixels: Vec<u8>,
}

/// Reads an IDX3 unsigned-byte images file (magic `0x00000803`), gzipped or
/// raw; the format is recognised from the content, not the file name.
///
/// # Errors
///
/// [`DataError::BadMagic`], [`DataError::BadField`] for a short header,
/// zero-sized images or trailing bytes, [`DataError::Truncated`] when the
/// file ends inside an image, [`DataError::Io`] for unreadable or corrupt
/// gzip files and for paths that are not regular files (a FIFO, a device or
/// a folder is refused before anything is read).
///
/// # Example
///
/// ```no_run
/// let imgs = repopt_train::data::read_idx_images("train-images-idx3-ubyte".as_ref())?;
/// println!("{} images of {}x{}", imgs.count, imgs.rows, imgs.cols);
/// # Ok::<(), repopt_train::data::DataError>(())
/// ```
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let mut reader = open_maybe_gz(path)?;
    let header = read_header::<16>(&mut reader, path, "IDX images header")?;
    check_magic(
        path,
        "IDX images header",
        IDX_IMAGES_MAGIC,
        be_u32(&header, 0),
    )?;
    let count = be_u32(&header, 4) as usize;
    let rows = be_u32(&header, 8) as usize;
    let cols = be_u32(&header, 12) as usize;
    if rows == 0 || cols == 0 {
        return Err(DataError::bad_field(
            path,
            "image size (rows x cols)",
            "non-zero",
            format!("{rows}x{cols}"),
        ));
    }
    let record = rows.checked_mul(cols).ok_or_else(|| {
        DataError::bad_field(
            path,
            "image size (rows x cols)",
            "a size that fits in memory",
            format!("{rows}x{cols}"),
        )
    })?;
    let pixels = read_payload(&mut reader, path, count, record)?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Reads an IDX1 unsigned-byte labels file (magic `0x00000801`), gzipped or
/// raw.
///
/// # Errors
///
/// As [`read_idx_images`].
///
/// # Example
///
/// ```no_run
/// let labels = repopt_train::data::read_idx_labels("train-labels-idx1-ubyte.gz".as_ref())?;
/// assert!(labels.iter().all(|&l| l < 10));
/// # Ok::<(), repopt_train::data::DataError>(())
/// ```
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut reader = open_maybe_gz(path)?;
    let header = read_header::<8>(&mut reader, path, "IDX labels header")?;
    check_magic(
        path,
        "IDX labels header",
        IDX_LABELS_MAGIC,
        be_u32(&header, 0),
    )?;
    let count = be_u32(&header, 4) as usize;
    read_payload(&mut reader, path, count, 1)
}

/// Loads Fashion-MNIST (1 x 28 x 28, 10 classes) from the four IDX files in
/// `dir` (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each raw or with a
/// `.gz` suffix; the raw file wins when both exist since it needs no
/// decompression). See [`FASHION_MNIST_DIR`] for the usual location.
///
/// # Errors
///
/// Missing files, any error of [`read_idx_images`] / [`read_idx_labels`],
/// [`DataError::BadField`] for an images file with no images,
/// [`DataError::CountMismatch`] and [`DataError::LabelOutOfRange`].
///
/// # Example
///
/// ```no_run
/// use repopt_train::data::{FASHION_MNIST_DIR, Split, load_fashion_mnist};
///
/// let train = load_fashion_mnist(FASHION_MNIST_DIR.as_ref(), Split::Train)?;
/// assert_eq!((train.len(), train.channels, train.height), (60_000, 1, 28));
/// # Ok::<(), repopt_train::data::DataError>(())
/// ```
pub fn load_fashion_mnist(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let names = FASHION_MNIST_CLASSES.map(String::from).to_vec();
    load_idx_dataset(dir, split, "fashion-mnist", "Fashion-MNIST", names)
}

/// Loads MNIST digits from IDX files laid out as for [`load_fashion_mnist`].
///
/// # Example
///
/// ```no_run
/// use repopt_train::data::{Split, load_mnist};
///
/// let test = load_mnist("data/mnist".as_ref(), Split::Test)?;
/// assert_eq!(test.class_names[3], "3");
/// # Ok::<(), repopt_train::data::DataError>(())
/// ```
pub fn load_mnist(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let names = (0..10).map(|d| d.to_string()).collect();
    load_idx_dataset(dir, split, "mnist", "MNIST", names)
}

fn load_idx_dataset(
    dir: &Path,
    split: Split,
    name: &str,
    display: &str,
    class_names: Vec<String>,
) -> Result<Dataset, DataError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images_path = find_file(
        dir,
        &format!("{prefix}-images-idx3-ubyte"),
        &format!("{display} {split} images"),
    )?;
    let labels_path = find_file(
        dir,
        &format!("{prefix}-labels-idx1-ubyte"),
        &format!("{display} {split} labels"),
    )?;
    let images = read_idx_images(&images_path)?;
    // A valid IDX file may hold no images, but a split without any cannot be trained or
    // evaluated on, and would otherwise surface as an accuracy over zero images.
    if images.count == 0 {
        return Err(DataError::bad_field(
            &images_path,
            "image count (IDX header)",
            "at least 1",
            0,
        ));
    }
    let labels = read_idx_labels(&labels_path)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images_path,
            images: images.count,
            labels_path,
            labels: labels.len(),
        });
    }
    let classes = class_names.len();
    if let Some(record) = labels.iter().position(|&l| l as usize >= classes) {
        return Err(DataError::LabelOutOfRange {
            path: labels_path,
            label: u32::from(labels[record]),
            classes,
            record,
        });
    }
    Ok(Dataset {
        name: name.to_string(),
        images: images.pixels,
        labels: labels.into_iter().map(u32::from).collect(),
        channels: 1,
        height: images.rows,
        width: images.cols,
        classes,
        class_names,
    })
}

fn find_file(dir: &Path, base: &str, what: &str) -> Result<PathBuf, DataError> {
    let candidates = [base.to_string(), format!("{base}.gz")];
    // Any existing entry is taken, so that a FIFO or folder by the expected name is reported
    // as such when opened rather than as a missing file.
    candidates
        .iter()
        .map(|c| dir.join(c))
        .find(|p| p.exists())
        .ok_or_else(|| DataError::NotFound {
            dir: dir.to_path_buf(),
            what: what.to_string(),
            looked_for: candidates.join(" or "),
        })
}

fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let mut file = regular_file::open(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = read_full(&mut file, &mut magic).map_err(|e| DataError::io(path, e))?;
    // Re-open instead of seeking so that the raw path stays a plain buffered
    // read and the gzip path sees the stream from its first byte.
    let file = regular_file::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = BufReader::with_capacity(1 << 16, file);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(GzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Like `read_exact`, but reports how much was read instead of failing on a
/// short read, so that truncation can be reported with counts.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn read_header<const N: usize>(
    reader: &mut dyn Read,
    path: &Path,
    field: &str,
) -> Result<[u8; N], DataError> {
    let mut header = [0u8; N];
    let n = read_full(reader, &mut header).map_err(|e| DataError::io(path, e))?;
    if n < N {
        return Err(DataError::bad_field(
            path,
            format!("{field} length"),
            format!("{N} bytes"),
            format!("{n} bytes"),
        ));
    }
    Ok(header)
}

fn check_magic(path: &Path, field: &str, expected: u32, found: u32) -> Result<(), DataError> {
    if found == expected {
        Ok(())
    } else {
        Err(DataError::BadMagic {
            path: path.to_path_buf(),
            field: field.to_string(),
            expected,
            found,
        })
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads exactly `count` records of `record` bytes, reporting a truncated
/// record or trailing bytes.
fn read_payload(
    reader: &mut dyn Read,
    path: &Path,
    count: usize,
    record: usize,
) -> Result<Vec<u8>, DataError> {
    let expected = count.checked_mul(record).ok_or_else(|| {
        DataError::bad_field(
            path,
            "payload size (count x record size)",
            "a size that fits in memory",
            format!("{count} x {record}"),
        )
    })?;
    let mut data = Vec::new();
    // One byte more than needed tells trailing garbage apart from a clean end.
    reader
        .take(expected as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| DataError::io(path, e))?;
    if data.len() < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            record: data.len() / record,
            expected: record,
            found: data.len() % record,
        });
    }
    if data.len() > expected {
        return Err(DataError::bad_field(
            path,
            "payload length",
            format!("{expected} bytes ({count} records of {record} bytes, as the header says)"),
            "longer (bytes follow the last record)",
        ));
    }
    Ok(data)
}
