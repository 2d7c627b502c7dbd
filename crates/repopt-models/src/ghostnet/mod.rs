//! RepGhostNet and RepOpt-GhostNet (the paper's Appendix D): GhostNet with RepGhost's
//! re-parameterizable ghost modules, in the same modes as RepOpt-VGG, with the reference
//! implementation's configuration table and state-dict names, so the authors' released
//! scales (`RepOptGhostNet_0_5x_scales.pth`) load directly.
//!
//! ```no_run
//! use repopt_models::ghostnet::{prepare, GhostConfig, GhostScales, RepOptGhostNet};
//! use repopt_models::{repoptimizer::RepOptimizerConfig, Mode};
//! use repopt_tensor::optim::{Sgd, SgdConfig};
//! let gpu = repopt_tensor::Gpu::from_env()?;
//! let config = GhostConfig::preset("ghostnet-0.5x")?;
//! let scales = GhostScales::load("RepOptGhostNet_0_5x_scales.pth".as_ref(), &config)?;
//! let model = RepOptGhostNet::new(&gpu, config, Mode::Target, 0)?;
//! let specs = prepare(&model, &scales, &RepOptimizerConfig::default(), 4e-5, 0)?;
//! let optimizer = Sgd::new(specs, SgdConfig::default())?;
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

pub mod bottleneck;
pub mod config;
pub mod module;
pub mod network;
pub mod scales;

pub use config::GhostConfig;
pub use network::RepOptGhostNet;
pub use scales::{GhostScales, prepare};
