//! Winograd F(2x2, 3x3) for stride-1, padding-1 3x3 convolutions: the forward, the input
//! gradient and the weight gradient (`shaders/winograd.wgsl` for the transforms, the batched
//! matmul kernel for the 16 products). One of the variants `tune` chooses between; the direct kernels in `plan`
//! are the other.

use super::ConvShape;
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::winograd::{self as k, WinogradParams};
use crate::ops::linear::{Layout, matmul_batched_into, transposed_keeps_more_busy};
use crate::ops::{as_u32, groups};
use crate::tensor::{DType, Tensor};

/// Positions of the transformed 4x4 tile: the number of matrix products.
const POSITIONS: usize = 16;

/// A direction of a convolution that has a choice of algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `y = conv(x, w)`.
    Forward,
    /// `dx = conv_transpose(dy, w)`.
    BackwardInput,
    /// `dw = sum over pixels of dy x^T`.
    BackwardWeight,
}

/// The launch geometry for one direction: (input channels, output channels).
fn channels(s: &ConvShape, direction: Direction) -> (usize, usize) {
    match direction {
        Direction::Forward | Direction::BackwardWeight => (s.ci, s.co),
        Direction::BackwardInput => (s.co, s.ci),
    }
}

fn tiles(s: &ConvShape) -> (usize, usize) {
    (s.h.div_ceil(2), s.w.div_ceil(2))
}

/// Whether Winograd computes this shape: 3x3, stride 1, padding 1, with its transformed
/// operands within the adapter's binding size and 32-bit indices.
pub(crate) fn applies(gpu: &Gpu, s: &ConvShape) -> bool {
    if s.k != 3 || s.cfg.stride != 1 || s.cfg.padding != 1 {
        return false;
    }
    let (th, tw) = tiles(s);
    let largest = POSITIONS * s.ci.max(s.co) * (s.n * th * tw).max(s.ci.min(s.co));
    let bytes = largest as u64 * 4;
    u32::try_from(largest).is_ok() && bytes <= gpu.limits().max_storage_buffer_binding_size
}

/// Runs one direction on its two operands: `(x, w)` for the forward, `(dy, w)` for the
/// input gradient, `(x, dy)` for the weight gradient, `w` being `[co, ci, 3, 3]`; the caller
/// has checked [`applies`].
pub(crate) fn run(a: &Tensor, b: &Tensor, s: &ConvShape, direction: Direction) -> Result<Tensor> {
    let gpu = a.gpu();
    let (ci, co) = channels(s, direction);
    let (th, tw) = tiles(s);
    let tile_count = s.n * th * tw;
    as_u32(
        "conv2d (Winograd)",
        "transformed elements",
        POSITIONS * ci.max(co) * tile_count,
    )?;
    let params = WinogradParams {
        n: s.n as u32,
        ci: ci as u32,
        co: co as u32,
        h: s.h as u32,
        w: s.w as u32,
        th: th as u32,
        tw: tw as u32,
        flip: (direction == Direction::BackwardInput) as u32,
        tile_major: (direction == Direction::BackwardWeight) as u32,
        products_tile_major: 0,
        weights_input_major: 0,
    };
    // Every direction transforms an activation's 4x4 input tiles: x, or dy for dx.
    let v = Tensor::empty(gpu, &[POSITIONS, ci, tile_count], DType::F32)?;
    gpu.launch(
        &k::INPUTS,
        &params,
        &[a.buffer(), v.buffer()],
        gpu.grid(groups(ci * tile_count, 64)),
    )?;
    if direction == Direction::BackwardWeight {
        return weight_gradient(&v, b, &params, tile_count);
    }
    let tile_rows = transposed_keeps_more_busy(gpu, co, tile_count);
    // With tiles as the product's rows the weights are its B, read along output channels:
    // stored [k][c][o], each invocation's columns are adjacent and read in one load.
    let params = WinogradParams {
        weights_input_major: tile_rows as u32,
        ..params
    };
    let u = Tensor::empty(gpu, &[POSITIONS, co, ci], DType::F32)?;
    gpu.launch(
        &k::WEIGHTS,
        &params,
        &[b.buffer(), u.buffer()],
        gpu.grid(groups(co * ci, 64)),
    )?;
    let m = Tensor::empty(gpu, &[POSITIONS, co, tile_count], DType::F32)?;
    let params = if tile_rows {
        // M[k]^T = V[k]^T U[k]^T: tiles as the product's rows, stored [k][tile][o].
        let (vt, ut) = (Layout::transposed(tile_count), Layout::row_major(co));
        matmul_batched_into((&v, vt), (&u, ut), &m, [tile_count, co, ci], POSITIONS)?;
        WinogradParams {
            products_tile_major: 1,
            ..params
        }
    } else {
        let (ul, vl) = (Layout::row_major(ci), Layout::row_major(tile_count));
        matmul_batched_into((&u, ul), (&v, vl), &m, [co, tile_count, ci], POSITIONS)?;
        params
    };
    drop((u, v));
    let y = Tensor::empty(gpu, &[s.n, co, s.h, s.w], DType::F32)?;
    gpu.launch(
        &k::OUTPUTS,
        &params,
        &[m.buffer(), y.buffer()],
        gpu.grid(groups(co * tile_count, 64)),
    )?;
    Ok(y)
}

/// `dw` from the transformed input tiles `v` (stored `[k][tile][c]`) and the output gradient
/// `dy`: the products run over tiles, `[co, tiles] x [tiles, ci]` at each position.
fn weight_gradient(
    v: &Tensor,
    dy: &Tensor,
    params: &WinogradParams,
    tile_count: usize,
) -> Result<Tensor> {
    let gpu = v.gpu();
    let (ci, co) = (params.ci as usize, params.co as usize);
    let dyt = Tensor::empty(gpu, &[POSITIONS, co, tile_count], DType::F32)?;
    gpu.launch(
        &k::OUTPUT_GRADS,
        params,
        &[dy.buffer(), dyt.buffer()],
        gpu.grid(groups(co * tile_count, 64)),
    )?;
    let m = Tensor::empty(gpu, &[POSITIONS, co, ci], DType::F32)?;
    let (dl, vl) = (Layout::row_major(tile_count), Layout::row_major(ci));
    matmul_batched_into((&dyt, dl), (v, vl), &m, [co, ci, tile_count], POSITIONS)?;
    drop(dyt);
    let dw = Tensor::empty(gpu, &[co, ci, 3, 3], DType::F32)?;
    gpu.launch(
        &k::WEIGHT_GRADS,
        params,
        &[m.buffer(), dw.buffer()],
        gpu.grid(groups(co * ci, 64)),
    )?;
    Ok(dw)
}
