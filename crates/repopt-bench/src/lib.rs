//! # repopt-bench
//!
//! The benchmark suite behind `repopt bench` and `cargo bench`. Every figure is measured on
//! one adapter in one run, so ratios between them are meaningful.

pub mod kernels;
pub mod report;
pub mod suite;
pub mod timing;
pub mod train;
pub mod update;
