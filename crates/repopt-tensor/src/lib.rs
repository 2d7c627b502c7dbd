//! # repopt-tensor
//!
//! A small GPU tensor engine on [wgpu](https://wgpu.rs) compute shaders: tensors in pooled
//! device buffers, reverse-mode autograd, hand-written WGSL kernels for what convolutional
//! networks need (3x3/1x1 convolution, batch norm, ReLU, pooling, linear, cross-entropy) and
//! fused optimizer steps that accept a per-element gradient multiplier. It runs on any
//! Vulkan, Metal or DX12 adapter, including Mesa's software Vulkan driver (lavapipe) on
//! machines without a GPU. Every kernel has an f64 CPU reference (`testing::reference`, with the
//! `testing` feature) that the tests hold it to.
//!
//! ```no_run
//! use repopt_tensor::{ops, Gpu, Tensor};
//!
//! let gpu = Gpu::from_env()?;
//! let x = Tensor::from_slice(&gpu, &vec![0.5; 2 * 3 * 8 * 8], &[2, 3, 8, 8])?;
//! let w = Tensor::parameter(&gpu, &vec![0.01; 4 * 3 * 3 * 3], &[4, 3, 3, 3])?;
//! let y = ops::conv2d(&x, &w, ops::Conv2dConfig::same(3, 1))?.relu()?;
//! let loss = ops::global_avg_pool(&y)?.mean()?;
//! loss.backward()?;
//! println!("loss {} grad norm^2 {}", loss.item()?, w.grad().unwrap().to_vec()?.iter().map(|g| g * g).sum::<f32>());
//! # Ok::<(), repopt_tensor::Error>(())
//! ```

mod adapter;
mod autograd;
mod device;
mod error;
pub mod kernels;
mod launch;
pub mod ops;
pub mod optim;
mod pool;
pub mod probe;
mod tensor;
#[cfg(feature = "testing")]
pub mod testing;

pub use adapter::{ADAPTER_ENV, AdapterSelector, AdapterSummary, KeyLimits, list_adapters};
pub use autograd::{NoGradGuard, is_grad_enabled, no_grad};
pub use device::{Gpu, GpuOptions};
pub use error::{Error, Result};
pub use pool::MemoryStats;
pub use tensor::{DType, Tensor};

/// Re-exported so embedding applications use the same wgpu version.
pub use wgpu;
