//! The batch loader: shuffles, transforms and batches samples on worker
//! threads ahead of the training loop.
//!
//! Reproducibility is the design constraint. The epoch's order depends only
//! on `(seed, epoch)` and each sample's augmentation only on
//! `(seed, epoch, dataset index)`, so the batches are bit-identical for any
//! number of workers, any thread timing, and when a run resumes mid-epoch.
//! Batch `b` is built by worker `b % workers` and handed over on that
//! worker's own bounded channel, so batches arrive in order without a
//! re-ordering buffer and memory stays bounded.

use std::sync::Arc;

use rand::Rng;
use repopt_models::domain;

use super::epoch::{EpochIter, EpochJob};
use super::{
    DataError, Dataset, Interpolation, Normalize, Preset, RandAugment, Shard, Transform, epoch_rng,
};

/// One batch of normalised samples.
///
/// # Example
///
/// ```
/// use repopt_train::data::Batch;
///
/// let b = Batch { images: vec![0.0; 2 * 3], labels: vec![1, 0], shape: [2, 1, 1, 3], indices: vec![5, 9] };
/// assert_eq!(b.len(), 2);
/// assert_eq!(b.image(1).len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// N x C x H x W normalised pixels.
    pub images: Vec<f32>,
    /// One label per sample.
    pub labels: Vec<u32>,
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// The dataset index of every sample.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of samples.
    ///
    /// # Example
    ///
    /// ```
    /// # use repopt_train::data::Batch;
    /// let b = Batch { images: vec![], labels: vec![], shape: [0, 1, 1, 1], indices: vec![] };
    /// assert_eq!(b.len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch has no samples (never true for loader output).
    ///
    /// # Example
    ///
    /// ```
    /// # use repopt_train::data::Batch;
    /// let b = Batch { images: vec![], labels: vec![], shape: [0, 1, 1, 1], indices: vec![] };
    /// assert!(b.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The C x H x W floats of sample `i`.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    ///
    /// # Example
    ///
    /// ```
    /// # use repopt_train::data::Batch;
    /// let b = Batch { images: vec![1.0, 2.0], labels: vec![0, 0], shape: [2, 1, 1, 1], indices: vec![0, 1] };
    /// assert_eq!(b.image(1), &[2.0]);
    /// ```
    pub fn image(&self, i: usize) -> &[f32] {
        let size = self.shape[1] * self.shape[2] * self.shape[3];
        &self.images[i * size..(i + 1) * size]
    }
}

/// How a [`Loader`] batches and transforms samples.
///
/// Start from [`LoaderConfig::default`] (evaluation) or
/// [`LoaderConfig::for_preset`] and override fields with struct-update
/// syntax.
///
/// # Example
///
/// ```
/// use repopt_train::data::{LoaderConfig, Normalize, Preset};
///
/// let cfg = LoaderConfig {
///     resize: Some((32, 32)),
///     seed: 42,
///     ..LoaderConfig::for_preset(Preset::Train, 128, Normalize::fashion_mnist())
/// };
/// assert!(cfg.shuffle && cfg.drop_last);
/// assert_eq!(cfg.pad, 4);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch (> 0).
    pub batch_size: usize,
    /// Shuffle the order every epoch (seeded by `(seed, epoch)`).
    pub shuffle: bool,
    /// Drop the last batch if it has fewer than `batch_size` samples.
    pub drop_last: bool,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
    /// Worker threads; 0 builds every batch on the consumer's thread when
    /// it is asked for. Results do not depend on this value.
    pub workers: usize,
    /// Batches built ahead of the consumer, spread over the workers (at
    /// least one per worker).
    pub prefetch: usize,
    /// Augmentations.
    pub preset: Preset,
    /// Resize every sample to `(height, width)` (bilinear) before
    /// augmentation; `None` keeps the dataset's size.
    pub resize: Option<(usize, usize)>,
    /// Zero padding of the random crop of [`Preset::Search`] and
    /// [`Preset::Train`].
    pub pad: usize,
    /// Normalisation statistics.
    pub normalize: Normalize,
    /// RandAugment settings of [`Preset::Train`].
    pub rand_augment: RandAugment,
    /// This process's part of each epoch in a data-parallel run (see [`Shard`]); the whole
    /// dataset by default.
    pub shard: Shard,
}

