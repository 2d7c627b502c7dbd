//! # repopt-models
//!
//! RepVGG-style networks built from the engine's ops, in every form the RepOptimizers paper
//! uses: the plain target model (RepOpt-VGG), RepVGG, the imaginary CSLA model, the
//! Hyper-Search model, and the converted deploy form. Plus the RepOptimizer itself (Grad
//! Mults and re-initialisation from searched scales), structural re-parameterization,
//! checkpoints, and the authors' PyTorch scale files.
//!
//! ```
//! use repopt_models::{repoptimizer::{prepare, RepOptimizerConfig}, Mode, RepOptVgg, Scales, VggConfig};
//! use repopt_tensor::{ops, optim::{Optimizer, Sgd, SgdConfig}, Gpu, Tensor};
//!
//! let gpu = Gpu::from_env()?;
//! // RepOpt-VGG-A0 for 32x32 images and 10 classes, with the Hyper-Search model's initial
//! // scales; `Scales::load(path, &config)` reads searched or the authors' released ones.
//! let config = VggConfig { num_classes: 10, ..VggConfig::preset("A0")? };
//! let scales = Scales::hs_initial(&config);
//! let model = RepOptVgg::new(&gpu, config, Mode::Target, 0)?;
//! let mut sgd = Sgd::new(prepare(&model, &scales, &RepOptimizerConfig::default(), 4e-5, 1)?, SgdConfig::default())?;
//! let x = Tensor::full(&gpu, &[2, 3, 32, 32], 0.5)?;
//! let y = Tensor::from_u32(&gpu, &[1, 7], &[2])?;
//! let loss = ops::cross_entropy(&model.forward(&x, true)?, &y, 0.1)?;
//! loss.backward()?;
//! sgd.step(0.1)?;
//! assert!(loss.item()?.is_finite());
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

pub mod any;
pub mod block;
pub mod checkpoint;
pub mod config;
pub mod domain;
mod error;
pub mod ghostnet;
pub mod gr;
mod host;
pub mod info;
mod init;
pub mod layers;
pub mod network;
pub mod onnx;
pub mod pth;
pub mod quant;
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
