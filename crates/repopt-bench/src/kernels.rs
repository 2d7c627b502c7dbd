//! Kernel throughput: the FMA peak, convolutions and the matrix product.

use repopt_tensor::ops::{self, Conv2dConfig, Direction};
use repopt_tensor::probe::FmaProbe;
use repopt_tensor::tuning::ConvAlgorithm;
use repopt_tensor::{Gpu, Result, Tensor, no_grad};
use serde::Serialize;

use crate::timing::{TimingBudget, time_gpu};

/// `{"gflops"}` of the register-only FMA probe.
#[derive(Clone, Debug, Serialize)]
pub struct PeakResult {
    /// Adapter name.
    pub adapter: String,
    /// Achieved GFLOP/s.
    pub gflops: f64,
}

/// Measures the adapter's arithmetic peak.
pub fn peak(gpu: &Gpu, budget: TimingBudget) -> Result<PeakResult> {
    let probe = FmaProbe::new(gpu, 4096, 2048)?;
    let t = time_gpu(gpu, budget, || probe.record())?;
    Ok(PeakResult {
        adapter: gpu.adapter().name.clone(),
        gflops: probe.flops() / t.median_s / 1e9,
    })
}

/// One kernel measurement: `{"kernel", "shape", "ms", "gflops"}`.
#[derive(Clone, Debug, Serialize)]
pub struct KernelResult {
    /// Kernel name.
    pub kernel: String,
    /// Problem shape, human-readable.
    pub shape: String,
    /// Median milliseconds per call.
    pub ms: f64,
    /// Useful GFLOP/s (2 x multiply-accumulates of the mathematical operation); for
    /// memory-bound kernels (batch norm), the GB/s of the tensors read and written instead.
    pub gflops: f64,
    /// Whether `gflops` holds GB/s (memory-bound kernel).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub memory_bound: bool,
    /// GFLOP/s of the FMA probe around this measurement: the mean of the probe timed just
    /// before and just after its case. A shared host's speed drifts by tens of percent
    /// within one run, so a kernel is rated against the probe of its own minutes rather
    /// than one taken at the start. `None` for memory-bound kernels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_gflops: Option<f64>,
}

/// A convolution problem: batch, channels in and out, square image, kernel, stride.
#[derive(Clone, Copy, Debug)]
pub struct ConvCase {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub ci: usize,
    /// Output channels.
    pub co: usize,
    /// Input height and width.
    pub hw: usize,
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
}

impl ConvCase {
    fn label(&self) -> String {
        format!(
            "N{} C{}->{} {}x{} k{} s{}",
            self.n, self.ci, self.co, self.hw, self.hw, self.k, self.stride
        )
    }
}

fn fill(gpu: &Gpu, shape: &[usize], seed: u32) -> Result<Tensor> {
    // Refused before its host data is built when the device could not hold it anyway.
    Tensor::check_size(gpu, shape)?;
    let len: usize = shape.iter().product();
    let data: Vec<f32> = (0..len)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0)
                - 0.5
        })
        .collect();
    Tensor::from_slice(gpu, &data, shape)
}

/// Times conv forward, input gradient and weight gradient for each case, with the FMA probe
/// between cases (see [`KernelResult::probe_gflops`]).
pub fn conv(gpu: &Gpu, cases: &[ConvCase], budget: TimingBudget) -> Result<Vec<KernelResult>> {
    let mut out = Vec::new();
    let mut before = peak(gpu, budget)?.gflops;
    for c in cases {
        let first = out.len();
        let cfg = Conv2dConfig::same(c.k, c.stride);
        let x = fill(gpu, &[c.n, c.ci, c.hw, c.hw], 1)?;
        let w = fill(gpu, &[c.co, c.ci, c.k, c.k], 2)?;
        let y = no_grad(|| ops::conv2d(&x, &w, cfg))?;
        let dy = fill(gpu, y.shape(), 3)?;
        let (oh, ow) = (y.shape()[2], y.shape()[3]);
        let flops = 2.0 * (c.n * c.co * oh * ow * c.ci * c.k * c.k) as f64;
        let name = if c.k == 3 { "conv3x3" } else { "conv1x1" };
        let mut record = |kernel: String, ms: f64| {
            out.push(KernelResult {
                kernel,
                shape: c.label(),
                ms,
                gflops: flops / (ms / 1e3) / 1e9,
                memory_bound: false,
                probe_gflops: None,
            })
        };
        let directions = [
            (Direction::Forward, (&x, &w), "forward"),
            (Direction::BackwardInput, (&dy, &w), "backward_input"),
            (Direction::BackwardWeight, (&x, &dy), "backward_weight"),
        ];
        // The direct kernels whatever the device's tuning would pick, then the same
        // products by Winograd (stride-1 3x3), as matrix products and as the workgroup-tiled
        // implicit product, all rated by the direct convolution's FLOPs.
        let mut algorithms = vec![(ConvAlgorithm::Direct, "")];
        if c.k == 3 && c.stride == 1 {
            algorithms.push((ConvAlgorithm::Winograd, "_winograd"));
        }
        algorithms.push((ConvAlgorithm::Gemm, "_gemm"));
        algorithms.push((ConvAlgorithm::Implicit, "_implicit"));
        // The same product on f16 operands: what halving the bytes gathered buys, beside it.
        if gpu
            .features()
            .contains(repopt_tensor::wgpu::Features::SHADER_F16)
        {
            algorithms.push((ConvAlgorithm::ImplicitF16, "_implicit_f16"));
        }
        for (algorithm, suffix) in algorithms {
            for (direction, operands, label) in directions {
                let t = time_gpu(gpu, budget, || {
                    let hw = (c.hw, c.hw);
                    ops::conv2d_with(algorithm, direction, operands, hw, c.k, cfg).map(drop)
                })?;
                record(format!("{name}_{label}{suffix}"), t.median_s * 1e3);
            }
        }
        let after = peak(gpu, budget)?.gflops;
        for k in &mut out[first..] {
            k.probe_gflops = Some((before + after) / 2.0);
        }
        before = after;
    }
    Ok(out)
}

