//! Weight statistics of 3x3 kernels, the paper's Table 11 and Figs. 3/5: why a converted
//! RepVGG quantizes badly. Branch addition piles the 1x1 and identity branches onto each
//! kernel's centre, so centre taps spread far wider than the surrounding ones, and a
//! per-channel INT8 grid sized for the largest value leaves the rest with few levels.
//!
//! ```
//! use repopt_models::quant::stats::kernel_stats;
//! // One output channel whose centre tap dwarfs the others.
//! let mut w = vec![0.01f32; 9 * 4];
//! for d in 0..4 {
//!     w[d * 9 + 4] = 1.0 + d as f32;
//! }
//! let s = kernel_stats("layer", &w, [1, 4, 3, 3])?;
//! assert!(s.std_centre > 10.0 * s.std_surround);
//! assert!(s.sqnr_db > 20.0);
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

use serde::Serialize;

use crate::block::{Block, BlockKind};
use crate::error::{ModelError, Result};
use crate::layers::BatchNorm;
use crate::{Mode, RepOptVgg};

/// Statistics of one `[co, ci, 3, 3]` kernel.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelStats {
    /// The layer (block name, and the stage for RepVGG's three).
    pub layer: String,
    /// Standard deviation of every value.
    pub std: f64,
    /// Of the centre taps.
    pub std_centre: f64,
    /// Of the eight surrounding taps.
    pub std_surround: f64,
    /// `max |w| / std`: how far the grid's top is from typical values.
    pub max_over_std: f64,
    /// Excess kurtosis (0 for a normal distribution; heavy tails are positive).
    pub kurtosis: f64,
    /// Signal-to-quantization-noise ratio, in dB, of symmetric per-output-channel INT8.
    pub sqnr_db: f64,
}

fn moments(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let m2 = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let m4 = v.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n;
    (mean, m2, m4)
}

/// Symmetric per-output-channel INT8 (`[-127, 127]`, scale `max |w_c| / 127`) of a kernel
/// with `co` output channels, dequantized.
pub fn int8_per_channel(w: &[f32], co: usize) -> Vec<f32> {
    let per = w.len() / co.max(1);
    let mut out = Vec::with_capacity(w.len());
    for (c, s) in w.chunks(per.max(1)).zip(super::weight_scales(w, co)) {
        out.extend(c.iter().map(|&v| (v / s).round().clamp(-127.0, 127.0) * s));
    }
    out
}

/// The statistics of a kernel of `shape` `[co, ci, 3, 3]`.
pub fn kernel_stats(layer: &str, w: &[f32], shape: [usize; 4]) -> Result<KernelStats> {
    if shape[2] != 3 || shape[3] != 3 || shape.iter().product::<usize>() != w.len() || w.is_empty()
    {
        return Err(ModelError::Config(format!(
            "kernel statistics of {layer}: expected a [co, ci, 3, 3] kernel, got {shape:?} with {} values",
            w.len()
        )));
    }
    let all: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    let centre: Vec<f64> = all.chunks(9).map(|k| k[4]).collect();
    let surround: Vec<f64> = all
        .chunks(9)
        .flat_map(|k| {
            k.iter()
                .enumerate()
                .filter(|(i, _)| *i != 4)
                .map(|(_, v)| *v)
        })
        .collect();
    let (_, m2, m4) = moments(&all);
    let std = m2.sqrt();
    let amax = all.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let q = int8_per_channel(w, shape[0]);
    let signal: f64 = all.iter().map(|v| v * v).sum();
    let noise: f64 = all
        .iter()
        .zip(&q)
        .map(|(v, &q)| (v - q as f64).powi(2))
        .sum();
    Ok(KernelStats {
        layer: layer.into(),
        std,
        std_centre: moments(&centre).1.sqrt(),
        std_surround: moments(&surround).1.sqrt(),
        max_over_std: if std > 0.0 { amax / std } else { 0.0 },
        kurtosis: if m2 > 0.0 { m4 / (m2 * m2) - 3.0 } else { 0.0 },
        sqnr_db: if noise > 0.0 {
            10.0 * (signal / noise).log10()
        } else {
            f64::INFINITY
        },
    })
}