impl Default for LoaderConfig {
    /// Evaluation settings: batch size 128, no shuffle, keep the last
    /// batch, seed 0, [`default_workers`] workers, prefetch 4,
    /// [`Preset::Eval`], no resize, pad 4, ImageNet normalisation, default
    /// RandAugment (2 ops, magnitude 9 of 30).
    fn default() -> Self {
        LoaderConfig {
            batch_size: 128,
            shuffle: false,
            drop_last: false,
            seed: 0,
            workers: default_workers(),
            prefetch: 4,
            preset: Preset::Eval,
            resize: None,
            pad: 4,
            normalize: Normalize::imagenet(),
            rand_augment: RandAugment::default(),
            shard: Shard::default(),
        }
    }
}

impl LoaderConfig {
    /// The defaults with the given preset, batch size and normalisation;
    /// [`Preset::Search`] and [`Preset::Train`] also shuffle and drop the
    /// last partial batch (as the reference training scripts do), while
    /// [`Preset::Eval`] visits every sample in order.
    ///
    /// # Example
    ///
    /// ```
    /// use repopt_train::data::{LoaderConfig, Normalize, Preset};
    ///
    /// let eval = LoaderConfig::for_preset(Preset::Eval, 256, Normalize::cifar10());
    /// assert!(!eval.shuffle && !eval.drop_last);
    /// ```
    pub fn for_preset(preset: Preset, batch_size: usize, normalize: Normalize) -> Self {
        let training = preset != Preset::Eval;
        LoaderConfig {
            batch_size,
            shuffle: training,
            drop_last: training,
            preset,
            normalize,
            ..LoaderConfig::default()
        }
    }
}

/// The default worker count: one less than the available cores (the
/// training loop needs one), between 1 and 8.
///
/// # Example
///
/// ```
/// assert!((1..=8).contains(&repopt_train::data::default_workers()));
/// ```
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .saturating_sub(1)
        .clamp(1, 8)
}

/// Produces the batches of an in-memory dataset, epoch by epoch.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize, Preset};
///
/// let ds = Dataset {
///     name: "toy".into(),
///     images: (0..10 * 4).map(|i| i as u8).collect(),
///     labels: (0..10).map(|i| i % 2).collect(),
///     channels: 1, height: 2, width: 2, classes: 2,
///     class_names: vec!["even".into(), "odd".into()],
/// };
/// let cfg = LoaderConfig {
///     workers: 2,
///     ..LoaderConfig::for_preset(Preset::Search, 4, Normalize::unit())
/// };
/// let loader = Loader::new(Arc::new(ds), cfg);
/// assert_eq!(loader.batches_per_epoch(), 2); // drop_last
/// for batch in loader.epoch(0) {
///     assert_eq!(batch.shape, [4, 1, 2, 2]);
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Loader {
    dataset: Arc<Dataset>,
    config: LoaderConfig,
    transform: Arc<Transform>,
}

