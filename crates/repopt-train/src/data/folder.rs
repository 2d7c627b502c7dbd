//! "ImageFolder" datasets: one sub-folder of JPEG/PNG files per class.
//!
//! Images are decoded once, converted to RGB and resized to one fixed size,
//! so that the rest of the pipeline sees the same dense `u8` CHW layout as
//! for CIFAR. Decoding is the slow part, hence the thread pool.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use image::ImageReader;
use image::imageops::{self, FilterType};
use repopt_models::regular_file;

use super::{DataError, Dataset, Split};

/// File extensions (lower-case) that are decoded; everything else in a class
/// folder is ignored.
///
/// # Example
///
/// ```
/// assert!(repopt_train::data::IMAGE_EXTENSIONS.contains(&"png"));
/// ```
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// How deep class folders are searched for images; a guard against symlink
/// cycles, far deeper than any real layout.
const MAX_DEPTH: usize = 16;

/// Loads an image-folder dataset.
///
/// Layout: `dir/<class>/**/<image>.{jpg,jpeg,png}` (extensions
/// case-insensitive, other files ignored, sub-folders searched). With
/// `split = Some(Split::Train)` the classes are read from `dir/train/`, with
/// `Some(Split::Test)` from `dir/val/` or else `dir/test/`; with `None` from
/// `dir` itself. Class indices follow the sorted class-folder names, and
/// samples are sorted by path within a class; folders whose name starts with
/// `.` are skipped.
///
/// The training split's class folders define the classes of both splits: the
/// test split is labelled by position in `dir/train/`'s sorted class list (so
/// `classes` and `class_names` are the training split's), and each of its
/// class folders must also exist in `dir/train/`. A test split may lack some
/// training classes; their indices are then simply not used.
///
/// Every image is decoded by content (not extension), converted to RGB and
/// resized with a triangle (bilinear, antialiased) filter to `size`, given
/// as `(height, width)`, ignoring aspect ratio. Decoding runs on up to
/// [`std::thread::available_parallelism`] threads.
///
/// # Errors
///
/// [`DataError::NotFound`] for a missing split folder (the test split needs
/// the training split's folder too), [`DataError::UnknownClass`] for a test
/// class folder with no training counterpart,
/// [`DataError::NoClasses`], [`DataError::EmptyClass`], [`DataError::Image`]
/// naming the first unreadable image (in sample order), [`DataError::Io`],
/// and [`DataError::Config`] for a zero `size`.
///
/// # Example
///
/// ```no_run
/// use repopt_train::data::{Split, load_image_folder};
///
/// let val = load_image_folder("data/imagenette".as_ref(), Some(Split::Test), (64, 64))?;
/// assert_eq!((val.channels, val.height, val.width), (3, 64, 64));
/// # Ok::<(), repopt_train::data::DataError>(())
/// ```
pub fn load_image_folder(
    dir: &Path,
    split: Option<Split>,
    size: (usize, usize),
) -> Result<Dataset, DataError> {
    let (height, width) = size;
    let max = u32::MAX as usize;
    if height == 0 || width == 0 || height > max || width > max {
        return Err(DataError::Config {
            field: "image folder size (height, width)".into(),
            expected: "non-zero sizes that fit in u32".into(),
            found: format!("({height}, {width})"),
        });
    }
    let root = split_root(dir, split)?;
    let (names, class_dirs) = class_folders(&root)?;
    let (class_names, labels) = class_indices(dir, split, &root, names)?;
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for (&label, class_dir) in labels.iter().zip(&class_dirs) {
        let mut images = Vec::new();
        collect_images(class_dir, 0, &mut images)?;
        if images.is_empty() {
            return Err(DataError::EmptyClass {
                path: class_dir.clone(),
            });
        }
        images.sort();
        files.extend(images.into_iter().map(|p| (p, label)));
    }
    let total = [3, height, width]
        .iter()
        .try_fold(files.len(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::Config {
            field: "image folder size (height, width)".into(),
            expected: format!("a size whose {} decoded images fit in memory", files.len()),
            found: format!("({height}, {width})"),
        })?;
    // Decoded images are one host array: a size this machine cannot allocate is an error
    // naming it, not an aborted process.
    let mut pixels = Vec::new();
    pixels
        .try_reserve_exact(total)
        .map_err(|_| DataError::TooLarge {
            message: format!(
                "decoding {} images of 3 x {height} x {width} needs {total} bytes, more than this machine can allocate; lower the resolution",
                files.len()
            ),
        })?;
    pixels.resize(total, 0);
    decode_all(&files, &mut pixels, height, width)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image-folder".to_string());
    Ok(Dataset {
        name,
        images: pixels,
        labels: files.iter().map(|(_, l)| *l).collect(),
        channels: 3,
        height,
        width,
        classes: class_names.len(),
        class_names,
    })
}

/// The class names of an image-folder dataset, by label, without decoding
/// any image: the sorted names of the class folders that
/// [`load_image_folder`] would read for `split`.
///
/// # Errors
///
/// [`DataError::NotFound`] for a missing split folder,
/// [`DataError::NoClasses`] and [`DataError::Io`].
///
/// # Example
///
/// ```
/// use repopt_train::data::{Split, image_folder_classes};
///
/// let root = tempfile::tempdir()?;
/// for class in ["dog", "cat"] {
///     std::fs::create_dir_all(root.path().join("train").join(class))?;
/// }
/// assert_eq!(image_folder_classes(root.path(), Some(Split::Train))?, ["cat", "dog"]);
/// assert!(image_folder_classes(root.path(), Some(Split::Test)).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn image_folder_classes(dir: &Path, split: Option<Split>) -> Result<Vec<String>, DataError> {
    Ok(class_folders(&split_root(dir, split)?)?.0)
}