/// A kernel times its batch norm's `gamma / sqrt(var + eps)` per output channel.
fn fold(w: &[f32], bn: &BatchNorm) -> Result<Vec<f32>> {
    let (scale, _) = bn.fold()?;
    let per = w.len() / scale.len();
    Ok(w.iter()
        .enumerate()
        .map(|(i, &x)| (x as f64 * scale[i / per]) as f32)
        .collect())
}

/// One kernel at one stage of a model's conversion.
#[derive(Clone, Debug)]
pub struct StagedKernel {
    /// Block name.
    pub block: String,
    /// `deploy` for the converted kernel; for RepVGG also `before BN fusion` (the dense
    /// branch's raw kernel) and `after BN fusion` (that kernel with its BN folded in).
    pub stage: &'static str,
    /// `[co, ci, 3, 3]`.
    pub shape: [usize; 4],
    /// The values.
    pub values: Vec<f32>,
}

/// The 3x3 kernels of every block of `model` in its deploy form (`deploy` is the converted
/// model's kernel, branch addition included) and, for a RepVGG model, at the two earlier
/// stages of the paper's Table 11.
pub fn staged_kernels(model: &RepOptVgg, deploy: &RepOptVgg) -> Result<Vec<StagedKernel>> {
    if deploy.mode() != Mode::Deploy {
        return Err(ModelError::WrongMode {
            op: "kernel statistics",
            expected: "deploy",
            got: deploy.mode(),
        });
    }
    let mut out = Vec::new();
    for (b, d) in model.blocks().iter().zip(deploy.blocks()) {
        let shape = [b.spec.out_channels, b.spec.in_channels, 3, 3];
        let mut push = |stage, values| {
            out.push(StagedKernel {
                block: b.spec.name.clone(),
                stage,
                shape,
                values,
            })
        };
        if let BlockKind::Repvgg {
            dense, dense_bn, ..
        } = &b.kind
        {
            let raw = dense.to_vec()?;
            push("after BN fusion", fold(&raw, dense_bn)?);
            push("before BN fusion", raw);
        }
        if let Block {
            kind: BlockKind::Deploy { weight, .. },
            ..
        } = d
        {
            push("deploy", weight.to_vec()?);
        }
    }
    // Stages in Table 11's order within each block.
    let rank = |s: &str| match s {
        "before BN fusion" => 0,
        "after BN fusion" => 1,
        _ => 2,
    };
    out.sort_by(|a, b| (a.block.as_str(), rank(a.stage)).cmp(&(b.block.as_str(), rank(b.stage))));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_a_known_kernel() {
        // Two output channels, one input: centre 2 / -2, surroundings +-1 alternating.
        let mut w = Vec::new();
        for sign in [1.0f32, -1.0] {
            for i in 0..9 {
                w.push(if i == 4 {
                    2.0 * sign
                } else if i % 2 == 0 {
                    1.0
                } else {
                    -1.0
                });
            }
        }
        let s = kernel_stats("k", &w, [2, 1, 3, 3]).unwrap();
        assert!((s.std_centre - 2.0).abs() < 1e-12);
        assert!((s.std_surround - 1.0).abs() < 1e-12);
        // Values 2 and 1 sit exactly on the grid of max 2: 127 and 63.5 -> error only on 1.
        assert!(s.sqnr_db > 40.0, "{}", s.sqnr_db);
        let e = kernel_stats("k", &w[..17], [2, 1, 3, 3])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[co, ci, 3, 3]"), "{e}");
    }

    #[test]
    fn int8_keeps_zero_channels_zero_and_bounds_the_error() {
        let w = [0.0, 0.0, 0.5, -0.25, 0.1, 0.3];
        let q = int8_per_channel(&w, 2);
        assert_eq!(&q[..3], &[0.0, 0.0, 0.5]);
        for (a, b) in w[3..].iter().zip(&q[3..]) {
            assert!((a - b).abs() <= 0.3 / 127.0 / 2.0 + 1e-7);
        }
    }
}
