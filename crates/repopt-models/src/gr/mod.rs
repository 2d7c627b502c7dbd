//! Gradient Re-parameterization for any declared CSLA block.
//!
//! A [`CslaBlock`] declares a block as the paper's constant-scale linear addition: a target
//! convolution (dense or depthwise, `k x k`) and branches whose sum it equals, each branch a
//! linear operator whose kernel sits inside the target's window (`k x k`, `1 x k`, `k x 1`,
//! a smaller odd square, `1 x 1`, or the identity) followed by a constant channel-wise
//! scale. From the declaration alone the RepOptimizer is derived:
//!
//! - [`CslaBlock::grad_mult`]: the Rule of Iteration. The target kernel is
//!   `W' = sum_b scale_b * E_b(W_b)` where `E_b` places branch b's kernel in the window.
//!   One SGD step on every `W_b` moves `W'` by `-lr * sum_b scale_b^2 * E_b(E_b^T(g))`, and
//!   `E_b E_b^T` keeps exactly the taps branch b covers, so the multiplier is
//!   `M = sum_b scale_b^2` over each branch's taps: exact for SGD (`p = 2`, with momentum
//!   and weight decay, which are linear), the reference's heuristic `p = 1` for AdamW.
//! - [`CslaBlock::equivalent_kernel`]: the Rule of Initialization, `W'` from branch kernels.
//! - [`layer::GrLayer`]: the block in its CSLA form (scales constant, the Hyper-Search
//!   model's form with scales trainable, or the target form with one kernel) on the engine.
//! - [`verify::verify`]: trains the CSLA form and the target form side by side and reports
//!   how far apart they end.
//!
//! The identity branch is the paper's `u`: a trainable per-channel value (a depthwise 1x1
//! kernel) followed by its constant scale, 1 in every published model. Its Grad Mult term is
//! `scale^p` at each channel's own centre tap.
//!
//! ```
//! use repopt_models::gr::{CslaBlock, Branch};
//! use repopt_models::repoptimizer::UpdateRule;
//! // An ACNet-style block: 3x3 + 1x3 + 3x1, two channels in and out.
//! let block = CslaBlock::dense(2, 2, 3, 1, vec![
//!     Branch::conv("square", 3, 3, vec![2.0, 2.0]),
//!     Branch::conv("row", 1, 3, vec![3.0, 3.0]),
//!     Branch::conv("column", 3, 1, vec![1.0, 1.0]),
//! ]);
//! block.validate()?;
//! let m = block.grad_mult(UpdateRule::Sgd);
//! assert_eq!(m[0], 4.0);                    // corner: the square branch only
//! assert_eq!(m[4], 4.0 + 9.0 + 1.0);        // centre: all three
//! assert_eq!(m[3], 4.0 + 9.0);              // middle row, left: square and row
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

pub mod layer;
pub mod verify;

use crate::error::{ModelError, Result};
use crate::repoptimizer::{UpdateRule, scale_domain};

/// The convolution a declared block becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetOp {
    /// A dense `k x k` convolution, kernel `[out, in, k, k]`.
    Dense {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Odd window size.
        kernel: usize,
    },
    /// A depthwise `k x k` convolution, kernel `[channels, 1, k, k]`.
    Depthwise {
        /// Channels in and out.
        channels: usize,
        /// Odd window size.
        kernel: usize,
    },
}

impl TargetOp {
    /// Output channels.
    pub fn out_channels(self) -> usize {
        match self {
            TargetOp::Dense { out_channels, .. } => out_channels,
            TargetOp::Depthwise { channels, .. } => channels,
        }
    }

    /// Input channels each output channel sees (1 for depthwise).
    pub fn fan_channels(self) -> usize {
        match self {
            TargetOp::Dense { in_channels, .. } => in_channels,
            TargetOp::Depthwise { .. } => 1,
        }
    }

    /// Input channels of the block.
    pub fn in_channels(self) -> usize {
        match self {
            TargetOp::Dense { in_channels, .. } => in_channels,
            TargetOp::Depthwise { channels, .. } => channels,
        }
    }

    /// The window size k.
    pub fn kernel(self) -> usize {
        match self {
            TargetOp::Dense { kernel, .. } | TargetOp::Depthwise { kernel, .. } => kernel,
        }
    }

    /// Whether the target is depthwise.
    pub fn is_depthwise(self) -> bool {
        matches!(self, TargetOp::Depthwise { .. })
    }

    /// The target kernel's shape.
    pub fn kernel_shape(self) -> [usize; 4] {
        let k = self.kernel();
        [self.out_channels(), self.fan_channels(), k, k]
    }
}

/// The linear operator of one branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BranchOp {
    /// A convolution of the target's kind with its own trainable `height x width` kernel
    /// (both odd, at most the target's k), centred in the target's window.
    Conv {
        /// Rows of the kernel.
        height: usize,
        /// Columns of the kernel.
        width: usize,
    },
    /// The identity with a trainable per-channel value (the paper's `u`); needs as many
    /// input as output channels and stride 1.
    Identity,
}

