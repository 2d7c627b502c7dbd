//! The batch loader: determinism, coverage, resumption and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use repopt_train::data::{Batch, DataError, Dataset, Loader, LoaderConfig, Normalize, Preset};

fn toy(n: usize, c: usize, h: usize, w: usize) -> Arc<Dataset> {
    Arc::new(Dataset {
        name: "toy".into(),
        images: (0..n * c * h * w).map(|i| (i * 31 % 253) as u8).collect(),
        labels: (0..n as u32).map(|i| i % 7).collect(),
        channels: c,
        height: h,
        width: w,
        classes: 7,
        class_names: (0..7).map(|i| format!("c{i}")).collect(),
    })
}

fn cfg(preset: Preset, batch_size: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        workers,
        prefetch: 3,
        seed: 1234,
        ..LoaderConfig::for_preset(preset, batch_size, Normalize::cifar10())
    }
}

fn collect(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).collect()
}

#[test]
fn identical_for_any_worker_count() {
    let ds = toy(103, 3, 8, 8);
    for preset in [Preset::Train, Preset::Search, Preset::Eval] {
        let reference = collect(&Loader::new(ds.clone(), cfg(preset, 10, 0)), 2);
        for workers in [1, 3, 16] {
            let loader = Loader::new(ds.clone(), cfg(preset, 10, workers));
            let got = collect(&loader, 2);
            assert_eq!(got.len(), reference.len());
            for (a, b) in got.iter().zip(&reference) {
                assert_eq!(a.indices, b.indices);
                // Bit-identical, not just close.
                let bits = |x: &Batch| x.images.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(a), bits(b), "{preset} workers={workers}");
                assert_eq!(a.labels, b.labels);
                assert_eq!(a.shape, b.shape);
            }
        }
    }
}

#[test]
fn same_seed_same_epoch_reproduces_and_epochs_differ() {
    let ds = toy(64, 3, 8, 8);
    let loader = Loader::new(ds.clone(), cfg(Preset::Train, 16, 2));
    let a = collect(&loader, 5);
    let b = collect(&Loader::new(ds.clone(), cfg(Preset::Train, 16, 2)), 5);
    assert_eq!(a, b);
    let c = collect(&loader, 6);
    assert_ne!(a[0].indices, c[0].indices, "shuffle depends on the epoch");
    let other_seed = LoaderConfig {
        seed: 99,
        ..cfg(Preset::Train, 16, 2)
    };
    let d = collect(&Loader::new(ds, other_seed), 5);
    assert_ne!(a[0].indices, d[0].indices, "shuffle depends on the seed");
}

#[test]
fn every_sample_once_per_epoch_with_labels_and_pixels() {
    let ds = toy(50, 1, 4, 4);
    let config = LoaderConfig {
        workers: 2,
        ..LoaderConfig::for_preset(Preset::Eval, 8, Normalize::unit())
    };
    let config = LoaderConfig {
        shuffle: true,
        ..config
    };
    let loader = Loader::new(ds.clone(), config);
    assert_eq!(loader.batches_per_epoch(), 7);
    for epoch in 0..3 {
        let batches = collect(&loader, epoch);
        assert_eq!(batches.len(), 7);
        assert_eq!(batches.last().unwrap().len(), 2);
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        assert_ne!(seen, (0..50).collect::<Vec<_>>(), "shuffled");
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        for b in &batches {
            assert_eq!(b.shape, [b.len(), 1, 4, 4]);
            assert_eq!(b.images.len(), b.len() * 16);
            for (k, &i) in b.indices.iter().enumerate() {
                assert_eq!(b.labels[k], ds.labels[i]);
                // Eval + unit normalisation: pixels / 255 exactly.
                let want: Vec<f32> = ds.image(i).iter().map(|&v| f32::from(v) / 255.0).collect();
                assert_eq!(b.image(k), &want[..]);
            }
        }
    }
}

#[test]
fn drop_last_and_no_shuffle() {
    let ds = toy(50, 1, 2, 2);
    let mut config = LoaderConfig::for_preset(Preset::Search, 8, Normalize::unit());
    config.workers = 3;
    assert!(config.drop_last && config.shuffle);
    let loader = Loader::new(ds.clone(), config.clone());
    assert_eq!(loader.batches_per_epoch(), 6);
    let batches = collect(&loader, 0);
    assert_eq!(batches.len(), 6);
    assert!(batches.iter().all(|b| b.len() == 8));
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 48);

    config.shuffle = false;
    config.drop_last = false;
    let loader = Loader::new(ds, config);
    let order: Vec<usize> = collect(&loader, 3)
        .iter()
        .flat_map(|b| b.indices.clone())
        .collect();
    assert_eq!(order, (0..50).collect::<Vec<_>>());
}

