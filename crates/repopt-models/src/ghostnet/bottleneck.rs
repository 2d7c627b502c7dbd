//! The parts of a GhostNet around its ghost modules: kernels with batch norm, the
//! squeeze-excitation gate and the bottleneck that joins them with a shortcut.

use repopt_tensor::ops::{self, Conv2dConfig};
use repopt_tensor::{Gpu, Tensor};

use super::config::Bottleneck;
use super::module::GhostModule;
use crate::config::Mode;
use crate::error::Result;
use crate::init::Init;
use crate::layers::{BatchNorm, Named};
use crate::role::{Param, ParamKind, ParamRole};

/// A kernel with its batch norm.
#[derive(Clone, Debug)]
pub struct ConvBn {
    /// The kernel (`[co, ci, k, k]`, or `[c, 1, k, k]` when depthwise).
    pub kernel: Tensor,
    /// Its batch norm.
    pub bn: BatchNorm,
    depthwise: bool,
    stride: usize,
}

impl ConvBn {
    pub(crate) fn new(
        gpu: &Gpu,
        ci: usize,
        co: usize,
        k: usize,
        stride: usize,
        init: &mut Init,
    ) -> Result<Self> {
        Ok(ConvBn {
            kernel: Tensor::parameter(gpu, &init.kernel(co, ci, k), &[co, ci, k, k])?,
            bn: BatchNorm::new(gpu, co)?,
            depthwise: false,
            stride,
        })
    }

