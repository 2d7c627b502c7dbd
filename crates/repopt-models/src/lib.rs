//! # repopt-models
//!
//! RepVGG-style networks built from the engine's ops, in every form the RepOptimizers paper
//! uses: the plain target model (RepOpt-VGG), RepVGG, the imaginary CSLA model, the
//! Hyper-Search model, and the converted deploy form. Plus the RepOptimizer itself (Grad
//! Mults and re-initialisation from searched scales), structural re-parameterization,
//! checkpoints, and the authors' PyTorch scale files.
//!
//! ```no_run
//! use repopt_models::{repoptimizer::{prepare, RepOptimizerConfig}, Mode, RepOptVgg, Scales, VggConfig};
//! use repopt_tensor::{ops, optim::{Optimizer, Sgd, SgdConfig}, Gpu, Tensor};
//!
//! let gpu = Gpu::from_env()?;
//! let config = VggConfig::preset("B1")?;
//! let scales = Scales::load("RepOpt-VGG-B1-scales.pth".as_ref(), &config)?;
//! let model = RepOptVgg::new(&gpu, config, Mode::Target, 0)?;
//! let mut sgd = Sgd::new(prepare(&model, &scales, &RepOptimizerConfig::default(), 4e-5, 1)?, SgdConfig::default())?;
//! let x = Tensor::zeros(&gpu, &[2, 3, 224, 224])?;
//! let y = Tensor::from_u32(&gpu, &[1, 7], &[2])?;
//! ops::cross_entropy(&model.forward(&x, true)?, &y, 0.1)?.backward()?;
//! sgd.step(0.1)?;
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

pub mod block;
pub mod checkpoint;
pub mod config;
mod error;
mod host;
pub mod info;
mod init;
pub mod layers;
pub mod network;
pub mod pth;
pub mod regular_file;
pub mod reparam;
pub mod repoptimizer;
pub mod role;
pub mod scales;

pub use config::{BlockSpec, Mode, VggConfig};
pub use error::{ModelError, Result};
pub use host::HostTensor;
pub use network::RepOptVgg;
pub use scales::Scales;
