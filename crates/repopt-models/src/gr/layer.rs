//! A declared CSLA block on the engine, in any of its training forms.
//!
//! Every branch runs as its own convolution (or channel scale, for the identity) and the
//! branch outputs are summed, as the paper's imaginary CSLA model does; the target form runs
//! the one convolution the block becomes. A branch kernel that is not square (`1 x k`,
//! `k x 1`) is held as its `k x k` bounding kernel times a fixed 0/1 mask of its own taps:
//! the engine's convolutions take square kernels, and the masked taps start at zero and get
//! zero gradient, so they stay zero under SGD, momentum and weight decay.
//!
//! ```
//! use repopt_models::gr::{CslaBlock, layer::{Form, GrLayer}};
//! use repopt_tensor::{Gpu, Tensor};
//! let gpu = Gpu::from_env()?;
//! let block = CslaBlock::acnet(4, 4, 1, vec![1.0; 4], vec![0.5; 4], vec![0.5; 4]);
//! let layer = GrLayer::new(&gpu, &block, Form::Csla, 0)?;
//! let y = layer.forward(&Tensor::full(&gpu, &[1, 4, 5, 5], 1.0)?)?;
//! assert_eq!(y.shape(), &[1, 4, 5, 5]);
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

use repopt_tensor::ops::{self, Conv2dConfig};
use repopt_tensor::{Gpu, Tensor};

use super::{BranchOp, CslaBlock};
use crate::error::Result;
use crate::init::Init;

/// Which form of a declared block to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Branches with their kernels trainable and scales constant (identity values
    /// trainable).
    Csla,
    /// The Hyper-Search model: the CSLA form with the convolutions' scales trainable too.
    HyperSearch,
    /// The one target convolution.
    Target,
}

/// One branch on the engine.
#[derive(Clone, Debug)]
pub struct BranchTensors {
    /// The branch's trainable kernel (`[out, fan, k', k']`, the bounding square for a
    /// non-square kernel) or the identity's values `[out]`.
    pub kernel: Tensor,
    /// The fixed 0/1 mask of a non-square kernel's taps.
    pub mask: Option<Tensor>,
    /// The channel-wise scale `[out]` (a parameter in the Hyper-Search form).
    pub scale: Tensor,
}

/// A declared CSLA block's tensors and forward pass.
#[derive(Clone, Debug)]
pub struct GrLayer {
    block: CslaBlock,
    form: Form,
    /// The branches (empty in the target form).
    pub branches: Vec<BranchTensors>,
    /// The target kernel (target form only).
    pub target: Option<Tensor>,
}

impl GrLayer {
    /// The block in `form`, branch kernels drawn from `seed` as PyTorch's default
    /// initialisation would; the target form's kernel starts as the equivalent kernel of
    /// such fresh branches (the Rule of Initialization), identity values at 1.
    pub fn new(gpu: &Gpu, block: &CslaBlock, form: Form, seed: u64) -> Result<Self> {
        block.validate()?;
        let mut init = Init::new(seed);
        let host = fresh_branches(block, &mut init);
        GrLayer::from_branches(gpu, block, form, &host)
    }

    /// The block in `form` from given host branch kernels (each of
    /// [`CslaBlock::branch_shape`]).
    pub fn from_branches(
        gpu: &Gpu,
        block: &CslaBlock,
        form: Form,
        kernels: &[Vec<f32>],
    ) -> Result<Self> {
        block.validate()?;
        if form == Form::Target {
            let w = block.equivalent_kernel(kernels)?;
            let target = Tensor::parameter(gpu, &w, &block.kernel_shape())?;
            return Ok(GrLayer {
                block: block.clone(),
                form,
                branches: Vec::new(),
                target: Some(target),
            });
        }
        // Validates the kernels' sizes.
        block.equivalent_kernel(kernels)?;
        let co = block.target.out_channels();
        let mut branches = Vec::new();
        for (b, (branch, kernel)) in block.branches.iter().zip(kernels).enumerate() {
            // The identity's value is already trainable; its scale stays constant.
            let scale = if form == Form::HyperSearch && branch.op != BranchOp::Identity {
                Tensor::parameter(gpu, &branch.scale, &[co])?
            } else {
                Tensor::from_slice(gpu, &branch.scale, &[co])?
            };
            let (kernel, mask) = match branch.op {
                BranchOp::Identity => (Tensor::parameter(gpu, kernel, &[co])?, None),
                BranchOp::Conv { height, width } if height == width => (
                    Tensor::parameter(gpu, kernel, &block.branch_shape(b))?,
                    None,
                ),
                BranchOp::Conv { height, width } => {
                    let side = height.max(width);
                    let fan = block.target.fan_channels();
                    let (full, mask) = bounding_square(kernel, co * fan, height, width);
                    let shape = [co, fan, side, side];
                    (
                        Tensor::parameter(gpu, &full, &shape)?,
                        Some(Tensor::from_slice(gpu, &mask, &shape)?),
                    )
                }
            };
            branches.push(BranchTensors {
                kernel,
                mask,
                scale,
            });
        }
        Ok(GrLayer {
            block: block.clone(),
            form,
            branches,
            target: None,
        })
    }