/// Times the engine's matrix product at `m = n = k = size`, between two runs of the FMA probe.
pub fn matmul(gpu: &Gpu, size: usize, budget: TimingBudget) -> Result<KernelResult> {
    let a = fill(gpu, &[size, size], 4)?;
    let b = fill(gpu, &[size, size], 5)?;
    let before = peak(gpu, budget)?.gflops;
    let t = time_gpu(gpu, budget, || no_grad(|| ops::matmul(&a, &b)).map(drop))?;
    let after = peak(gpu, budget)?.gflops;
    let flops = 2.0 * (size as f64).powi(3);
    Ok(KernelResult {
        kernel: "matmul".into(),
        shape: format!("{size}x{size}x{size}"),
        ms: t.median_s * 1e3,
        gflops: flops / t.median_s / 1e9,
        memory_bound: false,
        probe_gflops: Some((before + after) / 2.0),
    })
}

/// The convolution shapes of a network's stages at a resolution: for each stage, its
/// stride-1 3x3 block (or the stride-2 first block where the stage has no other), and the
/// 1x1 convolution of the same shape that RepVGG adds beside it.
pub fn stage_cases(config: &repopt_models::VggConfig, res: usize, batch: usize) -> Vec<ConvCase> {
    let mut out = Vec::new();
    let mut hw = res;
    let mut seen = std::collections::BTreeSet::new();
    for spec in config.blocks() {
        let in_hw = hw;
        hw = (hw + 2 - 3) / spec.stride + 1;
        let stage = spec.name.split('.').next().unwrap_or("").to_string();
        if spec.name == "stage0" || seen.contains(&stage) {
            continue;
        }
        let is_last_of_stage = spec.stride == 1
            || config.num_blocks[stage[5..].parse::<usize>().unwrap_or(1) - 1] == 1;
        if is_last_of_stage {
            seen.insert(stage);
            for k in [3, 1] {
                out.push(ConvCase {
                    n: batch,
                    ci: spec.in_channels,
                    co: spec.out_channels,
                    hw: in_hw,
                    k,
                    stride: spec.stride,
                });
            }
        }
    }
    out
}

/// Batch norm (training forward with ReLU, and backward) on `[n, c, hw, hw]`: GB/s of the
/// tensors each pass reads and writes.
pub fn batch_norm(
    gpu: &Gpu,
    n: usize,
    c: usize,
    hw: usize,
    budget: TimingBudget,
) -> Result<Vec<KernelResult>> {
    use repopt_tensor::ops::BatchNormStats;
    let x = fill(gpu, &[n, c, hw, hw], 6)?.into_parameter();
    let gamma = Tensor::full(gpu, &[c], 1.0)?.into_parameter();
    let beta = Tensor::zeros(gpu, &[c])?.into_parameter();
    let stats = BatchNormStats::new(gpu, c)?;
    let dy = fill(gpu, &[n, c, hw, hw], 7)?;
    let bytes = (n * c * hw * hw * 4) as f64;
    let shape = format!("N{n} C{c} {hw}x{hw}");
    // Forward: statistics read x twice, normalising reads x and writes y.
    let t = time_gpu(gpu, budget, || {
        no_grad(|| ops::batch_norm2d(&x, &gamma, &beta, &stats, true, true)).map(drop)
    })?;
    let fwd = KernelResult {
        kernel: "batch_norm_forward".into(),
        shape: shape.clone(),
        ms: t.median_s * 1e3,
        gflops: 4.0 * bytes / t.median_s / 1e9,
        memory_bound: true,
        probe_gflops: None,
    };
    // Forward + backward: the forward's 4 passes, then the gradient reduction reading x
    // and dy and the input gradient reading both and writing dx.
    let t = time_gpu(gpu, budget, || {
        ops::batch_norm2d(&x, &gamma, &beta, &stats, true, true)?.backward_with(&dy)?;
        x.zero_grad();
        gamma.zero_grad();
        beta.zero_grad();
        Ok(())
    })?;
    let bwd = KernelResult {
        kernel: "batch_norm_forward_backward".into(),
        shape,
        ms: t.median_s * 1e3,
        gflops: 9.0 * bytes / t.median_s / 1e9,
        memory_bound: true,
        probe_gflops: None,
    };
    Ok(vec![fwd, bwd])
}