#[test]
fn resume_mid_epoch_is_bit_identical() {
    let ds = toy(70, 3, 6, 6);
    for workers in [0, 2] {
        let loader = Loader::new(ds.clone(), cfg(Preset::Train, 9, workers));
        let full = collect(&loader, 11);
        for skip in [0, 1, 4, 7, 8, 100] {
            let it = loader.epoch_from(11, skip);
            assert_eq!(it.position(), skip.min(full.len()));
            assert_eq!(it.len(), full.len().saturating_sub(skip));
            let resumed: Vec<Batch> = it.collect();
            assert_eq!(resumed[..], full[skip.min(full.len())..], "skip {skip}");
        }
    }
}

#[test]
fn resize_feeds_a_larger_model() {
    let ds = toy(12, 1, 28, 28);
    let config = LoaderConfig {
        resize: Some((32, 32)),
        workers: 2,
        ..LoaderConfig::for_preset(Preset::Train, 5, Normalize::fashion_mnist())
    };
    let loader = Loader::new(ds, config);
    assert_eq!(loader.sample_shape(), [1, 32, 32]);
    let batches = collect(&loader, 0);
    assert_eq!(batches.len(), 2);
    for b in batches {
        assert_eq!(b.shape, [5, 1, 32, 32]);
        assert_eq!(b.images.len(), 5 * 32 * 32);
        assert!(b.images.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn early_drop_stops_and_joins_workers() {
    // Big enough that an undrained epoch would take a long time.
    let ds = toy(4000, 3, 32, 32);
    let loader = Loader::new(ds, cfg(Preset::Train, 64, 3));
    let start = Instant::now();
    for _ in 0..5 {
        let mut it = loader.epoch(0);
        let first = it.next().unwrap();
        assert_eq!(first.len(), 64);
        drop(it);
        // Never started consuming at all.
        drop(loader.epoch(1));
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "dropping epochs early took {:?}",
        start.elapsed()
    );
    // Breaking out of a for loop drops the iterator too.
    for (i, _) in loader.epoch(2).enumerate() {
        if i == 2 {
            break;
        }
    }
}

#[test]
fn bad_configs_are_errors() {
    let ds = toy(10, 1, 2, 2);
    let e = Loader::try_new(ds.clone(), LoaderConfig::default()).unwrap_err();
    assert!(matches!(e, DataError::Config { .. }));
    assert!(e.to_string().contains("'toy'"), "{e}");
    let zero = LoaderConfig {
        batch_size: 0,
        normalize: Normalize::unit(),
        ..LoaderConfig::default()
    };
    assert!(
        Loader::try_new(ds.clone(), zero)
            .unwrap_err()
            .to_string()
            .contains("batch_size")
    );
    let mut broken = (*ds).clone();
    broken.labels[3] = 9;
    let ok_cfg = LoaderConfig {
        normalize: Normalize::unit(),
        ..LoaderConfig::default()
    };
    let e = Loader::try_new(Arc::new(broken), ok_cfg).unwrap_err();
    assert!(e.to_string().contains("record 3"), "{e}");
}

#[test]
fn empty_dataset_and_oversized_batch() {
    let empty = Arc::new(Dataset {
        images: vec![],
        labels: vec![],
        ..(*toy(1, 1, 2, 2)).clone()
    });
    let config = LoaderConfig {
        workers: 2,
        ..LoaderConfig::for_preset(Preset::Train, 4, Normalize::unit())
    };
    let loader = Loader::new(empty, config.clone());
    assert_eq!(loader.batches_per_epoch(), 0);
    assert_eq!(loader.epoch(0).count(), 0);

    let small = toy(3, 1, 2, 2);
    assert_eq!(
        Loader::new(small.clone(), config.clone()).epoch(0).count(),
        0
    );
    let keep = LoaderConfig {
        drop_last: false,
        ..config
    };
    let batches = collect(&Loader::new(small, keep), 0);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].len(), 3);
}
