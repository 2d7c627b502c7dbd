//! Dataset readers against small files written in the real formats.

use std::fs;
use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use repopt_train::data::{
    CIFAR100_CLASSES, DataError, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, Split, load_cifar10,
    load_cifar100, load_fashion_mnist, load_image_folder, load_mnist, read_idx_images,
};

fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0000_0803u32.to_be_bytes());
    v.extend_from_slice(&count.to_be_bytes());
    v.extend_from_slice(&rows.to_be_bytes());
    v.extend_from_slice(&cols.to_be_bytes());
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0000_0801u32.to_be_bytes());
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Writes a 3-image 1x4x5 split with the given file-name prefix.
fn write_idx_split(dir: &Path, prefix: &str, gz: bool) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 3) as u8).collect();
    let labels = vec![9u8, 0, 4];
    let suffix = if gz { ".gz" } else { "" };
    let wrap = |d: &[u8]| if gz { gzip(d) } else { d.to_vec() };
    fs::write(
        dir.join(format!("{prefix}-images-idx3-ubyte{suffix}")),
        wrap(&idx_images(3, 4, 5, &pixels)),
    )
    .unwrap();
    fs::write(
        dir.join(format!("{prefix}-labels-idx1-ubyte{suffix}")),
        wrap(&idx_labels(&labels)),
    )
    .unwrap();
    (pixels, labels)
}

#[test]
fn idx_raw_and_gzipped_read_back_exactly() {
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (pixels, labels) = write_idx_split(dir.path(), "train", gz);
        write_idx_split(dir.path(), "t10k", gz);
        let ds = load_fashion_mnist(dir.path(), Split::Train).unwrap();
        assert_eq!(ds.name, "fashion-mnist");
        assert_eq!(
            (ds.len(), ds.channels, ds.height, ds.width),
            (3, 1, 4, 5),
            "gz={gz}"
        );
        assert_eq!(ds.images, pixels);
        assert_eq!(
            ds.labels,
            labels.iter().map(|&l| u32::from(l)).collect::<Vec<_>>()
        );
        assert_eq!(ds.classes, 10);
        assert_eq!(ds.class_names[0], FASHION_MNIST_CLASSES[0]);
        assert_eq!(ds.image(1), &pixels[20..40]);
        let test = load_mnist(dir.path(), Split::Test).unwrap();
        assert_eq!(test.len(), 3);
        assert_eq!(test.class_names[9], "9");
    }
}

#[test]
fn idx_prefers_raw_when_both_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (pixels, _) = write_idx_split(dir.path(), "train", false);
    // A corrupt .gz next to a good raw file must not be read.
    fs::write(dir.path().join("train-images-idx3-ubyte.gz"), b"junk").unwrap();
    let ds = load_fashion_mnist(dir.path(), Split::Train).unwrap();
    assert_eq!(ds.images, pixels);
}

fn err_string(e: DataError) -> String {
    let s = e.to_string();
    eprintln!("{s}");
    s
}

#[test]
fn idx_bad_magic_names_file_and_values() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_split(dir.path(), "train", false);
    let path = dir.path().join("train-images-idx3-ubyte");
    let mut bytes = fs::read(&path).unwrap();
    bytes[3] = 0x01;
    fs::write(&path, bytes).unwrap();
    let e = load_fashion_mnist(dir.path(), Split::Train).unwrap_err();
    assert!(matches!(e, DataError::BadMagic { found: 0x801, .. }));
    let s = err_string(e);
    assert!(s.contains("train-images-idx3-ubyte"), "{s}");
    assert!(s.contains("bad magic 0x00000801"), "{s}");
    assert!(s.contains("expected 0x00000803"), "{s}");
}

#[test]
fn idx_count_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_split(dir.path(), "train", true);
    fs::write(
        dir.path().join("train-labels-idx1-ubyte.gz"),
        gzip(&idx_labels(&[1, 2])),
    )
    .unwrap();
    let s = err_string(load_fashion_mnist(dir.path(), Split::Train).unwrap_err());
    assert!(
        s.contains("image count 3 in images file") && s.contains("but 2 labels in labels file"),
        "{s}"
    );
    assert!(s.contains("train-labels-idx1-ubyte.gz"), "{s}");
}

