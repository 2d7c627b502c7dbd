//! The RepOptimizer's per-element gradient multiplier, dense or structured.

use crate::error::{Error, Result};
use crate::kernels::optim::{self as k, OptimParams};
use crate::ops::groups;
use crate::tensor::Tensor;

/// A per-element gradient multiplier.
#[derive(Clone, Debug)]
pub enum GradMult {
    /// Any multiplier, as a tensor of the parameter's shape.
    Dense(Tensor),
    /// The RepOptimizer's multiplier of a `[co, ci, 3, 3]` kernel, computed in the update
    /// kernel from `2 * co` factors instead of stored:
    /// `M[c, d, h, w] = f[c] + (centre ? f[co + c] : 0) + (centre && c == d && identity ? 1 : 0)`.
    Conv3x3 {
        /// `[2 * co]`: the per-channel term, then the centre term.
        factors: Tensor,
        /// Whether the diagonal centre gets the identity branch's 1.
        identity: bool,
    },
}

impl GradMult {
    /// The multiplier as a dense tensor of `shape` (computed on the device for
    /// [`GradMult::Conv3x3`]).
    pub fn to_dense(&self, shape: &[usize]) -> Result<Tensor> {
        match self {
            GradMult::Dense(t) => Ok(t.clone()),
            GradMult::Conv3x3 { factors, identity } => {
                let (co, row) = conv3x3_dims("GradMult::to_dense", shape, factors)?;
                let gpu = factors.gpu();
                let dense = Tensor::empty(gpu, shape, crate::DType::F32)?;
                let params = OptimParams {
                    row: row as u32,
                    rows: co as u32,
                    identity: *identity as u32,
                    ..Default::default()
                };
                gpu.launch(
                    &k::EXPAND_CONV3X3_MULT,
                    &params,
                    &[factors.buffer(), dense.buffer()],
                    [groups(row, 256), co as u32, 1],
                )?;
                Ok(dense)
            }
        }
    }
}

/// `(co, ci * 9)` of a 3x3 kernel shape whose factors hold `2 * co` values.
pub(crate) fn conv3x3_dims(
    what: &'static str,
    shape: &[usize],
    factors: &Tensor,
) -> Result<(usize, usize)> {
    if shape.len() != 4 || shape[2] != 3 || shape[3] != 3 || factors.numel() != 2 * shape[0] {
        return Err(Error::shape(
            what,
            format!(
                "a structured Grad Mult needs a [co, ci, 3, 3] parameter and 2 * co factors; got {shape:?} and {} factors",
                factors.numel()
            ),
        ));
    }
    Ok((shape[0], shape[1] * 9))
}
