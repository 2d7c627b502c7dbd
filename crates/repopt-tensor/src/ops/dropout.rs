//! Inverted dropout, as PyTorch's `F.dropout`: in training each element is kept with
//! probability `1 - p` and scaled by `1 / (1 - p)`, else zeroed; in evaluation it is the
//! identity.
//!
//! The mask is a function of `(seed, element index)` alone, drawn inside the kernels with the
//! counter-based generator Threefry-2x32-20 (`shaders/dropout.wgsl`): the same seed gives
//! the same mask on every adapter, nothing random is uploaded, and nothing is stored for the
//! backward pass, whose kernel draws the forward's mask again from the seed.

use super::{as_u32, groups};
use crate::error::{Error, Result};
use crate::kernels::dropout::{self as k, DropoutParams};
use crate::tensor::{DType, Tensor};

/// The kernel parameters of the mask for drop probability `p` and `seed`.
fn mask(op: &'static str, p: f32, seed: u64, n: usize) -> Result<DropoutParams> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid(
            op,
            format!("drop probability must be in [0, 1), got {p}"),
        ));
    }
    let p = f64::from(p);
    Ok(DropoutParams {
        n: as_u32(op, "elements", n)?,
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        // Dropped iff bits < p * 2^32 exactly, for 32 random bits; p < 1 keeps this below
        // 2^32.
        threshold: (p * 4_294_967_296.0).ceil() as u32,
        scale: (1.0 / (1.0 - p)) as f32,
    })
}

fn launch(
    kernel: &crate::kernels::Kernel<DropoutParams>,
    params: DropoutParams,
    a: &Tensor,
) -> Result<Tensor> {
    let out = Tensor::empty(a.gpu(), a.shape(), DType::F32)?;
    let gpu = a.gpu();
    gpu.launch(
        kernel,
        &params,
        &[a.buffer(), out.buffer()],
        gpu.grid(groups(a.numel(), 256)),
    )?;
    Ok(out)
}

/// The training-mode kernel alone (no autograd): `x * 1 / (1 - p)` where the mask of `seed`
/// keeps an element, 0 where it drops it. Always launches (even for `p == 0`); `p` must be
/// in `[0, 1)`.
pub fn dropout_forward(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    x.expect_dtype("dropout_forward", DType::F32)?;
    launch(&k::FORWARD, mask("dropout_forward", p, seed, x.numel())?, x)
}

/// Gradient of [`dropout_forward`] with the same `p` and `seed`: `dy * 1 / (1 - p)` where the
/// mask keeps an element, 0 elsewhere. The mask is drawn again from the seed, not read.
pub fn dropout_backward(dy: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    dy.expect_dtype("dropout_backward", DType::F32)?;
    launch(
        &k::BACKWARD,
        mask("dropout_backward", p, seed, dy.numel())?,
        dy,
    )
}

/// Inverted dropout of `x` (any shape) with drop probability `p` in `[0, 1)`.
///
/// In training, element `i` is zeroed with probability `p` and otherwise multiplied by
/// `1 / (1 - p)` (rounded to f32; kept elements are exactly `x * s` for that `s`), so the
/// expectation is `x`. Whether `i` is kept depends only on `seed` and `i`: one seed gives one
/// mask on any adapter, so give every call its own seed (from the step and the layer, say).
/// With `training == false` or `p == 0`, `x` itself is returned and no kernel runs. A `p`
/// outside `[0, 1)` is an error in either mode.
///
/// ```
/// use repopt_tensor::ops::dropout;
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let x = Tensor::parameter(&gpu, &vec![1.0; 1000], &[10, 100])?;
/// let y = dropout(&x, 0.2, 42, true)?;
/// let v = y.to_vec()?;
/// // Every element is dropped or scaled by 1 / 0.8, and the same seed gives the same mask.
/// assert!(v.iter().all(|&e| e == 0.0 || e == 1.25));
/// assert_eq!(dropout(&x, 0.2, 42, true)?.to_vec()?, v);
/// // About 800 of the 1000 are kept (the standard deviation is about 13).
/// let kept = v.iter().filter(|&&e| e != 0.0).count();
/// assert!((700..900).contains(&kept));
/// // Evaluation is the identity.
/// assert_eq!(dropout(&x, 0.2, 42, false)?.to_vec()?, vec![1.0; 1000]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn dropout(x: &Tensor, p: f32, seed: u64, training: bool) -> Result<Tensor> {
    x.expect_dtype("dropout", DType::F32)?;
    mask("dropout", p, seed, x.numel())?;
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    let y = dropout_forward(x, p, seed)?;
    Ok(Tensor::from_op(y, &[x], "dropout", move |g| {
        Ok(vec![Some(dropout_backward(g, p, seed)?)])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_outside_zero_to_one_are_refused() {
        for p in [-0.1, 1.0, 1.5, f32::NAN, f32::INFINITY] {
            assert!(
                matches!(mask("t", p, 0, 10), Err(Error::Invalid { .. })),
                "{p}"
            );
        }
    }

    #[test]
    fn the_threshold_drops_exactly_the_bits_below_p_times_two_to_the_32() {
        assert_eq!(mask("t", 0.0, 0, 1).unwrap().threshold, 0);
        assert_eq!(mask("t", 0.5, 0, 1).unwrap().threshold, 1 << 31);
        assert_eq!(mask("t", 0.25, 0, 1).unwrap().threshold, 1 << 30);
        // The largest f32 below 1 still leaves 256 of the 2^32 bit patterns kept.
        let p = f32::from_bits(1.0f32.to_bits() - 1);
        assert_eq!(mask("t", p, 0, 1).unwrap().threshold, u32::MAX - 255);
        let m = mask("t", 0.1, 0x0123_4567_89ab_cdef, 1).unwrap();
        assert_eq!((m.seed_lo, m.seed_hi), (0x89ab_cdef, 0x0123_4567));
        assert_eq!(m.scale, (1.0 / (1.0 - 0.1f32 as f64)) as f32);
    }
}
