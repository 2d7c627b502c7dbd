//! The training and test splits a config names, with optional fixed subsets.

use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;

use crate::config::{DatasetKind, TrainConfig};
use crate::data::{self, Dataset, Normalize, Split};
use crate::error::Result;

/// Both splits and the normalisation that fits them.
pub struct DataSplits {
    /// Training images.
    pub train: Arc<Dataset>,
    /// Test images.
    pub test: Arc<Dataset>,
    /// Per-channel mean and standard deviation.
    pub normalize: Normalize,
}

/// Reads one split of a dataset.
pub fn load(
    kind: DatasetKind,
    dir: &std::path::Path,
    split: Split,
    resolution: Option<usize>,
) -> Result<Dataset> {
    Ok(match kind {
        DatasetKind::FashionMnist => data::load_fashion_mnist(dir, split)?,
        DatasetKind::Cifar10 => data::load_cifar10(dir, split)?,
        DatasetKind::Cifar100 => data::load_cifar100(dir, split)?,
        DatasetKind::Folder => {
            let r = resolution.unwrap_or(224);
            data::load_image_folder(dir, Some(split), (r, r))?
        }
    })
}

/// A fixed random subset of `limit` images (the same for a given dataset whatever the run's
/// seed, so runs that differ only in seed see the same images), in dataset order.
pub fn limit(ds: Dataset, limit: Option<usize>) -> Dataset {
    match limit {
        Some(n) if n < ds.len() => {
            let mut idx: Vec<usize> = (0..ds.len()).collect();
            idx.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(0x5EB5E7));
            idx.truncate(n);
            idx.sort_unstable();
            ds.subset(&idx)
        }
        _ => ds,
    }
}

/// The splits `cfg` trains and evaluates on.
pub fn load_split(cfg: &TrainConfig) -> Result<DataSplits> {
    let dir = cfg.data_dir();
    let train = limit(
        load(cfg.dataset, &dir, Split::Train, cfg.resolution)?,
        cfg.train_limit,
    );
    let test = limit(
        load(cfg.dataset, &dir, Split::Test, cfg.resolution)?,
        cfg.test_limit,
    );
    let normalize = Normalize::for_dataset(&train.name, train.channels);
    Ok(DataSplits {
        train: Arc::new(train),
        test: Arc::new(test),
        normalize,
    })
}