/// One branch of a CSLA block: an operator and its constant channel-wise scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Branch {
    /// A name for reports and parameter names (`square`, `row`, `identity`, ...).
    pub name: String,
    /// The operator.
    pub op: BranchOp,
    /// One constant per output channel (trainable only in the Hyper-Search form).
    pub scale: Vec<f32>,
}

impl Branch {
    /// A convolution branch with a `height x width` kernel.
    pub fn conv(name: &str, height: usize, width: usize, scale: Vec<f32>) -> Self {
        Branch {
            name: name.into(),
            op: BranchOp::Conv { height, width },
            scale,
        }
    }

    /// An identity branch.
    pub fn identity(name: &str, scale: Vec<f32>) -> Self {
        Branch {
            name: name.into(),
            op: BranchOp::Identity,
            scale,
        }
    }
}

/// A declared CSLA block: `sum_b scale_b * op_b(x)`, which training turns into one
/// [`TargetOp`] convolution at `stride`.
#[derive(Clone, Debug, PartialEq)]
pub struct CslaBlock {
    /// The convolution the block becomes.
    pub target: TargetOp,
    /// Stride of every branch.
    pub stride: usize,
    /// The branches, in order.
    pub branches: Vec<Branch>,
}

impl CslaBlock {
    /// A block that becomes a dense `k x k` convolution.
    pub fn dense(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        branches: Vec<Branch>,
    ) -> Self {
        CslaBlock {
            target: TargetOp::Dense {
                in_channels,
                out_channels,
                kernel,
            },
            stride,
            branches,
        }
    }

    /// A block that becomes a depthwise `k x k` convolution.
    pub fn depthwise(channels: usize, kernel: usize, stride: usize, branches: Vec<Branch>) -> Self {
        CslaBlock {
            target: TargetOp::Depthwise { channels, kernel },
            stride,
            branches,
        }
    }

    /// RepOpt-VGG's block: `s * conv3x3 + t * conv1x1 [+ u * x]`.
    pub fn repopt_vgg(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        s: Vec<f32>,
        t: Vec<f32>,
        identity: bool,
    ) -> Self {
        let co = s.len();
        let mut branches = vec![Branch::conv("conv", 3, 3, s), Branch::conv("1x1", 1, 1, t)];
        if identity {
            branches.push(Branch::identity("identity", vec![1.0; co]));
        }
        CslaBlock::dense(in_channels, out_channels, 3, stride, branches)
    }

    /// The ghost module's cheap operation (RepOpt-GhostNet): `t * dwconv(x) + u * x`, the
    /// "degraded case" of RepOpt-VGG with a depthwise kernel.
    pub fn ghost(channels: usize, kernel: usize, t: Vec<f32>) -> Self {
        CslaBlock::depthwise(
            channels,
            kernel,
            1,
            vec![
                Branch::conv("cheap", kernel, kernel, t),
                Branch::identity("fusion", vec![1.0; channels]),
            ],
        )
    }

    /// An ACNet-style asymmetric block: `s * conv3x3 + t * conv1x3 + v * conv3x1`.
    pub fn acnet(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        s: Vec<f32>,
        t: Vec<f32>,
        v: Vec<f32>,
    ) -> Self {
        CslaBlock::dense(
            in_channels,
            out_channels,
            3,
            stride,
            vec![
                Branch::conv("square", 3, 3, s),
                Branch::conv("row", 1, 3, t),
                Branch::conv("column", 3, 1, v),
            ],
        )
    }

    /// Checks the declaration: odd windows that fit, one scale per output channel within
    /// the RepOptimizer's domain, identities only where shapes match.
    pub fn validate(&self) -> Result<()> {
        self.validate_for(UpdateRule::Sgd)
    }

    /// [`CslaBlock::validate`] with the scale bound of `rule`.
    pub fn validate_for(&self, rule: UpdateRule) -> Result<()> {
        let err = |m: String| Err(ModelError::Config(format!("CSLA block: {m}")));
        let k = self.target.kernel();
        let co = self.target.out_channels();
        if k == 0 || k.is_multiple_of(2) {
            return err(format!("the target window must be odd, got {k}"));
        }
        if co == 0 || self.target.in_channels() == 0 {
            return err("a block needs at least one channel in and out".into());
        }
        if self.stride == 0 {
            return err("stride must be at least 1".into());
        }
        if self.branches.is_empty() {
            return err("a block needs at least one branch".into());
        }
        let domain = scale_domain(rule);
        for b in &self.branches {
            match b.op {
                BranchOp::Conv { height, width } => {
                    if height % 2 == 0 || width % 2 == 0 || height > k || width > k {
                        return err(format!(
                            "branch '{}': a {height}x{width} kernel does not sit centred in a {k}x{k} window (odd sizes up to {k})",
                            b.name
                        ));
                    }
                }
                BranchOp::Identity => {
                    if self.target.in_channels() != co || self.stride != 1 {
                        return err(format!(
                            "branch '{}': an identity needs as many input as output channels and stride 1",
                            b.name
                        ));
                    }
                }
            }
            if b.scale.len() != co {
                return err(format!(
                    "branch '{}': {} scales for {co} output channels",
                    b.name,
                    b.scale.len()
                ));
            }
            for (c, &v) in b.scale.iter().enumerate() {
                domain
                    .check(&format!("scale of branch '{}' (channel {c})", b.name), v)
                    .map_err(|m| ModelError::Config(format!("CSLA block: {m}")))?;
            }
        }
        Ok(())
    }

