//! Which algorithm computes one direction of a convolution: the direct kernels of `plan`,
//! Winograd where it applies, matrix products (`gemm`), or the workgroup-tiled implicit
//! product (`implicit`, on f32 operands or on f16 ones), as the device's
//! [`Tuning`](crate::tuning::Tuning) decides.
//! Measured choices are keyed by everything the kernels' speed depends on: direction,
//! kernel family and shape.

use super::winograd::{self, Direction};
use super::{ConvShape, plan};
use super::{gemm, implicit};
use crate::device::Gpu;
use crate::error::Result;
use crate::tensor::Tensor;
use crate::tuning::{ConvAlgorithm, Tuning};

/// Computes `direction` of the convolution `s` on its operands `(a, b)` (`(x, w)`, `(dy, w)`
/// or `(x, dy)`) with the algorithm the device's tuning picks.
pub(crate) fn run(a: &Tensor, b: &Tensor, s: &ConvShape, direction: Direction) -> Result<Tensor> {
    let gpu = a.gpu();
    let key = || {
        format!(
            "conv{k}x{k}s{}p{}.{}.{:?}.n{}.ci{}.co{}.h{}.w{}",
            s.cfg.stride,
            s.cfg.padding,
            match direction {
                Direction::Forward => "forward",
                Direction::BackwardInput => "input_grad",
                Direction::BackwardWeight => "weight_grad",
            },
            plan::family(gpu, s),
            s.n,
            s.ci,
            s.co,
            s.h,
            s.w,
            k = s.k,
        )
        .to_lowercase()
    };
    let mut choices = candidates(gpu, s);
    if matches!(gpu.tuning(), Tuning::Measure { .. }) {
        // f16 operands change the results, which the fastest kernel must not: only forcing
        // runs them.
        choices.retain(|&a| a != ConvAlgorithm::ImplicitF16);
        // The implicit product is shaped for GPUs: on a CPU adapter (lavapipe) its
        // workgroups of 256 with a barrier every 16 steps of K measured 3 to 16 times slower
        // than the best of the other algorithms at every A0 and B1 stage shape, so measuring
        // it there would only lengthen every first run. Forcing it still runs it.
        if gpu.adapter().device_type == wgpu::DeviceType::Cpu {
            choices.retain(|&a| a != ConvAlgorithm::Implicit);
        }
    }
    let algorithm = gpu.inner.tuner.choose(
        key,
        &choices,
        |algorithm| run_with(algorithm, a, b, s, direction).map(drop),
        || gpu.synchronize(),
    )?;
    run_with(algorithm, a, b, s, direction)
}

/// The algorithms that compute `s` on this device, the direct kernels first.
pub(crate) fn candidates(gpu: &Gpu, s: &ConvShape) -> Vec<ConvAlgorithm> {
    let mut out = vec![ConvAlgorithm::Direct];
    if winograd::applies(gpu, s) {
        out.push(ConvAlgorithm::Winograd);
    }
    if gemm::applies(gpu, s) {
        out.push(ConvAlgorithm::Gemm);
    }
    if implicit::applies(gpu, s) {
        out.push(ConvAlgorithm::Implicit);
        if gpu.features().contains(wgpu::Features::SHADER_F16) {
            out.push(ConvAlgorithm::ImplicitF16);
        }
    }
    out
}

/// Computes `direction` with `algorithm` (which must apply to `s`).
pub(crate) fn run_with(
    algorithm: ConvAlgorithm,
    a: &Tensor,
    b: &Tensor,
    s: &ConvShape,
    direction: Direction,
) -> Result<Tensor> {
    let gpu = a.gpu();
    match (algorithm, direction) {
        (ConvAlgorithm::Winograd, _) => winograd::run(a, b, s, direction),
        (ConvAlgorithm::Gemm, _) => gemm::run(a, b, s, direction),
        (ConvAlgorithm::Implicit, _) => implicit::run(a, b, s, direction, false),
        (ConvAlgorithm::ImplicitF16, _) => implicit::run(a, b, s, direction, true),
        (ConvAlgorithm::Direct, Direction::Forward) => {
            super::run(&plan::forward(gpu, s), a, b, &s.output_shape())
        }
        (ConvAlgorithm::Direct, Direction::BackwardInput) => {
            super::run(&plan::backward_input(gpu, s), a, b, &[s.n, s.ci, s.h, s.w])
        }
        (ConvAlgorithm::Direct, Direction::BackwardWeight) => super::run(
            &plan::backward_weight(gpu, s),
            a,
            b,
            &[s.co, s.ci, s.k, s.k],
        ),
    }
}
