//! Single-image inference: image files become exactly the inputs the evaluation loader makes
//! of the same images, and a classifier finds its run's settings.
//!
//! The classifier test needs a GPU adapter (a software one will do).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use repopt_models::checkpoint::save_model;
use repopt_models::{Mode, RepOptVgg, VggConfig};
use repopt_tensor::Gpu;
use repopt_train::config::{DatasetKind, TrainConfig};
use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize, Preset};
use repopt_train::datasets::load_split;
use repopt_train::inference::{Classifier, Preprocess};
use repopt_train::trainer::{files, run_metadata};

/// The evaluation batches of `dataset`, built as the trainer builds its test loader.
fn eval_images(dataset: Dataset, normalize: Normalize, cfg: &TrainConfig) -> Vec<f32> {
    let loader = Loader::try_new(
        Arc::new(dataset),
        LoaderConfig {
            workers: 1,
            resize: cfg.resolution.map(|r| (r, r)),
            ..LoaderConfig::for_preset(Preset::Eval, 4, normalize)
        },
    )
    .unwrap();
    loader.epoch(0).flat_map(|b| b.images).collect()
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 37 + seed * 91) % 251) as u8)
        .collect()
}

#[test]
fn files_of_dataset_images_become_the_evaluation_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    for (dataset, channels, resolution) in [
        (DatasetKind::FashionMnist, 1, Some(32)),
        (DatasetKind::Cifar10, 3, None),
    ] {
        let cfg = TrainConfig {
            dataset,
            resolution,
            ..TrainConfig::default()
        };
        let pre = Preprocess::for_run(&cfg);
        let (h, w) = pre.stored;
        let mut paths = Vec::new();
        let mut images = Vec::new();
        for i in 0..3 {
            let chw = pattern(channels * h * w, i);
            let path = tmp.path().join(format!("{dataset}-{i}.png"));
            if channels == 1 {
                image::GrayImage::from_raw(w as u32, h as u32, chw.clone())
                    .unwrap()
                    .save(&path)
                    .unwrap();
            } else {
                let plane = h * w;
                image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
                    let p = y as usize * w + x as usize;
                    image::Rgb([chw[p], chw[plane + p], chw[2 * plane + p]])
                })
                .save(&path)
                .unwrap();
            }
            images.extend(chw);
            paths.push(path);
        }
        let name = dataset.name().to_string();
        let ds = Dataset {
            images,
            labels: vec![0; 3],
            channels,
            height: h,
            width: w,
            classes: 1,
            class_names: vec!["a".into()],
            name: name.clone(),
        };
        let want = eval_images(ds, Normalize::for_dataset(&name, channels), &cfg);
        let got: Vec<f32> = paths.iter().flat_map(|p| pre.file(p).unwrap()).collect();
        assert_eq!(got, want, "{dataset}");
    }
}

/// Writes `dir/<split>/<class>/<i>.png` for every split and class: RGB images of odd sizes,
/// and one grayscale image per class, which the loader turns into RGB.
fn photo_folder(dir: &Path) -> Vec<PathBuf> {
    let mut test_files = Vec::new();
    for split in ["train", "val"] {
        for (c, class) in ["dog", "cat"].into_iter().enumerate() {
            let folder = dir.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..2 {
                let (w, h) = (37 + 4 * i, 23 + c);
                let px = pattern(3 * w * h, i + 3 * c);
                let path = folder.join(format!("{i}.png"));
                image::RgbImage::from_raw(w as u32, h as u32, px)
                    .unwrap()
                    .save(&path)
                    .unwrap();
                test_files.push((class, path));
            }
            let gray = folder.join("2.png");
            image::GrayImage::from_raw(9, 14, pattern(9 * 14, c))
                .unwrap()
                .save(&gray)
                .unwrap();
            test_files.push((class, gray));
        }
    }
    // The loader's order: classes by name, then files by path.
    let mut val: Vec<_> = test_files
        .into_iter()
        .filter(|(_, p)| p.starts_with(dir.join("val")))
        .collect();
    val.sort();
    val.into_iter().map(|(_, p)| p).collect()
}

fn folder_run(dir: &Path) -> TrainConfig {
    TrainConfig {
        dataset: DatasetKind::Folder,
        data_dir: Some(dir.to_path_buf()),
        resolution: Some(12),
        ..TrainConfig::default()
    }
}

#[test]
fn image_files_become_the_inputs_of_an_image_folder_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    let files = photo_folder(&photos);
    let cfg = folder_run(&photos);
    let splits = load_split(&cfg).unwrap();
    assert_eq!(splits.test.len(), files.len());
    let want = eval_images((*splits.test).clone(), splits.normalize, &cfg);
    let pre = Preprocess::for_run(&cfg);
    assert_eq!(pre.input_shape(), [3, 12, 12]);
    let got: Vec<f32> = files.iter().flat_map(|p| pre.file(p).unwrap()).collect();
    assert_eq!(got, want);
}

fn tiny(gpu: &Gpu, classes: usize) -> RepOptVgg {
    let config = VggConfig {
        num_blocks: [1, 1, 1, 1],
        width_multipliers: [0.25; 4],
        num_classes: classes,
        ..VggConfig::preset("A0").unwrap()
    };
    RepOptVgg::new(gpu, config, Mode::Target, 0).unwrap()
}

#[test]
fn a_classifier_finds_its_runs_settings_and_names_bad_files() {
    let gpu = Gpu::from_env().expect("this test needs a GPU adapter");
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    let files = photo_folder(&photos);
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let model_file = run.join(files::MODEL);
    save_model(&model_file, &tiny(&gpu, 2), &BTreeMap::new()).unwrap();

    // No settings anywhere: the defaults are Fashion-MNIST's grayscale images.
    let err = Classifier::load(&gpu, &run).err().unwrap().to_string();
    assert!(err.contains("3-channel") && err.contains("run"), "{err}");

    // The run's config.json: the image folder, its class names and resolution.
    let cfg = folder_run(&photos);
    std::fs::write(
        run.join(files::CONFIG),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    let classifier = Classifier::load(&gpu, &model_file).unwrap();
    assert_eq!(classifier.class_names(), ["cat", "dog"]);
    assert_eq!(classifier.preprocess().input_shape(), [3, 12, 12]);
    let top = classifier.classify_files(&files, 5).unwrap();
    assert_eq!(top.len(), files.len());
    for t in &top {
        assert_eq!(t.len(), 2, "top-5 of 2 classes is both");
        let total: f32 = t.iter().map(|p| p.probability).sum();
        assert!((total - 1.0).abs() < 1e-5, "{t:?}");
        assert!(t[0].probability >= t[1].probability);
    }

    // Settings in the file's metadata come first: CIFAR-10 at 16x16, whose 10 names do not
    // fit a 2-class model.
    let cifar = TrainConfig {
        dataset: DatasetKind::Cifar10,
        resolution: Some(16),
        ..TrainConfig::default()
    };
    let deploy = run.join("deploy.safetensors");
    save_model(&deploy, &tiny(&gpu, 2), &run_metadata(&cifar)).unwrap();
    let classifier = Classifier::load(&gpu, &deploy).unwrap();
    assert_eq!(classifier.preprocess().input_shape(), [3, 16, 16]);
    assert_eq!(classifier.class_names(), ["class 0", "class 1"]);

    let missing = tmp.path().join("missing.png");
    let err = classifier
        .classify_files(&[files[0].clone(), missing], 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.png"), "{err}");
    let err = classifier.classify(&[0.0; 5], 1).unwrap_err().to_string();
    assert!(err.contains("whole"), "{err}");
}