#[test]
fn idx_truncated_and_trailing_and_oversized_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imgs");
    // Header says 3 images of 4x5, data stops inside image 2.
    let pixels = vec![7u8; 2 * 20 + 6];
    fs::write(&path, idx_images(3, 4, 5, &pixels)).unwrap();
    let e = read_idx_images(&path).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Truncated {
                record: 2,
                expected: 20,
                found: 6,
                ..
            }
        ),
        "{e}"
    );
    assert!(err_string(e).contains("truncated record 2 of"));

    fs::write(&path, idx_images(1, 4, 5, &[0u8; 21])).unwrap();
    let s = err_string(read_idx_images(&path).unwrap_err());
    assert!(s.contains("bytes follow the last record"), "{s}");

    // A huge count in a tiny file must fail cleanly, not allocate.
    fs::write(&path, gzip(&idx_images(u32::MAX, 65535, 65535, &[1, 2, 3]))).unwrap();
    let e = read_idx_images(&path).unwrap_err();
    assert!(
        matches!(e, DataError::Truncated { .. } | DataError::BadField { .. }),
        "{e}"
    );

    fs::write(&path, [0u8, 0, 8]).unwrap();
    let s = err_string(read_idx_images(&path).unwrap_err());
    assert!(s.contains("header length") && s.contains("16 bytes"), "{s}");

    fs::write(&path, idx_images(1, 0, 5, &[])).unwrap();
    assert!(matches!(
        read_idx_images(&path).unwrap_err(),
        DataError::BadField { .. }
    ));
}

#[test]
fn idx_label_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_split(dir.path(), "t10k", false);
    fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        idx_labels(&[1, 12, 3]),
    )
    .unwrap();
    let e = load_fashion_mnist(dir.path(), Split::Test).unwrap_err();
    let s = err_string(e);
    assert!(
        s.contains("label 12 out of range for 10 classes at record 1"),
        "{s}"
    );
    assert!(s.contains("t10k-labels-idx1-ubyte"), "{s}");
}

#[test]
fn idx_missing_and_corrupt_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let s = err_string(load_fashion_mnist(dir.path(), Split::Train).unwrap_err());
    assert!(
        s.contains("train-images-idx3-ubyte or train-images-idx3-ubyte.gz"),
        "{s}"
    );

    let path = dir.path().join("x.gz");
    let mut gz = gzip(&idx_images(1, 2, 2, &[1, 2, 3, 4]));
    let n = gz.len();
    gz.truncate(n - 12);
    fs::write(&path, gz).unwrap();
    let e = read_idx_images(&path).unwrap_err();
    assert!(e.to_string().contains("x.gz"), "{e}");
}

#[test]
fn real_fashion_mnist_if_installed() {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.is_dir() {
        println!(
            "SKIPPED: {FASHION_MNIST_DIR} is missing (install Debian's dataset-fashion-mnist)"
        );
        return;
    }
    for (split, n) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
        let ds = load_fashion_mnist(dir, split).unwrap();
        assert_eq!(ds.len(), n);
        assert_eq!((ds.channels, ds.height, ds.width), (1, 28, 28));
        assert_eq!(ds.images.len(), n * 28 * 28);
        assert!(ds.labels.iter().all(|&l| l < 10));
        // Fashion-MNIST is balanced.
        assert!(ds.class_counts().iter().all(|&c| c == n / 10));
        ds.validate().unwrap();
    }
}

fn cifar_record(label: &[u8], seed: u8) -> Vec<u8> {
    let mut r = label.to_vec();
    r.extend((0..3072u32).map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed)));
    r
}

#[test]
fn cifar10_reads_all_batches_from_parent_dir() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cifar-10-batches-bin");
    fs::create_dir(&dir).unwrap();
    let mut expected_labels = Vec::new();
    let mut expected_images = Vec::new();
    for b in 1..=5u8 {
        let mut bytes = Vec::new();
        for r in 0..2u8 {
            let label = (b + r) % 10;
            let rec = cifar_record(&[label], b * 10 + r);
            expected_labels.push(u32::from(label));
            expected_images.extend_from_slice(&rec[1..]);
            bytes.extend(rec);
        }
        fs::write(dir.join(format!("data_batch_{b}.bin")), bytes).unwrap();
    }
    fs::write(dir.join("test_batch.bin"), cifar_record(&[3], 99)).unwrap();
    let names = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n";
    fs::write(dir.join("batches.meta.txt"), names).unwrap();

    for root in [parent.path(), dir.as_path()] {
        let ds = load_cifar10(root, Split::Train).unwrap();
        assert_eq!(ds.name, "cifar10");
        assert_eq!(
            (ds.len(), ds.channels, ds.height, ds.width),
            (10, 3, 32, 32)
        );
        assert_eq!(ds.labels, expected_labels);
        assert_eq!(ds.images, expected_images);
        assert_eq!(ds.class_names[9], "j");
    }
    let test = load_cifar10(parent.path(), Split::Test).unwrap();
    assert_eq!(test.labels, vec![3]);
    assert_eq!(test.image(0), &cifar_record(&[3], 99)[1..]);
}

