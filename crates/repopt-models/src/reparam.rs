//! Structural re-parameterization: any trained form -> the plain deploy form
//! (`ReLU(conv3x3 + bias)` per block) with the same eval-mode outputs.
//!
//! Every branch is linear at inference, so each block folds into one 3x3 kernel and a bias:
//! batch norms fold into the kernel before them (`W * gamma / sigma`,
//! `beta - mean * gamma / sigma`), a 1x1 kernel is a 3x3 kernel zero but for its centre,
//! the identity is a 3x3 kernel with 1 at `[c, c, 1, 1]`, and CSLA scales multiply their
//! branch's output channels.

use repopt_tensor::Tensor;

use crate::block::{Block, BlockKind};
use crate::error::Result;
use crate::layers::BatchNorm;
use crate::{Mode, RepOptVgg};

/// A fused kernel `[co, ci, 3, 3]` and bias `[co]`, in f64 while it is assembled.
struct Fused {
    co: usize,
    ci: usize,
    kernel: Vec<f64>,
    bias: Vec<f64>,
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_vec()?.into_iter().map(f64::from).collect())
}

impl Fused {
    fn zero(co: usize, ci: usize) -> Self {
        Fused {
            co,
            ci,
            kernel: vec![0.0; co * ci * 9],
            bias: vec![0.0; co],
        }
    }

    /// Adds a kernel `[co, ci, k, k]` (k = 1 lands on the centre) scaled per output channel.
    fn add_kernel(&mut self, w: &[f64], k: usize, scale: &[f64]) {
        for o in 0..self.co {
            for i in 0..self.ci {
                for kh in 0..k {
                    for kw in 0..k {
                        let (th, tw) = if k == 1 { (1, 1) } else { (kh, kw) };
                        self.kernel[((o * self.ci + i) * 3 + th) * 3 + tw] +=
                            scale[o] * w[((o * self.ci + i) * k + kh) * k + kw];
                    }
                }
            }
        }
    }

    /// Adds `scale[c] * x[c]` (an identity branch) on the kernel's diagonal centre.
    fn add_identity(&mut self, scale: &[f64]) {
        for (c, s) in scale.iter().enumerate().take(self.co) {
            self.kernel[((c * self.ci + c) * 3 + 1) * 3 + 1] += s;
        }
    }

    /// Folds a batch norm that follows what has been assembled so far.
    fn then_bn(mut self, bn: &BatchNorm) -> Result<Self> {
        let (g, b) = (host(&bn.weight)?, host(&bn.bias)?);
        let (m, v) = (host(&bn.stats.running_mean)?, host(&bn.stats.running_var)?);
        let eps = bn.stats.eps as f64;
        for o in 0..self.co {
            let f = g[o] / (v[o] + eps).sqrt();
            for j in 0..self.ci * 9 {
                self.kernel[o * self.ci * 9 + j] *= f;
            }
            self.bias[o] = (self.bias[o] - m[o]) * f + b[o];
        }
        Ok(self)
    }

    fn add(mut self, other: Fused) -> Self {
        for (a, b) in self.kernel.iter_mut().zip(other.kernel) {
            *a += b;
        }
        for (a, b) in self.bias.iter_mut().zip(other.bias) {
            *a += b;
        }
        self
    }
}

fn fuse_block(block: &Block) -> Result<Fused> {
    let (ci, co) = (block.spec.in_channels, block.spec.out_channels);
    let ones = vec![1.0; co];
    let branch = |w: &Tensor, k: usize, bn: &BatchNorm| -> Result<Fused> {
        let mut f = Fused::zero(co, ci);
        f.add_kernel(&host(w)?, k, &ones);
        f.then_bn(bn)
    };
    Ok(match &block.kind {
        BlockKind::Target { conv, bn } => branch(conv, 3, bn)?,
        BlockKind::Repvgg {
            dense,
            dense_bn,
            one,
            one_bn,
            identity,
        } => {
            let mut sum = branch(dense, 3, dense_bn)?.add(branch(one, 1, one_bn)?);
            if let Some(id_bn) = identity {
                let mut f = Fused::zero(co, ci);
                f.add_identity(&ones);
                sum = sum.add(f.then_bn(id_bn)?);
            }
            sum
        }
        BlockKind::Csla {
            conv,
            scale_conv,
            conv_1x1,
            scale_1x1,
            scale_identity,
            bn,
        } => {
            let mut f = Fused::zero(co, ci);
            f.add_kernel(&host(conv)?, 3, &host(scale_conv)?);
            f.add_kernel(&host(conv_1x1)?, 1, &host(scale_1x1)?);
            if let Some(u) = scale_identity {
                f.add_identity(&host(u)?);
            }
            f.then_bn(bn)?
        }
        BlockKind::Deploy { weight, bias } => Fused {
            co,
            ci,
            kernel: host(weight)?,
            bias: host(bias)?,
        },
    })
}

/// Converts a model in any mode to the deploy form: one 3x3 convolution with bias per
/// block, same outputs in evaluation mode (to floating-point rounding).
///
/// ```no_run
/// use repopt_models::{reparam::to_deploy, Mode, RepOptVgg, VggConfig};
/// use repopt_tensor::Gpu;
/// let gpu = Gpu::from_env()?;
/// let config = VggConfig { num_blocks: [1, 2, 1, 1], width_multipliers: [0.25; 4], num_classes: 10, ..VggConfig::preset("A0")? };
/// let trained = RepOptVgg::new(&gpu, config, Mode::Repvgg, 0)?;
/// let deployed = to_deploy(&trained)?;
/// assert_eq!(deployed.mode(), Mode::Deploy);
/// # Ok::<(), repopt_models::ModelError>(())
/// ```
pub fn to_deploy(model: &RepOptVgg) -> Result<RepOptVgg> {
    let _guard = repopt_tensor::NoGradGuard::new();
    let mut blocks = Vec::with_capacity(model.blocks().len());
    for block in model.blocks() {
        let fused = fuse_block(block)?;
        let gpu = model.linear().0.gpu();
        let (ci, co) = (fused.ci, fused.co);
        let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<_>>();
        let weight = Tensor::parameter(gpu, &f32s(fused.kernel), &[co, ci, 3, 3])?;
        let bias = Tensor::parameter(gpu, &f32s(fused.bias), &[co])?;
        let se = match &block.se {
            Some(se) => Some(crate::layers::SqueezeExcite {
                down_weight: se.down_weight.deep_clone()?.into_parameter(),
                down_bias: se.down_bias.deep_clone()?.into_parameter(),
                up_weight: se.up_weight.deep_clone()?.into_parameter(),
                up_bias: se.up_bias.deep_clone()?.into_parameter(),
            }),
            None => None,
        };
        blocks.push(Block {
            spec: block.spec.clone(),
            kind: BlockKind::Deploy { weight, bias },
            se,
        });
    }
    let (lw, lb) = model.linear();
    Ok(RepOptVgg::from_parts(
        model.config().clone(),
        Mode::Deploy,
        blocks,
        (
            lw.deep_clone()?.into_parameter(),
            lb.deep_clone()?.into_parameter(),
        ),
    ))
}