    /// The target kernel's shape.
    pub fn kernel_shape(&self) -> [usize; 4] {
        self.target.kernel_shape()
    }

    /// The shape of branch `b`'s own trainable kernel: `[out, fan, h, w]` for a
    /// convolution, `[out]` for the identity's values.
    pub fn branch_shape(&self, b: usize) -> Vec<usize> {
        let co = self.target.out_channels();
        match self.branches[b].op {
            BranchOp::Conv { height, width } => {
                vec![co, self.target.fan_channels(), height, width]
            }
            BranchOp::Identity => vec![co],
        }
    }

    /// Where each element of branch `b`'s kernel lands in the target kernel (flat indices,
    /// in the branch kernel's own order).
    pub fn embedding(&self, b: usize) -> Vec<usize> {
        let [co, fan, k, _] = self.kernel_shape();
        let centre = k / 2;
        match self.branches[b].op {
            BranchOp::Conv { height, width } => {
                let (dh, dw) = (centre - height / 2, centre - width / 2);
                let mut out = Vec::with_capacity(co * fan * height * width);
                for c in 0..co {
                    for d in 0..fan {
                        for i in 0..height {
                            for j in 0..width {
                                out.push(((c * fan + d) * k + dh + i) * k + dw + j);
                            }
                        }
                    }
                }
                out
            }
            BranchOp::Identity => (0..co)
                .map(|c| {
                    // Dense: input channel c; depthwise: the only one.
                    let d = if self.target.is_depthwise() { 0 } else { c };
                    ((c * fan + d) * k + centre) * k + centre
                })
                .collect(),
        }
    }

    /// The Grad Mult of the target kernel (flat, in the kernel's layout): each branch adds
    /// `scale^p` of its output channel at every tap it covers.
    pub fn grad_mult(&self, rule: UpdateRule) -> Vec<f32> {
        let shape = self.kernel_shape();
        let per_out = shape[1] * shape[2] * shape[3];
        let mut m = vec![0.0f32; shape.iter().product()];
        for (b, branch) in self.branches.iter().enumerate() {
            let factors: Vec<f32> = branch.scale.iter().map(|v| v.powi(rule.power())).collect();
            for i in self.embedding(b) {
                m[i] += factors[i / per_out];
            }
        }
        m
    }

    /// The equivalent target kernel `sum_b scale_b * E_b(W_b)` of branch kernels (each of
    /// [`CslaBlock::branch_shape`]), in branch order.
    pub fn equivalent_kernel(&self, kernels: &[Vec<f32>]) -> Result<Vec<f32>> {
        if kernels.len() != self.branches.len() {
            return Err(ModelError::Config(format!(
                "CSLA block: {} branch kernels for {} branches",
                kernels.len(),
                self.branches.len()
            )));
        }
        let shape = self.kernel_shape();
        let per_out = shape[1] * shape[2] * shape[3];
        let mut w = vec![0.0f32; shape.iter().product()];
        for (b, (branch, kernel)) in self.branches.iter().zip(kernels).enumerate() {
            let want: usize = self.branch_shape(b).iter().product();
            if kernel.len() != want {
                return Err(ModelError::Config(format!(
                    "CSLA block: branch '{}' needs a kernel of {:?} ({want} values), got {}",
                    branch.name,
                    self.branch_shape(b),
                    kernel.len()
                )));
            }
            for (&i, &v) in self.embedding(b).iter().zip(kernel) {
                w[i] += branch.scale[i / per_out] * v;
            }
        }
        Ok(w)
    }

    /// The same block with each branch's scales replaced by their mean over channels (the
    /// paper's "channel-averaged" ablation).
    pub fn channel_averaged(&self) -> Self {
        let mut out = self.clone();
        for b in &mut out.branches {
            let mean = b.scale.iter().map(|&v| v as f64).sum::<f64>() / b.scale.len() as f64;
            b.scale.fill(mean as f32);
        }
        out
    }
}

#[cfg(test)]
mod tests;
