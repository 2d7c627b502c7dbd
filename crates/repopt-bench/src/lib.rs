//! # repopt-bench
//!
//! The benchmark suite behind `repopt bench` and `cargo bench`. Every figure is measured on
//! one adapter in one run, so ratios between them are meaningful.
//!
//! ```
//! use repopt_bench::timing::TimingBudget;
//! use repopt_bench::train::{planned_peak, train_steps};
//! use repopt_models::any::NetConfig;
//! use repopt_models::{Mode, VggConfig};
//! use repopt_tensor::{AdapterSelector, Gpu};
//!
//! let gpu = Gpu::from_env()?;
//! let modes = [Mode::Target, Mode::Repvgg];
//! // Training steps of a four-block A0 at 16x16, batch 8: quick on any adapter.
//! let small = NetConfig::Vgg(VggConfig {
//!     num_blocks: [1, 1, 1, 1],
//!     width_multipliers: [0.25; 4],
//!     num_classes: 10,
//!     ..VggConfig::preset("A0")?
//! });
//! let steps = train_steps(&gpu, &small, &modes, 8, 16, TimingBudget::quick())?;
//! println!("RepOpt-VGG / RepVGG speed: {:.2}x", steps[0].images_per_s / steps[1].images_per_s);
//! // Peak memory is planned rather than run (exact accounting, no arithmetic), so the
//! // paper's A0 at 224x224 costs next to nothing.
//! let a0 = NetConfig::preset("A0")?;
//! let peaks = planned_peak(&AdapterSelector::from_env(), &a0, &modes, 32, 224)?;
//! assert!(peaks[1].peak_bytes > peaks[0].peak_bytes, "RepVGG keeps more activations");
//! // GhostNet presets take the same path (RepOpt-GhostNet against RepGhostNet).
//! let ghost = NetConfig::preset("ghostnet-0.5x")?;
//! let peaks = planned_peak(&AdapterSelector::from_env(), &ghost, &modes, 32, 224)?;
//! assert!(peaks.iter().all(|p| p.peak_bytes > 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod kernels;
pub mod report;
pub mod suite;
pub mod timing;
pub mod train;
pub mod update;
