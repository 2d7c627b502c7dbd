//! Training settings outside their domains are refused naming the key, the allowed range and
//! the value, whether they come from code or from a configuration file; batches too large
//! for any device are refused before they are allocated.

use std::path::PathBuf;
use std::sync::Arc;

use repopt_train::TrainConfig;
use repopt_train::config::ArchConfig;
use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize, Preset};

#[test]
fn every_setting_outside_its_domain_is_refused_naming_the_key() {
    let base = TrainConfig::default();
    let arch = |a: ArchConfig| TrainConfig {
        arch: a,
        ..base.clone()
    };
    let cases: Vec<(TrainConfig, &str)> = vec![
        (
            TrainConfig {
                momentum: 1.0,
                ..base.clone()
            },
            "momentum must be in [0, 1), got 1",
        ),
        (
            TrainConfig {
                weight_decay: f32::NAN,
                ..base.clone()
            },
            "weight_decay must be in [0, 1], got NaN",
        ),
        (
            TrainConfig {
                clip_grad: Some(-1.0),
                ..base.clone()
            },
            "clip_grad must be in (0, inf), got -1",
        ),
        (
            TrainConfig {
                lr: f64::INFINITY,
                ..base.clone()
            },
            "lr must be in (0, inf), got inf",
        ),
        (
            TrainConfig {
                lr_batch: 0,
                ..base.clone()
            },
            "lr_batch must be in [1, 1048576], got 0",
        ),
        (
            TrainConfig {
                label_smoothing: -0.1,
                ..base.clone()
            },
            "label_smoothing must be in [0, 1), got -0.1",
        ),
        (
            TrainConfig {
                resolution: Some(0),
                ..base.clone()
            },
            "resolution must be in [1, 4096], got 0",
        ),
        (
            TrainConfig {
                train_limit: Some(0),
                ..base.clone()
            },
            "train_limit must be in [1, inf), got 0",
        ),
        (
            TrainConfig {
                test_limit: Some(0),
                ..base.clone()
            },
            "test_limit must be in [1, inf), got 0",
        ),
        (
            TrainConfig {
                workers: 5000,
                ..base.clone()
            },
            "workers must be in [0, 1024], got 5000",
        ),
        (
            TrainConfig {
                epochs: 0,
                ..base.clone()
            },
            "epochs must be in [1, 100000], got 0",
        ),
        (
            TrainConfig {
                warmup_epochs: 200_000,
                ..base.clone()
            },
            "warmup_epochs must be in [0, 100000], got 200000",
        ),
        (
            TrainConfig {
                batch_size: 100_000,
                ..base.clone()
            },
            "batch_size must be in [1, 65536], got 100000",
        ),
        (
            TrainConfig {
                eval_batch_size: 0,
                ..base.clone()
            },
            "eval_batch_size must be in [1, 65536], got 0",
        ),
        (
            TrainConfig {
                log_every: 0,
                ..base.clone()
            },
            "log_every must be in [1, inf), got 0",
        ),
        (
            TrainConfig {
                stop_after_steps: Some(0),
                ..base.clone()
            },
            "stop_after_steps must be in [1, inf), got 0",
        ),
        (
            TrainConfig {
                out: PathBuf::new(),
                ..base.clone()
            },
            "out must be a non-empty path",
        ),
        (
            TrainConfig {
                data_dir: Some(PathBuf::new()),
                ..base.clone()
            },
            "data_dir must be a non-empty path",
        ),
        (
            TrainConfig {
                scales: Some(PathBuf::new()),
                ..base.clone()
            },
            "scales must be a non-empty path",
        ),
        (
            arch(ArchConfig {
                widths: Some([0.5, f32::INFINITY, 0.5, 0.5]),
                ..Default::default()
            }),
            "arch.widths must be in (0, 16], got inf",
        ),
        (
            arch(ArchConfig {
                num_blocks: Some([1, 1, 100_000_000, 1]),
                ..Default::default()
            }),
            "arch.num_blocks must be in [1, 128], got 100000000",
        ),
        (
            arch(ArchConfig {
                strides: Some([2, 2, 2, 2, 0]),
                ..Default::default()
            }),
            "arch.strides must be in [1, 2], got 0",
        ),
        (
            arch(ArchConfig {
                preset: String::new(),
                ..Default::default()
            }),
            "arch.preset must be a non-empty name",
        ),
        // In range on its own, but the learning rate scaled to the batch is no f32.
        (
            TrainConfig {
                lr: 1e37,
                lr_batch: 1,
                batch_size: 256,
                ..base.clone()
            },
            "the learning rate scaled to the batch",
        ),
    ];
    for (cfg, expected) in cases {
        let message = cfg.validate().expect_err(expected).to_string();
        assert!(
            message.contains(expected),
            "expected '{expected}' in: {message}"
        );
    }
    base.validate().unwrap();
}