    pub(crate) fn depthwise(
        gpu: &Gpu,
        c: usize,
        k: usize,
        stride: usize,
        init: &mut Init,
    ) -> Result<Self> {
        Ok(ConvBn {
            kernel: Tensor::parameter(gpu, &init.kernel(c, 1, k), &[c, 1, k, k])?,
            bn: BatchNorm::new(gpu, c)?,
            depthwise: true,
            stride,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, training: bool, relu: bool) -> Result<Tensor> {
        let cfg = Conv2dConfig::same(self.kernel.shape()[3], self.stride);
        let y = if self.depthwise {
            ops::depthwise_conv2d(x, &self.kernel, cfg)?
        } else {
            ops::conv2d(x, &self.kernel, cfg)?
        };
        Ok(self.bn.forward(&y, training, relu)?)
    }

    pub(crate) fn params(&self, kernel: &str, bn: &str, out: &mut Vec<Param>) {
        let kind = match (self.depthwise, self.kernel.shape()[3]) {
            (true, _) => ParamKind::Depthwise,
            (false, 1) => ParamKind::Kernel1x1,
            _ => ParamKind::Kernel3x3,
        };
        out.push(loose(kernel, &self.kernel, kind));
        let mut bn_params = Vec::new();
        self.bn.params(bn, 0, &mut bn_params);
        out.extend(
            bn_params
                .into_iter()
                .map(|p| loose(&p.name, &p.tensor, p.role.kind)),
        );
    }

    pub(crate) fn copy(&self) -> Result<Self> {
        Ok(ConvBn {
            kernel: self.kernel.deep_clone()?.into_parameter(),
            bn: self.bn.deep_clone()?,
            depthwise: self.depthwise,
            stride: self.stride,
        })
    }
}

/// A parameter outside every ghost module (no RepOptimizer block).
pub(crate) fn loose(name: &str, tensor: &Tensor, kind: ParamKind) -> Param {
    Param {
        name: name.into(),
        tensor: tensor.clone(),
        role: ParamRole { block: None, kind },
    }
}

/// Squeeze-excitation with a hard-sigmoid gate and 1x1 convolutions with biases.
#[derive(Clone, Debug)]
pub struct GhostSe {
    pub(crate) reduce: (Tensor, Tensor),
    pub(crate) expand: (Tensor, Tensor),
}

impl GhostSe {
    pub(crate) fn new(gpu: &Gpu, c: usize, hidden: usize, init: &mut Init) -> Result<Self> {
        let p = |v: Vec<f32>, s: &[usize]| Tensor::parameter(gpu, &v, s);
        Ok(GhostSe {
            reduce: (
                p(init.kernel(hidden, c, 1), &[hidden, c, 1, 1])?,
                p(init.bias(hidden, c), &[hidden])?,
            ),
            expand: (
                p(init.kernel(c, hidden, 1), &[c, hidden, 1, 1])?,
                p(init.bias(c, hidden), &[c])?,
            ),
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (hidden, c) = (self.reduce.0.shape()[0], self.reduce.0.shape()[1]);
        // On a pooled 1x1 map a 1x1 convolution with bias is a linear layer.
        let pooled = ops::global_avg_pool(x)?;
        let h = ops::linear(
            &pooled,
            &self.reduce.0.reshape(&[hidden, c])?,
            &self.reduce.1,
        )?
        .relu()?;
        let gate = ops::linear(&h, &self.expand.0.reshape(&[c, hidden])?, &self.expand.1)?;
        Ok(x.scale_planes(&ops::hard_sigmoid(&gate)?)?)
    }

    pub(crate) fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        for (name, t, kind) in [
            ("conv_reduce.weight", &self.reduce.0, ParamKind::SeWeight),
            ("conv_reduce.bias", &self.reduce.1, ParamKind::SeBias),
            ("conv_expand.weight", &self.expand.0, ParamKind::SeWeight),
            ("conv_expand.bias", &self.expand.1, ParamKind::SeBias),
        ] {
            out.push(loose(&format!("{prefix}.{name}"), t, kind));
        }
    }
}

/// A ghost bottleneck: ghost module, optional strided depthwise convolution, optional
/// squeeze-excitation, ghost module without ReLU, plus a shortcut.
#[derive(Clone, Debug)]
pub struct GhostBottleneck {
    /// Its configuration.
    pub spec: Bottleneck,
    /// The expanding module.
    pub ghost1: GhostModule,
    /// `conv_dw` / `bn_dw` when strided.
    pub conv_dw: Option<ConvBn>,
    pub(crate) se: Option<GhostSe>,
    /// The projecting module.
    pub ghost2: GhostModule,
    /// Depthwise + BN, 1x1 + BN, unless the shortcut is the identity.
    pub(crate) shortcut: Option<(ConvBn, ConvBn)>,
}

impl GhostBottleneck {
    pub(crate) fn new(
        gpu: &Gpu,
        spec: &Bottleneck,
        first_module: usize,
        mode: Mode,
        init: &mut Init,
    ) -> Result<Self> {
        let n = spec.index_in_stage;
        let ghost1 = GhostModule::new(
            gpu,
            format!("{}.ghost1", spec.name),
            first_module,
            spec.input,
            spec.mid,
            true,
            2 * n - 1,
            mode,
            init,
        )?;
        let conv_dw = (spec.stride > 1)
            .then(|| ConvBn::depthwise(gpu, spec.mid, spec.kernel, spec.stride, init))
            .transpose()?;
        let se = spec
            .se_hidden
            .map(|h| GhostSe::new(gpu, spec.mid, h, init))
            .transpose()?;
        let ghost2 = GhostModule::new(
            gpu,
            format!("{}.ghost2", spec.name),
            first_module + 1,
            spec.mid,
            spec.out,
            false,
            2 * n,
            mode,
            init,
        )?;
        let shortcut = if spec.identity_shortcut() {
            None
        } else {
            Some((
                ConvBn::depthwise(gpu, spec.input, spec.kernel, spec.stride, init)?,
                ConvBn::new(gpu, spec.input, spec.out, 1, 1, init)?,
            ))
        };
        Ok(GhostBottleneck {
            spec: spec.clone(),
            ghost1,
            conv_dw,
            se,
            ghost2,
            shortcut,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let mut h = self.ghost1.forward(x, training)?;
        if let Some(dw) = &self.conv_dw {
            h = dw.forward(&h, training, false)?;
        }
        if let Some(se) = &self.se {
            h = se.forward(&h)?;
        }
        let h = self.ghost2.forward(&h, training)?;
        let residual = match &self.shortcut {
            None => x.clone(),
            Some((dw, pw)) => pw.forward(&dw.forward(x, training, false)?, training, false)?,
        };
        Ok(h.add(&residual)?)
    }

    pub(crate) fn param_roles(&self, out: &mut Vec<Param>) {
        let name = &self.spec.name;
        self.ghost1.param_roles(out);
        if let Some(dw) = &self.conv_dw {
            dw.params(
                &format!("{name}.conv_dw.weight"),
                &format!("{name}.bn_dw"),
                out,
            );
        }
        if let Some(se) = &self.se {
            se.params(&format!("{name}.se"), out);
        }
        self.ghost2.param_roles(out);
        if let Some((dw, pw)) = &self.shortcut {
            dw.params(
                &format!("{name}.shortcut.0.weight"),
                &format!("{name}.shortcut.1"),
                out,
            );
            pw.params(
                &format!("{name}.shortcut.2.weight"),
                &format!("{name}.shortcut.3"),
                out,
            );
        }
    }

    pub(crate) fn buffers(&self, out: &mut Vec<Named>) {
        let name = &self.spec.name;
        self.ghost1.buffers(out);
        if let Some(dw) = &self.conv_dw {
            dw.bn.buffers(&format!("{name}.bn_dw"), out);
        }
        self.ghost2.buffers(out);
        if let Some((dw, pw)) = &self.shortcut {
            dw.bn.buffers(&format!("{name}.shortcut.1"), out);
            pw.bn.buffers(&format!("{name}.shortcut.3"), out);
        }
    }
}
