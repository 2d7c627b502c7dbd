//! The layers blocks are made of: batch norm with its running statistics, and the
//! squeeze-excitation gate.

use repopt_tensor::ops::{self, BatchNormStats, BnBranch};
use repopt_tensor::{Gpu, Result, Tensor};

use crate::init::Init;
use crate::role::{Param, ParamKind, ParamRole};

/// A named tensor of a model's state: a trainable parameter or a buffer.
pub type Named = (String, Tensor);

/// Batch normalisation: trainable `weight` (gamma) and `bias` (beta), running statistics.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    /// Gamma.
    pub weight: Tensor,
    /// Beta.
    pub bias: Tensor,
    /// Running mean and variance.
    pub stats: BatchNormStats,
}

impl BatchNorm {
    /// gamma = 1, beta = 0, running mean 0, running variance 1.
    pub fn new(gpu: &Gpu, channels: usize) -> Result<Self> {
        Ok(BatchNorm {
            weight: Tensor::full(gpu, &[channels], 1.0)?.into_parameter(),
            bias: Tensor::zeros(gpu, &[channels])?.into_parameter(),
            stats: BatchNormStats::new(gpu, channels)?,
        })
    }

    /// Normalises `x` (batch statistics when training), then ReLU if `relu`.
    pub fn forward(&self, x: &Tensor, training: bool, relu: bool) -> Result<Tensor> {
        ops::batch_norm2d(x, &self.weight, &self.bias, &self.stats, training, relu)
    }

    /// This layer applied to `x` as one branch of a sum
    /// ([`ops::batch_norm2d_sum_relu`]).
    pub fn branch<'a>(&'a self, x: &'a Tensor) -> BnBranch<'a> {
        BnBranch {
            x,
            gamma: &self.weight,
            beta: &self.bias,
            stats: &self.stats,
        }
    }

    /// The batch norm in eval mode as `scale * x + shift` per channel, in f64 (as
    /// conversions assemble their kernels).
    pub fn fold(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        let (gamma, beta) = (self.weight.to_vec()?, self.bias.to_vec()?);
        let mean = self.stats.running_mean.to_vec()?;
        let var = self.stats.running_var.to_vec()?;
        let eps = self.stats.eps as f64;
        let scale: Vec<f64> = gamma
            .iter()
            .zip(&var)
            .map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt())
            .collect();
        let shift = beta
            .iter()
            .zip(&mean)
            .zip(&scale)
            .map(|((&b, &m), s)| b as f64 - m as f64 * s)
            .collect();
        Ok((scale, shift))
    }

    /// An independent copy (a converted model must not share storage with its source).
    pub fn deep_clone(&self) -> Result<Self> {
        let copy = BatchNorm::new(self.weight.gpu(), self.weight.numel())?;
        copy.weight.copy_from(&self.weight)?;
        copy.bias.copy_from(&self.bias)?;
        copy.stats
            .running_mean
            .copy_from(&self.stats.running_mean)?;
        copy.stats.running_var.copy_from(&self.stats.running_var)?;
        Ok(copy)
    }

    pub(crate) fn params(&self, prefix: &str, block: usize, out: &mut Vec<Param>) {
        for (suffix, tensor, kind) in [
            ("weight", &self.weight, ParamKind::BnWeight),
            ("bias", &self.bias, ParamKind::BnBias),
        ] {
            out.push(Param {
                name: format!("{prefix}.{suffix}"),
                tensor: tensor.clone(),
                role: ParamRole::in_block(block, kind),
            });
        }
    }

    pub(crate) fn buffers(&self, prefix: &str, out: &mut Vec<Named>) {
        out.push((
            format!("{prefix}.running_mean"),
            self.stats.running_mean.clone(),
        ));
        out.push((
            format!("{prefix}.running_var"),
            self.stats.running_var.clone(),
        ));
    }
}

/// Squeeze-excitation: `x * sigmoid(up(relu(down(mean_hw(x)))))`, with 1x1 convolutions
/// (stored `[out, in, 1, 1]` as in the reference) of `channels / 4` hidden channels.
#[derive(Clone, Debug)]
pub struct SqueezeExcite {
    /// `[hidden, channels, 1, 1]`.
    pub down_weight: Tensor,
    /// `[hidden]`.
    pub down_bias: Tensor,
    /// `[channels, hidden, 1, 1]`.
    pub up_weight: Tensor,
    /// `[channels]`.
    pub up_bias: Tensor,
}

impl SqueezeExcite {
    /// A gate for `channels` channels.
    pub fn new(gpu: &Gpu, channels: usize, init: &mut Init) -> Result<Self> {
        let hidden = (channels / 4).max(1);
        let p = |data: Vec<f32>, shape: &[usize]| Tensor::parameter(gpu, &data, shape);
        Ok(SqueezeExcite {
            down_weight: p(init.kernel(hidden, channels, 1), &[hidden, channels, 1, 1])?,
            down_bias: p(init.bias(hidden, channels), &[hidden])?,
            up_weight: p(init.kernel(channels, hidden, 1), &[channels, hidden, 1, 1])?,
            up_bias: p(init.bias(channels, hidden), &[channels])?,
        })
    }

    /// Gates `x` channel by channel.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.down_weight.shape();
        let (hidden, channels) = (s[0], s[1]);
        let pooled = ops::global_avg_pool(x)?;
        let h = ops::linear(
            &pooled,
            &self.down_weight.reshape(&[hidden, channels])?,
            &self.down_bias,
        )?
        .relu()?;
        let gate = ops::linear(
            &h,
            &self.up_weight.reshape(&[channels, hidden])?,
            &self.up_bias,
        )?
        .sigmoid()?;
        x.scale_planes(&gate)
    }

    pub(crate) fn params(&self, prefix: &str, block: usize, out: &mut Vec<Param>) {
        for (suffix, tensor, kind) in [
            ("down.weight", &self.down_weight, ParamKind::SeWeight),
            ("down.bias", &self.down_bias, ParamKind::SeBias),
            ("up.weight", &self.up_weight, ParamKind::SeWeight),
            ("up.bias", &self.up_bias, ParamKind::SeBias),
        ] {
            out.push(Param {
                name: format!("{prefix}.{suffix}"),
                tensor: tensor.clone(),
                role: ParamRole::in_block(block, kind),
            });
        }
    }
}
