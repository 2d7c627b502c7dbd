//! # repopt
//!
//! RepOptimizers and RepOpt-VGG on a from-scratch wgpu engine: Hyper-Search, training with a
//! RepOptimizer, evaluation, structural conversion and benchmarks on any Vulkan, Metal or
//! DX12 GPU, or on the CPU through a software Vulkan driver.
//!
//! This crate re-exports the workspace's crates under one name:
//! - [`tensor`]: the engine (device, tensors, autograd, WGSL kernels, optimizers);
//! - [`models`]: RepVGG / CSLA / Hyper-Search / RepOpt-VGG networks and the RepOptimizer;
//! - [`train`]: datasets, augmentation, the training loop, Hyper-Search and reports;
//! - [`bench`](mod@bench): the benchmark suite behind `repopt bench`.
//!
//! ```
//! use repopt::models::{Mode, RepOptVgg, VggConfig};
//! use repopt::tensor::{Gpu, Tensor};
//! let gpu = Gpu::from_env()?;
//! // RepOpt-VGG-A0 for 32x32 images and 10 classes.
//! let config = VggConfig { num_classes: 10, ..VggConfig::preset("A0")? };
//! let model = RepOptVgg::new(&gpu, config, Mode::Target, 0)?;
//! let logits = model.forward(&Tensor::zeros(&gpu, &[1, 3, 32, 32])?, false)?;
//! assert_eq!(logits.shape(), &[1, 10]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use repopt_bench as bench;
pub use repopt_models as models;
pub use repopt_tensor as tensor;
pub use repopt_train as train;
