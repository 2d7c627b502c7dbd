//! # repopt-train
//!
//! Everything between data on disk and a trained model: datasets and augmentation, the
//! training loop (warm-up + cosine schedule, label smoothing, weight-decay groups, optional
//! clipping), evaluation, checkpoints with bit-identical resume, run directories and what
//! they guarantee ([`run_dir`]), Hyper-Search, the search -> train -> compare pipeline,
//! reports, and single-image inference.
//!
//! ```
//! use repopt_train::config::{ArchConfig, TrainConfig};
//! use repopt_train::inference::Classifier;
//! use repopt_train::run_dir::Start;
//! use repopt_train::trainer::{Silent, train};
//!
//! let gpu = repopt_tensor::Gpu::from_env()?;
//! let out = tempfile::tempdir()?;
//! // A four-block RepOpt-VGG trained one epoch on 512 Fashion-MNIST images.
//! let cfg = TrainConfig {
//!     arch: ArchConfig {
//!         num_blocks: Some([1, 1, 1, 1]),
//!         widths: Some([0.25; 4]),
//!         strides: Some([1, 2, 2, 2, 2]),
//!         ..ArchConfig::default()
//!     },
//!     train_limit: Some(512),
//!     test_limit: Some(256),
//!     epochs: 1,
//!     warmup_epochs: 0,
//!     batch_size: 64,
//!     out: out.path().to_path_buf(),
//!     ..TrainConfig::default()
//! };
//! let summary = train(&gpu, &cfg, &Start::New, &mut Silent)?;
//! assert_eq!(summary.steps, 8);
//! println!("top-1 {:.1}%", summary.final_eval.unwrap().top1);
//! // The run directory classifies image files as its evaluation saw its test images.
//! let classifier = Classifier::load(&gpu, out.path())?;
//! assert_eq!(classifier.class_names()[1], "Trouser");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod build;
pub mod config;
pub mod data;
pub mod datasets;
pub mod dist;
mod error;
pub mod evaluate;
pub mod guard;
pub mod inference;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod qat;
pub mod quantize;
pub mod report;
pub mod run_dir;
pub mod schedule;
pub mod search;
mod settings;
pub mod state;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
