//! The dataset readers refuse what would otherwise surface much later or not at all: special
//! files given as data files, test classes the model was not trained on, splits that
//! disagree, and splits with no images.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use repopt_train::TrainConfig;
use repopt_train::config::DatasetKind;
use repopt_train::data::{
    Dataset, Loader, LoaderConfig, Normalize, Split, load_cifar10, load_fashion_mnist,
    load_image_folder, read_idx_images, read_idx_labels,
};
use repopt_train::datasets::{load, load_split};

fn idx_images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for field in [0x0000_0803, count, rows, cols] {
        v.extend_from_slice(&field.to_be_bytes());
    }
    v.extend((0..count * rows * cols).map(|i| i as u8));
    v
}

fn idx_labels(count: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for field in [0x0000_0801, count] {
        v.extend_from_slice(&field.to_be_bytes());
    }
    v.extend((0..count).map(|i| (i % 10) as u8));
    v
}

/// Fashion-MNIST-style files: `train` images of `train_size` (rows, cols), `t10k` of
/// `test_size`.
fn write_idx(dir: &Path, train: (u32, (u32, u32)), test: (u32, (u32, u32))) {
    for (prefix, (count, (rows, cols))) in [("train", train), ("t10k", test)] {
        fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx_images(count, rows, cols),
        )
        .unwrap();
        fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx_labels(count),
        )
        .unwrap();
    }
}

fn png(path: &Path, shade: u8) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(3, 3, image::Rgb([shade, shade, shade]))
        .save(path)
        .unwrap();
}

fn config(kind: DatasetKind, dir: &Path) -> TrainConfig {
    TrainConfig {
        dataset: kind,
        data_dir: Some(dir.to_path_buf()),
        resolution: Some(4),
        ..TrainConfig::default()
    }
}

fn load_split_err(cfg: &TrainConfig) -> String {
    match load_split(cfg) {
        Ok(s) => panic!(
            "expected an error, loaded {} training and {} test images",
            s.train.len(),
            s.test.len()
        ),
        Err(e) => e.to_string(),
    }
}

#[test]
fn image_folder_test_labels_follow_the_training_class_list() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for class in ["ant", "bee", "cat"] {
        png(&r.join(format!("train/{class}/1.png")), 10);
    }
    // No "bee" images to validate on: "cat" must keep index 2, not slide to 1.
    png(&r.join("val/ant/1.png"), 20);
    png(&r.join("val/cat/1.png"), 30);

    let splits = load_split(&config(DatasetKind::Folder, r)).unwrap();
    assert_eq!(splits.test.class_names, splits.train.class_names);
    assert_eq!(splits.test.classes, 3);
    assert_eq!(splits.test.labels, vec![0, 2]);
    // The same labels whichever way the test split is loaded.
    let alone = load(DatasetKind::Folder, r, Split::Test, Some(4)).unwrap();
    assert_eq!(alone.labels, vec![0, 2]);
    let direct = load_image_folder(r, Some(Split::Test), (4, 4)).unwrap();
    assert_eq!((direct.labels, direct.classes), (vec![0, 2], 3));
}

#[test]
fn image_folder_test_class_absent_from_training_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    png(&r.join("train/ant/1.png"), 10);
    png(&r.join("train/bee/1.png"), 10);
    png(&r.join("val/ant/1.png"), 20);
    png(&r.join("val/wasp/1.png"), 20);

    let err = load_split_err(&config(DatasetKind::Folder, r));
    assert!(err.contains("'wasp'"), "{err}");
    assert!(err.contains(&r.join("val").display().to_string()), "{err}");
    assert!(
        err.contains(&r.join("train").display().to_string()),
        "{err}"
    );
}

#[test]
fn splits_with_different_image_sizes_are_an_error() {
    let root = tempfile::tempdir().unwrap();
    write_idx(root.path(), (4, (4, 5)), (2, (5, 5)));
    let cfg = TrainConfig {
        resolution: None,
        ..config(DatasetKind::FashionMnist, root.path())
    };
    let err = load_split_err(&cfg);
    assert!(err.contains(&root.path().display().to_string()), "{err}");
    assert!(err.contains("1x4x5") && err.contains("1x5x5"), "{err}");
    assert!(err.contains("test split"), "{err}");
}

#[test]
fn idx_file_with_no_images_is_an_error_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    write_idx(root.path(), (4, (4, 4)), (0, (4, 4)));
    let err = load_fashion_mnist(root.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(err.contains("t10k-images-idx3-ubyte"), "{err}");
    assert!(err.contains("image count"), "{err}");
}

#[test]
fn empty_cifar_batch_files_are_errors_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let record: Vec<u8> = std::iter::once(3u8).chain([7u8; 3072]).collect();
    for i in 1..=5 {
        fs::write(dir.join(format!("data_batch_{i}.bin")), &record).unwrap();
    }
    fs::write(dir.join("test_batch.bin"), b"").unwrap();
    let err = load_cifar10(dir, Split::Test).unwrap_err().to_string();
    assert!(err.contains("test_batch.bin"), "{err}");
    assert!(err.contains("0 bytes"), "{err}");

    fs::write(dir.join("test_batch.bin"), &record).unwrap();
    fs::write(dir.join("data_batch_3.bin"), b"").unwrap();
    let err = load_cifar10(dir, Split::Train).unwrap_err().to_string();
    assert!(err.contains("data_batch_3.bin"), "{err}");
}