impl Loader {
    /// A loader over `dataset`.
    ///
    /// # Panics
    ///
    /// If [`Loader::try_new`] would fail (zero batch size, inconsistent
    /// dataset, normalisation that does not fit the channel count, zero
    /// resize).
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize};
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 4], labels: vec![0],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// let loader = Loader::new(Arc::new(ds), LoaderConfig { normalize: Normalize::unit(), ..Default::default() });
    /// assert_eq!(loader.batches_per_epoch(), 1);
    /// ```
    pub fn new(dataset: Arc<Dataset>, config: LoaderConfig) -> Self {
        match Loader::try_new(dataset, config) {
            Ok(loader) => loader,
            Err(e) => panic!("{e}"),
        }
    }

    /// A loader over `dataset`, or why the configuration does not fit it.
    ///
    /// # Errors
    ///
    /// [`DataError::Config`] for a zero batch size, a zero resize, or
    /// normalisation statistics that do not fit the channel count,
    /// [`DataError::TooLarge`] for batches past
    /// [`MAX_TENSOR_BYTES`](repopt_models::domain::MAX_TENSOR_BYTES), and
    /// whatever [`Dataset::validate`] reports.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize};
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 4], labels: vec![0],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// // ImageNet statistics have 3 channels, the dataset 1.
    /// let err = Loader::try_new(Arc::new(ds), LoaderConfig::default()).unwrap_err();
    /// assert!(err.to_string().contains("normalize"));
    /// ```
    pub fn try_new(dataset: Arc<Dataset>, config: LoaderConfig) -> Result<Self, DataError> {
        let bad = |field: &str, expected: &str, found: String| DataError::Config {
            field: field.to_string(),
            expected: expected.to_string(),
            found,
        };
        if config.batch_size == 0 {
            return Err(bad("batch_size", "at least 1", "0".into()));
        }
        let shard = config.shard;
        if shard.count == 0 || shard.index >= shard.count {
            return Err(bad(
                "shard",
                "a rank index below a non-zero rank count",
                format!("rank {} of {}", shard.index, shard.count),
            ));
        }
        if let Some((h, w)) = config.resize
            && (h == 0 || w == 0)
        {
            return Err(bad(
                "resize",
                "non-zero height and width",
                format!("({h}, {w})"),
            ));
        }
        dataset.validate()?;
        if !config.normalize.fits(dataset.channels) {
            return Err(bad(
                "normalize",
                &format!(
                    "1 or {} mean/std values (one per channel of '{}') and non-zero std",
                    dataset.channels, dataset.name
                ),
                format!(
                    "mean {:?}, std {:?}",
                    config.normalize.mean, config.normalize.std
                ),
            ));
        }
        let transform = Arc::new(Transform {
            preset: config.preset,
            resize: config.resize,
            interpolation: Interpolation::Bilinear,
            pad: config.pad,
            rand_augment: config.rand_augment,
            normalize: config.normalize.clone(),
        });
        // Workers allocate whole batches as they go: refuse one that cannot exist (nor be
        // uploaded as one tensor) now, with its size, rather than abort in a worker.
        let (h, w) = transform.output_size(dataset.height, dataset.width);
        let n = config.batch_size.min(dataset.len());
        let c = dataset.channels;
        domain::within(
            &format!("a batch of {n} images of {c} x {h} x {w}"),
            domain::f32_bytes(&[n, c, h, w]),
            domain::MAX_TENSOR_BYTES,
        )
        .map_err(|m| DataError::TooLarge {
            message: format!("{m}; lower the batch size or the resolution"),
        })?;
        Ok(Loader {
            dataset,
            config,
            transform,
        })
    }

    /// The dataset.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize};
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 4], labels: vec![0],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// # let loader = Loader::new(Arc::new(ds), LoaderConfig { normalize: Normalize::unit(), ..Default::default() });
    /// assert_eq!(loader.dataset().classes, 1);
    /// ```
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// The configuration.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize};
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 4], labels: vec![0],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// # let loader = Loader::new(Arc::new(ds), LoaderConfig { normalize: Normalize::unit(), ..Default::default() });
    /// assert_eq!(loader.config().batch_size, 128);
    /// ```
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The per-sample transform the loader applies.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize, Preset};
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 4], labels: vec![0],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// # let loader = Loader::new(Arc::new(ds), LoaderConfig { normalize: Normalize::unit(), ..Default::default() });
    /// assert_eq!(loader.transform().preset, Preset::Eval);
    /// ```
    pub fn transform(&self) -> &Transform {
        &self.transform
    }

    /// `[C, H, W]` of every output sample (after `resize`).
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize};
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 4], labels: vec![0],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// let cfg = LoaderConfig { resize: Some((8, 8)), normalize: Normalize::unit(), ..Default::default() };
    /// assert_eq!(Loader::new(Arc::new(ds), cfg).sample_shape(), [1, 8, 8]);
    /// ```
    pub fn sample_shape(&self) -> [usize; 3] {
        let (h, w) = self
            .transform
            .output_size(self.dataset.height, self.dataset.width);
        [self.dataset.channels, h, w]
    }

    /// Batches in one epoch: `len / batch_size`, rounded up unless
    /// `drop_last`.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize};
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 5 * 4], labels: vec![0; 5],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// let cfg = LoaderConfig { batch_size: 2, normalize: Normalize::unit(), ..Default::default() };
    /// assert_eq!(Loader::new(Arc::new(ds), cfg).batches_per_epoch(), 3);
    /// ```
    pub fn batches_per_epoch(&self) -> usize {
        let bs = self.config.batch_size;
        let n = self
            .config
            .shard
            .len(self.dataset.len(), bs, self.config.drop_last);
        if self.config.drop_last {
            n / bs
        } else {
            n.div_ceil(bs)
        }
    }

    /// The order in which epoch `epoch` visits the dataset: a permutation
    /// of `0..len` seeded by `(seed, epoch)`, or `0..len` without shuffle.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize};
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 5 * 4], labels: vec![0; 5],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// let cfg = LoaderConfig { shuffle: true, normalize: Normalize::unit(), ..Default::default() };
    /// let mut order = Loader::new(Arc::new(ds), cfg).epoch_order(3);
    /// order.sort();
    /// assert_eq!(order, vec![0, 1, 2, 3, 4]);
    /// ```
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            shuffle(&mut order, &mut epoch_rng(self.config.seed, epoch));
        }
        let c = &self.config;
        c.shard.take(&order, c.batch_size, c.drop_last)
    }

    /// The batches of epoch `epoch` (0-based), produced ahead by worker
    /// threads.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize};
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 5 * 4], labels: vec![0; 5],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// let cfg = LoaderConfig { batch_size: 2, normalize: Normalize::unit(), ..Default::default() };
    /// let loader = Loader::new(Arc::new(ds), cfg);
    /// let sizes: Vec<usize> = loader.epoch(0).map(|b| b.len()).collect();
    /// assert_eq!(sizes, vec![2, 2, 1]);
    /// ```
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        self.epoch_from(epoch, 0)
    }

    /// The batches of epoch `epoch` starting at batch `skip_batches`, equal
    /// to `self.epoch(epoch).skip(skip_batches)` without building the
    /// skipped batches: resuming from a checkpoint taken after
    /// `skip_batches` steps of the epoch continues bit-identically. Skipping
    /// past the end gives an empty iterator.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize, Preset};
    /// # let ds = Dataset { name: "t".into(), images: (0..5 * 4).map(|i| i as u8).collect(), labels: vec![0; 5],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// let cfg = LoaderConfig { batch_size: 2, workers: 1,
    ///     ..LoaderConfig::for_preset(Preset::Train, 2, Normalize::unit()) };
    /// let loader = Loader::new(Arc::new(ds), cfg);
    /// let full: Vec<_> = loader.epoch(4).collect();
    /// let resumed: Vec<_> = loader.epoch_from(4, 1).collect();
    /// assert_eq!(full[1..], resumed[..]);
    /// ```
    pub fn epoch_from(&self, epoch: u64, skip_batches: usize) -> EpochIter {
        let total = self.batches_per_epoch();
        let start = skip_batches.min(total);
        let [c, h, w] = self.sample_shape();
        let job = Arc::new(EpochJob {
            dataset: Arc::clone(&self.dataset),
            transform: Arc::clone(&self.transform),
            order: self.epoch_order(epoch),
            batch_size: self.config.batch_size,
            seed: self.config.seed,
            epoch,
            out: [c, h, w],
        });
        let workers = self.config.workers.min(total - start);
        EpochIter::spawn(job, start..total, workers, self.config.prefetch)
    }
}

/// Fisher-Yates with Lemire's multiply-shift reduction: written out rather
/// than taken from `rand::seq` so the permutation of a given seed can never
/// change under a dependency update (resumed runs rely on it). The bias is
/// below `len / 2^64`.
fn shuffle<R: Rng + ?Sized>(order: &mut [usize], rng: &mut R) {
    for i in (1..order.len()).rev() {
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
}
