//! Optimizer-step throughput: the fused RepOptimizer-SGD kernel against the same update as
//! separate kernels, the structured Grad Mult a RepOpt-VGG model trains with, plain fused
//! SGD, fused RepOptimizer-AdamW, and a plain copy of the same bytes (the memory-bandwidth
//! ceiling).

use repopt_tensor::ops::elementwise::copy_kernel;
use repopt_tensor::optim::{
    AdamW, AdamWConfig, GradMult, Optimizer, ParamSpec, Sgd, SgdConfig, UpdateKernels,
};
use repopt_tensor::{Gpu, Result, Tensor};
use serde::Serialize;

use crate::timing::{TimingBudget, time_gpu};

/// One update variant: `{"variant", "elements_per_s", "gb_per_s"}`.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateResult {
    /// fused, unfused, structured, plain, adamw or copy.
    pub variant: String,
    /// Parameter elements updated per second.
    pub elements_per_s: f64,
    /// Bytes the variant reads and writes, per second (its own traffic, counted from what
    /// its kernels access).
    pub gb_per_s: f64,
    /// Median milliseconds per update.
    pub ms: f64,
    /// Kernel launches per update.
    pub kernels: usize,
}

fn fill(gpu: &Gpu, n: usize, seed: u32) -> Result<Tensor> {
    // Refused before its host data is built when the device could not hold it anyway.
    Tensor::check_size(gpu, &[n])?;
    let data: Vec<f32> = (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 9) as f32 / 8388608.0 - 0.5
        })
        .collect();
    Tensor::from_slice(gpu, &data, &[n])
}

/// Times each variant on a parameter of `n` elements.
pub fn update(gpu: &Gpu, n: usize, budget: TimingBudget) -> Result<Vec<UpdateResult>> {
    let w = fill(gpu, n, 1)?.into_parameter();
    let grad = fill(gpu, n, 2)?;
    let mult = fill(gpu, n, 3)?;
    w.set_grad(Some(grad.clone()))?;
    let mut out = Vec::new();
    let mut record = |variant: &str, n: usize, secs: f64, tensors_moved: f64, kernels: usize| {
        out.push(UpdateResult {
            variant: variant.into(),
            elements_per_s: n as f64 / secs,
            gb_per_s: tensors_moved * (n * 4) as f64 / secs / 1e9,
            ms: secs * 1e3,
            kernels,
        })
    };
    let spec = |m: Option<Tensor>| ParamSpec {
        tensor: w.clone(),
        weight_decay: 4e-5,
        grad_mult: m.map(GradMult::Dense),
    };
    let sgd = SgdConfig::default();
    // Fused RepOptimizer-SGD: reads w, g, M, buf; writes w, buf.
    let mut fused = Sgd::new(vec![spec(Some(mult.clone()))], sgd)?;
    let t = time_gpu(gpu, budget, || fused.step(1e-6))?;
    record("fused", n, t.median_s, 6.0, 1);
    // The same update as five kernels: d = g*M; d += wd*w; buf = m*buf + d; d += m*buf;
    // w -= lr*d, each reading its operands and writing its result.
    let mut unfused =
        Sgd::new(vec![spec(Some(mult.clone()))], sgd)?.with_kernels(UpdateKernels::Unfused);
    let t = time_gpu(gpu, budget, || unfused.step(1e-6))?;
    record("unfused", n, t.median_s, 15.0, 5);
    // The structured Grad Mult a RepOpt-VGG model trains with: M computed from 2 x co
    // factors, as `[co, 256, 3, 3]` kernels of about n elements; reads w, g, buf, writes w,
    // buf (the factors are a few KiB).
    let co = (n / (256 * 9)).max(1);
    let kernel = fill(gpu, co * 256 * 9, 4)?
        .reshape(&[co, 256, 3, 3])?
        .into_parameter();
    kernel.set_grad(Some(fill(gpu, co * 256 * 9, 5)?.reshape(&[co, 256, 3, 3])?))?;
    let factors = fill(gpu, 2 * co, 6)?;
    let structured = ParamSpec {
        tensor: kernel.clone(),
        weight_decay: 4e-5,
        grad_mult: Some(GradMult::Conv3x3 {
            factors,
            identity: true,
        }),
    };
    let mut opt = Sgd::new(vec![structured], sgd)?;
    let t = time_gpu(gpu, budget, || opt.step(1e-6))?;
    record("structured", kernel.numel(), t.median_s, 5.0, 1);
    // Plain fused SGD: reads w, g, buf; writes w, buf.
    let mut plain = Sgd::new(vec![spec(None)], sgd)?;
    let t = time_gpu(gpu, budget, || plain.step(1e-6))?;
    record("plain", n, t.median_s, 5.0, 1);
    // Fused RepOptimizer-AdamW: reads w, g, M, m, v; writes w, m, v.
    let mut adamw = AdamW::new(vec![spec(Some(mult.clone()))], AdamWConfig::default())?;
    let t = time_gpu(gpu, budget, || adamw.step(1e-6))?;
    record("adamw", n, t.median_s, 8.0, 1);
    // A copy kernel: reads and writes once.
    let dst = Tensor::zeros(gpu, &[n])?;
    let t = time_gpu(gpu, budget, || copy_kernel(&grad, &dst))?;
    record("copy", n, t.median_s, 2.0, 1);
    Ok(out)
}