#[test]
fn cifar10_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Truncated record 1 of test_batch.bin.
    let mut bytes = cifar_record(&[1], 1);
    bytes.extend_from_slice(&cifar_record(&[2], 2)[..100]);
    fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
    let s = err_string(load_cifar10(dir.path(), Split::Test).unwrap_err());
    assert!(
        s.contains("truncated record 1 of") && s.contains("test_batch.bin"),
        "{s}"
    );
    assert!(s.contains("100 of the 3073 bytes"), "{s}");

    let mut bytes = cifar_record(&[1], 1);
    bytes.extend(cifar_record(&[12], 2));
    fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
    let s = err_string(load_cifar10(dir.path(), Split::Test).unwrap_err());
    assert!(
        s.contains("label 12 out of range for 10 classes at record 1"),
        "{s}"
    );

    // Batch 1 present, batch 3 missing.
    fs::write(dir.path().join("data_batch_1.bin"), cifar_record(&[0], 1)).unwrap();
    fs::write(dir.path().join("data_batch_2.bin"), cifar_record(&[0], 1)).unwrap();
    let s = err_string(load_cifar10(dir.path(), Split::Train).unwrap_err());
    assert!(s.contains("data_batch_3.bin"), "{s}");

    let empty = tempfile::tempdir().unwrap();
    let s = err_string(load_cifar10(empty.path(), Split::Train).unwrap_err());
    assert!(s.contains("data_batch_1.bin"), "{s}");

    fs::write(dir.path().join("batches.meta.txt"), "a\nb\n").unwrap();
    let s = err_string(load_cifar10(dir.path(), Split::Test).unwrap_err());
    assert!(
        s.contains("batches.meta.txt") && s.contains("class name count"),
        "{s}"
    );
}

#[test]
fn cifar100_uses_fine_labels() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("some-other-name");
    fs::create_dir(&dir).unwrap();
    let mut bytes = Vec::new();
    bytes.extend(cifar_record(&[3, 77], 5));
    bytes.extend(cifar_record(&[19, 99], 6));
    fs::write(dir.join("train.bin"), &bytes).unwrap();
    fs::write(dir.join("test.bin"), cifar_record(&[0, 0], 7)).unwrap();
    let ds = load_cifar100(parent.path(), Split::Train).unwrap();
    assert_eq!(ds.name, "cifar100");
    assert_eq!(ds.classes, 100);
    assert_eq!(ds.labels, vec![77, 99]);
    assert_eq!(ds.image(1), &cifar_record(&[19, 99], 6)[2..]);
    assert_eq!(ds.class_names, CIFAR100_CLASSES.map(String::from).to_vec());
    let names: Vec<&str> = CIFAR100_CLASSES.to_vec();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted, names,
        "built-in CIFAR-100 names are sorted and unique"
    );

    fs::write(dir.join("test.bin"), cifar_record(&[0, 100], 7)).unwrap();
    let s = err_string(load_cifar100(&dir, Split::Test).unwrap_err());
    assert!(
        s.contains("label 100 out of range for 100 classes at record 0"),
        "{s}"
    );
    fs::write(dir.join("test.bin"), cifar_record(&[20, 1], 7)).unwrap();
    let s = err_string(load_cifar100(&dir, Split::Test).unwrap_err());
    assert!(s.contains("coarse label at record 0"), "{s}");
    fs::write(dir.join("test.bin"), &cifar_record(&[1, 1], 7)[..3000]).unwrap();
    let s = err_string(load_cifar100(&dir, Split::Test).unwrap_err());
    assert!(
        s.contains("truncated record 0") && s.contains("test.bin"),
        "{s}"
    );
}