    /// The declaration.
    pub fn block(&self) -> &CslaBlock {
        &self.block
    }

    /// The form.
    pub fn form(&self) -> Form {
        self.form
    }

    /// The block's output for `x` `[N, in, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let block = &self.block;
        let conv = |x: &Tensor, w: &Tensor, side: usize| -> Result<Tensor> {
            let cfg = Conv2dConfig::same(side, block.stride);
            Ok(if block.target.is_depthwise() {
                ops::depthwise_conv2d(x, w, cfg)?
            } else {
                ops::conv2d(x, w, cfg)?
            })
        };
        if let Some(w) = &self.target {
            return conv(x, w, block.target.kernel());
        }
        let mut sum: Option<Tensor> = None;
        for (branch, t) in block.branches.iter().zip(&self.branches) {
            let y = match branch.op {
                BranchOp::Identity => x.scale_channels(&t.kernel)?,
                BranchOp::Conv { .. } => {
                    let w = match &t.mask {
                        Some(m) => t.kernel.mul(m)?,
                        None => t.kernel.clone(),
                    };
                    conv(x, &w, t.kernel.shape()[3])?
                }
            };
            let y = y.scale_channels(&t.scale)?;
            sum = Some(match sum {
                None => y,
                Some(s) => s.add(&y)?,
            });
        }
        Ok(sum.expect("validated blocks have a branch"))
    }

    /// The trainable tensors, named `<branch>.kernel` / `<branch>.scale` (or `target`).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        if let Some(w) = &self.target {
            return vec![("target".into(), w.clone())];
        }
        let mut out = Vec::new();
        for (branch, t) in self.block.branches.iter().zip(&self.branches) {
            out.push((format!("{}.kernel", branch.name), t.kernel.clone()));
            if t.scale.is_parameter() {
                out.push((format!("{}.scale", branch.name), t.scale.clone()));
            }
        }
        out
    }

    /// The branch kernels in their own shapes (non-square ones cut out of their bounding
    /// squares), to compute the equivalent kernel; None in the target form.
    pub fn branch_kernels(&self) -> Result<Option<Vec<Vec<f32>>>> {
        if self.target.is_some() {
            return Ok(None);
        }
        let co = self.block.target.out_channels();
        let fan = self.block.target.fan_channels();
        let mut out = Vec::new();
        for (branch, t) in self.block.branches.iter().zip(&self.branches) {
            let v = t.kernel.to_vec()?;
            out.push(match (branch.op, &t.mask) {
                (BranchOp::Conv { height, width }, Some(_)) => {
                    cut_from_square(&v, co * fan, height, width)
                }
                _ => v,
            });
        }
        Ok(Some(out))
    }

    /// The current equivalent target kernel (the target kernel itself in the target form).
    pub fn equivalent_kernel(&self) -> Result<Vec<f32>> {
        match (&self.target, self.branch_kernels()?) {
            (Some(w), _) => Ok(w.to_vec()?),
            (None, Some(kernels)) => {
                let mut block = self.block.clone();
                // The scales as they are now (trained, or written since construction).
                for (b, t) in block.branches.iter_mut().zip(&self.branches) {
                    b.scale = t.scale.to_vec()?;
                }
                block.equivalent_kernel(&kernels)
            }
            (None, None) => unreachable!("a layer has branches or a target"),
        }
    }
}

/// Fresh branch kernels as PyTorch's default initialisation draws them (fan-in of the
/// branch's own kernel); identity values start at 1.
pub fn fresh_branches(block: &CslaBlock, init: &mut Init) -> Vec<Vec<f32>> {
    (0..block.branches.len())
        .map(|b| {
            let shape = block.branch_shape(b);
            match block.branches[b].op {
                BranchOp::Identity => vec![1.0; shape[0]],
                BranchOp::Conv { height, width } => {
                    let fan_in = (shape[1] * height * width) as f32;
                    init.uniform(shape.iter().product(), 1.0 / fan_in.sqrt())
                }
            }
        })
        .collect()
}

/// Places `rows` kernels of `h x w` centred in `s x s` squares (`s = max(h, w)`), with the
/// mask of their taps.
fn bounding_square(kernel: &[f32], rows: usize, h: usize, w: usize) -> (Vec<f32>, Vec<f32>) {
    let s = h.max(w);
    let (dh, dw) = ((s - h) / 2, (s - w) / 2);
    let mut full = vec![0.0; rows * s * s];
    let mut mask = vec![0.0; rows * s * s];
    for r in 0..rows {
        for i in 0..h {
            for j in 0..w {
                let at = (r * s + dh + i) * s + dw + j;
                full[at] = kernel[(r * h + i) * w + j];
                mask[at] = 1.0;
            }
        }
    }
    (full, mask)
}

/// The inverse of [`bounding_square`]'s placement.
fn cut_from_square(full: &[f32], rows: usize, h: usize, w: usize) -> Vec<f32> {
    let s = h.max(w);
    let (dh, dw) = ((s - h) / 2, (s - w) / 2);
    let mut out = Vec::with_capacity(rows * h * w);
    for r in 0..rows {
        for i in 0..h {
            for j in 0..w {
                out.push(full[(r * s + dh + i) * s + dw + j]);
            }
        }
    }
    out
}