#[test]
fn configuration_files_are_checked_when_read_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "a.toml",
            "momentum = 1.5\n",
            "momentum must be in [0, 1), got 1.5",
        ),
        (
            "b.toml",
            "[arch]\nwidths = [0.5, 0.5, nan, 0.5]\n",
            "arch.widths must be in (0, 16], got NaN",
        ),
        (
            "c.json",
            r#"{"batch_size": 0}"#,
            "batch_size must be in [1, 65536], got 0",
        ),
        (
            "d.json",
            r#"{"data_dir": ""}"#,
            "data_dir must be a non-empty path",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let message = TrainConfig::from_file(&path)
            .expect_err(expected)
            .to_string();
        assert!(
            message.contains(expected) && message.contains(name),
            "expected '{expected}' and the file name in: {message}"
        );
    }
    // A file may leave out what flags will set: only its own values are checked on reading.
    let partial = dir.path().join("partial.toml");
    std::fs::write(&partial, "optimizer = \"repopt-sgd\"\nepochs = 3\n").unwrap();
    assert_eq!(TrainConfig::from_file(&partial).unwrap().epochs, 3);
}

fn images(n: usize) -> Arc<Dataset> {
    Arc::new(Dataset {
        name: "toy".into(),
        images: vec![7; n * 4],
        labels: vec![0; n],
        channels: 1,
        height: 2,
        width: 2,
        classes: 1,
        class_names: vec!["a".into()],
    })
}

#[test]
fn batches_too_large_for_any_device_are_refused_before_they_are_allocated() {
    let config = |batch: usize, side: usize| LoaderConfig {
        resize: Some((side, side)),
        ..LoaderConfig::for_preset(Preset::Eval, batch, Normalize::unit())
    };
    // 1024 images of 4096 x 4096: 64 GiB.
    let err = Loader::try_new(images(2048), config(1024, 4096))
        .expect_err("a 64 GiB batch is refused")
        .to_string();
    assert!(
        err.contains("68719476736 bytes") && err.contains("limit of 4294967296 bytes"),
        "{err}"
    );
    // Sizes whose product overflows are refused too, not wrapped.
    let err = Loader::try_new(images(4), config(4, 1 << 40))
        .expect_err("an overflowing size is refused")
        .to_string();
    assert!(err.contains("limit of 4294967296 bytes"), "{err}");
    // A batch larger than the dataset only ever holds the dataset.
    let loader = Loader::try_new(images(3), config(65536, 512)).unwrap();
    assert_eq!(loader.epoch(0).next().unwrap().len(), 3);
}

#[test]
fn image_folders_too_large_to_decode_are_refused_with_their_size() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("cat")).unwrap();
    image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]))
        .save(root.path().join("cat/a.png"))
        .unwrap();
    // One image at 2^29 x 2^29: 864 PB of pixels, which no allocator gives.
    let side = 1 << 29;
    let err = repopt_train::data::load_image_folder(root.path(), None, (side, side))
        .expect_err("an undecodable size is refused")
        .to_string();
    assert!(err.contains("864691128455135232 bytes"), "{err}");
}
