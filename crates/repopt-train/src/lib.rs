//! # repopt-train
//!
//! Everything between data on disk and a trained model: datasets and augmentation, the
//! training loop (warm-up + cosine schedule, label smoothing, weight-decay groups, optional
//! clipping), evaluation, checkpoints with bit-identical resume, Hyper-Search, the
//! search -> train -> compare pipeline, and reports.

pub mod config;
pub mod data;
pub mod datasets;
mod error;
pub mod evaluate;
pub mod guard;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod search;
mod settings;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
