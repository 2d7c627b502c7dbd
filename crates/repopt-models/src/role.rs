//! What each trainable tensor of a network is for: which block holds it and what part of
//! the block it is. Optimizer set-up decides by these roles (weight decay, where a Grad
//! Mult goes), so nothing depends on how tensors are named in state dicts.
//!
//! ```no_run
//! use repopt_models::role::ParamKind;
//! use repopt_models::{Mode, RepOptVgg, VggConfig};
//!
//! let gpu = repopt_tensor::Gpu::from_env()?;
//! let model = RepOptVgg::new(&gpu, VggConfig::preset("A0")?, Mode::Target, 0)?;
//! for p in model.param_roles() {
//!     if p.role.kind == ParamKind::TargetKernel {
//!         println!("block {:?}: {} {:?}", p.role.block, p.name, p.tensor.shape());
//!     }
//! }
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

use repopt_tensor::Tensor;
use repopt_tensor::optim::ParamSpec;

use crate::layers::Named;

/// Which per-channel scale of a CSLA or Hyper-Search block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScaleKind {
    /// s, after the 3x3 convolution.
    Conv,
    /// t, after the 1x1 convolution.
    OneByOne,
    /// u, on the identity branch.
    Identity,
}

/// What part of a network a trainable tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// The kernel a RepOptimizer re-initialises and applies its Grad Mult to: a target
    /// block's 3x3 kernel `[co, ci, 3, 3]` (RepOpt-VGG) or a target ghost module's
    /// depthwise kernel `[c, 1, 3, 3]` (RepOpt-GhostNet).
    TargetKernel,
    /// Any other 3x3 kernel: a RepVGG dense branch, a CSLA or Hyper-Search block's
    /// convolution, a deployed block.
    Kernel3x3,
    /// A 1x1 kernel `[co, ci, 1, 1]` (a RepVGG branch, a ghost module's primary convolution).
    Kernel1x1,
    /// A depthwise kernel `[c, 1, k, k]` that is not a RepOptimizer's target.
    Depthwise,
    /// A batch norm's gamma (the identity branch's batch norm included).
    BnWeight,
    /// A batch norm's beta.
    BnBias,
    /// A per-channel scale; s and t are trainable only in Hyper-Search, u in CSLA too.
    Scale(ScaleKind),
    /// The bias of a deployed block's convolution.
    ConvBias,
    /// A squeeze-excitation 1x1 kernel.
    SeWeight,
    /// A squeeze-excitation bias.
    SeBias,
    /// The classifier's weight `[classes, features]`.
    LinearWeight,
    /// The classifier's bias.
    LinearBias,
}

impl ParamKind {
    /// Whether weight decay applies: to convolution and linear kernels and to the identity
    /// scales u, not to batch norms, biases or the scales s and t. This is the reference
    /// implementation's grouping, and CSLA training equals GR training only with it.
    pub fn decays(self) -> bool {
        match self {
            ParamKind::TargetKernel
            | ParamKind::Kernel3x3
            | ParamKind::Kernel1x1
            | ParamKind::Depthwise
            | ParamKind::Scale(ScaleKind::Identity)
            | ParamKind::SeWeight
            | ParamKind::LinearWeight => true,
            ParamKind::BnWeight
            | ParamKind::BnBias
            | ParamKind::Scale(ScaleKind::Conv | ScaleKind::OneByOne)
            | ParamKind::ConvBias
            | ParamKind::SeBias
            | ParamKind::LinearBias => false,
        }
    }
}

/// The role of a trainable tensor: where it sits and what it is.
///
/// ```
/// use repopt_models::role::{ParamKind, ParamRole, ScaleKind};
///
/// let kernel = ParamRole { block: Some(2), kind: ParamKind::TargetKernel };
/// assert!(kernel.decays());
/// assert!(kernel.is_target_kernel_of(2));
/// assert!(!kernel.is_target_kernel_of(3));
///
/// let s = ParamRole { block: Some(2), kind: ParamKind::Scale(ScaleKind::Conv) };
/// assert!(!s.decays());
///
/// let classifier = ParamRole { block: None, kind: ParamKind::LinearWeight };
/// assert!(classifier.decays());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamRole {
    /// Index of the block in [`RepOptVgg::blocks`](crate::RepOptVgg::blocks); `None` for
    /// the classifier.
    pub block: Option<usize>,
    /// What the tensor is.
    pub kind: ParamKind,
}

impl ParamRole {
    /// A tensor of block `index`.
    pub fn in_block(index: usize, kind: ParamKind) -> Self {
        ParamRole {
            block: Some(index),
            kind,
        }
    }

    /// A tensor of the classifier.
    pub fn classifier(kind: ParamKind) -> Self {
        ParamRole { block: None, kind }
    }

    /// Whether weight decay applies (see [`ParamKind::decays`]).
    pub fn decays(&self) -> bool {
        self.kind.decays()
    }

    /// Whether this is the target 3x3 kernel of block `index`.
    pub fn is_target_kernel_of(&self, index: usize) -> bool {
        self.kind == ParamKind::TargetKernel && self.block == Some(index)
    }
}

/// A trainable tensor with its state-dict name and its role.
#[derive(Clone, Debug)]
pub struct Param {
    /// The name in the reference implementation's state dict.
    pub name: String,
    /// The tensor (a leaf that requires grad).
    pub tensor: Tensor,
    /// What it is.
    pub role: ParamRole,
}

impl Param {
    /// The parameter's optimizer group: `weight_decay` where [`ParamRole::decays`] says
    /// so, else none; no Grad Mult.
    pub fn spec(self, weight_decay: f32) -> ParamSpec {
        let wd = if self.role.decays() {
            weight_decay
        } else {
            0.0
        };
        ParamSpec::new(self.tensor, wd)
    }

    /// The name and tensor, without the role.
    pub fn into_named(self) -> Named {
        (self.name, self.tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::{ParamKind, ScaleKind};

    /// The reference implementation groups by state-dict name; these are its names for
    /// each kind.
    #[test]
    fn decay_groups_follow_the_reference() {
        for (name, kind) in [
            ("stage1.0.conv.weight", ParamKind::TargetKernel),
            (
                "stage1.1.scale_identity.weight",
                ParamKind::Scale(ScaleKind::Identity),
            ),
            ("linear.weight", ParamKind::LinearWeight),
            ("stage2.1.rbr_1x1.conv.weight", ParamKind::Kernel1x1),
            ("stage2.1.rbr_dense.conv.weight", ParamKind::Kernel3x3),
            ("stage2.1.post_se.down.weight", ParamKind::SeWeight),
        ] {
            assert!(kind.decays(), "{name}");
        }
        for (name, kind) in [
            ("stage1.0.bn.weight", ParamKind::BnWeight),
            ("stage1.0.bn.bias", ParamKind::BnBias),
            ("linear.bias", ParamKind::LinearBias),
            (
                "stage1.1.scale_conv.weight",
                ParamKind::Scale(ScaleKind::Conv),
            ),
            (
                "stage1.1.scale_1x1.weight",
                ParamKind::Scale(ScaleKind::OneByOne),
            ),
            ("stage1.1.rbr_identity.weight", ParamKind::BnWeight),
            ("stage1.1.rbr_dense.bn.weight", ParamKind::BnWeight),
            ("stage1.0.rbr_reparam.bias", ParamKind::ConvBias),
            ("stage2.1.post_se.up.bias", ParamKind::SeBias),
        ] {
            assert!(!kind.decays(), "{name}");
        }
    }
}
