//! The training and test splits a config names, with optional fixed subsets.

use std::path::Path;
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;

use crate::config::{DatasetKind, TrainConfig};
use crate::data::{self, DataError, Dataset, Normalize, Split};
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
///
/// Class indices are the training split's whichever split is read (see
/// [`data::load_image_folder`]), and a split with no images is an error.
pub fn load(
    kind: DatasetKind,
    dir: &Path,
    split: Split,
    resolution: Option<usize>,
) -> Result<Dataset> {
    let ds = match kind {
        DatasetKind::FashionMnist => data::load_fashion_mnist(dir, split)?,
        DatasetKind::Cifar10 => data::load_cifar10(dir, split)?,
        DatasetKind::Cifar100 => data::load_cifar100(dir, split)?,
        DatasetKind::Folder => {
            let r = resolution.unwrap_or(224);
            data::load_image_folder(dir, Some(split), (r, r))?
        }
    };
    non_empty(ds, dir, split, "")
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
///
/// Both must hold images (after `train_limit` and `test_limit`), have images of one shape
/// and share one class list, so that a model built for the training split can be evaluated
/// on the test split.
pub fn load_split(cfg: &TrainConfig) -> Result<DataSplits> {
    let dir = cfg.data_dir();
    let limited = |split: Split, n: Option<usize>| -> Result<Dataset> {
        let ds = limit(load(cfg.dataset, &dir, split, cfg.resolution)?, n);
        let detail = n.map(|n| format!(" (limited to {n})")).unwrap_or_default();
        non_empty(ds, &dir, split, &detail)
    };
    let train = limited(Split::Train, cfg.train_limit)?;
    let test = limited(Split::Test, cfg.test_limit)?;
    check_agree(&train, &test, &dir)?;
    let normalize = Normalize::for_dataset(&train.name, train.channels);
    Ok(DataSplits {
        train: Arc::new(train),
        test: Arc::new(test),
        normalize,
    })
}

fn non_empty(ds: Dataset, dir: &Path, split: Split, detail: &str) -> Result<Dataset> {
    if ds.is_empty() {
        return Err(DataError::EmptySplit {
            dir: dir.to_path_buf(),
            split,
            detail: detail.to_string(),
        }
        .into());
    }
    Ok(ds)
}

/// Image shape and classes must match: a model's input and output sizes come from the
/// training split.
fn check_agree(train: &Dataset, test: &Dataset, dir: &Path) -> Result<()> {
    let mismatch = |what: &str, train: String, test: String| {
        Err(DataError::SplitMismatch {
            dir: dir.to_path_buf(),
            what: what.to_string(),
            train,
            test,
        }
        .into())
    };
    let shape = |d: &Dataset| format!("{}x{}x{}", d.channels, d.height, d.width);
    if shape(train) != shape(test) {
        return mismatch("image size (C x H x W)", shape(train), shape(test));
    }
    if train.class_names != test.class_names {
        let names = |d: &Dataset| format!("{} classes ({})", d.classes, d.class_names.join(", "));
        return mismatch("class list", names(train), names(test));
    }
    Ok(())
}