#[test]
fn test_limit_that_leaves_no_images_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    write_idx(root.path(), (4, (4, 4)), (3, (4, 4)));
    let cfg = TrainConfig {
        test_limit: Some(0),
        ..config(DatasetKind::FashionMnist, root.path())
    };
    let err = load_split_err(&cfg);
    assert!(
        err.contains("test split") && err.contains("no images"),
        "{err}"
    );
}

#[test]
fn evaluation_refuses_empty_or_foreign_test_sets() {
    use repopt_models::{Mode, RepOptVgg, VggConfig};
    use repopt_train::evaluate::evaluate;

    let gpu = repopt_tensor::Gpu::from_env()
        .expect("this test needs a GPU adapter (a software one will do)");
    let model_config = VggConfig {
        name: "tiny".into(),
        num_blocks: [1, 1, 1, 1],
        width_multipliers: [0.0625; 4],
        strides: [1, 2, 2, 2, 2],
        in_channels: 1,
        num_classes: 3,
        use_se: false,
    };
    let model = RepOptVgg::new(&gpu, model_config, Mode::Target, 0).unwrap();
    let dataset = |n: usize, classes: usize| Dataset {
        name: "t".into(),
        images: vec![0; n * 16],
        labels: (0..n as u32).map(|i| i % classes as u32).collect(),
        channels: 1,
        height: 4,
        width: 4,
        classes,
        class_names: (0..classes).map(|c| c.to_string()).collect(),
    };
    let loader = |ds: Dataset| {
        let cfg = LoaderConfig {
            normalize: Normalize::unit(),
            batch_size: 4,
            ..LoaderConfig::default()
        };
        Loader::try_new(Arc::new(ds), cfg).unwrap()
    };

    let model = repopt_models::any::Network::from(model);
    let err = evaluate(&model, &loader(dataset(0, 3))).unwrap_err();
    assert!(err.to_string().contains("no images"), "{err}");
    let err = evaluate(&model, &loader(dataset(8, 5))).unwrap_err();
    assert!(
        err.to_string().contains("5 classes") && err.to_string().contains("3"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Special files
// ---------------------------------------------------------------------------------------

#[cfg(unix)]
fn make_fifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// The error `read` returns for `fifo`, failing the test if it blocks instead; a reader
/// stuck on the FIFO is released by opening its write end.
#[cfg(unix)]
fn error_without_blocking<T: Send + 'static, E: ToString>(
    fifo: PathBuf,
    read: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read().err().map(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Some(e)) => e,
        Ok(None) => panic!("{} was read as data", fifo.display()),
        Err(_) => {
            let _ = fs::OpenOptions::new().write(true).open(&fifo);
            panic!("reading FIFO {} blocked", fifo.display());
        }
    }
}

#[cfg(unix)]
#[test]
fn fifos_given_as_data_files_are_refused_without_blocking() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_path_buf();
    let refused = |err: String, path: &Path| {
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("not a regular file"), "{err}");
    };

    let fifo = r.join("idx/train-images-idx3-ubyte");
    make_fifo(&fifo);
    let p = fifo.clone();
    refused(
        error_without_blocking(fifo.clone(), move || read_idx_images(&p)),
        &fifo,
    );
    let dir = r.join("idx");
    fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(1)).unwrap();
    refused(
        error_without_blocking(fifo.clone(), move || load_fashion_mnist(&dir, Split::Train)),
        &fifo,
    );

    let fifo = r.join("cifar/test_batch.bin");
    make_fifo(&fifo);
    let dir = r.join("cifar");
    refused(
        error_without_blocking(fifo.clone(), move || load_cifar10(&dir, Split::Test)),
        &fifo,
    );

    png(&r.join("folder/train/ant/1.png"), 1);
    let fifo = r.join("folder/train/ant/2.png");
    make_fifo(&fifo);
    let dir = r.join("folder");
    refused(
        error_without_blocking(fifo.clone(), move || {
            load_image_folder(&dir, Some(Split::Train), (4, 4))
        }),
        &fifo,
    );
}

#[cfg(unix)]
#[test]
fn devices_and_directories_given_as_data_files_are_refused() {
    let root = tempfile::tempdir().unwrap();
    for path in [Path::new("/dev/null"), root.path()] {
        for err in [
            read_idx_images(path).map(|_| ()).unwrap_err().to_string(),
            read_idx_labels(path).map(|_| ()).unwrap_err().to_string(),
        ] {
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("not a regular file"), "{err}");
        }
    }
}

#[cfg(unix)]
#[test]
fn configuration_files_that_are_not_regular_files_are_refused_without_blocking() {
    let root = tempfile::tempdir().unwrap();
    let fifo = root.path().join("run.toml");
    make_fifo(&fifo);
    let p = fifo.clone();
    let err = error_without_blocking(fifo.clone(), move || TrainConfig::from_file(&p));
    assert!(err.contains(&fifo.display().to_string()), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    let base = TrainConfig::default();
    let err = TrainConfig::from_file_over(Path::new("/dev/zero"), &base)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/dev/zero") && err.contains("not a regular file"),
        "{err}"
    );
}
