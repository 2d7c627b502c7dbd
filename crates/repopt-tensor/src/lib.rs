//! # repopt-tensor
//!
//! ```
//! use repopt_tensor::{ops, Gpu, Tensor};
//!
//! let gpu = Gpu::from_env()?;
//! let x = Tensor::from_slice(&gpu, &vec![0.5; 2 * 3 * 8 * 8], &[2, 3, 8, 8])?;
//! let w = Tensor::parameter(&gpu, &vec![0.01; 4 * 3 * 3 * 3], &[4, 3, 3, 3])?;
//! let y = ops::conv2d(&x, &w, ops::Conv2dConfig::same(3, 1))?.relu()?;
//! let loss = ops::global_avg_pool(&y)?.mean()?;
//! loss.backward()?;
//! // Each output sums 0.5 * 0.01 over 3 channels and the taps inside the 8x8 image
//! // (484 taps over 64 pixels), so the mean is 0.015 * 484 / 64.
//! assert!((loss.item()? - 0.015 * 484.0 / 64.0).abs() < 1e-5);
//! assert_eq!(w.grad().unwrap().shape(), &[4, 3, 3, 3]);
//! # Ok::<(), repopt_tensor::Error>(())
//! ```
//!
//! A small GPU tensor engine on [wgpu](https://wgpu.rs) compute shaders: tensors in pooled
//! device buffers, reverse-mode autograd, hand-written WGSL kernels for what convolutional
//! networks need (3x3/1x1 and depthwise convolution, batch norm, ReLU and hard sigmoid,
//! dropout, pooling, linear, cross-entropy, INT8 fake quantization with its calibration
//! histograms) and fused optimizer steps that accept a per-element gradient multiplier. It
//! runs on any Vulkan, Metal or DX12 adapter, including Mesa's software Vulkan driver
//! (lavapipe) on machines without a GPU.
//!
//! How it is put together:
//! - [`kernels`]: the Rust/WGSL contract, declared once per kernel and checked with naga;
//! - [`ops`]: every op as an `op_forward` / `op_backward` pair of launchers plus the public
//!   op that records its node on the autograd tape;
//! - [`optim`]: fused SGD and AdamW steps with the RepOptimizer's Grad Mult;
//! - [`Gpu`]: adapter choice, the buffer pool with byte accounting, and the recorder that
//!   batches launches and submits them without waiting;
//! - `testing` (feature `testing`): the f64 CPU reference of every kernel and the test
//!   helpers every crate's tests share.

mod adapter;
mod autograd;
mod device;
mod error;
pub mod flat;
pub mod kernels;
mod launch;
pub mod ops;
pub mod optim;
mod pool;
pub mod probe;
mod tensor;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tuning;

pub use adapter::{ADAPTER_ENV, AdapterSelector, AdapterSummary, KeyLimits, list_adapters};
pub use autograd::{NoGradGuard, is_grad_enabled, no_grad};
pub use device::{Gpu, GpuOptions};
pub use error::{Error, Result};
pub use launch::HostCounters;
pub use launch::profile::KernelTime;
pub use pool::MemoryStats;
pub use tensor::{DType, Tensor};

/// Re-exported so embedding applications use the same wgpu version.
pub use wgpu;