fn rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)))
}

#[test]
fn image_folder_png_and_jpeg() {
    let root = tempfile::tempdir().unwrap();
    let train = root.path().join("train");
    for class in ["cat", "dog", ".hidden"] {
        fs::create_dir_all(train.join(class)).unwrap();
    }
    fs::create_dir_all(root.path().join("val/cat")).unwrap();
    // Exact-size PNG: pixels must come back exactly, in CHW.
    let png = rgb(4, 3, |x, y| [(x * 10) as u8, (y * 20) as u8, 200]);
    png.save(train.join("cat/a.png")).unwrap();
    // Larger gray PNG (converted to RGB, resized).
    image::GrayImage::from_pixel(8, 6, image::Luma([90]))
        .save(train.join("cat/b.PNG"))
        .unwrap();
    // A flat-colour JPEG of another size, approximately preserved.
    rgb(10, 7, |_, _| [30, 160, 220])
        .save(train.join("dog/z.jpg"))
        .unwrap();
    fs::write(train.join("dog/notes.txt"), "ignored").unwrap();
    rgb(4, 3, |_, _| [1, 2, 3])
        .save(root.path().join("val/cat/v.png"))
        .unwrap();

    let ds = load_image_folder(root.path(), Some(Split::Train), (3, 4)).unwrap();
    assert_eq!(ds.class_names, vec!["cat", "dog"]);
    assert_eq!(ds.labels, vec![0, 0, 1]);
    assert_eq!((ds.channels, ds.height, ds.width), (3, 3, 4));
    let a = ds.image(0);
    for y in 0..3 {
        for x in 0..4 {
            let p = y * 4 + x;
            assert_eq!(
                [a[p], a[12 + p], a[24 + p]],
                [(x * 10) as u8, (y * 20) as u8, 200]
            );
        }
    }
    assert!(ds.image(1).iter().all(|&v| v == 90));
    let dog = ds.image(2);
    for (ch, want) in [30i32, 160, 220].into_iter().enumerate() {
        for &v in &dog[ch * 12..(ch + 1) * 12] {
            assert!(
                (i32::from(v) - want).abs() <= 6,
                "jpeg channel {ch}: {v} vs {want}"
            );
        }
    }
    let val = load_image_folder(root.path(), Some(Split::Test), (3, 4)).unwrap();
    assert_eq!(val.len(), 1);
    assert_eq!(&val.image(0)[..1], &[1]);
    let flat = load_image_folder(&train, None, (2, 2)).unwrap();
    assert_eq!(flat.len(), 3);
    assert_eq!(flat.image_size(), 12);
}

#[test]
fn image_folder_errors() {
    let root = tempfile::tempdir().unwrap();
    let s = err_string(load_image_folder(root.path(), None, (4, 4)).unwrap_err());
    assert!(s.contains("no class folders"), "{s}");
    let s = err_string(load_image_folder(root.path(), Some(Split::Test), (4, 4)).unwrap_err());
    assert!(s.contains("val/ or test/"), "{s}");

    fs::create_dir_all(root.path().join("a")).unwrap();
    fs::create_dir_all(root.path().join("b")).unwrap();
    rgb(2, 2, |_, _| [0, 0, 0])
        .save(root.path().join("a/1.png"))
        .unwrap();
    fs::write(root.path().join("b/readme.md"), "x").unwrap();
    let e = load_image_folder(root.path(), None, (4, 4)).unwrap_err();
    assert!(matches!(e, DataError::EmptyClass { .. }));
    let s = err_string(e);
    assert!(
        s.contains("class folder") && s.contains("has no images"),
        "{s}"
    );

    for i in 0..5 {
        rgb(2, 2, |_, _| [0, 0, 0])
            .save(root.path().join(format!("b/{i}.png")))
            .unwrap();
    }
    fs::write(root.path().join("b/3.jpg"), b"not a jpeg at all").unwrap();
    fs::write(root.path().join("b/4.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let e = load_image_folder(root.path(), None, (4, 4)).unwrap_err();
    let s = err_string(e);
    // Sample order is sorted by path, so 3.jpg is the first bad file.
    assert!(s.contains("unreadable image") && s.contains("3.jpg"), "{s}");

    assert!(matches!(
        load_image_folder(root.path(), None, (0, 4)).unwrap_err(),
        DataError::Config { .. }
    ));
}
