//! SGD as separate multiply, decay, momentum, nesterov and update kernels: what an op-by-op
//! framework runs, kept as the baseline the update benchmarks compare the fused kernel with.

use super::ParamSpec;
use super::sgd::SgdConfig;
use crate::error::Result;
use crate::ops::elementwise::axpby_inplace;
use crate::tensor::Tensor;

/// One unfused SGD step of `p` with gradient `g` and momentum buffer `buf`.
pub(crate) fn sgd_step(
    c: &SgdConfig,
    p: &ParamSpec,
    g: &Tensor,
    buf: &Tensor,
    first: bool,
    lr: f32,
) -> Result<()> {
    let w = &p.tensor;
    let d = match &p.grad_mult {
        Some(m) => g.detach().mul(&m.to_dense(w.shape())?)?,
        None => g.deep_clone()?,
    };
    axpby_inplace(&d, 1.0, &w.detach(), p.weight_decay)?;
    if first {
        buf.copy_from(&d)?;
    } else {
        axpby_inplace(buf, c.momentum, &d, 1.0 - c.dampening)?;
    }
    if c.nesterov {
        axpby_inplace(&d, 1.0, buf, c.momentum)?;
        axpby_inplace(&w.detach(), 1.0, &d, -lr)
    } else {
        axpby_inplace(&w.detach(), 1.0, buf, -lr)
    }
}
