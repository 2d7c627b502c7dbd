//! Datasets, augmentation and the batch loader.
//!
//! Pure CPU code, no GPU types: datasets are decoded once into an in-memory
//! [`Dataset`] of `u8` CHW pixels, a [`Loader`] turns it into shuffled,
//! augmented, normalised `f32` [`Batch`]es on worker threads, and everything
//! random is derived from `(seed, epoch, sample index)` so that runs are
//! reproducible and resumable bit for bit.
//!
//! | module | what |
//! |---|---|
//! | `dataset` | [`Dataset`], [`Split`] |
//! | `idx` | Fashion-MNIST / MNIST IDX files ([`load_fashion_mnist`]) |
//! | `cifar` | CIFAR-10 / CIFAR-100 binaries ([`load_cifar10`], [`load_cifar100`]) |
//! | `folder` | class-per-folder JPEG/PNG datasets ([`load_image_folder`], [`read_image`]) |
//! | `augment` | [`resize`], [`pad_random_crop`], [`random_hflip`] |
//! | `randaugment` | [`RandAugment`] and its [`AugmentOp`]s |
//! | `normalize` | [`Normalize`] and dataset statistics |
//! | `preset` | [`Preset`] and the per-sample [`Transform`] |
//! | `seed` | seed derivation ([`sample_rng`], [`epoch_rng`]) |
//! | `loader` | [`Loader`], [`LoaderConfig`], [`Batch`] |
//! | `epoch` | one epoch's worker threads and [`EpochIter`] |
//! | `error` | [`DataError`] |
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use repopt_train::data::*;
//!
//! let train = Arc::new(load_fashion_mnist(FASHION_MNIST_DIR.as_ref(), Split::Train)?);
//! let config = LoaderConfig {
//!     resize: Some((32, 32)),
//!     seed: 1,
//!     ..LoaderConfig::for_preset(Preset::Train, 128, Normalize::fashion_mnist())
//! };
//! let loader = Loader::new(train, config);
//! for epoch in 0..3 {
//!     for batch in loader.epoch(epoch) {
//!         assert_eq!(batch.shape, [128, 1, 32, 32]);
//!     }
//! }
//! # Ok::<(), DataError>(())
//! ```

mod augment;
mod cifar;
mod dataset;
mod epoch;
mod error;
mod folder;
mod idx;
mod loader;
mod normalize;
mod preset;
mod randaugment;
mod seed;
mod shard;

pub use augment::{Interpolation, hflip, pad_crop, pad_random_crop, random_hflip, resize};
pub use cifar::{CIFAR10_CLASSES, CIFAR100_CLASSES, load_cifar10, load_cifar100};
pub use dataset::{Dataset, Split};
pub use epoch::EpochIter;
pub use error::DataError;
pub use folder::{IMAGE_EXTENSIONS, image_folder_classes, load_image_folder, read_image};
pub use idx::{
    FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IdxImages,
    load_fashion_mnist, load_mnist, read_idx_images, read_idx_labels,
};
pub use loader::{Batch, Loader, LoaderConfig, default_workers};
pub use normalize::Normalize;
pub use preset::{Preset, Transform};
pub use randaugment::{AugmentOp, RandAugment};
pub use seed::{AugRng, derive_seed, epoch_rng, sample_rng};
pub use shard::Shard;