fn split_root(dir: &Path, split: Option<Split>) -> Result<PathBuf, DataError> {
    let candidates: &[&str] = match split {
        None => {
            return if dir.is_dir() {
                Ok(dir.to_path_buf())
            } else {
                Err(DataError::NotFound {
                    dir: dir.to_path_buf(),
                    what: "image folder".into(),
                    looked_for: "a folder of class folders".into(),
                })
            };
        }
        Some(Split::Train) => &["train"],
        Some(Split::Test) => &["val", "test"],
    };
    candidates
        .iter()
        .map(|c| dir.join(c))
        .find(|p| p.is_dir())
        .ok_or_else(|| DataError::NotFound {
            dir: dir.to_path_buf(),
            what: format!(
                "{} split folder",
                split.map(|s| s.to_string()).unwrap_or_default()
            ),
            looked_for: candidates
                .iter()
                .map(|c| format!("{c}/"))
                .collect::<Vec<_>>()
                .join(" or "),
        })
}

/// The class list of the dataset and the index of each of `names` (the class folders of
/// split folder `root`) in it.
///
/// The training split defines the classes, so that an index means the same class in both
/// splits whatever classes the test split lacks: the test split's classes must all be
/// training classes, and it is labelled by position in the training split's sorted list.
fn class_indices(
    dir: &Path,
    split: Option<Split>,
    root: &Path,
    names: Vec<String>,
) -> Result<(Vec<String>, Vec<u32>), DataError> {
    if split != Some(Split::Test) {
        let labels = (0..names.len()).map(|i| i as u32).collect();
        return Ok((names, labels));
    }
    let train_root = split_root(dir, Some(Split::Train))?;
    let (train_names, _) = class_folders(&train_root)?;
    let labels = names
        .iter()
        .map(|name| {
            train_names
                .binary_search(name)
                .map(|i| i as u32)
                .map_err(|_| DataError::UnknownClass {
                    class: name.clone(),
                    dir: root.to_path_buf(),
                    train_dir: train_root.clone(),
                    known: train_names.len(),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok((train_names, labels))
}

fn class_folders(root: &Path) -> Result<(Vec<String>, Vec<PathBuf>), DataError> {
    let entries = std::fs::read_dir(root).map_err(|e| DataError::io(root, e))?;
    let mut classes: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(root, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && path.is_dir() {
            classes.push((name, path));
        }
    }
    if classes.is_empty() {
        return Err(DataError::NoClasses {
            dir: root.to_path_buf(),
        });
    }
    classes.sort();
    Ok(classes.into_iter().unzip())
}

fn collect_images(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        if path.is_dir() {
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !hidden && depth < MAX_DEPTH {
                collect_images(&path, depth + 1, out)?;
            }
        } else if has_image_extension(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Decodes `files[i]` into the i-th image slot of `pixels` on a small thread
/// pool. Work is handed out in sample order and nobody takes new work after
/// a failure, so every sample before the first failing one has been tried
/// and the error reported is always the first in sample order.
fn decode_all(
    files: &[(PathBuf, u32)],
    pixels: &mut [u8],
    height: usize,
    width: usize,
) -> Result<(), DataError> {
    if files.is_empty() {
        return Ok(());
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, files.len());
    let work = Mutex::new(pixels.chunks_mut(3 * height * width).enumerate());
    let failed = AtomicBool::new(false);
    let errors: Mutex<Vec<(usize, DataError)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    if failed.load(Ordering::Acquire) {
                        return;
                    }
                    let next = work.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some((i, slot)) = next else { return };
                    if let Err(e) = decode_into(&files[i].0, slot, height, width) {
                        failed.store(true, Ordering::Release);
                        errors
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((i, e));
                    }
                }
            });
        }
    });
    let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    errors.sort_by_key(|(i, _)| *i);
    match errors.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

fn decode_into(path: &Path, slot: &mut [u8], height: usize, width: usize) -> Result<(), DataError> {
    slot.copy_from_slice(&read_image(path, 3, (height, width))?);
    Ok(())
}

/// Reads one JPEG or PNG file as the image-folder loader stores its images:
/// decoded by content, converted to `channels` channels (1: 8-bit luma, 3:
/// RGB) and resized with a triangle (bilinear, antialiased) filter to
/// `size`, given as `(height, width)`, ignoring aspect ratio. Returns
/// `channels x height x width` bytes in CHW order.
///
/// # Errors
///
/// [`DataError::Io`] for a file that cannot be read, [`DataError::Image`]
/// for one that does not decode (both name the file), and
/// [`DataError::Config`] for a channel count other than 1 or 3 or a zero
/// size.
///
/// # Example
///
/// ```
/// use repopt_train::data::read_image;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("red.png");
/// image::RgbImage::from_pixel(5, 3, image::Rgb([255, 0, 0])).save(&path)?;
/// let rgb = read_image(&path, 3, (2, 2))?;
/// assert_eq!(rgb, [255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0]);
/// assert_eq!(read_image(&path, 1, (1, 1))?.len(), 1);
/// let missing = read_image(&dir.path().join("missing.png"), 3, (2, 2)).unwrap_err();
/// assert!(missing.to_string().contains("missing.png"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_image(
    path: &Path,
    channels: usize,
    size: (usize, usize),
) -> Result<Vec<u8>, DataError> {
    let (height, width) = size;
    let max = u32::MAX as usize;
    if !matches!(channels, 1 | 3) || height == 0 || width == 0 || height > max || width > max {
        return Err(DataError::Config {
            field: "image channels and size (height, width)".into(),
            expected: "1 or 3 channels and non-zero sizes that fit in u32".into(),
            found: format!("{channels} channels, ({height}, {width})"),
        });
    }
    let bytes = regular_file::read(path, u64::MAX).map_err(|e| DataError::io(path, e))?;
    let unreadable = |reason: String| DataError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let (w, h) = (width as u32, height as u32);
    // A decoder bug must not take the whole process down for one bad file.
    let pixels = catch_unwind(AssertUnwindSafe(|| {
        let decoded = ImageReader::new(Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(|e| e.to_string())?
            .decode()
            .map_err(|e| e.to_string())?;
        if decoded.width() == 0 || decoded.height() == 0 {
            return Err(format!(
                "it has no pixels ({}x{})",
                decoded.width(),
                decoded.height()
            ));
        }
        // Channels are converted before resizing, in both cases: the image-folder datasets'
        // RGB images are stored that way, and single images must match them bit for bit.
        Ok(if channels == 1 {
            let luma = decoded.to_luma8();
            let luma = if luma.dimensions() == (w, h) {
                luma
            } else {
                imageops::resize(&luma, w, h, FilterType::Triangle)
            };
            luma.into_raw()
        } else {
            let rgb = decoded.to_rgb8();
            let rgb = if rgb.dimensions() == (w, h) {
                rgb
            } else {
                imageops::resize(&rgb, w, h, FilterType::Triangle)
            };
            let plane = height * width;
            let mut chw = vec![0u8; 3 * plane];
            for (p, px) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    chw[c * plane + p] = px.0[c];
                }
            }
            chw
        })
    }))
    .map_err(|_| unreadable("the decoder panicked".into()))?
    .map_err(unreadable)?;
    Ok(pixels)
}
